"""Pixel-level models: a dilated ResNet, a feature pyramid (UFP [paper] or FPN), FPT, a segmentation head.

The paper's pixel-level setup [paper] (spec "Heads and training setups", issue 14): a dilated
ResNet-101 trunk; an "unscathed" feature pyramid (UFP) of global convolutional network blocks
(Peng et al. 2017, "Large Kernel Matters") with kernel sizes 1, 7, 15 and 31, so that all its
levels share one resolution; FPT on it with the locality-constrained GT (LGT, ``gt.window``) in
place of the global GT; a segmentation head in the style of DeepLab's ASPP. The parts that
torchvision has are torchvision's: the ResNets and their ``replace_stride_with_dilation``,
``IntermediateLayerGetter``, ``FeaturePyramidNetwork``, ``DeepLabHead`` and ``FCNHead``; the
model's ``forward`` returns what torchvision's segmentation models return.

Ours [ours], where the paper is silent: which trunk stage feeds the UFP (C5, see
:class:`UnscathedFeaturePyramid`); how the levels reach the head (concatenated at the trunk's
output stride, :class:`SegmentationModel`); dilated ResNet-18/34 (:func:`dilate_basic_blocks`);
the ASPP rates (:data:`ASPP_RATES`); the ``fpn`` pyramid as an alternative to the UFP.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.ops import FeaturePyramidNetwork

from fptbench.modeling.backbone import (
    NORM_LAYERS,
    OUT_CHANNELS,
    RESNETS,
    RETURN_LAYERS,
    cfg_get,
    freeze_layers,
    place_stride_in_1x1,
    stage_channels,
)
from fptbench.modeling.fpt import FeaturePyramidTransformer

__all__ = [
    "ASPP_RATES",
    "DILATE_STAGES",
    "HEADS",
    "PYRAMIDS",
    "UFP_KERNELS",
    "GlobalConvBlock",
    "SegmentationModel",
    "UnscathedFeaturePyramid",
    "build_segmentation_model",
    "dilate_basic_blocks",
    "dilated_resnet",
    "pyramid_channels",
    "pyramid_strides",
    "segmentation_model",
]

# seg.output_stride -> torchvision's replace_stride_with_dilation for layer2..layer4
DILATE_STAGES: dict[int, tuple[bool, bool, bool]] = {8: (False, True, True), 16: (False, False, True)}

# seg.output_stride -> ASPP rates, DeepLabv3's (Chen et al. 2017: (6, 12, 18) at output stride
# 16, doubled at 8; torchvision's DeepLabHead default is the OS-8 set) [ours: the paper gives none]
ASPP_RATES: dict[int, tuple[int, int, int]] = {8: (12, 24, 36), 16: (6, 12, 18)}

PYRAMIDS = ("ufp", "fpn")

# seg.head: torchvision's DeepLabHead (ASPP) or FCNHead
HEADS = ("deeplab", "fcn")

UFP_KERNELS = (1, 7, 15, 31)
"""The UFP's GCN kernel sizes, finest level first [paper]."""

# RETURN_LAYERS' names of C4 (the auxiliary head's input) and C5 (the UFP's input)
C4, C5 = RETURN_LAYERS["layer3"], RETURN_LAYERS["layer4"]


def pyramid_channels(cfg: Mapping[str, Any]) -> int:
    """The pyramid width d: ``model.fpn_channels`` if the config has it, else 256 [paper]
    (:data:`~fptbench.modeling.backbone.OUT_CHANNELS`, what the detectors use)."""
    return cfg.get("model", {}).get("fpn_channels", OUT_CHANNELS)


