"""Instance-level detectors: torchvision's Mask R-CNN / Faster R-CNN on a BFP or FPT backbone.

Every setting not named here (anchors, RPN and RoI sampling, NMS, RoIAlign, heads) is
torchvision's default, so that with all transformers off and the default heads
:func:`build_model` is ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` parameter
for parameter. ``box_head`` / ``mask_head`` swap in the authors' heads
(:mod:`fptbench.modeling.authors_heads`) [code].
"""

from typing import Any, Callable, Sequence

from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from fptbench.modeling.authors_heads import (
    AdaptivePoolingBoxHead,
    AdaptivePoolingMaskHead,
    AllLevelRoIAlign,
    FusedMaskPredictor,
)
from fptbench.modeling.backbone import build_backbone, cfg_get

# cfg model.head -> torchvision detector class
HEADS: dict[str, Callable[..., GeneralizedRCNN]] = {
    "mask_rcnn": MaskRCNN,
    "faster_rcnn": FasterRCNN,
}

# cfg model.box_head / model.mask_head choices (fptbench.config mirrors them; a test pins the two):
# torchvision's heads [detectron2], or the authors' (fptbench.modeling.authors_heads) [code]
BOX_HEADS = ("torchvision", "xconv1fc_gn_fpt")
MASK_HEADS = ("torchvision", "v1up4convs_gn_adp_ff")


def build_detector(
    *,
    backbone: nn.Module,
    head: str = "mask_rcnn",
    num_classes: int = 91,
    min_size: int = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    box_score_thresh: float = 0.05,
    box_detections_per_img: int = 100,
    anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_test: int = 1000,
    box_batch_size_per_image: int = 512,
    box_positive_fraction: float = 0.25,
    roi_sampling_ratio: int = 2,
    box_head_dim: int = 1024,
    mask_head_channels: int = 256,
    box_head: str = "torchvision",
    mask_head: str = "torchvision",
    box_head_conv_dim: int = 256,
    box_nms_thresh: float = 0.5,
) -> GeneralizedRCNN:
    """torchvision's detector of kind ``head`` on ``backbone``.

    Args:
        backbone (nn.Module): maps images (B, 3, H, W) to an OrderedDict ``"0".."3", "pool"``
            of NCHW maps; has ``out_channels``.
        head (str): ``"mask_rcnn"`` or ``"faster_rcnn"``.
        num_classes (int): number of classes, background included (torchvision convention).
        min_size (int): images are resized so that their short side is ``min_size`` pixels...
        max_size (int): ...unless the long side would exceed ``max_size`` pixels.
        image_mean, image_std: per-channel normalisation of the transform (None: ImageNet's, for
            RGB in [0, 1], torchvision's default).
        box_score_thresh (float): detections scoring below are dropped at inference.
        box_detections_per_img (int): most detections kept per image.
        anchor_sizes: one anchor side per level P2..P6, pixels, each with aspect ratios
            0.5, 1 and 2 (torchvision's AnchorGenerator defaults).
        rpn_*_nms_top_n_*, box_batch_size_per_image, box_positive_fraction: torchvision's RPN and
            RoI-head settings.
        roi_sampling_ratio (int): RoIAlign sampling points per bin side, box and mask poolers
            (torchvision: 2).
        box_head_dim (int): width of the box head's fully connected layers, the predictor's input
            (torchvision's two: 1024; the one of ``xconv1fc_gn_fpt`` [code: FAST_RCNN.MLP_HEAD_DIM 1024]).
        mask_head_channels (int): width of the mask head's four convs and deconv (torchvision:
            256; Mask R-CNN only); with ``mask_head="v1up4convs_gn_adp_ff"`` a multiple of 64.
        box_head (str): a :data:`BOX_HEADS` name: ``"torchvision"`` (``TwoMLPHead`` on each RoI's
            own level) or ``"xconv1fc_gn_fpt"`` (the authors' :class:`AdaptivePoolingBoxHead` on
            :class:`AllLevelRoIAlign` [code]).
        mask_head (str): a :data:`MASK_HEADS` name: ``"torchvision"`` (``MaskRCNNHeads``) or
            ``"v1up4convs_gn_adp_ff"`` (the authors' :class:`AdaptivePoolingMaskHead` +
            :class:`FusedMaskPredictor` on :class:`AllLevelRoIAlign` [code]). Ignored by
            ``faster_rcnn``, which has no mask branch (as ``mask_head_channels``).
        box_head_conv_dim (int): width of the 3x3 convs of ``xconv1fc_gn_fpt``, a multiple of 32
            [code: FAST_RCNN.CONV_HEAD_DIM 256]; unused by the torchvision head.
        box_nms_thresh (float): IoU threshold of the per-class NMS over the final detections
            (torchvision: 0.5; [code]: TEST.NMS 0.5 in their configs).

    Returns:
        GeneralizedRCNN: ``MaskRCNN`` or ``FasterRCNN``.
    """
    for name, value, choices in [("head", head, HEADS), ("box_head", box_head, BOX_HEADS),
                                 ("mask_head", mask_head, MASK_HEADS)]:
        if value not in choices:
            raise ValueError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    levels = ["0", "1", "2", "3"]
    masks = head == "mask_rcnn"
    authors_box = box_head == "xconv1fc_gn_fpt"
    authors_mask = masks and mask_head == "v1up4convs_gn_adp_ff"
    heads: dict[str, nn.Module] = {"box_roi_pool": MultiScaleRoIAlign(levels, 7, roi_sampling_ratio)}
    if masks:
        heads["mask_roi_pool"] = MultiScaleRoIAlign(levels, 14, roi_sampling_ratio)
    # Head modules are passed only where a head or a width differs from torchvision's: at its
    # widths torchvision builds them itself, in its own order, so the model is
    # maskrcnn_resnet50_fpn's, initial weights included (same seed, same random draws).
    # torchvision refuses num_classes beside a predictor, so any other head passes them all.
    if authors_box or authors_mask or box_head_dim != 1024 or (masks and mask_head_channels != 256):
        if authors_mask:
            heads["mask_head"] = AdaptivePoolingMaskHead(backbone.out_channels, num_levels=len(levels),
                                                         channels=mask_head_channels, resolution=14)
            heads["mask_predictor"] = FusedMaskPredictor(mask_head_channels, num_classes)
        elif masks:
            heads["mask_head"] = MaskRCNNHeads(backbone.out_channels, [mask_head_channels] * 4, 1)
            heads["mask_predictor"] = MaskRCNNPredictor(mask_head_channels, mask_head_channels, num_classes)
        if authors_box:
            heads["box_head"] = AdaptivePoolingBoxHead(backbone.out_channels, num_levels=len(levels),
                                                       conv_dim=box_head_conv_dim, fc_dim=box_head_dim, resolution=7)
        else:
            heads["box_head"] = TwoMLPHead(backbone.out_channels * 7 * 7, box_head_dim)
        heads["box_predictor"] = FastRCNNPredictor(box_head_dim, num_classes)
    model = HEADS[head](
        backbone,
        num_classes=None if "box_predictor" in heads else num_classes,
        min_size=min_size,
        max_size=max_size,
        image_mean=image_mean,
        image_std=image_std,
        box_score_thresh=box_score_thresh,
        box_detections_per_img=box_detections_per_img,
        rpn_anchor_generator=AnchorGenerator(tuple((s,) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes)),
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        box_batch_size_per_image=box_batch_size_per_image,
        box_positive_fraction=box_positive_fraction,
        box_nms_thresh=box_nms_thresh,
        **heads,
    )
    # The authors' heads pool each RoI from every level [code], torchvision's from its own level.
    # torchvision's constructors accept only its MultiScaleRoIAlign, so that pooler goes in after
    # (poolers hold no parameters: the state_dict and the random draws are unchanged).
    if authors_box:
        model.roi_heads.box_roi_pool = AllLevelRoIAlign(levels, 7, roi_sampling_ratio)
    if authors_mask:
        model.roi_heads.mask_roi_pool = AllLevelRoIAlign(levels, 14, roi_sampling_ratio)
    return model


