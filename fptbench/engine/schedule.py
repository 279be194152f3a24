"""Learning-rate schedule: linear warm-up, then step decay [code: the authors' schedule]."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import torch

__all__ = ["warmup_multistep_factor", "build_lr_scheduler"]


def warmup_multistep_factor(
    iteration: int, *, warmup_iters: int, warmup_factor: float, steps: Sequence[int], gamma: float
) -> float:
    """Factor on the base learning rate at ``iteration`` (0-based, the iteration about to run).

    Warm-up goes linearly from ``warmup_factor`` at iteration 0 to 1 at ``warmup_iters``
    (detectron2's WarmupMultiStepLR, "linear"); the factor is then multiplied by ``gamma`` at
    each of ``steps``.
    """
    decay = gamma ** bisect_right(list(steps), iteration)
    if iteration >= warmup_iters:
        return decay
    alpha = iteration / warmup_iters
    return decay * (warmup_factor * (1 - alpha) + alpha)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, train_cfg: dict) -> torch.optim.lr_scheduler.LambdaLR:
    """torch's LambdaLR over :func:`warmup_multistep_factor`; step it once per iteration."""

    def factor(iteration: int) -> float:
        return warmup_multistep_factor(
            iteration,
            warmup_iters=train_cfg["warmup_iters"],
            warmup_factor=train_cfg["warmup_factor"],
            steps=train_cfg["steps"],
            gamma=train_cfg["gamma"],
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
