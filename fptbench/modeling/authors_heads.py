"""The authors' RoI heads: every RoI pooled from every pyramid level, GroupNorm convs [code].

FPT's released detector (ZHANGDONG-NJUST/FPT at c7c76f9, ``configs/e2e_fptnet_R-50_mask.yaml``)
replaces Mask R-CNN's default heads by PANet's (Liu et al., CVPR 2018): *adaptive feature
pooling* (each RoI is RoIAligned from every level P2..P5, one 3x3 conv + GroupNorm + ReLU per
level, then the element-wise max over levels) in both the box head
(``FAST_RCNN.ROI_BOX_HEAD: fast_rcnn_heads.roi_Xconv1fc_gn_head_fptnet``) and the mask head
(``MRCNN.ROI_MASK_HEAD: mask_rcnn_heads.mask_rcnn_fcn_head_v1up4convs_gn_adp_ff``), plus
*fully-connected fusion* in the mask head (a fc branch whose 28x28 output is added to every
class's mask logits). ``model.box_head`` and ``model.mask_head`` select them
(:func:`fptbench.modeling.detector.build_detector`); the defaults are torchvision's heads.

The modules plug into torchvision's ``RoIHeads`` (which calls ``box_head(box_roi_pool(...))``,
``mask_predictor(mask_head(mask_roi_pool(...)))``)::

    box_roi_pool   AllLevelRoIAlign(7)         -> (N, L, C, 7, 7)
    box_head       AdaptivePoolingBoxHead      -> (N, box_head_dim)     -> torchvision's FastRCNNPredictor
    mask_roi_pool  AllLevelRoIAlign(14)        -> (N, L, C, 14, 14)
    mask_head      AdaptivePoolingMaskHead     -> ((N, D, 14, 14), (N, 28 * 28))
    mask_predictor FusedMaskPredictor          -> (N, num_classes, 28, 28) logits

Their code builds the first conv of each stack with the pyramid width and the per-level convs
with the head width (``fast_rcnn_heads.py:254-275``, ``mask_rcnn_heads.py:503-520``), so it runs
only where the two are equal (256 in their configs); here each conv takes what actually flows
into it, which is the same model at equal widths [ours].

Weight init [code]: convs MSRAFill, no bias (``lib/nn/init.py:18-23``; ``MRCNN.CONV_INIT:
MSRAFill`` in their config), the box fc XavierFill with zero bias (``fast_rcnn_heads.py:279-286``,
``lib/nn/init.py:10-15``), the mask fc normal(std 0.01) with zero bias
(``mask_rcnn_heads.py:548-560``), GroupNorm weight 1 and bias 0 (torch's default, as theirs).
"""

import math
from functools import reduce
from typing import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import roi_align
from torchvision.ops.misc import Conv2dNormActivation

__all__ = ["AllLevelRoIAlign", "AdaptivePoolingBoxHead", "AdaptivePoolingMaskHead", "FusedMaskPredictor",
           "GN_GROUPS", "group_norm"]

GN_GROUPS = 32
"""Groups of every GroupNorm of these heads [code: lib/utils/net.py:166-182 ``get_group_gn`` with
``GROUP_NORM.NUM_GROUPS 32``, ``DIM_PER_GP -1`` (lib/core/config.py:911-917)]."""


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm of :data:`GN_GROUPS` groups over ``channels``, eps 1e-5 [code: GROUP_NORM.EPSILON].

    Raises:
        ValueError: ``channels`` is not a multiple of 32 (their ``get_group_gn`` asserts the same).
    """
    if channels % GN_GROUPS:
        raise ValueError(f"GroupNorm of {GN_GROUPS} groups [code] needs a width divisible by {GN_GROUPS}, "
                         f"got {channels}")
    return nn.GroupNorm(GN_GROUPS, channels, eps=1e-5)


def msra_fill(weight: Tensor) -> None:
    """Caffe2's MSRAFill, N(0, 2 / fan_out) with fan_out = numel / weight.shape[1] [code:
    lib/nn/init.py:18-23]: torch's fan_out of a (de)conv weight is shape[0] x kernel area, the same
    number, so this is ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``, torchvision's head init."""
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")


