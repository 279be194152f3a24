"""Learning-rate schedule: linear warm-up, then step decay [code: the authors' schedule] or poly
decay [ours: the field's standard for segmentation] (``train.schedule``)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import torch

__all__ = ["warmup_multistep_factor", "warmup_poly_factor", "build_lr_scheduler"]


def _warmup(iteration: int, warmup_iters: int, warmup_factor: float) -> float:
    """Linear from ``warmup_factor`` at iteration 0 to 1 at ``warmup_iters`` (detectron2's "linear")."""
    if iteration >= warmup_iters:
        return 1.0
    alpha = iteration / warmup_iters
    return warmup_factor * (1 - alpha) + alpha


def warmup_multistep_factor(
    iteration: int, *, warmup_iters: int, warmup_factor: float, steps: Sequence[int], gamma: float
) -> float:
    """Factor on the base learning rate at ``iteration`` (0-based, the iteration about to run).

    Warm-up goes linearly from ``warmup_factor`` at iteration 0 to 1 at ``warmup_iters``
    (detectron2's WarmupMultiStepLR, "linear"); the factor is then multiplied by ``gamma`` at
    each of ``steps``.
    """
    return gamma ** bisect_right(list(steps), iteration) * _warmup(iteration, warmup_iters, warmup_factor)


def warmup_poly_factor(
    iteration: int, *, warmup_iters: int, warmup_factor: float, max_iter: int, power: float, min_factor: float = 0.0
) -> float:
    """Factor on the base learning rate at ``iteration``: poly decay times the linear warm-up.

    ``min_factor + (1 - min_factor) * (1 - iteration / max_iter) ** power``: from 1 at iteration 0
    to ``min_factor`` (the final learning rate over the base one) at ``max_iter``, as
    mmsegmentation's ``PolyLR`` with ``eta_min`` [ours: the field's standard]; the warm-up of
    :func:`warmup_multistep_factor` multiplies it.
    """
    progress = min(iteration, max_iter) / max_iter
    decay = min_factor + (1 - min_factor) * (1 - progress) ** power
    return decay * _warmup(iteration, warmup_iters, warmup_factor)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, train_cfg: dict) -> torch.optim.lr_scheduler.LambdaLR:
    """torch's LambdaLR over :func:`warmup_multistep_factor` (``train.schedule: step``; a section
    without the key, as before it existed) or :func:`warmup_poly_factor` (``poly``); step it once
    per iteration."""
    warmup = {"warmup_iters": train_cfg["warmup_iters"], "warmup_factor": train_cfg["warmup_factor"]}
    if train_cfg.get("schedule", "step") == "poly":
        min_factor = train_cfg["poly_min_lr"] / train_cfg["base_lr"] if train_cfg["base_lr"] > 0 else 0.0

        def factor(iteration: int) -> float:
            return warmup_poly_factor(iteration, max_iter=train_cfg["max_iter"], power=train_cfg["poly_power"],
                                      min_factor=min_factor, **warmup)
    else:
        def factor(iteration: int) -> float:
            return warmup_multistep_factor(iteration, steps=train_cfg["steps"], gamma=train_cfg["gamma"], **warmup)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
