"""Instance-level detectors: torchvision's Mask R-CNN / Faster R-CNN on a BFP or FPT backbone.

Every setting not named here (anchors, RPN and RoI sampling, NMS, RoIAlign, heads) is
torchvision's default, so that with all transformers off :func:`build_model` is
``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` parameter for parameter.
"""

from typing import Any, Callable, Sequence

from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from fptbench.modeling.backbone import build_backbone, cfg_get

# cfg model.head -> torchvision detector class
HEADS: dict[str, Callable[..., GeneralizedRCNN]] = {
    "mask_rcnn": MaskRCNN,
    "faster_rcnn": FasterRCNN,
}


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
        box_head_dim (int): width of the box head's two fully connected layers (torchvision: 1024).
        mask_head_channels (int): width of the mask head's four convs and deconv (torchvision:
            256; Mask R-CNN only).

    Returns:
        GeneralizedRCNN: ``MaskRCNN`` or ``FasterRCNN``.
    """
    if head not in HEADS:
        raise ValueError(f"head: {head!r} is not one of {', '.join(HEADS)}")
    levels = ["0", "1", "2", "3"]
    heads: dict[str, nn.Module] = {"box_roi_pool": MultiScaleRoIAlign(levels, 7, roi_sampling_ratio)}
    if head == "mask_rcnn":
        heads["mask_roi_pool"] = MultiScaleRoIAlign(levels, 14, roi_sampling_ratio)
    # Head modules are passed only where a width differs from torchvision's: at its widths
    # torchvision builds them itself, in its own order, so the model is maskrcnn_resnet50_fpn's,
    # initial weights included (same seed, same random draws). torchvision refuses num_classes
    # beside a predictor, so a custom width passes every head and predictor.
    if box_head_dim != 1024 or (head == "mask_rcnn" and mask_head_channels != 256):
        if head == "mask_rcnn":
            heads["mask_head"] = MaskRCNNHeads(backbone.out_channels, [mask_head_channels] * 4, 1)
            heads["mask_predictor"] = MaskRCNNPredictor(mask_head_channels, mask_head_channels, num_classes)
        heads["box_head"] = TwoMLPHead(backbone.out_channels * 7 * 7, box_head_dim)
        heads["box_predictor"] = FastRCNNPredictor(box_head_dim, num_classes)
    return HEADS[head](
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
        **heads,
    )


def build_model(cfg: dict[str, Any]) -> GeneralizedRCNN:
    """The detector described by a config dict (see ``fptbench.config``).

    Reads the ``model.*`` keys of the head, transform, anchors, RPN and RoI sampling here
    (``model.pixel`` picks the transform's mean/std for the pixel convention the data loader
    uses), and the backbone/neck keys in :func:`~fptbench.modeling.backbone.build_backbone`.

    Raises:
        ValueError: a value out of its choices, e.g. ``model.backbone: 'resnet5' is not one of ...``.
    """
    head = cfg_get(cfg, "model.head", HEADS)
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
)
