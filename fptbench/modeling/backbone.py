"""Detection backbones: a torchvision ResNet/ResNeXt, then BFP (torchvision's FPN) or BFP + FPT.

With every transformer off, :func:`build_backbone` returns torchvision's own
``BackboneWithFPN``, built as ``maskrcnn_resnet50_fpn`` builds it, so torchvision checkpoints
load with ``strict=True``. With any transformer on it returns :class:`FPTBackbone`, whose
``body`` and ``fpn`` keep torchvision's state_dict keys and whose ``fpt`` holds the new
parameters (keys ``fpt.*``).
"""

from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.misc import FrozenBatchNorm2d

from fptbench.modeling.fpt import FeaturePyramidTransformer, make_norm

# name -> torchvision classification-model builder
RESNETS: dict[str, Callable[..., resnet.ResNet]] = {
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
    "resnet152": resnet.resnet152,
    "resnext101_32x8d": resnet.resnext101_32x8d,
    "resnext101_64x4d": resnet.resnext101_64x4d,
}

# cfg model.backbone_norm -> norm layer of the ResNet body
NORM_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "bn": nn.BatchNorm2d,  # torchvision's choice when no pretrained backbone is loaded
    "frozen_bn": FrozenBatchNorm2d,  # torchvision's choice with a pretrained backbone
}

FPT_INPUTS = ("fpn", "lateral")

# C2..C5 = outputs of layer1..layer4, named "0".."3" as in torchvision's detection models
RETURN_LAYERS = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}

OUT_CHANNELS = 256
"""The paper's pyramid width d; the builders' default (configs set it with ``model.fpn_channels``)."""


def cfg_get(cfg: dict[str, Any], key: str, choices: Optional[Sequence[Any]] = None) -> Any:
    """Read ``cfg[section][name]`` for a dotted ``key``; raise ValueError if not in ``choices``."""
    section, name = key.split(".")
    value = cfg[section][name]
    if choices is not None and value not in choices:
        raise ValueError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def resnet_body(*, name: str, norm: str = "bn", stride_in_1x1: bool = False) -> resnet.ResNet:
    """A torchvision classification ResNet/ResNeXt with random weights (``weights=None``).

    Args:
        name (str): a key of :data:`RESNETS`.
        norm (str): a key of :data:`NORM_LAYERS`.
        stride_in_1x1 (bool): see :func:`place_stride_in_1x1`.

    Returns:
        resnet.ResNet: the full classification model (``fc`` included; the detection
        backbones drop ``avgpool`` and ``fc`` through ``IntermediateLayerGetter``).
    """
    if name not in RESNETS:
        raise ValueError(f"name: {name!r} is not one of {', '.join(RESNETS)}")
    if norm not in NORM_LAYERS:
        raise ValueError(f"norm: {norm!r} is not one of {', '.join(NORM_LAYERS)}")
    body = RESNETS[name](weights=None, norm_layer=NORM_LAYERS[norm])
    if stride_in_1x1:
        place_stride_in_1x1(body)
    return body


def place_stride_in_1x1(body: resnet.ResNet) -> None:
    """Move the stride of each stage's first Bottleneck from its 3x3 conv to its 1x1 conv.

    [code] Detectron's MSRA ResNets (the seed's pretrained ``.pkl`` trunks) stride in the 1x1
    (Detectron ``modeling/ResNet.py``, ``bottleneck_transformation``: ``(str1x1s, str3x3s) =
    (stride, 1) if stride_1x1 else (1, stride)``, ``RESNETS.STRIDE_1X1: True``); torchvision's
    Bottleneck strides in the 3x3. The shapes are the same, so the weights load either way, but
    only this placement computes what those trunks were trained as. The shortcut (a strided 1x1
    projection) is the same in both. Parameters are untouched.

    Raises:
        ValueError: a basic-block trunk (ResNet-18/34 have no 1x1 conv) or a grouped one
            (ResNeXt strides in the 3x3 in Detectron too).
    """
    for stage in (body.layer2, body.layer3, body.layer4):
        block = stage[0]
        if not isinstance(block, resnet.Bottleneck):
            raise ValueError("model.stride_in_1x1: needs a Bottleneck trunk (resnet50 and deeper); "
                             "ResNet-18/34 have no 1x1 conv to stride")
        if block.conv2.groups != 1:
            raise ValueError("model.stride_in_1x1: ResNeXt trunks stride in the 3x3 conv in Detectron too; "
                             "leave it false")
        block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


