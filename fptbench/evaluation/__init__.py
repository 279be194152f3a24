"""Evaluation: detector inference over a split and pycocotools' COCOeval (box and mask AP)."""

from fptbench.evaluation.coco_evaluator import IOU_TYPES, METRIC_NAMES, COCOEvaluator, masks_to_rle
from fptbench.evaluation.inference import inference, iou_types_of

__all__ = ["IOU_TYPES", "METRIC_NAMES", "COCOEvaluator", "inference", "iou_types_of", "masks_to_rle"]
