"""Run a detector over a dataset split (:func:`detect`) and score it with :class:`COCOEvaluator`
(:func:`inference`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from fptbench.evaluation.coco_evaluator import IOU_TYPES, COCOEvaluator

__all__ = ["detect", "inference", "iou_types_of"]


def iou_types_of(model: nn.Module) -> tuple[str, ...]:
    """``("bbox", "segm")`` for a Mask R-CNN, ``("bbox",)`` for a detector without a mask head."""
    core = getattr(model, "module", model)  # DistributedDataParallel wraps the detector
    roi_heads = getattr(core, "roi_heads", None)
    has_mask = roi_heads is not None and hasattr(roi_heads, "has_mask") and roi_heads.has_mask()
    return IOU_TYPES if has_mask else ("bbox",)


def detect(
    model: nn.Module,
    dataset: Any,
    evaluator: COCOEvaluator,
    *,
    device: torch.device | str,
    batch_size: int = 1,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> COCOEvaluator:
    """Detect every image of this rank's share of ``dataset`` into ``evaluator``, then gather
    every rank's detections (:meth:`COCOEvaluator.gather`): no scoring, so a split without
    annotations (an ``image_info`` file) runs too.

    Args:
        model (nn.Module): a torchvision ``GeneralizedRCNN`` (or DDP around one), already on
            ``device``; set to eval mode for the run and put back in its previous mode after.
        dataset: ``dataset[i] -> (image, target)``, image (3, H, W) float32 in the model's
            pixel convention, ``target["image_id"]`` the COCO image id
            (``fptbench.data.CocoDetection``).
        evaluator (COCOEvaluator): collects the detections (its ground truth: ``dataset.coco``).
        device: where the images go.
        batch_size (int): images per forward pass.
        rank (int), world_size (int): this process takes items ``rank, rank + world_size, ...``;
            with torch.distributed initialised every rank must call this (the gather is
            collective) and all end with every rank's detections.
        progress (bool): tqdm bar on rank 0.

    Returns:
        COCOEvaluator: ``evaluator``, holding every detection (``results`` / ``results_for``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    indices = list(range(rank, len(dataset), world_size))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(indices), desc="inference", unit="img",
                                          disable=not progress or rank != 0, dynamic_ncols=True) as bar:
            for start in range(0, len(indices), batch_size):
                items = [dataset[i] for i in indices[start:start + batch_size]]
                images = [image.to(device, non_blocking=True) for image, _ in items]
                image_ids = [int(target["image_id"]) for _, target in items]
                outputs = model(images)
                evaluator.process(outputs, image_ids)
                bar.update(len(items))
    finally:
        model.train(was_training)
    evaluator.gather()
    return evaluator


def inference(
    model: nn.Module,
    dataset: Any,
    *,
    device: torch.device | str,
    batch_size: int = 1,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    evaluator: COCOEvaluator | None = None,
) -> dict[str, dict[str, float | None]]:
    """Detect every image of this rank's share of ``dataset`` (:func:`detect`) and return COCO
    metrics.

    Args:
        model, dataset, device, batch_size, rank, world_size, progress: as :func:`detect`;
            ``dataset.coco`` the ground truth, with annotations.
        evaluator (COCOEvaluator): collects the detections; one for ``dataset.coco`` with the
            model's iou types if not given. Pass one to keep its ``results`` afterwards.

    Returns:
        ``{"bbox": {"AP": ..., ...}, "segm": {...}}`` in percent (see ``COCOEvaluator.evaluate``),
        the same on every rank.
    """
    if evaluator is None:
        evaluator = COCOEvaluator(dataset.coco, iou_types=iou_types_of(model))
    detect(model, dataset, evaluator, device=device, batch_size=batch_size, rank=rank, world_size=world_size,
           progress=progress)
    return evaluator.evaluate()
