"""The seed's Detectron (caffe2) ResNet weights: ``.pkl`` blobs mapped onto torchvision's trunk.

The seed (Detectron.pytorch) initialises its trunk from Detectron's ImageNet ``R-50.pkl`` /
``R-101.pkl`` / ``X-101-*.pkl``: a pickle of ``{"blobs": {name: np.ndarray}}`` (some files hold
the blobs dict directly; Python 2 pickles need ``encoding="latin1"``). caffe2 names map to
torchvision's ResNet keys (stage ``resN`` is ``layer{N-1}``, ``branch2a/b/c`` the bottleneck's
``conv1/2/3``, ``branch1`` the projection shortcut)::

    conv1_w                    -> conv1.weight
    res_conv1_bn_{s,b}         -> bn1.{weight,bias}
    res3_0_branch2b_w          -> layer2.0.conv2.weight
    res3_0_branch2b_bn_{s,b}   -> layer2.0.bn2.{weight,bias}
    res3_0_branch1_w           -> layer2.0.downsample.0.weight
    res3_0_branch1_bn_{s,b}    -> layer2.0.downsample.1.{weight,bias}

``fc1000_*``, ``*_momentum`` and every other non-trunk blob (a detection model's FPN, RPN and
heads) are skipped and counted.

Conventions that come with these weights:

* **Affine channel, not batch norm.** Detectron's trunk "BN" is ``y = s * x + b`` with no
  statistics. torchvision's ``FrozenBatchNorm2d`` computes ``x * (w * rsqrt(var + eps)) +
  (b - mean * w * rsqrt(var + eps))`` with ``eps = 1e-5``; we set ``running_mean = 0`` and
  ``running_var = 1 - eps`` (rounded in the buffer's dtype and checked) so that
  ``rsqrt(var + eps)`` is exactly 1 and the layer computes exactly ``s * x + b`` [ours]. Keeping
  the statistics in the buffers (rather than setting ``eps = 0``, which is not saved in a
  state_dict) keeps the identity exact across our own checkpoints. Use
  ``model.backbone_norm: frozen_bn``; a trainable ``nn.BatchNorm2d`` gets a warning.
* **Caffe pixels.** The weights expect BGR images in [0, 255] minus Detectron's mean
  (102.98, 115.95, 122.77), no std: ``model.pixel: caffe``. ``conv1_w``'s input channels are
  in BGR order and are loaded as they are. A model whose transform is not caffe-style gets a
  warning in the report.
* **Bottleneck trunks only** (ResNet-50/101/152, ResNeXt-101): a basic-block trunk
  (ResNet-18/34) is an error. Detectron's MSRA ResNet-50/101 put the stride of a stage's first
  block in the 1x1 conv (``branch2a``); torchvision's ``Bottleneck`` puts it in the 3x3: the
  tensors have the same shapes and load exactly; ``model.stride_in_1x1: true`` builds the trunk
  with Detectron's placement (``modeling.backbone.place_stride_in_1x1``), and without it the
  report warns (ResNeXt, strided in the 3x3 in Detectron too, does not get the warning).
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from fptbench.weights.load import (
    NUM_BATCHES_TRACKED,
    LoadReport,
    PathLike,
    copy_into,
    describe_trunk,
    find_trunk,
    mismatch_error,
    norm_warning,
    pixel_warning,
)
from fptbench.errors import UsageError

__all__ = ["caffe2_to_torchvision", "load_detectron_weights", "read_detectron_blobs"]

_STEM = {"conv1_w": "conv1.weight", "res_conv1_bn_s": "bn1.weight", "res_conv1_bn_b": "bn1.bias"}
_BLOCK = re.compile(r"^res(?P<stage>[2-5])_(?P<block>\d+)_branch(?P<branch>1|2[abc])_(?P<kind>w|bn_s|bn_b)$")
_BRANCH2 = {"2a": "1", "2b": "2", "2c": "3"}  # branch2a/b/c -> conv1/bn1, conv2/bn2, conv3/bn3
_PARAM = {"s": "weight", "b": "bias"}
# Blobs in the trunk's namespace: one of these that maps to nothing (e.g. a conv bias
# "res2_0_branch2a_b", or BN statistics "..._bn_rm") cannot be placed and is an error, not a skip.
_TRUNK_LIKE = re.compile(r"^(conv1_|res_conv1_|res[2-5]_\d+_)")

# What a Detectron .pkl may need to unpickle: numpy arrays (numpy 1 and 2 module names) and dicts.
# Anything else (a class, a function) is refused: the file is data, not code [ours].
_ALLOWED_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how a Python 3 protocol-2 pickle spells bytes
}


def caffe2_to_torchvision(name: str) -> Optional[str]:
    """torchvision ResNet key of a Detectron trunk blob, None for any other blob.

    >>> caffe2_to_torchvision("res4_5_branch2c_bn_s")
    'layer3.5.bn3.weight'
    """
    if name in _STEM:
        return _STEM[name]
    match = _BLOCK.match(name)
    if match is None:
        return None
    stage, block, branch, kind = match["stage"], match["block"], match["branch"], match["kind"]
    prefix = f"layer{int(stage) - 1}.{int(block)}."
    if branch == "1":
        return prefix + ("downsample.0.weight" if kind == "w" else f"downsample.1.{_PARAM[kind[-1]]}")
    n = _BRANCH2[branch]
    return prefix + (f"conv{n}.weight" if kind == "w" else f"bn{n}.{_PARAM[kind[-1]]}")


class _BlobUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in dicts and nothing else: a .pkl from the web runs no code [ours]."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (only numpy arrays are expected)")
        with warnings.catch_warnings():  # numpy 2 warns on its numpy.core alias, which py2 pickles name
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def read_detectron_blobs(path: PathLike) -> dict[str, Any]:
    """The blobs of a Detectron ``.pkl``: ``{"blobs": {...}}`` or the blobs dict itself.

    Raises:
        UsageError: missing file, not a pickle, or no name -> blob dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file (expected a Detectron .pkl of ResNet blobs)")
    try:
        with path.open("rb") as f:
            obj = _BlobUnpickler(f, encoding="latin1").load()
    except Exception as err:  # pickle raises many types for a bad file
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        raise UsageError(f"{path}: cannot be read as a Detectron .pkl ({type(err).__name__}: {reason})") from None
    if isinstance(obj, dict) and isinstance(obj.get("blobs"), dict):
        obj = obj["blobs"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        raise UsageError(f"{path}: holds a {type(obj).__name__}, expected a Detectron .pkl "
                         "({'blobs': {name: array}} or {name: array})")
    return obj


def unit_variance(eps: float, dtype: torch.dtype) -> float:
    """A variance ``v`` of ``dtype`` with ``rsqrt(v + eps) == 1`` exactly (``1 - eps`` when that rounds right)."""
    v = torch.tensor(1.0 - eps, dtype=dtype)
    up, down = torch.nextafter(v, torch.tensor(2.0, dtype=dtype)), torch.nextafter(v, torch.tensor(0.0, dtype=dtype))
    for candidate in (v, up, down):
        if (candidate + eps).rsqrt().item() == 1.0:
            return candidate.item()
    raise ValueError(f"no {dtype} variance near 1 - {eps} gives rsqrt(var + eps) == 1")


@torch.no_grad()
def _set_affine_statistics(trunk: nn.Module) -> list[str]:
    """Zero mean and unit (minus eps) variance in every BN of ``trunk``; returns the keys set."""
    keys = []
    for name, module in trunk.named_modules():
        mean, var = getattr(module, "running_mean", None), getattr(module, "running_var", None)
        if isinstance(mean, Tensor) and isinstance(var, Tensor):
            mean.zero_()
            var.fill_(unit_variance(module.eps, var.dtype))
            keys += [f"{name}.running_mean", f"{name}.running_var"]
    return keys


def load_detectron_weights(model: nn.Module, path: PathLike) -> LoadReport:
    """Load the seed's Detectron ResNet ``.pkl`` into the detector's trunk (see the module docstring).

    Args:
        model (nn.Module): a detector from ``build_model`` with a bottleneck trunk (ResNet-50/101/
            152, ResNeXt-101), ideally ``model.backbone_norm: frozen_bn`` and ``model.pixel: caffe``.
        path: the ``.pkl`` file.

    Returns:
        LoadReport: ``loaded``: trunk keys read from blobs (``backbone.body.layer1.0.conv1.weight``);
        ``derived``: BN ``running_mean``/``running_var`` set to the affine identity; ``skipped``:
        blob names not loaded (``fc1000_*``, momentum, non-trunk); ``warnings``: pixel convention,
        trainable BN, stride placement.

    Raises:
        UsageError: unreadable file, a basic-block trunk, or blobs that do not fit the trunk
            (e.g. an R-101 file into a ResNet-50 model); the model is left untouched.
    """
    trunk, prefix = find_trunk(model)
    if isinstance(getattr(trunk, "layer1", [None])[0], BasicBlock):
        raise UsageError(f"{path}: Detectron ResNet weights fit bottleneck trunks only (resnet50/101/152, "
                         f"resnext101_*); the model's trunk is a {describe_trunk(trunk)} (resnet18/34)")
    blobs = read_detectron_blobs(path)
    target = trunk.state_dict()
    report = LoadReport(str(path))
    load: dict[str, Tensor] = {}
    unexpected, shapes, unknown = [], [], []
    placed = set()  # trunk keys some blob maps to, loadable or not
    for name, blob in blobs.items():
        key = caffe2_to_torchvision(name)
        placed.add(key)
        if key is None:
            (unknown if _TRUNK_LIKE.match(name) and not name.endswith("_momentum") else report.skipped).append(name)
        elif key not in target:
            unexpected.append(f"{name} ({key})")
        elif not isinstance(blob, np.ndarray) or blob.dtype.kind != "f":
            unknown.append(f"{name} (a {type(blob).__name__}, not a float array)")
        elif tuple(blob.shape) != tuple(target[key].shape):
            shapes.append((name, tuple(blob.shape), tuple(target[key].shape)))
        else:
            load[key] = torch.from_numpy(np.ascontiguousarray(blob))
    statistics = ("running_mean", "running_var", NUM_BATCHES_TRACKED)
    missing = [k for k in target if k not in placed and not k.endswith(statistics)]
    if missing or unexpected or shapes or unknown:
        raise mismatch_error(path, f"the model's trunk ({describe_trunk(trunk)})", missing=missing,
                             unexpected=unexpected, shapes=shapes, unknown=unknown)
    copy_into(trunk, load)
    report.loaded = [prefix + k for k in load]
    report.derived = [prefix + k for k in _set_affine_statistics(trunk)]
    report.warnings = [w for w in (pixel_warning(model, expected="caffe", source="Detectron weights"),
                                   norm_warning(trunk)) if w]
    first = trunk.layer2[0]
    if getattr(first, "conv2", None) is not None and first.conv2.groups == 1 and first.conv1.stride == (1, 1):
        report.warnings.append("Detectron's ResNet-50/101 (MSRA) stride a stage's first block in its 1x1 conv; "
                               "this trunk strides in the 3x3 (torchvision's Bottleneck): the weights load "
                               "exactly but compute a different function; set model.stride_in_1x1: true")
    return report
