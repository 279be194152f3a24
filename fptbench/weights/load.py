"""Pretrained weights from local torch files: an ImageNet trunk, or a whole detection model.

Nothing is downloaded: every loader reads one local file, checks that it fits the model key by
key and shape by shape, and only then copies the tensors in, so a file that does not fit leaves
the model untouched and raises :class:`~fptbench.errors.UsageError` with one line naming the
file and the first offending keys.

* :func:`load_backbone_weights`: a torchvision ImageNet classification checkpoint
  (``resnet50-*.pth`` as torchvision publishes it) into ``model.backbone.body``.
* :func:`load_detection_weights`: a torchvision detection checkpoint (``maskrcnn_resnet50_fpn``
  COCO ``.pth``) or one of our own training checkpoints into the whole model; the FPT neck,
  absent from torchvision's files, stays as initialised and is reported.

Both return a :class:`LoadReport`; the caller logs ``report.summary()`` and each warning.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from fptbench.errors import UsageError

__all__ = ["HEAD_PREFIXES", "LoadReport", "load_backbone_weights", "load_detection_weights", "load_heads"]

PathLike = Union[str, Path]

FPT_PREFIX = "backbone.fpt."
"""Keys of the FPT neck (:class:`~fptbench.modeling.backbone.FPTBackbone`); torchvision's files lack them."""

LATERAL_PREFIX = "backbone.laterals."
"""1x1 laterals of the ``fpt.input: lateral`` neck, which replace ``backbone.fpn.*``."""

PREDICTOR_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")
"""The only tensors whose shape depends on ``model.num_classes``."""

HEAD_PREFIXES = ("rpn.", "roi_heads.")
"""The detection heads in a torchvision detector's state_dict: everything after the neck."""

NUM_BATCHES_TRACKED = "num_batches_tracked"
"""BatchNorm2d's step counter: FrozenBatchNorm2d has none; it never changes a forward pass."""


@dataclass
class LoadReport:
    """What a loader did, key by key.

    Attributes:
        path (str): the file read.
        loaded (list[str]): model state_dict keys whose tensors were copied from the file.
        skipped (list[str]): entries of the file that were not loaded (``fc.*`` of an ImageNet
            checkpoint, predictors of another ``num_classes``, Detectron's ``fc1000_*`` and
            momentum blobs, ...).
        fresh (list[str]): model keys left as initialised (the FPT neck; predictors whose
            shapes differ from the file's).
        derived (list[str]): model keys set by a convention rather than read (Detectron's
            affine-channel BN has no statistics: ``running_mean``/``running_var``).
        warnings (list[str]): one line each, for the log.
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    derived: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line, e.g. ``loaded 320 tensors from X; 0 skipped; 212 initialised fresh (backbone.fpt.*: 212)``."""
        parts = [f"loaded {len(self.loaded)} tensors from {self.path}",
                 f"{len(self.skipped)} skipped" + _groups(self.skipped)]
        if self.fresh:
            parts.append(f"{len(self.fresh)} initialised fresh" + _groups(self.fresh))
        if self.derived:
            parts.append(f"{len(self.derived)} set by convention" + _groups(self.derived))
        if self.warnings:
            parts.append(f"{len(self.warnings)} warning{'s' if len(self.warnings) > 1 else ''}")
        return "; ".join(parts)


def _group(name: str) -> str:
    """``backbone.fpt.st.0.q.weight`` -> ``backbone.fpt.*``; ``fc.bias`` -> ``fc.*``;
    caffe2 blobs: ``conv1_w_momentum`` -> ``*_momentum``, ``fc1000_w`` -> ``fc1000_*``."""
    if "." in name:
        return ".".join(name.split(".")[:-1][:2]) + ".*"
    if name.endswith("_momentum"):
        return "*_momentum"
    return name.split("_")[0] + "_*"


def _groups(names: Sequence[str], limit: int = 4) -> str:
    """`` (fc.*: 2, ...)`` for a summary; empty for no names."""
    if not names:
        return ""
    counts = Counter(_group(n) for n in names).most_common()
    text = ", ".join(f"{g}: {c}" for g, c in counts[:limit])
    return f" ({text}{', ...' if len(counts) > limit else ''})"