def xavier_fill(weight: Tensor) -> None:
    """Caffe2's XavierFill, U(-sqrt(3 / fan_in), sqrt(3 / fan_in)) [code: lib/nn/init.py:10-15]:
    ``kaiming_uniform_`` with a=1 has gain 1 and that bound (detectron2's ``c2_xavier_fill`` [detectron2])."""
    nn.init.kaiming_uniform_(weight, a=1)


def level_scale(feature: Tensor, image_shapes: Sequence[tuple[int, int]]) -> float:
    """The spatial scale of one pyramid level: ``2 ** round(log2(map height / image height))``.

    The image height is the largest of the batch's resized (unpadded) images, the map's is the
    padded batch's, exactly torchvision's rule (``ops/poolers.py``, ``_infer_scale`` and
    ``_setup_scales``: private names, hence these two lines). On a ResNet pyramid it gives 1/4,
    1/8, 1/16, 1/32 for P2..P5, the authors' fixed ``spatial_scales`` [code: FPT_s.py:486-491, the
    body ``ResNet50_conv5_body_fpt`` of their configs; model_builder.py:99, 273], and it follows
    the pyramid if its strides ever differ, as torchvision's own pooler does [ours].
    """
    height = max(h for h, _ in image_shapes)
    return 2.0 ** round(math.log2(feature.shape[-2] / height))


class AllLevelRoIAlign(nn.Module):
    """RoIAlign of every RoI from every pyramid level (PANet's adaptive feature pooling) [code].

    The authors' ``roi_feature_transform(..., panet=True)`` (model_builder.py:264-308): for each
    level P2..P5, ``RoIAlignFunction(resolution, resolution, scale, sampling_ratio)`` over *all*
    RoIs, the per-level results returned as a list (finest first, line 308). Their kernel is
    Detectron's RoIAlign without the half-pixel offset and with RoIs at least 1x1
    (roi_align_kernel.cu:65-120), i.e. ``torchvision.ops.roi_align(aligned=False)``, as in
    torchvision's ``MultiScaleRoIAlign``; that one instead pools each RoI from its one level.

    Args:
        featmap_names: keys of the levels in the backbone's output, finest first (``"0".."3"``).
        output_size (int): pooled side, 7 for boxes, 14 for masks [code: e2e_fptnet_R-50_mask.yaml
            ``ROI_XFORM_RESOLUTION``].
        sampling_ratio (int): sampling points per bin side [code: ``ROI_XFORM_SAMPLING_RATIO 2``].

    Forward: ``(features: dict[str, Tensor] of (B, C, H_l, W_l), proposals: list[Tensor] of
    (N_i, 4) boxes (x1, y1, x2, y2) in image pixels, image_shapes: list[(h, w)])`` ->
    ``(N, L, C, output_size, output_size)`` with N = sum N_i (images in order) and L levels.
    """

    def __init__(self, featmap_names: Sequence[str], output_size: int, sampling_ratio: int):
        super().__init__()
        self.featmap_names = list(featmap_names)
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor],
                image_shapes: list[tuple[int, int]]) -> Tensor:
        levels = [features[name] for name in self.featmap_names]
        pooled = [roi_align(x, proposals, self.output_size, level_scale(x, image_shapes), self.sampling_ratio,
                            aligned=False) for x in levels]
        return torch.stack(pooled, dim=1)

    def extra_repr(self) -> str:
        return (f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
                f"sampling_ratio={self.sampling_ratio}")


