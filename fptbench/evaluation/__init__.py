"""Evaluation: detector inference over a split and pycocotools' COCOeval (box and mask AP), and
the results files the evaluation servers take (``results_files.py``)."""

from fptbench.evaluation.coco_evaluator import IOU_TYPES, METRIC_NAMES, COCOEvaluator, masks_to_rle
from fptbench.evaluation.inference import detect, inference, iou_types_of
from fptbench.evaluation.results_files import (RESULTS_ALG, coco_results_name, write_coco_results,
                                               write_segmentation_results)

__all__ = ["IOU_TYPES", "METRIC_NAMES", "RESULTS_ALG", "COCOEvaluator", "coco_results_name", "detect", "inference",
           "iou_types_of", "masks_to_rle", "write_coco_results", "write_segmentation_results"]