def _first(names: Sequence[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def mismatch_error(
    path: PathLike,
    what: str,
    *,
    missing: Sequence[str] = (),
    unexpected: Sequence[str] = (),
    shapes: Sequence[tuple[str, Sequence[int], Sequence[int]]] = (),
    unknown: Sequence[str] = (),
) -> UsageError:
    """One-line :class:`UsageError`: ``PATH: does not fit WHAT: N missing from the file (a, b, c); ...``.

    Args:
        missing: model keys the file lacks. unexpected: file keys the model lacks.
        shapes: ``(key, file shape, model shape)``. unknown: file entries that look like
            model weights but map to nothing (Detectron trunk blobs of an unknown kind).
    """
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing from the file ({_first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} not in the model ({_first(unexpected)})")
    if shapes:
        shown = ", ".join(f"{k}: file {_shape(a)} vs model {_shape(b)}" for k, a, b in shapes[:3])
        parts.append(f"{len(shapes)} shapes differ ({shown}{', ...' if len(shapes) > 3 else ''})")
    if unknown:
        parts.append(f"{len(unknown)} unrecognised ({_first(unknown)})")
    return UsageError(f"{path}: does not fit {what}: " + "; ".join(parts))


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP/DataParallel wrapper (the model itself otherwise)."""
    while isinstance(model, (DistributedDataParallel, DataParallel)):
        model = model.module
    return model


def find_trunk(model: nn.Module) -> tuple[nn.Module, str]:
    """The ResNet trunk and its state_dict prefix.

    Args:
        model (nn.Module): a detector (``model.backbone.body``, prefix ``backbone.body.``), a
            backbone (``.body``, prefix ``body.``) or the trunk itself (the ``IntermediateLayerGetter``
            over a ResNet, without ``fc``; prefix ``""``); DDP is unwrapped.
    """
    model = unwrap(model)
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and isinstance(getattr(backbone, "body", None), nn.Module):
        return backbone.body, "backbone.body."
    if isinstance(getattr(model, "body", None), nn.Module):
        return model.body, "body."
    if isinstance(getattr(model, "layer1", None), nn.Module):
        return model, ""
    raise TypeError(f"{type(model).__name__} has no ResNet trunk (expected model.backbone.body)")


def describe_trunk(trunk: nn.Module) -> str:
    """``Bottleneck ResNet, blocks [3, 4, 6, 3]`` (ResNet-50), for error messages."""
    stages = [getattr(trunk, f"layer{i}", None) for i in range(1, 5)]
    if not all(isinstance(s, nn.Sequential) and len(s) for s in stages):
        return type(trunk).__name__
    return f"{type(stages[0][0]).__name__} ResNet, blocks {[len(s) for s in stages]}"


def pixel_convention(model: nn.Module) -> Optional[str]:
    """``"caffe"`` if the model's ``GeneralizedRCNNTransform`` subtracts a 0..255 mean with no
    std (Detectron), ``"torchvision"`` otherwise, None if the model has no transform."""
    transform = getattr(unwrap(model), "transform", None)
    mean, std = getattr(transform, "image_mean", None), getattr(transform, "image_std", None)
    if mean is None or std is None:
        return None
    return "caffe" if all(float(s) == 1.0 for s in std) and max(float(m) for m in mean) > 1.0 else "torchvision"


def pixel_warning(model: nn.Module, *, expected: str, source: str) -> Optional[str]:
    """A warning line when ``source`` weights meet a model whose pixel convention is not ``expected``."""
    actual = pixel_convention(model)
    if actual is None or actual == expected:
        return None
    transform = unwrap(model).transform
    return (f"{source} expect model.pixel {expected}, but the model normalises with mean "
            f"{list(transform.image_mean)} and std {list(transform.image_std)} ({actual})")


def norm_warning(trunk: nn.Module) -> Optional[str]:
    """A warning line when pretrained statistics go into a trunk that will re-estimate them."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in trunk.modules()):
        return ("the trunk normalises with nn.BatchNorm2d (model.backbone_norm bn): in training its "
                "pretrained statistics are replaced by those of small training batches; torchvision "
                "freezes them with pretrained weights (model.backbone_norm frozen_bn)")
    return None


def read_state_dict(path: PathLike, *, what: str, weights_only: bool = True) -> dict[str, Tensor]:
    """Read a state_dict from a torch file.

    Accepts a plain state_dict or a dict holding one under ``"model"`` (our checkpoints,
    torchvision's references) or ``"state_dict"``; strips DDP's ``module.`` prefix.

    Args:
        path: the file.
        what (str): what the file should be, for the error message.
        weights_only (bool): passed to ``torch.load``: True refuses pickled code; a checkpoint
            whose non-model entries are not plain tensors/containers needs False (trusted files only).

    Raises:
        UsageError: missing or unreadable file, or not a name -> tensor mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file (expected {what})")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # torch raises many types for a bad file; all mean the same to the user
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        raise UsageError(f"{path}: cannot be read by torch.load ({type(err).__name__}: {reason}); "
                         f"expected {what}") from None
    if isinstance(obj, Mapping):
        for entry in ("model", "state_dict"):
            if isinstance(obj.get(entry), Mapping):
                obj = obj[entry]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise UsageError(f"{path}: holds a {type(obj).__name__}, expected {what} (a non-empty name -> tensor "
                         "dict, or a dict with one under 'model')")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise UsageError(f"{path}: entries that are not named tensors ({_first([str(b) for b in bad])}); "
                         f"expected {what}")
    if all(k.startswith("module.") for k in obj):
        return {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


@torch.no_grad()
def copy_into(module: nn.Module, tensors: Mapping[str, Tensor]) -> None:
    """Copy ``tensors`` into ``module``'s parameters and buffers of the same names (shapes checked
    by the caller); dtype and device are the module's."""
    target = module.state_dict(keep_vars=True)
    for key, value in tensors.items():
        target[key].data.copy_(value)


def load_backbone_weights(model: nn.Module, path: PathLike) -> LoadReport:
    """Load a torchvision ImageNet classification checkpoint into the detector's ResNet trunk.

    The file is a state_dict of ``torchvision.models.resnet18/34/50/101/152`` or
    ``resnext101_*`` as torchvision publishes it (``conv1.weight``, ``bn1.*``, ``layer1..4.*``,
    ``fc.*``), or ``{"model": state_dict}``. ``fc.*`` is skipped (the detector has no
    classifier); every other key must match the trunk in name and shape. torchvision's weights
    expect ``model.pixel: torchvision`` (RGB in [0, 1], ImageNet mean/std).

    Args:
        model (nn.Module): a detector from ``build_model`` (or its backbone, or DDP of it).
        path: the ``.pth`` file.

    Returns:
        LoadReport: ``loaded`` keys carry the model prefix (``backbone.body.conv1.weight``).

    Raises:
        UsageError: unreadable file, or keys/shapes that do not fit (e.g. a ResNet-101 file
            into a ResNet-50 model); the model is left untouched.
    """
    trunk, prefix = find_trunk(model)
    state = read_state_dict(path, what="a torchvision ImageNet classification state_dict")
    target = trunk.state_dict()
    report = LoadReport(str(path))
    load: dict[str, Tensor] = {}
    unexpected, shapes = [], []
    for key, value in state.items():
        if key.startswith("fc.") or (key.endswith(NUM_BATCHES_TRACKED) and key not in target):
            report.skipped.append(key)
        elif key not in target:
            unexpected.append(key)
        elif value.shape != target[key].shape:
            shapes.append((key, tuple(value.shape), tuple(target[key].shape)))
        else:
            load[key] = value
    missing = [k for k in target if k not in state and not k.endswith(NUM_BATCHES_TRACKED)]
    if missing or unexpected or shapes:
        raise mismatch_error(path, f"the model's trunk ({describe_trunk(trunk)})", missing=missing,
                             unexpected=unexpected, shapes=shapes)
    copy_into(trunk, load)
    report.loaded = [prefix + k for k in load]
    report.warnings = [w for w in (norm_warning(trunk),
                                   pixel_warning(model, expected="torchvision", source="torchvision ImageNet weights"))
                       if w]
    return report


def load_detection_weights(model: nn.Module, path: PathLike, *, weights_only: bool = True) -> LoadReport:
    """Load a detection checkpoint into the whole model.

    The file is torchvision's (``maskrcnn_resnet50_fpn`` COCO ``.pth``: a state_dict) or one of
    ours (``{"model": state_dict, ...}``, possibly saved from DDP with ``module.`` keys).

    * ``backbone.fpt.*`` keys absent from the file stay as initialised (``report.fresh``): the
      FPT neck is new [paper]; torchvision's BFP weights cover the rest of an FPT model.
    * With ``fpt.input: lateral`` the model has ``backbone.laterals.*`` instead of
      ``backbone.fpn.*``: the file's FPN is skipped and the laterals stay fresh [ours].
    * Predictor tensors whose shapes differ (another ``num_classes``:
      ``roi_heads.box_predictor.*``, ``roi_heads.mask_predictor.mask_fcn_logits.*``) are
      skipped and stay fresh, with a warning.
    * Outside the fresh neck, ``num_batches_tracked`` counters present on one side only are
      ignored (FrozenBatchNorm2d has none; they never change an eval-mode forward pass).
    * Anything else missing, unexpected or of another shape is an error.

    Args:
        model (nn.Module): a detector from ``build_model`` (or DDP of it).
        path: the checkpoint file.
        weights_only (bool): see :func:`read_state_dict`.

    Raises:
        UsageError: the file does not fit; the model is left untouched.
    """
    module = unwrap(model)
    state = read_state_dict(path, what="a detection checkpoint (state_dict or {'model': state_dict})",
                            weights_only=weights_only)
    target = module.state_dict()
    has_fpn = any(k.startswith("backbone.fpn.") for k in target)
    lateral_neck = not has_fpn and any(k.startswith(LATERAL_PREFIX) for k in target)
    file_has_fpn = any(k.startswith("backbone.fpn.") for k in state)
    report = LoadReport(str(path))
    load: dict[str, Tensor] = {}
    unexpected, shapes, predictors = [], [], []
    for key, value in state.items():
        if key in target:
            if value.shape == target[key].shape:
                load[key] = value
            elif key.startswith(PREDICTOR_PREFIXES):
                predictors.append((key, tuple(value.shape), tuple(target[key].shape)))
            else:
                shapes.append((key, tuple(value.shape), tuple(target[key].shape)))
        elif key.endswith(NUM_BATCHES_TRACKED) or (lateral_neck and key.startswith("backbone.fpn.")):
            report.skipped.append(key)
        else:
            unexpected.append(key)
    missing = []
    for key in target:
        if key in state:
            continue
        if key.startswith(FPT_PREFIX) or (lateral_neck and file_has_fpn and key.startswith(LATERAL_PREFIX)):
            report.fresh.append(key)
        elif not key.endswith(NUM_BATCHES_TRACKED):
            missing.append(key)
    if missing or unexpected or shapes:
        raise mismatch_error(path, f"the {type(module).__name__} model", missing=missing, unexpected=unexpected,
                             shapes=shapes)
    copy_into(module, load)
    report.loaded = list(load)
    if predictors:
        report.skipped += [k for k, _, _ in predictors]
        report.fresh += [k for k, _, _ in predictors]
        key, theirs, ours = predictors[0]
        report.warnings.append(f"{len(predictors)} predictor tensors of another num_classes left as initialised "
                               f"(e.g. {key}: file {_shape(theirs)} vs model {_shape(ours)})")
    if lateral_neck and file_has_fpn:
        report.warnings.append("the model's FPT transforms 1x1 laterals (fpt.input lateral): the file's backbone.fpn.* "
                               "is skipped and backbone.laterals.* left as initialised")
    return report


def load_heads(model: nn.Module, path: PathLike) -> LoadReport:
    """Copy a heads file (``rpn.*``, ``roi_heads.*``: the cached heads of a ``model.backbone_pretrain``
    run, :func:`fptbench.engine.pretrain.ensure_trunk`) into a detector; every tensor of the model's
    heads must be in the file with its shape.

    Raises:
        UsageError: unreadable file, or heads that do not fit (the model is then left as built).
    """
    module = unwrap(model)
    state = read_state_dict(path, what="a pre-trained heads file (rpn.*, roi_heads.*)")
    target = {k: v for k, v in module.state_dict().items() if k.startswith(HEAD_PREFIXES)}
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in target.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise mismatch_error(path, "the model's RPN and RoI heads", missing=missing, unexpected=unexpected,
                             shapes=shapes)
    copy_into(module, state)
    return LoadReport(str(path), loaded=list(state))