def fuse_levels(level_convs: nn.ModuleList, pooled: Tensor) -> Tensor:
    """One conv block per level, then the element-wise max over levels: ``(N, L, C, h, w) -> (N, D, h, w)``.

    [code] fast_rcnn_heads.py:312-316 and mask_rcnn_heads.py:587-591: ``x[i] = conv1[i](x[i])``,
    then ``x[0] = torch.max(x[0], x[i])`` for i = 1..L-1 (PANet's max fusion).
    """
    if pooled.shape[1] != len(level_convs):
        raise ValueError(f"pooled features have {pooled.shape[1]} levels, the head has {len(level_convs)} level convs")
    return reduce(torch.maximum, [conv(x) for conv, x in zip(level_convs, pooled.unbind(1))])


class AdaptivePoolingBoxHead(nn.Module):
    """The authors' box head ``roi_Xconv1fc_gn_head_fptnet`` [code: fast_rcnn_heads.py:244-321].

    Per level a 3x3 conv (no bias) + GroupNorm + ReLU (``conv1_head``, lines 267-275), the
    element-wise max over levels (312-316), ``NUM_STACKED_CONVS - 1`` = 3 more such convs
    (``convs``, 252-262), then one fc + ReLU (``fc``, 264-266, 320). The stack after the max is
    torchvision's ``FastRCNNConvFCHead`` (the box head of ``fasterrcnn_resnet50_fpn_v2``).

    Args:
        in_channels (int): C of the pyramid.
        num_levels (int): L, pyramid levels pooled [code: FPN.ROI_MIN_LEVEL 2 .. ROI_MAX_LEVEL 5].
        conv_dim (int): width of every conv [code: FAST_RCNN.CONV_HEAD_DIM 256]; a multiple of 32.
        fc_dim (int): output width [code: FAST_RCNN.MLP_HEAD_DIM 1024].
        num_convs (int): convs per RoI, the per-level one included [code: FAST_RCNN.NUM_STACKED_CONVS 4].
        resolution (int): pooled side [code: FAST_RCNN.ROI_XFORM_RESOLUTION 7].

    Forward: ``(N, L, in_channels, resolution, resolution)`` -> ``(N, fc_dim)``, for
    torchvision's ``FastRCNNPredictor``.
    """

    def __init__(self, in_channels: int, *, num_levels: int = 4, conv_dim: int = 256, fc_dim: int = 1024,
                 num_convs: int = 4, resolution: int = 7):
        super().__init__()
        self.level_convs = nn.ModuleList(
            Conv2dNormActivation(in_channels, conv_dim, norm_layer=group_norm) for _ in range(num_levels)
        )
        self.convs_fc = FastRCNNConvFCHead((conv_dim, resolution, resolution), [conv_dim] * (num_convs - 1), [fc_dim],
                                           norm_layer=group_norm)
        for m in self.modules():  # [code] fast_rcnn_heads.py:279-286
            if isinstance(m, nn.Conv2d):
                msra_fill(m.weight)
            elif isinstance(m, nn.Linear):
                xavier_fill(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.convs_fc(fuse_levels(self.level_convs, pooled))


class AdaptivePoolingMaskHead(nn.Module):
    """The authors' mask head ``mask_rcnn_fcn_head_v1up4convs_gn_adp_ff`` [code:
    mask_rcnn_heads.py:129-133, 490-597]: PANet's adaptive feature pooling and fully-connected fusion.

    Every conv is 3x3 (dilation 1 [code: MRCNN.DILATION 1 in their config]), no bias, + GroupNorm
    + ReLU, ``channels`` wide:

    - per level one conv (``mask_conv1``, lines 513-520), element-wise max over levels (587-591);
    - two convs (``conv_fcn``, 503-511; torchvision's ``MaskRCNNHeads``) -> x;
    - FCN branch: one conv (``mask_conv4``, 522-525) -> ``fcn``; their deconv + ReLU (``upconv``,
      544, 594) is the first half of :class:`FusedMaskPredictor`, as in torchvision's split;
    - fc branch from x: one conv (``mask_conv4_fc``, 527-530), one conv to ``channels // 2``
      (``mask_conv5_fc``, 532-535, GroupNorm still of 32 groups), flatten, fc to
      ``(2 * resolution) ** 2`` + ReLU (``mask_fc``, 537-539, 595) -> ``fc``.

    Args:
        in_channels (int): C of the pyramid.
        num_levels (int): L, pyramid levels pooled.
        channels (int): D, the convs' width [code: MRCNN.DIM_REDUCED 256]; a multiple of 64 (its
            half is GroupNormed in 32 groups).
        resolution (int): pooled side [code: MRCNN.ROI_XFORM_RESOLUTION 14]; the masks are twice
            that [code: MRCNN.RESOLUTION 28].

    Forward: ``(N, L, in_channels, resolution, resolution)`` -> ``(fcn, fc)``: ``fcn`` (N, D,
    resolution, resolution), ``fc`` (N, (2 * resolution) ** 2), for :class:`FusedMaskPredictor`.
    """

    def __init__(self, in_channels: int, *, num_levels: int = 4, channels: int = 256, resolution: int = 14):
        super().__init__()
        if channels % (2 * GN_GROUPS):
            raise ValueError(f"mask head width {channels}: its fc branch GroupNorms {channels} // 2 channels in "
                             f"{GN_GROUPS} groups [code: mask_rcnn_heads.py:532-535], so it must be divisible by "
                             f"{2 * GN_GROUPS}")

        def conv(cin: int, cout: int) -> Conv2dNormActivation:
            return Conv2dNormActivation(cin, cout, norm_layer=group_norm)

        self.level_convs = nn.ModuleList(conv(in_channels, channels) for _ in range(num_levels))
        self.convs = MaskRCNNHeads(channels, [channels, channels], 1, norm_layer=group_norm)
        self.fcn_conv = conv(channels, channels)
        self.fc_branch = nn.Sequential(
            conv(channels, channels),
            conv(channels, channels // 2),
            nn.Flatten(),
            nn.Linear(channels // 2 * resolution**2, (2 * resolution) ** 2),
            nn.ReLU(inplace=True),
        )
        for m in self.modules():  # [code] mask_rcnn_heads.py:548-560
            if isinstance(m, nn.Conv2d):
                msra_fill(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        x = self.convs(fuse_levels(self.level_convs, pooled))
        return self.fcn_conv(x), self.fc_branch(x)


class FusedMaskPredictor(MaskRCNNPredictor):
    """Mask logits with the fully-connected fusion: ``classify(relu(deconv(fcn))) + fc`` [code].

    torchvision's ``MaskRCNNPredictor`` (2x2 stride-2 deconv + ReLU, 1x1 conv to one map per
    class, both weights MSRAFill) is the authors' ``upconv`` (mask_rcnn_heads.py:544, 594)
    followed by ``mask_rcnn_outputs.classify`` (lines 26-47, class-specific, ``MRCNN.CONV_INIT
    MSRAFill``); their biases start at 0 (lines 47, 556-557), where torchvision leaves torch's
    default, so they are zeroed here. Their ``mask_rcnn_outputs.forward`` (62-69) then adds the
    fc branch, one 28x28 map repeated over the classes; here it broadcasts (the same sum, the
    same gradients). Their eval-mode sigmoid (72-73) is torchvision's ``maskrcnn_inference``.

    Args:
        in_channels (int): D, the mask head's width (the deconv keeps it [code: line 544]).
        num_classes (int): classes, background included.

    Forward: ``(fcn (N, D, r, r), fc (N, (2r) ** 2))`` -> logits ``(N, num_classes, 2r, 2r)``.
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(in_channels, in_channels, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.zeros_(m.bias)

    def forward(self, features: tuple[Tensor, Tensor]) -> Tensor:
        fcn, fc = features
        logits = super().forward(fcn)
        return logits + fc.view(len(fc), 1, *logits.shape[-2:])