def dilate_basic_blocks(body: resnet.ResNet, dilate: Sequence[bool]) -> None:
    """Replace the stride of layer2..layer4 with dilation where ``dilate`` says so, in a
    BasicBlock ResNet (ResNet-18/34), in place [ours].

    torchvision's ``replace_stride_with_dilation`` does this for Bottleneck trunks but refuses
    BasicBlock. This is the same à trous conversion: the stage's stride-2 convs (``conv1`` of
    its first block and the shortcut's 1x1) get stride 1; that ``conv1`` keeps the dilation in
    force before the stage, as torchvision gives the first Bottleneck of a dilated stage its
    ``previous_dilation``; every later 3x3 conv is dilated by the product of the strides removed
    so far (padding = dilation, so sizes are kept). mmseg's ResNet (``BasicBlock``) differs: it
    leaves every ``conv2`` undilated. Only attributes change, so the state_dict keys and shapes
    stay torchvision's.
    """
    dilation = 1
    for stage, dilated in zip((body.layer2, body.layer3, body.layer4), dilate):
        if not dilated:
            continue
        first = stage[0]
        if not isinstance(first, resnet.BasicBlock):
            raise ValueError("dilate_basic_blocks: a BasicBlock ResNet (resnet18, resnet34) is needed")
        first.stride = 1
        first.conv1.stride = (1, 1)
        first.downsample[0].stride = (1, 1)
        _dilate(first.conv1, dilation)
        dilation *= 2
        _dilate(first.conv2, dilation)
        for block in stage[1:]:
            _dilate(block.conv1, dilation)
            _dilate(block.conv2, dilation)


def _dilate(conv: nn.Conv2d, dilation: int) -> None:
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation, dilation)


def dilated_resnet(
    *, name: str, output_stride: int = 8, norm: str = "bn", stride_in_1x1: bool = False
) -> resnet.ResNet:
    """A torchvision ResNet/ResNeXt (random weights) whose C5 has stride ``output_stride``.

    Bottleneck trunks are built by torchvision with ``replace_stride_with_dilation``
    (:data:`DILATE_STAGES`); torchvision refuses dilation in BasicBlock, so ResNet-18/34 are built
    undilated and converted by :func:`dilate_basic_blocks` [ours]. C2..C5 then have strides
    (4, 8, 8, 8) at output stride 8 and (4, 8, 16, 16) at 16 (:func:`pyramid_strides`). The
    state_dict keys are torchvision's classification keys in both cases, so an ImageNet
    checkpoint loads.

    Args:
        name (str): a key of :data:`~fptbench.modeling.backbone.RESNETS`.
        output_stride (int): 8 or 16.
        norm (str): a key of :data:`~fptbench.modeling.backbone.NORM_LAYERS`.
        stride_in_1x1 (bool): see :func:`~fptbench.modeling.backbone.place_stride_in_1x1`
            (only layer2 still has a stride to move at output stride 8).
    """
    if name not in RESNETS:
        raise ValueError(f"name: {name!r} is not one of {', '.join(RESNETS)}")
    if norm not in NORM_LAYERS:
        raise ValueError(f"norm: {norm!r} is not one of {', '.join(NORM_LAYERS)}")
    if output_stride not in DILATE_STAGES:
        raise ValueError(f"output_stride: {output_stride!r} is not one of {', '.join(map(str, DILATE_STAGES))}")
    dilate = DILATE_STAGES[output_stride]
    try:
        body = RESNETS[name](weights=None, norm_layer=NORM_LAYERS[norm], replace_stride_with_dilation=list(dilate))
    except NotImplementedError:  # torchvision's BasicBlock: "Dilation > 1 not supported in BasicBlock"
        body = RESNETS[name](weights=None, norm_layer=NORM_LAYERS[norm])
        dilate_basic_blocks(body, dilate)
    if stride_in_1x1:
        place_stride_in_1x1(body)
    return body


def pyramid_strides(*, pyramid: str, output_stride: int, num_levels: int) -> tuple[int, ...]:
    """Stride of each pyramid level with respect to the image, finest first.

    ``"ufp"``: every level at ``output_stride``. ``"fpn"``: those of C2..C5 of the dilated trunk,
    (4, 8, 8, 8) at output stride 8 and (4, 8, 16, 16) at 16 (``num_levels`` must be 4).
    """
    if pyramid not in PYRAMIDS:
        raise ValueError(f"pyramid: {pyramid!r} is not one of {', '.join(PYRAMIDS)}")
    if pyramid == "ufp":
        return (output_stride,) * num_levels
    if num_levels != len(RETURN_LAYERS):
        raise ValueError(f"pyramid_strides: the fpn pyramid has {len(RETURN_LAYERS)} levels, got {num_levels}")
    strides = [4]
    for dilated in DILATE_STAGES[output_stride]:
        strides.append(strides[-1] * (1 if dilated else 2))
    return tuple(strides)


