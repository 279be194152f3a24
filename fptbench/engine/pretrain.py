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

from fptbench.errors import UsageError

__all__ = ["HEAD_PREFIXES", "PRETRAINED_DIR", "TRUNK_PREFIX", "cached_trunk", "ensure_trunk", "heads_path",
           "load_heads", "pretrain_config", "trunk_path", "trunk_state"]

PRETRAINED_DIR = "pretrained"
"""Sub-folder of ``data.root`` that holds pre-trained trunks and their runs."""


def pretrain_config(cfg: dict) -> dict:
    """The resolved config of ``cfg``'s ``model.backbone_pretrain``, on ``cfg``'s data and device.

    Raises:
        UsageError: the name is unknown, its config invalid, or its trunk is another network.
    """
    from fptbench.config import load_config

    name = cfg["model"]["backbone_pretrain"]
    pre = load_config(name, [("data.root", cfg["data"]["root"]), ("device", cfg["device"])])
    if pre["model"]["backbone_pretrain"]:
        raise UsageError(f"model.backbone_pretrain: {name} itself sets model.backbone_pretrain; "
                         f"a pre-training must start from scratch or from model.backbone_weights")
    keys = ("backbone", "backbone_norm", "stride_in_1x1", "pixel")
    if cfg["model"]["pretrain_heads"]:  # the heads' tensors must fit, and see what they were trained on
        keys += ("head", "num_classes", "anchor_sizes", "fpn_channels", "box_head_dim", "mask_head_channels")
    for key in keys:
        if pre["model"][key] != cfg["model"][key]:
            raise UsageError(f"model.backbone_pretrain: {name} has model.{key}={pre['model'][key]}, "
                             f"this run model.{key}={cfg['model'][key]}: its weights would not fit")
    return pre


def _annotations(cfg: dict) -> Path:
    from fptbench.data.catalog import resolve_split

    return Path(cfg["data"]["root"]) / resolve_split(cfg["data"]["train"])[0]


def _recipe(pre: dict) -> dict[str, Any]:
    """The values of a resolved config that differ from the schema defaults, by dotted key, but
    ``data.root``: the cache lives in that folder, and its spelling (relative, absolute) is no
    part of what the trunk learnt; the training annotations' bytes are digested instead."""
    from fptbench.config import flat_defaults

    defaults = flat_defaults()
    flat = {f"{section}.{key}" if isinstance(values, dict) else section: value
            for section, values in pre.items()
            for key, value in (values.items() if isinstance(values, dict) else [(None, values)])}
    return {key: value for key, value in flat.items() if value != defaults.get(key) and key != "data.root"}


def trunk_path(cfg: dict) -> Path:
    """Where the trunk of ``cfg``'s ``model.backbone_pretrain`` is cached (it may not exist yet).

    Raises:
        UsageError: as :func:`pretrain_config`, or the training annotations are missing.
    """
    from fptbench.config import config_hash

    pre = pretrain_config(cfg)
    annotations = _annotations(pre)
    try:
        data = hashlib.sha256(annotations.read_bytes()).hexdigest()
    except OSError as err:
        root = Path(cfg["data"]["root"])
        hint = ""
        if (root / "classes.json").exists():  # the synthetic segmentation set (write_synth_seg), not its COCO files
            hint = (f"; this folder holds the synthetic segmentation labels: write the detection set's annotations "
                    f"beside them with `fptbench data synth --out {root}` (the --seg set's --train/--val/--size/--seed)")
        raise UsageError(f"{annotations}: cannot read the pre-training annotations: {err.strerror}{hint}") from None
    digest = hashlib.sha256(f"{config_hash(_recipe(pre))}:{data}".encode()).hexdigest()[:12]
    name = Path(cfg["model"]["backbone_pretrain"]).stem
    return Path(cfg["data"]["root"]) / PRETRAINED_DIR / f"{name}-{digest}.pth"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """``flock`` on ``path``: held until the block ends or the process dies, whatever ends it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


TRUNK_PREFIX = "backbone.body."
"""Where a detector's ResNet trunk sits in its state_dict (torchvision's BackboneWithFPN)."""

HEAD_PREFIXES = ("rpn.", "roi_heads.")
"""The detection heads in a torchvision detector's state_dict: everything after the neck."""


def heads_path(trunk: Path) -> Path:
    """The heads file beside a cached trunk file."""
    return trunk.with_suffix(".heads.pth")


def cached_trunk(cfg: dict) -> Path:
    """The cached trunk file of ``cfg``'s ``model.backbone_pretrain``, which must exist.

    Raises:
        UsageError: not pre-trained yet (naming the command that makes it).
    """
    path = trunk_path(cfg)
    if not path.exists():
        name = cfg["model"]["backbone_pretrain"]
        raise UsageError(f"{path}: the trunk of model.backbone_pretrain={name} is not pre-trained yet; make it with "
                         f"`fptbench pretrain {name}` (--data-root {cfg['data']['root']})")
    return path


class _HeadsReport:
    def __init__(self, path: Path, loaded: list[str]) -> None:
        self.path, self.loaded = path, loaded

    def summary(self) -> str:
        return f"{self.path}: loaded {len(self.loaded)} tensors of the pre-trained RPN and RoI heads"


def load_heads(model: torch.nn.Module, path: str | Path) -> _HeadsReport:
    """Copy a cached heads file (``rpn.*``, ``roi_heads.*``) into a detector; every tensor of the
    model's heads must be in the file with its shape.

    Raises:
        UsageError: unreadable file, or heads that do not fit (the model is then left as built).
    """
    from fptbench.weights.load import copy_into, mismatch_error, read_state_dict

    state = read_state_dict(path, what="a pre-trained heads file (rpn.*, roi_heads.*)")
    target = {k: v for k, v in model.state_dict().items() if k.startswith(HEAD_PREFIXES)}
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in target.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise mismatch_error(path, "the model's RPN and RoI heads", missing=missing, unexpected=unexpected,
                             shapes=shapes)
    copy_into(model, state)
    return _HeadsReport(Path(path), list(state))


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
    from fptbench.engine.trainer import train
    from fptbench.fileio import atomic_write

    path = trunk_path(cfg)
    run = path.with_suffix("")
    made = False
    with _locked(path.with_suffix(".lock")):
        if not (path.exists() and heads_path(path).exists()):  # (a cache from before the heads file)
            pre = pretrain_config(cfg)
            name = cfg["model"]["backbone_pretrain"]
            log(f"pre-training the trunk once with {name} (cached as {path}; later runs reuse it)")
            t0 = time.perf_counter()
            last = find_last(run)
            if last is None or load_checkpoint(last)["iteration"] < pre["train"]["max_iter"]:
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
