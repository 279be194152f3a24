"""``fptbench eval``: evaluation of a model or checkpoint, written as the run record: COCOeval's AP
for detection, mIoU and pixel accuracy for segmentation; and the results files an evaluation
server takes (COCO results JSON for detection, label PNGs for a segmentation split without labels)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fptbench.engine.distributed import DistInfo, init_distributed
from fptbench.engine.model import load_model, set_train_sizes, weights_digest
from fptbench.records import RESULT_FILE

__all__ = ["RESULT_FILE", "evaluate_model", "evaluate_checkpoint"]


def evaluate_model(
    cfg: dict,
    model: torch.nn.Module,
    output_dir: str | os.PathLike,
    *,
    info: DistInfo | None = None,
    training: dict[str, Any] | None = None,
    progress: bool = True,
    given: dict | None = None,
) -> dict[str, Any]:
    """Evaluate on ``data.test``, write the results files and ``OUTPUT/result.json`` (rank 0),
    and return the record. ``given``: the config as the run was asked for, which the record holds
    with its hash (default ``cfg``; the trainer's ``cfg`` has its schedule at the run's batch, the
    record's ``training.batch`` says how).

    The one place where ``model.task`` chooses the evaluation. Detection: every detection in
    COCO's results format, one file per iou type named as the COCO server takes it
    (:mod:`fptbench.evaluation.results_files`), and pycocotools' COCOeval of those same
    detections, ``metrics`` ``{"bbox": {"AP", ...}, "segm": {...}}`` (segm for Mask R-CNN).
    Segmentation: :func:`~fptbench.evaluation.segmentation.evaluate_segmentation` with the
    config's test-time inference (``seg.test_mode``, ``seg.test_crop_size`` / ``seg.test_stride``
    for windows, ``seg.test_flip``, ``seg.test_scales``), ``metrics`` ``{"segmentation": {"mIoU",
    "pixel_acc", "mean_acc", "per_class_iou": {class name: IoU}}}``; all in percent.

    A split without annotations (COCO's ``image_info`` files: ``coco2017_test-dev``) or labels
    (``cityscapes_test``, ``voc2012_test``) is run, not scored: its results files are written
    (segmentation: one PNG per image in ``OUTPUT/{data.test}_results/``), the record has
    ``"scored": false``, ``unscored_reason`` and empty ``metrics``. The record's ``results``
    lists the files, relative to ``output_dir``.

    ``training`` is the trainer's summary (iterations, wall_time_s, final_loss, weights_sha256)
    or, for a bare checkpoint, what is known of it.
    """
    from fptbench.data import build_dataset
    from fptbench.fileio import write_json_atomic
    from fptbench.records import make_record

    info = info or init_distributed(cfg)
    dataset = build_dataset(cfg, "test")
    name = cfg["data"]["test"]
    out = Path(output_dir)
    if cfg["model"]["task"] == "segmentation":
        scored, reason, metrics, results, line = _segmentation(cfg, model, dataset, out, info, progress)
    else:
        scored, reason, metrics, results, line = _detection(cfg, model, dataset, out, info, progress)
    training = dict(training or {})
    record = make_record(
        given if given is not None else cfg,
        metrics=metrics,
        dataset={"name": name, "images": len(dataset)},
        iterations=training.pop("iterations", None),
        wall_time_s=training.pop("wall_time_s", None),
        device=info.device,
        scored=scored,
        unscored_reason=reason,
        results=results,
    )
    record["training"].update(training)  # final loss, weights digest, world size, checkpoint
    if info.rank == 0:
        write_json_atomic(out / RESULT_FILE, record)  # last: the record says the files are complete
        print(f"[fptbench] evaluated {len(dataset)} images of {name}: {line} -> {out / RESULT_FILE}")
    return record


_Outcome = tuple[bool, "str | None", dict, "dict | None", str]
"""(scored, unscored_reason, metrics, results entry of the record, summary for the printed line)"""


def _detection(cfg: dict, model: torch.nn.Module, dataset: Any, out: Path, info: DistInfo,
               progress: bool) -> _Outcome:
    from fptbench.data import coco_split
    from fptbench.evaluation import COCOEvaluator, detect, iou_types_of, write_coco_results
    from fptbench.evaluation.results_files import coco_results_name

    set_train_sizes(model, cfg, training=False)
    evaluator = COCOEvaluator(dataset.coco, iou_types=iou_types_of(model))
    detect(model, dataset, evaluator, device=info.device, rank=info.rank, world_size=info.world_size,
           progress=progress)  # every rank ends with every rank's detections
    metrics = evaluator.evaluate() if dataset.annotated else {}  # collective: before rank 0 alone writes
    image_set = coco_split(cfg["data"]["test"]).image_set
    files = {t: coco_results_name(image_set, t) for t in evaluator.iou_types}
    if info.rank == 0:
        files = write_coco_results(evaluator, out, image_set=image_set)
    count = len(evaluator.results)
    results = {"format": "coco", "image_set": image_set, "files": files, "detections": count}
    paths = " and ".join(str(out / f) for f in files.values())
    if not dataset.annotated:
        reason = f"{dataset.ann_file} has no annotations (an image_info file): results for the evaluation server"
        return False, reason, {}, results, f"not scored (no annotations): wrote {count} detections to {paths}"
    line = ", ".join(f"{kind} AP {m['AP']:.1f}" for kind, m in metrics.items())
    return True, None, metrics, results, f"{line}; detections in {paths}"


def _segmentation(cfg: dict, model: torch.nn.Module, dataset: Any, out: Path, info: DistInfo,
                  progress: bool) -> _Outcome:
    seg = cfg["seg"]
    test_time = dict(mode=seg["test_mode"], crop_size=tuple(seg["test_crop_size"] or seg["crop_size"]),
                     stride=tuple(seg["test_stride"]) or None, flip=seg["test_flip"], scales=tuple(seg["test_scales"]))
    if not dataset.labelled:
        from fptbench.evaluation import write_segmentation_results

        folder = f"{cfg['data']['test']}_results"
        count = write_segmentation_results(model, dataset, out / folder, device=info.device, rank=info.rank,
                                           world_size=info.world_size, progress=progress, **test_time)
        reason = f"the {dataset.layout} {dataset.split} split has no labels: label images for the evaluation server"
        results = {"format": dataset.result_format, "folder": folder, "images": count}
        return False, reason, {}, results, f"not scored (no labels): wrote {count} label images to {out / folder}"
    from fptbench.evaluation.segmentation import evaluate_segmentation

    metrics = evaluate_segmentation(model, dataset, device=info.device, rank=info.rank, world_size=info.world_size,
                                    progress=progress, **test_time)
    line = ", ".join(f"{name} {value:.1f}" if value is not None else f"{name} n/a"  # None: no pixel scored
                     for name, value in (("mIoU", metrics["segmentation"]["mIoU"]),
                                         ("pixel accuracy", metrics["segmentation"]["pixel_acc"])))
    return True, None, metrics, None, line


def evaluate_checkpoint(cfg: dict, ckpt: str, output_dir: str | os.PathLike, *, progress: bool = True) -> dict[str, Any]:
    """Build the model of ``cfg``, load ``ckpt`` (ours, or a torchvision detection file), evaluate."""
    from fptbench.engine.checkpoint import load_checkpoint
    from fptbench.errors import UsageError

    from fptbench.fileio import writable_dir

    info = init_distributed(cfg)  # first: an unusable device is refused before anything is written
    writable_dir(output_dir)  # before the evaluation, whose record would be lost
    model = load_model(cfg, ckpt, log=_print if info.rank == 0 else None)
    training: dict[str, Any] = {"checkpoint": str(ckpt), "weights_sha256": weights_digest(model)}
    try:
        state = load_checkpoint(ckpt)
        training["iterations"] = state["iteration"]
        training["wall_time_s"] = state["extra"].get("train_time_s")
    except UsageError:  # a torchvision weights file: no iteration count
        pass
    model.to(info.device)
    return evaluate_model(cfg, model, output_dir, info=info, training=training, progress=progress)


def _print(message: str) -> None:
    print(f"[fptbench] {message}")