class _PaddedConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and keys) that zero-pads explicitly on the CPU: torch 2.14.1's
    oneDNN backward of a (k x 1) conv with padding k // 2 corrupts the heap and aborts the
    process for k >= 23 on maps of 10 to (k + 1) / 2 pixels (the paper's 31-tap GCN convs on
    crops of about 73 to 128 px); an unpadded conv of the padded map gives the same numbers and
    does not (tests/modeling/test_segmentation.py). On other devices: nn.Conv2d itself."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or self.padding == (0, 0):
            return super().forward(x)
        ph, pw = self.padding
        return F.conv2d(F.pad(x, (pw, pw, ph, ph)), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class GlobalConvBlock(nn.Module):
    """Global convolutional network (GCN) block, Peng et al. 2017 ("Large Kernel Matters", Fig. 2).

    GCN(x) = Conv1xk(Convkx1(x)) + Convkx1(Conv1xk(x)): a k x k receptive field with 2 x 2k
    weights per channel pair. As in Peng et al., no norm or nonlinearity inside or after the
    block; the first conv of each branch maps ``in_channels`` to ``out_channels``, the second
    keeps it. The convs have biases [ours: Peng et al. do not say].

    Args:
        in_channels, out_channels: C_in and C_out.
        kernel_size: k, odd (k = 1 is two 1x1 convs per branch, a linear map).
    Shapes:
        x (Tensor): (B, C_in, H, W) -> (B, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"GlobalConvBlock: kernel_size must be odd, got {kernel_size}")
        k, p = kernel_size, kernel_size // 2
        self.left = nn.Sequential(
            _PaddedConv2d(in_channels, out_channels, (k, 1), padding=(p, 0)),
            _PaddedConv2d(out_channels, out_channels, (1, k), padding=(0, p)),
        )
        self.right = nn.Sequential(
            _PaddedConv2d(in_channels, out_channels, (1, k), padding=(0, p)),
            _PaddedConv2d(out_channels, out_channels, (k, 1), padding=(p, 0)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.left(x) + self.right(x)


class UnscathedFeaturePyramid(nn.Module):
    """The unscathed feature pyramid (UFP): one GCN block per level, all at one resolution.

    What the paper states [paper]: the pyramid is built with GCN blocks of kernel sizes 1, 7, 15
    and 31 on a dilated ResNet-101, of width d = 256, and its levels share one resolution.
    What is ours [ours]: every level is a GCN block on C5, the trunk's last stage, so the levels
    differ in context (receptive field), not in resolution or depth; level i has
    ``kernels[i]``, smallest first, so that "finer" (FPT's queries of GT, keys of RT) means more
    local, as in a strided pyramid; C2..C4 do not feed it.

    Args:
        in_channels: channels of C5.
        channels: d, the width of every level.
        kernels: the GCN kernel sizes, one level each, finest first (:data:`UFP_KERNELS`).
    Shapes:
        features (Mapping[str, Tensor]): the trunk's C2..C5 keyed as
        :data:`~fptbench.modeling.backbone.RETURN_LAYERS` -> OrderedDict of len(kernels) maps
        (B, d, H5, W5), finest first.
    """

    def __init__(self, in_channels: int, channels: int = OUT_CHANNELS, kernels: Sequence[int] = UFP_KERNELS) -> None:
        super().__init__()
        if not kernels:
            raise ValueError("UnscathedFeaturePyramid: kernels must name at least one level")
        self.levels = nn.ModuleList(GlobalConvBlock(in_channels, channels, k) for k in kernels)

    def forward(self, features: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        c5 = features[C5]
        return OrderedDict((str(i), gcn(c5)) for i, gcn in enumerate(self.levels))


class SegmentationModel(nn.Module):
    """Trunk -> pyramid -> FPT (optional) -> fused levels -> head, + auxiliary head on C4.

    Submodules: ``backbone`` (the trunk's C2..C5 as an ``IntermediateLayerGetter``, keyed as
    torchvision's segmentation models key theirs: ``backbone.conv1.weight`` ...), ``pyramid``,
    ``fpt``, ``classifier`` and ``aux_classifier``, the last two as in torchvision's
    ``DeepLabV3`` / ``FCN``.

    Fusion [ours]: every level is resized (bilinear) to the coarsest level's size, the trunk's
    output stride (a no-op for the UFP, whose levels share it), and the levels are concatenated,
    finest first; the head takes num_levels x d channels.

    Args:
        backbone: maps images to an OrderedDict of C2..C5 keyed as
            :data:`~fptbench.modeling.backbone.RETURN_LAYERS`.
        pyramid: maps that OrderedDict to an OrderedDict of d-channel levels, finest first.
        classifier: maps the fused levels to (B, num_classes, h, w) logits.
        fpt: maps the list of levels to a list of the same shapes, or None (the pyramid goes to
            the head as it is: the baseline).
        aux_classifier: maps C4 to (B, num_classes, h, w) logits, or None.
    Shapes:
        images (Tensor): (B, 3, H, W), normalised -> dict with ``"out"``: (B, num_classes, H, W)
        logits, bilinearly upsampled to the input size, and ``"aux"`` (same shape, from C4) when
        there is an auxiliary head.
    """

    def __init__(
        self,
        backbone: nn.Module,
        pyramid: nn.Module,
        classifier: nn.Module,
        *,
        fpt: nn.Module | None = None,
        aux_classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pyramid = pyramid
        self.fpt = fpt
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        size = images.shape[-2:]
        c = self.backbone(images)
        levels = list(self.pyramid(c).values())
        if self.fpt is not None:
            levels = self.fpt(levels)
        head_size = levels[-1].shape[-2:]
        fused = torch.cat([x if x.shape[-2:] == head_size else _resize(x, head_size) for x in levels], dim=1)
        out = {"out": _resize(self.classifier(fused), size)}
        if self.aux_classifier is not None:
            out["aux"] = _resize(self.aux_classifier(c[C4]), size)
        return out


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    # torchvision's segmentation models upsample their logits this way
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def segmentation_model(
    *,
    num_classes: int,
    backbone: str = "resnet101",
    output_stride: int = 8,
    pyramid: str = "ufp",
    ufp_kernels: Sequence[int] = UFP_KERNELS,
    head: str = "deeplab",
    aux_head: bool = False,
    channels: int = OUT_CHANNELS,
    backbone_norm: str = "bn",
    stride_in_1x1: bool = False,
    trainable_layers: int = 5,
    fpt: nn.Module | None = None,
) -> SegmentationModel:
    """A segmentation model with random weights; the defaults are the paper's setup without FPT.

    Args:
        num_classes (int): classes predicted per pixel (no background convention: Cityscapes 19).
        backbone (str): a key of :data:`~fptbench.modeling.backbone.RESNETS` (resnet101 [paper]).
        output_stride (int): 8 or 16, the stride of C5 and of the head (:func:`dilated_resnet`).
        pyramid (str): ``"ufp"`` [paper] (:class:`UnscathedFeaturePyramid`) or ``"fpn"`` [ours]
            (torchvision's ``FeaturePyramidNetwork`` on C2..C5; levels at :func:`pyramid_strides`).
        ufp_kernels (Sequence[int]): the UFP's GCN kernel sizes, finest level first.
        head (str): ``"deeplab"``, torchvision's ``DeepLabHead`` (ASPP [paper: "ASPP-style"],
            rates :data:`ASPP_RATES`), or ``"fcn"``, torchvision's ``FCNHead``.
        aux_head (bool): an ``FCNHead`` on C4, as torchvision's ``aux_loss``.
        channels (int): d, the pyramid width (256 [paper]).
        backbone_norm (str): a key of :data:`~fptbench.modeling.backbone.NORM_LAYERS`.
        stride_in_1x1 (bool): see :func:`dilated_resnet`.
        trainable_layers (int): 0..5, see :func:`~fptbench.modeling.backbone.freeze_layers`.
        fpt (nn.Module | None): the neck, e.g. :class:`FeaturePyramidTransformer` built with
            ``channels``, the pyramid's number of levels and ``level_strides=``
            :func:`pyramid_strides`; None for the baseline.

    Returns:
        SegmentationModel: see its ``forward``.
    """
    if pyramid not in PYRAMIDS:
        raise ValueError(f"pyramid: {pyramid!r} is not one of {', '.join(PYRAMIDS)}")
    if head not in HEADS:
        raise ValueError(f"head: {head!r} is not one of {', '.join(HEADS)}")
    body = dilated_resnet(name=backbone, output_stride=output_stride, norm=backbone_norm, stride_in_1x1=stride_in_1x1)
    # Pretrained weights load after the build, into the model's `backbone` (this `body` without
    # avgpool and fc): fptbench.engine.model.load_model reads model.backbone_weights (an ImageNet
    # file) or the cached trunk of model.backbone_pretrain, in torchvision's classification keys,
    # strictly (fptbench.weights.load_backbone_weights: every trunk tensor, `fc.*` skipped). The
    # dilation changes no key or shape. Freezing by requires_grad is unaffected by the copy.
    freeze_layers(body, trainable_layers)
    in_channels = stage_channels(body)
    if pyramid == "ufp":
        levels: nn.Module = UnscathedFeaturePyramid(in_channels[-1], channels, ufp_kernels)
        num_levels = len(ufp_kernels)
    else:
        levels = FeaturePyramidNetwork(in_channels, channels)
        num_levels = len(in_channels)
    if head == "deeplab":
        classifier: nn.Module = DeepLabHead(num_levels * channels, num_classes, ASPP_RATES[output_stride])
    else:
        classifier = FCNHead(num_levels * channels, num_classes)
    return SegmentationModel(
        IntermediateLayerGetter(body, return_layers=RETURN_LAYERS),
        levels,
        classifier,
        fpt=fpt,
        aux_classifier=FCNHead(in_channels[2], num_classes) if aux_head else None,
    )


def build_segmentation_model(cfg: Mapping[str, Any]) -> SegmentationModel:
    """The segmentation model described by a config dict (see ``fptbench.config``).

    Reads ``model.backbone``, ``model.backbone_norm``, ``model.num_classes``,
    ``model.trainable_backbone_layers``, ``model.stride_in_1x1``, ``model.fpn_channels``
    (:func:`pyramid_channels`), the ``seg.*`` keys, and, through
    :meth:`FeaturePyramidTransformer.from_config`, the ``fpt``, ``st``, ``gt``, ``rt`` and
    ``attention`` sections (``gt.window > 0`` is the paper's LGT). ``fpt.input`` is the
    detectors' and is not read: FPT transforms the pyramid's levels. With ``fpt.st``, ``fpt.gt``
    and ``fpt.rt`` all off the model is the pyramid + head baseline.

    Raises:
        ValueError: a value out of its choices, e.g. ``seg.pyramid: 'bfp' is not one of ufp, fpn``.
    """
    num_classes = cfg_get(cfg, "model.num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"model.num_classes: {num_classes!r} is not an integer >= 1")
    output_stride = cfg_get(cfg, "seg.output_stride", DILATE_STAGES)
    pyramid = cfg_get(cfg, "seg.pyramid", PYRAMIDS)
    kernels = tuple(cfg_get(cfg, "seg.ufp_kernels"))
    channels = pyramid_channels(cfg)
    fpt = None
    if any(cfg_get(cfg, f"fpt.{t}", (True, False)) for t in ("st", "gt", "rt")):
        num_levels = len(kernels) if pyramid == "ufp" else len(RETURN_LAYERS)
        strides = pyramid_strides(pyramid=pyramid, output_stride=output_stride, num_levels=num_levels)
        fpt = FeaturePyramidTransformer.from_config(
            cfg, channels=channels, num_levels=num_levels, level_strides=strides
        )
    return segmentation_model(
        num_classes=num_classes,
        backbone=cfg_get(cfg, "model.backbone", RESNETS),
        output_stride=output_stride,
        pyramid=pyramid,
        ufp_kernels=kernels,
        head=cfg_get(cfg, "seg.head", HEADS),
        aux_head=cfg_get(cfg, "seg.aux_head", (True, False)),
        channels=channels,
        backbone_norm=cfg_get(cfg, "model.backbone_norm", NORM_LAYERS),
        stride_in_1x1=cfg_get(cfg, "model.stride_in_1x1", (True, False)),
        trainable_layers=cfg_get(cfg, "model.trainable_backbone_layers", range(6)),
        fpt=fpt,
    )
