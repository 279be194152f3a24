"""Results in the formats the evaluation servers take, written into a run folder.

Detection, COCO's results format [spec: cocodataset.org "Results Format" and "Upload"]: one JSON
list per iou type, named ``[type]_[testset]_[alg]_results.json`` as the COCO server asks
(``type`` = ``detections``; ``testset`` the image set, ``test-dev2017`` for
``coco2017_test-dev``). The server scores boxes and masks as separate submissions, so each has its
own file, the iou type closing the algorithm name [ours, as pycocotools' sample results
``instances_val2014_fakebbox100_results.json`` / ``..._fakesegm100_...`` do]:

- ``detections_{testset}_fptbench-bbox_results.json``: ``{"image_id", "category_id", "bbox":
  [x, y, w, h], "score"}`` per detection;
- ``detections_{testset}_fptbench-segm_results.json`` (Mask R-CNN): ``{"image_id",
  "category_id", "segmentation": compressed RLE, "score"}``, no box, as COCO's segmentation
  results are.

These are exactly what :class:`~fptbench.evaluation.coco_evaluator.COCOEvaluator` scores
(:meth:`~fptbench.evaluation.coco_evaluator.COCOEvaluator.results_for`): ``COCO.loadRes`` of a
file and ``COCOeval`` give the record's AP. To submit, zip the file alone
(``zip detections_test-dev2017_fptbench-bbox_results.zip detections_test-dev2017_fptbench-bbox_results.json``).

Segmentation, a split without labels: one PNG per image in a folder, as the dataset's layout
names and encodes it (:meth:`fptbench.data.segmentation.SegmentationDataset.result_file`:
Cityscapes labelIds, VOC palette indices).

Every file is written atomically (:mod:`fptbench.fileio`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from fptbench.evaluation.coco_evaluator import COCOEvaluator
from fptbench.evaluation.segmentation import predict_segmentation
from fptbench.fileio import atomic_write, write_bytes_atomic

__all__ = ["RESULTS_ALG", "coco_results_name", "write_coco_results", "write_segmentation_results"]

RESULTS_ALG = "fptbench"
"""The ``[alg]`` of the COCO results file names, before the iou type."""


def coco_results_name(image_set: str, iou_type: str, alg: str = RESULTS_ALG) -> str:
    """``detections_{image_set}_{alg}-{iou_type}_results.json``: the COCO server's file name
    (``[type]_[testset]_[alg]_results.json``) of one iou type's results.

    Raises:
        ValueError: ``alg`` or ``image_set`` is empty or holds ``_`` or ``/`` (the server splits
            the name on ``_``).
    """
    for what, value in (("alg", alg), ("image_set", image_set)):
        if not value or "_" in value or "/" in value:
            raise ValueError(f"{what} must be a non-empty name without '_' or '/', got {value!r}")
    return f"detections_{image_set}_{alg}-{iou_type}_results.json"


def _write_json(path: Path, results: list[dict[str, Any]]) -> None:
    # compact, streamed by json.dump: a whole split's masks need not exist twice as one string
    atomic_write(path, lambda f: json.dump(results, f, separators=(",", ":"), allow_nan=False), binary=False)


def write_coco_results(
    evaluator: COCOEvaluator,
    out_dir: str | os.PathLike,
    *,
    image_set: str,
    alg: str = RESULTS_ALG,
) -> dict[str, str]:
    """Write the evaluator's detections as one COCO results file per iou type.

    Args:
        evaluator (COCOEvaluator): after :meth:`~COCOEvaluator.gather` under torch.distributed
            (call this on one rank: it only writes).
        out_dir: the run folder.
        image_set (str): the ``[testset]`` of the names
            (:attr:`fptbench.data.catalog.CocoSplit.image_set`).
        alg (str): the ``[alg]`` of the names.

    Returns:
        dict[str, str]: iou type (the evaluator's, in order) -> file name in ``out_dir``
        (:func:`coco_results_name`).
    """
    names = {t: coco_results_name(image_set, t, alg) for t in evaluator.iou_types}
    for iou_type, name in names.items():
        _write_json(Path(out_dir) / name, evaluator.results_for(iou_type))
    return names


def write_segmentation_results(
    model: nn.Module,
    dataset: Any,
    folder: str | os.PathLike,
    *,
    device: torch.device | str,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    mode: str = "whole",
    crop_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
) -> int:
    """Segment this rank's share of ``dataset`` and write each prediction as the server's file.

    Args:
        model (nn.Module): returns ``{"out": logits (B, C, H, W)}``, already on ``device``.
        dataset: a :class:`~fptbench.data.segmentation.SegmentationDataset` whose layout has a
            server format (``result_file(index, pred) -> (relative path, PNG bytes)``).
        folder: where the files go (``folder / relative path``); made if needed.
        device, rank, world_size, progress, mode, crop_size, stride, flip, scales: as
            :func:`~fptbench.evaluation.segmentation.predict_segmentation`. Every rank writes its
            own images; with torch.distributed initialised every rank must call this (the
            counts are summed).

    Returns:
        int: the number of files written by all ranks together.
    """
    folder = Path(folder)

    def write(index: int, pred: Tensor, label: Tensor | None) -> None:
        relative, data = dataset.result_file(index, pred)
        write_bytes_atomic(folder / relative, data)

    written = predict_segmentation(model, dataset, write, device=device, rank=rank, world_size=world_size,
                                   progress=progress, mode=mode, crop_size=crop_size, stride=stride, flip=flip,
                                   scales=scales)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        total = torch.tensor([written], dtype=torch.int64, device=device)  # NCCL reduces CUDA tensors
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        written = int(total.item())
    return written
