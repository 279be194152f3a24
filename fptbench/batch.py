"""The recipe at the batch a run really has: the linear scaling rule.

A config gives its learning rate and schedule at ``train.reference_batch`` images per optimizer
step (16 for the COCO configs: 8 GPUs x 2 images, the paper's and detectron2's batch). A run's
effective batch is ``world size x train.images_per_device x train.accumulate``; when it differs,
:func:`scale_train` applies the linear scaling rule (Goyal et al. 2017): the learning rate is
multiplied by ``B / ref``, and the iteration counts (``max_iter``, ``steps``, ``warmup_iters``,
``checkpoint_period``, ``keep_checkpoints``) by ``ref / B``, each rounded half up
(``int(x * scale + 0.5)``). The authors' ``tools/train_net_step.py`` scales the LR, the steps and
``MAX_ITER`` so (lines 186-200 [code]) and its checkpoint period with the GPUs (line 361); the
warm-up follows here too [ours: as detectron2's REFERENCE_WORLD_SIZE scaling does], so that it
covers the same images. So 1 GPU, 8 GPUs and 2 nodes x 8 GPUs run the same epochs at the same
per-image rate. ``train.reference_batch: 0`` leaves every value as given.

``train.accumulate: 0`` accumulates as many micro-batches as reach the reference batch (it must
then be a multiple of world size x images per device) [ours]; the authors' ``--iter_size``
accumulates too, but scales the LR by the batch without it (their line 184-186: "lr is scaled
based on batch_size instead of effective_batch_size"); here the LR follows the images per
optimizer step, which is what the rule is about.

Torch-free: the matrix (run ids), ``sweep --dry-run`` and the trainer use it alike.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

from fptbench.errors import UsageError

__all__ = ["BatchPlan", "batch_plan", "format_plan", "plan_summary", "scale_train"]

ITERATION_KEYS = ("max_iter", "warmup_iters", "checkpoint_period")
"""``train`` keys counted in iterations (scaled by ``ref / B``); ``steps`` and ``keep_checkpoints``
are lists of iterations, scaled element by element."""

LR_KEYS = ("base_lr", "poly_min_lr")
"""``train`` keys that are learning rates (scaled by ``B / ref``)."""


@dataclass(frozen=True)
class BatchPlan:
    """How many images one optimizer step sees, and against which reference.

    Attributes:
        world_size: processes (GPUs) training together.
        images_per_device: ``train.images_per_device``.
        accumulate: micro-batches per optimizer step (``train.accumulate``, 0 resolved).
        reference: ``train.reference_batch`` (0: none, values used as given).
    """

    world_size: int
    images_per_device: int
    accumulate: int
    reference: int

    @property
    def batch(self) -> int:
        """Images per optimizer step: world size x images per device x accumulate."""
        return self.world_size * self.images_per_device * self.accumulate

    @property
    def factor(self) -> float:
        """``B / ref``: the learning rate's factor (1 without a reference)."""
        return self.batch / self.reference if self.reference else 1.0

    def as_dict(self) -> dict:
        return {**asdict(self), "batch": self.batch, "factor": self.factor}


def batch_plan(cfg: dict, world_size: int) -> BatchPlan:
    """The :class:`BatchPlan` of ``cfg`` on ``world_size`` processes.

    Raises:
        UsageError: ``train.accumulate: 0`` where the reference batch is not a multiple of the
            per-step batch (or there is no reference).
    """
    train = cfg["train"]
    per_step = world_size * train["images_per_device"]
    accumulate, reference = train["accumulate"], train["reference_batch"]
    if accumulate == 0:
        if not reference or reference % per_step:
            raise UsageError(
                f"train.accumulate=0 accumulates up to train.reference_batch={reference}, which must be a multiple of "
                f"{world_size} process(es) x train.images_per_device={train['images_per_device']} = {per_step}; "
                f"set train.accumulate N, or another images_per_device")
        accumulate = reference // per_step
    return BatchPlan(world_size, train["images_per_device"], accumulate, reference)


def _iterations(value: int, scale: float, *, low: int) -> int:
    return max(low, int(value * scale + 0.5))  # train_net_step.py l.195-196 [code]


def scale_train(cfg: dict, plan: BatchPlan) -> dict:
    """A copy of ``cfg`` whose ``train`` section is at ``plan``'s batch (the linear scaling rule);
    ``cfg`` itself when there is no reference or the batch equals it."""
    if plan.factor == 1.0:
        return cfg
    out = copy.deepcopy(cfg)
    train, scale = out["train"], 1.0 / plan.factor
    for key in LR_KEYS:
        train[key] = train[key] * plan.factor
    train["max_iter"] = _iterations(train["max_iter"], scale, low=1)
    train["warmup_iters"] = _iterations(train["warmup_iters"], scale, low=0)
    train["checkpoint_period"] = _iterations(train["checkpoint_period"], scale, low=1)
    train["steps"] = [_iterations(s, scale, low=0) for s in train["steps"]]
    train["keep_checkpoints"] = [_iterations(s, scale, low=1) for s in train["keep_checkpoints"]]
    return out


def plan_summary(given: dict, scaled: dict, plan: BatchPlan) -> dict:
    """What a run records and prints of its batch: the plan, the schedule as given and as run,
    and the quantities that must not depend on the batch (images seen, LR per image)."""
    def schedule(cfg: dict) -> dict:
        train = cfg["train"]
        return {key: train[key] for key in (*LR_KEYS, *ITERATION_KEYS, "steps")}

    run = schedule(scaled)
    return {
        **plan.as_dict(),
        "given": schedule(given),
        "run": run,
        "images": run["max_iter"] * plan.batch,
        "lr_per_image": run["base_lr"] / plan.batch,
    }


def format_plan(summary: dict) -> str:
    """One line: ``batch 2 = 1 process x 2 images x 1 step vs reference 16: LR 0.02 -> 0.0025,
    max_iter 90000 -> 720000, steps [60000, 80000] -> [...], warm-up 1000 -> 8000; 1,440,000 images
    at LR 0.00125 per image``."""
    given, run = summary["given"], summary["run"]
    head = (f"batch {summary['batch']} = {summary['world_size']} process(es) x {summary['images_per_device']} "
            f"image(s) x {summary['accumulate']} accumulated")
    if not summary["reference"]:
        head += " (train.reference_batch 0: schedule as given)"
    elif summary["factor"] == 1.0:
        head += f" = reference {summary['reference']}: schedule as given"
    else:
        head += f" vs reference {summary['reference']}: linear scaling x{summary['factor']:g}"

    def number(value: float) -> str:  # iterations in full, LRs short
        return f"{value:,}" if isinstance(value, int) else f"{value:g}"

    def change(key: str, label: str) -> str:
        a, b = given[key], run[key]
        return f"{label} {number(a)}" if a == b else f"{label} {number(a)} -> {number(b)}"

    parts = [change("base_lr", "LR"), change("max_iter", "max_iter"),
             f"steps {given['steps']}" + ("" if given["steps"] == run["steps"] else f" -> {run['steps']}"),
             change("warmup_iters", "warm-up"), change("checkpoint_period", "checkpoint every")]
    return (f"{head}: {', '.join(parts)}; {summary['images']:,} images at LR {summary['lr_per_image']:.6g} per image")