def freeze_layers(body: resnet.ResNet, trainable_layers: int) -> None:
    """Freeze all but the last ``trainable_layers`` stages, exactly as torchvision's
    ``_resnet_fpn_extractor`` does (5 = all trainable, ``bn1`` included; 0 = all frozen).

    [ours] torchvision forces 5 when no pretrained weights are loaded; fptbench applies the
    configured value as given, so the default (5) matches torchvision.
    """
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers: {trainable_layers!r} is not one of 0, 1, 2, 3, 4, 5")
    layers_to_train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        layers_to_train.append("bn1")
    for name, parameter in body.named_parameters():
        if not any(name.startswith(layer) for layer in layers_to_train):
            parameter.requires_grad_(False)


def stage_channels(body: resnet.ResNet) -> list[int]:
    """Channels of C2..C5: [64, 128, 256, 512] for ResNet-18/34, [256, ..., 2048] otherwise.

    Same formula as torchvision's ``_resnet_fpn_extractor``: ``inplanes`` is C5's width
    after construction.
    """
    c2 = body.inplanes // 8
    return [c2 * 2**i for i in range(len(RETURN_LAYERS))]


class FPTBackbone(nn.Module):
    """ResNet C2..C5 -> BFP (or 1x1 laterals) -> Feature Pyramid Transformer, + P6.

    Submodule names keep torchvision's ``BackboneWithFPN`` state_dict keys (``body.*``,
    ``fpn.*``); the transformer's parameters are under ``fpt.*``.

    Args:
        backbone (nn.Module): a torchvision ResNet; ``avgpool`` and ``fc`` are dropped.
        in_channels_list (list[int]): channels of C2..C5 (4 entries).
        fpt (nn.Module): maps a list of NCHW tensors ``[P2, ..., P5]`` (finest first,
            ``out_channels`` each) to a list of the same shapes.
        out_channels (int): pyramid width d.
        fpt_input (str): ``"fpn"`` [ours, default]: FPT transforms torchvision's FPN outputs.
            ``"lateral"`` [code]: FPT transforms 1x1-conv laterals of C2..C5, no top-down path;
            the module then has ``laterals`` instead of ``fpn``.
        lateral_norm (str): with ``"lateral"``, the norm after each lateral conv, the neck's
            ``fpt.norm`` [code] (FPT_a.py, ``FPT.__init__``: with ``with_norm`` a lateral is
            ``Conv2d(c, d, 1, bias=False)`` + norm; without it, a plain conv with bias).

    Attributes:
        out_channels (int): pyramid width, read by torchvision's detection heads.
    """

    def __init__(
        self,
        backbone: nn.Module,
        in_channels_list: list[int],
        fpt: nn.Module,
        out_channels: int = OUT_CHANNELS,
        *,
        fpt_input: str = "fpn",
        lateral_norm: str = "none",
    ) -> None:
        super().__init__()
        if fpt_input not in FPT_INPUTS:
            raise ValueError(f"fpt_input: {fpt_input!r} is not one of {', '.join(FPT_INPUTS)}")
        self.body = IntermediateLayerGetter(backbone, return_layers=RETURN_LAYERS)
        self.fpn: Optional[FeaturePyramidNetwork] = None
        self.laterals: Optional[nn.ModuleList] = None
        if fpt_input == "fpn":
            # No extra block: P6 is pooled from the *transformed* P5 in forward() [paper].
            self.fpn = FeaturePyramidNetwork(in_channels_list, out_channels, extra_blocks=None)
        else:
            # Without a norm a lateral stays a plain conv (state_dict keys ``laterals.i.weight``).
            self.laterals = nn.ModuleList(
                nn.Conv2d(c, out_channels, 1)
                if lateral_norm == "none"
                else nn.Sequential(nn.Conv2d(c, out_channels, 1, bias=False), make_norm(lateral_norm, out_channels))
                for c in in_channels_list
            )
            for lateral in self.laterals:
                conv = lateral if isinstance(lateral, nn.Conv2d) else lateral[0]
                # [ours] initialised as torchvision's FPN initialises its 1x1 inner blocks
                nn.init.kaiming_uniform_(conv.weight, a=1)
                if conv.bias is not None:
                    nn.init.constant_(conv.bias, 0)
        self.fpt = fpt
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """
        Args:
            x (Tensor): images, (B, 3, H, W).

        Returns:
            OrderedDict[str, Tensor]: ``"0".."3"``: transformed P2..P5, (B, d, H/4, W/4) ..
            (B, d, H/32, W/32) (rounded as the ResNet rounds); ``"pool"``: P6 = stride-2
            subsampling (max-pool, kernel 1) of the transformed P5, as torchvision's
            ``LastLevelMaxPool``.
        """
        c = self.body(x)
        if self.fpn is not None:
            p = list(self.fpn(c).values())
        else:
            assert self.laterals is not None
            p = [lateral(f) for lateral, f in zip(self.laterals, c.values())]
        p = self.fpt(p)
        out = OrderedDict((str(i), f) for i, f in enumerate(p))
        out["pool"] = F.max_pool2d(p[-1], kernel_size=1, stride=2, padding=0)
        return out