def build_model(cfg: dict[str, Any]) -> GeneralizedRCNN:
    """The detector described by a config dict (see ``fptbench.config``).

    Reads the ``model.*`` keys of the heads, transform, anchors, RPN and RoI sampling here
    (``model.pixel`` picks the transform's mean/std for the pixel convention the data loader
    uses), and the backbone/neck keys in :func:`~fptbench.modeling.backbone.build_backbone`.

    Raises:
        ValueError: a value out of its choices, e.g. ``model.backbone: 'resnet5' is not one of ...``.
    """
    head = cfg_get(cfg, "model.head", HEADS)
    box_head = cfg_get(cfg, "model.box_head", BOX_HEADS)
    mask_head = cfg_get(cfg, "model.mask_head", MASK_HEADS)
    num_classes = cfg_get(cfg, "model.num_classes")
    min_size = cfg_get(cfg, "model.min_size")
    max_size = cfg_get(cfg, "model.max_size")
    for key, value, low in [
        ("model.num_classes", num_classes, 2),
        ("model.min_size", min_size, 1),
        ("model.max_size", max_size, 1),
    ]:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key}: {value!r} is not an integer >= {low}")
    from fptbench.data.image import PIXEL_STATS

    mean, std = PIXEL_STATS[cfg_get(cfg, "model.pixel", PIXEL_STATS)]
    return build_detector(
        backbone=build_backbone(cfg),
        head=head,
        box_head=box_head,
        mask_head=mask_head,
        num_classes=num_classes,
        min_size=min_size,
        max_size=max_size,
        image_mean=list(mean),
        image_std=list(std),
        box_score_thresh=cfg_get(cfg, "model.box_score_thresh"),
        box_detections_per_img=cfg_get(cfg, "model.box_detections_per_img"),
        anchor_sizes=cfg_get(cfg, "model.anchor_sizes"),
        **{key: cfg_get(cfg, f"model.{key}") for key in _RPN_ROI_KEYS},
    )


_RPN_ROI_KEYS = (
    "rpn_pre_nms_top_n_train",
    "rpn_post_nms_top_n_train",
    "rpn_pre_nms_top_n_test",
    "rpn_post_nms_top_n_test",
    "box_batch_size_per_image",
    "box_positive_fraction",
    "roi_sampling_ratio",
    "box_head_dim",
    "mask_head_channels",
    "box_head_conv_dim",
    "box_nms_thresh",
)
