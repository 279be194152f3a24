"""``fptbench eval``: evaluation of a model or checkpoint, written as the run record: COCOeval's AP
for detection, mIoU and pixel accuracy for segmentation."""

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
) -> dict[str, Any]:
    """Evaluate on ``data.test``, then write ``OUTPUT/result.json`` (rank 0) and return the record.

    The one place where ``model.task`` chooses the evaluation. Detection: pycocotools' COCOeval,
    ``metrics`` ``{"bbox": {"AP", ...}, "segm": {...}}`` (segm for Mask R-CNN). Segmentation:
    :func:`~fptbench.evaluation.segmentation.evaluate_segmentation` with the config's test-time
    inference (``seg.test_mode``, ``seg.test_crop_size`` / ``seg.test_stride`` for windows,
    ``seg.test_flip``, ``seg.test_scales``), ``metrics`` ``{"segmentation": {"mIoU", "pixel_acc",
    "mean_acc", "per_class_iou": {class name: IoU}}}``; all in percent.

    ``training`` is the trainer's summary (iterations, wall_time_s, final_loss, weights_sha256)
    or, for a bare checkpoint, what is known of it.
    """
    from fptbench.data import build_dataset
    from fptbench.fileio import write_json_atomic
    from fptbench.records import make_record

    info = info or init_distributed(cfg)
    dataset = build_dataset(cfg, "test")
    if cfg["model"]["task"] == "segmentation":
        from fptbench.evaluation.segmentation import evaluate_segmentation

        seg = cfg["seg"]
        metrics = evaluate_segmentation(
            model, dataset, device=info.device, rank=info.rank, world_size=info.world_size, progress=progress,
            mode=seg["test_mode"], crop_size=tuple(seg["test_crop_size"] or seg["crop_size"]),
            stride=tuple(seg["test_stride"]) or None, flip=seg["test_flip"], scales=tuple(seg["test_scales"]))
        line = ", ".join(f"{name} {value:.1f}" if value is not None else f"{name} n/a"  # None: no pixel scored
                         for name, value in (("mIoU", metrics["segmentation"]["mIoU"]),
                                             ("pixel accuracy", metrics["segmentation"]["pixel_acc"])))
    else:
        from fptbench.evaluation import inference

        set_train_sizes(model, cfg, training=False)
        metrics = inference(model, dataset, device=info.device, rank=info.rank, world_size=info.world_size,
                            progress=progress)
        line = ", ".join(f"{kind} AP {m['AP']:.1f}" for kind, m in metrics.items())
    training = dict(training or {})
    record = make_record(
        cfg,
        metrics=metrics,
        dataset={"name": cfg["data"]["test"], "images": len(dataset)},
        iterations=training.pop("iterations", None),
        wall_time_s=training.pop("wall_time_s", None),
        device=info.device,
    )
    record["training"].update(training)  # final loss, weights digest, world size, checkpoint
    if info.rank == 0:
        write_json_atomic(Path(output_dir) / RESULT_FILE, record)
        print(f"[fptbench] evaluated {len(dataset)} images of {cfg['data']['test']}: {line} -> {Path(output_dir) / RESULT_FILE}")
    return record


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