def bfp_backbone(*, body: resnet.ResNet, trainable_layers: int = 5, out_channels: int = OUT_CHANNELS) -> BackboneWithFPN:
    """BFP: torchvision's ``BackboneWithFPN`` over C2..C5, as ``maskrcnn_resnet50_fpn`` builds it.

    Args:
        body (resnet.ResNet): from :func:`resnet_body`; its parameters are frozen in place.
        trainable_layers (int): 0..5, see :func:`freeze_layers`.
        out_channels (int): pyramid width d.
    """
    freeze_layers(body, trainable_layers)
    return BackboneWithFPN(body, RETURN_LAYERS, stage_channels(body), out_channels)


def fpt_backbone(
    *, body: resnet.ResNet, fpt: nn.Module, fpt_input: str = "fpn", lateral_norm: str = "none", trainable_layers: int = 5,
    out_channels: int = OUT_CHANNELS,
) -> FPTBackbone:
    """BFP (or laterals) + FPT, see :class:`FPTBackbone`.

    Args:
        body (resnet.ResNet): from :func:`resnet_body`; its parameters are frozen in place.
        fpt (nn.Module): the neck, e.g. :class:`FeaturePyramidTransformer` with d = 256, 4 levels.
        fpt_input (str): ``"fpn"`` or ``"lateral"``.
        lateral_norm (str): norm after each lateral conv (``"lateral"`` only).
        trainable_layers (int): 0..5, see :func:`freeze_layers`.
    """
    freeze_layers(body, trainable_layers)
    return FPTBackbone(body, stage_channels(body), fpt, out_channels, fpt_input=fpt_input, lateral_norm=lateral_norm)


def build_backbone(cfg: dict[str, Any]) -> nn.Module:
    """Backbone + neck from a config dict (sections ``model``, ``fpt``, ``st``, ``gt``, ...).

    With ``fpt.st``, ``fpt.gt`` and ``fpt.rt`` all off the neck is BFP itself and
    ``fpt.input`` is ignored (spec: "with all three off the neck is BFP itself").

    Returns:
        nn.Module: ``BackboneWithFPN`` or :class:`FPTBackbone`; ``forward(x)`` maps images
        (B, 3, H, W) to an OrderedDict ``"0".."3", "pool"`` of (B, d, h, w) maps and
        ``out_channels == d`` (``model.fpn_channels``, 256 in the paper).
    """
    name = cfg_get(cfg, "model.backbone", RESNETS)
    norm = cfg_get(cfg, "model.backbone_norm", NORM_LAYERS)
    trainable_layers = cfg_get(cfg, "model.trainable_backbone_layers", range(6))
    fpt_input = cfg_get(cfg, "fpt.input", FPT_INPUTS)
    use_fpt = any(cfg_get(cfg, f"fpt.{t}", (True, False)) for t in ("st", "gt", "rt"))

    body = resnet_body(name=name, norm=norm, stride_in_1x1=cfg_get(cfg, "model.stride_in_1x1", (True, False)))
    # Seam for pretrained weights: a local ImageNet checkpoint loads into `body` here, before
    # freezing; its keys are torchvision's classification keys (`fc.*` unused).
    width = cfg_get(cfg, "model.fpn_channels")
    if not use_fpt:
        return bfp_backbone(body=body, trainable_layers=trainable_layers, out_channels=width)
    fpt = FeaturePyramidTransformer.from_config(cfg, channels=width, num_levels=len(RETURN_LAYERS))
    return fpt_backbone(body=body, fpt=fpt, fpt_input=fpt_input, lateral_norm=cfg["fpt"]["norm"],
                        trainable_layers=trainable_layers, out_channels=width)
