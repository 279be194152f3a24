"""COCO box and mask AP with pycocotools' official ``COCOeval``.

Detector outputs are turned into COCO result dicts here and scored by pycocotools, as
torchvision's ``references/detection/coco_eval.py`` and detectron2's ``COCOEvaluator`` do;
nothing of the metric itself is re-implemented.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["IOU_TYPES", "METRIC_NAMES", "COCOEvaluator", "masks_to_rle"]

logger = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
"""pycocotools' names of ``COCOeval.stats[0..5]``: AP at IoU .50:.95, .50, .75; small, medium, large."""


def masks_to_rle(masks: torch.Tensor, threshold: float = 0.5) -> list[dict[str, Any]]:
    """Binarise soft masks and encode each as COCO compressed RLE.

    Args:
        masks (Tensor): (N, 1, H, W) or (N, H, W) mask probabilities in [0, 1] (torchvision's
            Mask R-CNN output, pasted into the original image) or booleans.
        threshold (float): a pixel belongs to the object where its probability is > threshold
            (torchvision's references use 0.5).

    Returns:
        list[dict]: N dicts ``{"size": [H, W], "counts": str}``; ``counts`` is decoded to ``str``
        so the list is JSON-serialisable.
    """
    if masks.dim() == 4:
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ValueError(f"masks must be (N, 1, H, W) or (N, H, W), got shape {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    binary = (masks.detach() > threshold).cpu().numpy().astype(np.uint8)  # binarise on the device: 4x less to copy
    # pycocotools encodes (H, W, N) column-major arrays, one RLE per last index
    rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class COCOEvaluator:
    """Collects detections image by image and scores them with ``COCOeval``.

    Args:
        coco_gt (COCO): the ground truth (``dataset.coco``); its category ids are the detector's
            labels (torchvision's convention: COCO category ids used directly as labels).
        iou_types (sequence of str): any of ``"bbox"``, ``"segm"``.

    Images are keyed by id, so an image processed twice (the padding of a distributed sampler)
    counts once. Only the images passed to :meth:`process` are scored (``params.imgIds``), so
    a subset of a split (``data.max_images``, one shard) is not charged with the others' misses.
    """

    def __init__(self, coco_gt: COCO, iou_types: Sequence[str] = IOU_TYPES):
        iou_types = tuple(iou_types)
        bad = [t for t in iou_types if t not in IOU_TYPES]
        if bad or not iou_types:
            raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {iou_types}")
        self.coco_gt = coco_gt
        self.iou_types = iou_types
        self._known_ids = set(coco_gt.getImgIds())
        # image id -> that image's result dicts (bbox, and segmentation when the model has masks)
        self._per_image: dict[int, list[dict[str, Any]]] = {}
        self._gathered = False
        self.summaries: dict[str, str] = {}
        """iou_type -> pycocotools' 12-line summary table of the last :meth:`evaluate`."""

    # -- collection ------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every detection (start a new evaluation with the same ground truth)."""
        self._per_image = {}
        self._gathered = False
        self.summaries = {}

    def process(self, outputs: Sequence[Mapping[str, torch.Tensor]], image_ids: Iterable[int]) -> None:
        """Add the detections of a batch.

        Args:
            outputs (list[dict]): torchvision detector outputs, one per image, in original image
                pixels: ``boxes`` (N, 4) xyxy, ``labels`` (N,) COCO category ids, ``scores`` (N,),
                optional ``masks`` (N, 1, H, W) probabilities (binarised at 0.5).
            image_ids (list[int]): the COCO image id of each output.
        """
        image_ids = [int(i) for i in image_ids]
        if len(image_ids) != len(outputs):
            raise ValueError(f"got {len(outputs)} outputs for {len(image_ids)} image ids")
        for image_id, output in zip(image_ids, outputs):
            if image_id not in self._known_ids:
                raise ValueError(f"image id {image_id} is not in the ground truth")
            self._per_image[image_id] = self._to_coco(image_id, output)
        self._gathered = False

    @staticmethod
    def _to_coco(image_id: int, output: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
        boxes = output["boxes"].detach().cpu().to(torch.float64)
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist() if len(boxes) else []
        labels = output["labels"].detach().cpu().tolist()
        scores = output["scores"].detach().cpu().tolist()
        rles = masks_to_rle(output["masks"]) if "masks" in output else None
        results = []
        for k, (box, label, score) in enumerate(zip(xywh, labels, scores)):
            result = {"image_id": image_id, "category_id": int(label), "bbox": box,
                      "score": float(score)}
            if rles is not None:
                result["segmentation"] = rles[k]
            results.append(result)
        return results

    def gather(self) -> None:
        """Merge every rank's detections into every rank: collective when torch.distributed is
        initialised (all ranks must call it), nothing to do otherwise or when already gathered."""
        if self._gathered or not _is_distributed():
            return
        shards: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(shards, self._per_image)
        merged: dict[int, list[dict[str, Any]]] = {}
        for shard in shards:
            merged.update(shard)  # an image seen by two ranks (sampler padding) is kept once
        self._per_image = merged
        self._gathered = True

    @property
    def image_ids(self) -> list[int]:
        """Ids of the images processed so far (on this rank until :meth:`gather`), sorted."""
        return sorted(self._per_image)

    @property
    def results(self) -> list[dict[str, Any]]:
        """Every detection as a COCO result dict (``image_id``, ``category_id``, ``bbox`` xywh,
        ``score``, ``segmentation`` RLE when the model has masks), in image id order. After
        :meth:`gather` (or :meth:`evaluate`), all ranks' detections. :meth:`results_for` gives
        them as a COCO ``*_results.json`` of one iou type holds them."""
        return [r for image_id in self.image_ids for r in self._per_image[image_id]]

    def results_for(self, iou_type: str) -> list[dict[str, Any]]:
        """The detections in COCO's results format of one iou type, new dicts in image id order:
        what :meth:`evaluate` scores and what a ``*_results.json`` of that type holds.

        ``"bbox"``: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``. ``"segm"``:
        ``{"image_id", "category_id", "segmentation": RLE (counts str), "score"}``, the detections
        that have a mask, without their box, as COCO's segmentation results are: ``loadRes``
        then takes a mask detection's area from its mask (detectron2 does the same), so that
        small / medium / large of mask AP mean the mask's area.
        """
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        drop = "bbox" if iou_type == "segm" else "segmentation"
        return [{k: v for k, v in r.items() if k != drop} for r in self.results
                if iou_type == "bbox" or "segmentation" in r]

    # -- scoring ---------------------------------------------------------------------------

    def evaluate(self) -> dict[str, dict[str, float | None]]:
        """Score the collected detections; collective when torch.distributed is initialised.

        Returns:
            ``{"bbox": {"AP": .., "AP50": .., "AP75": .., "APs": .., "APm": .., "APl": ..},
            "segm": {...}}`` for the evaluator's iou_types, in percent (``COCOeval.stats * 100``);
            identical on every rank. An iou_type without detections scores 0; a value is
            ``None`` where COCOeval has nothing to average (its -1: no ground truth in that
            area range among the evaluated images).
        """
        if "annotations" not in self.coco_gt.dataset:
            raise ValueError("the ground truth has no annotations (an image_info file): nothing to score")
        self.gather()
        metrics: dict[str, dict[str, float | None]] | None = None
        if not _is_distributed() or dist.get_rank() == 0:
            metrics = {t: self._evaluate_one(t) for t in self.iou_types}
        if _is_distributed():
            # one COCOeval (rank 0), the same numbers everywhere
            box = [metrics, self.summaries]
            dist.broadcast_object_list(box, src=0)
            metrics, self.summaries = box
        return metrics

    def _evaluate_one(self, iou_type: str) -> dict[str, float | None]:
        image_ids = self.image_ids
        if not image_ids:
            return {name: 0.0 for name in METRIC_NAMES}
        results = self.results_for(iou_type)  # new dicts: loadRes writes into the dicts it gets
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet):
            coco_dt = self.coco_gt.loadRes(results) if results else self._empty_results()
            coco_eval = COCOeval(self.coco_gt, coco_dt, iouType=iou_type)
            coco_eval.params.imgIds = image_ids
            coco_eval.evaluate()
            coco_eval.accumulate()
            table = io.StringIO()
            with contextlib.redirect_stdout(table):
                coco_eval.summarize()
        self.summaries[iou_type] = table.getvalue()
        logger.info("COCOeval %s:\n%s", iou_type, self.summaries[iou_type])
        return {name: (float(v) * 100.0 if v >= 0 else None)
                for name, v in zip(METRIC_NAMES, coco_eval.stats[: len(METRIC_NAMES)])}

    def _empty_results(self) -> COCO:
        """A result set with no detections (``loadRes`` cannot take an empty list):
        COCOeval then scores every category with ground truth as 0."""
        empty = COCO()
        empty.dataset = {"images": list(self.coco_gt.dataset["images"]),
                         "categories": list(self.coco_gt.dataset.get("categories", [])),
                         "annotations": []}
        empty.createIndex()
        return empty
