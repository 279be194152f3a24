"""A pre-trained trunk, made once and cached: the paper's protocol in miniature [ours].

The paper fine-tunes ImageNet-pretrained trunks; a CPU demo has no ImageNet. With
``model.backbone_pretrain: NAME`` a run starts instead from the trunk of another config's
training run (e.g. ``synth_r18_pretrain``: BFP Mask R-CNN on the same synthetic training split),
made once and reused by every cell, seed and later run, so that the cells of an ablation differ
only in the neck (and in what their seed draws), as in the paper.

A segmentation config (``model.task: segmentation``) takes the same trunk into its dilated ResNet
(:func:`~fptbench.engine.model.load_model`; dilation changes no key or shape, and every trunk
tensor must be in the file). Its pre-training reads the COCO annotations of the detection set, so
the synthetic segmentation labels live beside them, in the same ``data.root``
(``fptbench data synth --out D`` and ``fptbench data synth --seg --out D``: the same images).

With ``model.pretrain_heads`` the run also starts its RPN and RoI heads from that run [ours]: the
pyramid (FPN) and the transformers, the neck that the cells compare, always start fresh. On the
synthetic data, 100 fine-tuning iterations from the trunk alone reached box AP 11.3 / mask AP 7.3,
from the trunk and the heads 23.8 / 18.8 (BFP, 2 cores, 2026-11-28; the pre-training run itself:
28.7 / 21.3): a CPU budget cannot re-learn the heads as the paper's 90k iterations do.

The cache lives under the data folder, keyed by a digest of what makes the trunk::

    <data.root>/pretrained/<NAME>-<digest>/           the pre-training run (checkpoints, result.json)
    <data.root>/pretrained/<NAME>-<digest>.pth        its trunk, torchvision classification keys
    <data.root>/pretrained/<NAME>-<digest>.heads.pth  its ``rpn.*`` and ``roi_heads.*`` tensors

``digest`` = sha256 of the pre-training config (resolved; only the values that differ from the
schema's defaults and not ``data.root``, whose spelling may change, so that a new key added to
the schema with its default keeps the cache) and of the bytes of its training annotations:
another recipe or other data is another file. The file is written atomically after the run ends,
under a lock, so concurrent cells wait for one pre-training instead of repeating it; a killed
pre-training resumes from its last checkpoint.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from fptbench.trunks import heads_path, pretrain_config, pretrain_path
from fptbench.weights.load import HEAD_PREFIXES

__all__ = ["TRUNK_PREFIX", "ensure_trunk", "prepare_trunk", "trunk_state"]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """``flock`` on ``path``: held until the block ends or the process dies, whatever ends it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


TRUNK_PREFIX = "backbone.body."
"""Where a detector's ResNet trunk sits in its state_dict (torchvision's BackboneWithFPN)."""



def trunk_state(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ResNet trunk of a detector's state_dict under torchvision's classification keys
    (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...), which ``model.backbone_weights`` reads."""
    return {k[len(TRUNK_PREFIX):]: v for k, v in model_state.items() if k.startswith(TRUNK_PREFIX)}


def ensure_trunk(cfg: dict, *, log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """The cached trunk of ``cfg``'s ``model.backbone_pretrain``, pre-training it first if needed.

    Returns:
        dict: ``config`` (the pre-training config's name), ``path`` (the trunk file), ``sha256``
        (of its bytes), ``pretrained_here`` (whether this call ran the pre-training) and
        ``record`` (the pre-training run's ``result.json`` path).
    """
    from fptbench.engine.checkpoint import find_last, load_checkpoint
    from fptbench.engine.trainer import effective_config, train
    from fptbench.fileio import atomic_write

    path = pretrain_path(cfg)
    run = path.with_suffix("")
    made = False
    with _locked(path.with_suffix(".lock")):
        if not (path.exists() and heads_path(path).exists()):  # (a cache from before the heads file)
            pre = pretrain_config(cfg)
            name = cfg["model"]["backbone_pretrain"]
            log(f"pre-training the trunk once with {name} (cached as {path}; later runs reuse it)")
            t0 = time.perf_counter()
            last = find_last(run)
            max_iter = effective_config(pre, 1)["train"]["max_iter"]  # as train() runs it alone
            if last is None or load_checkpoint(last)["iteration"] < max_iter:
                train(pre, run, resume=last is not None, progress=progress)
                last = find_last(run)
            model = load_checkpoint(last)["model"]
            heads = {k: v for k, v in model.items() if k.startswith(HEAD_PREFIXES)}
            # the heads first: the trunk file is the mark that the cache is complete
            for target, tensors in ((heads_path(path), heads), (path, trunk_state(model))):
                buffer = io.BytesIO()
                torch.save(tensors, buffer)
                atomic_write(target, lambda f: f.write(buffer.getvalue()))
            log(f"pre-trained the trunk in {time.perf_counter() - t0:.0f} s: {path}")
            made = True
    return {
        "config": cfg["model"]["backbone_pretrain"],
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "pretrained_here": made,
        "record": str(run / "result.json"),
    }


def prepare_trunk(cfg: dict, *, log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any] | None:
    """Before ``train(cfg)``: the cached trunk of ``model.backbone_pretrain``, pre-trained first when a
    single process finds it missing (:func:`ensure_trunk`); None for a config without one.

    Under several processes (torchrun, an srun step) the trunk must be cached already: the
    pre-training is a single-process run of its own, not nested in a DDP job.

    Raises:
        UsageError: not pre-trained yet under several processes (naming the command that makes it).
    """
    if not cfg["model"]["backbone_pretrain"]:
        return None
    from fptbench.engine.distributed import env_world_size
    from fptbench.trunks import require_trunk

    if env_world_size() > 1:
        require_trunk(cfg, verify=False)  # cached, or one line naming `fptbench pretrain NAME`
        return None
    return ensure_trunk(cfg, log=log, progress=progress)
