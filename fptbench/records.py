"""Run records: one JSON file per run saying what was run, on what, and how it scored.

A record is a flat plain dict, in the spirit of torchvision's weight metadata
(``num_params``, ``_metrics``): the report reads only these files.

    {"record_version": 1, "created": "2026-11-24T07:50:00+00:00",
     "config": {...}, "config_hash": "3f2a...",
     "git": {"commit": "a82b...", "dirty": false},
     "versions": {"python": ..., "torch": ..., "torchvision": ..., "fptbench": ..., "pycocotools": ...},
     "device": {"type": "cpu", "name": "AMD EPYC ...", "count": 1},
     "dataset": {"name": "coco2017_val", "images": 5000},
     "training": {"iterations": 90000, "wall_time_s": 12345.6},
     "metrics": {"bbox": {"AP": 38.0, ...}, "segm": {...}},
     "scored": true,
     "results": {"format": "coco", "image_set": "val2017", "detections": 123456,
                 "files": {"bbox": "detections_val2017_fptbench-bbox_results.json",
                           "segm": "detections_val2017_fptbench-segm_results.json"}}}

``config`` is the resolved config as the run was asked for (its ``train`` section at
``train.reference_batch``); a trainer's ``training`` section adds ``batch``, what it ran at
(:func:`fptbench.batch.plan_summary`: ``world_size``, ``images_per_device``, ``accumulate``,
``batch``, ``reference``, ``factor``, the schedule ``given`` and as ``run``, ``images`` seen and
``lr_per_image``), and ``trunk``, where the trunk started (``kind``: imagenet, detectron, file,
pretrain, scratch, none or checkpoint; ``key``, ``value``, ``path``, ``format``, ``sha256`` and,
for a published file, ``url`` and ``published_sha256_prefix``).

``metrics`` holds what the task's evaluation measured, in percent: COCOeval's ``bbox`` (and
``segm`` for Mask R-CNN) for detection; ``{"segmentation": {"mIoU", "pixel_acc", "mean_acc",
"per_class_iou": {class name: IoU or null}}}`` for ``model.task: segmentation``.

``scored`` says whether the split could be scored. A split without annotations (COCO test-dev's
``image_info`` file, Cityscapes or VOC test) is not: ``"scored": false``, ``metrics`` is ``{}``
and ``unscored_reason`` says why (the key is only there then).

``results`` lists the predictions written for an evaluation server, paths relative to the run
folder (:mod:`fptbench.evaluation.results_files`), or is null: detection, ``{"format": "coco",
"image_set", "files": {iou type: file}, "detections": N}`` for every split; segmentation, for a
split without labels only, ``{"format": words, "folder": folder, "images": N}`` (one PNG per
image in that folder).
"""

from __future__ import annotations

import json
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from fptbench import __version__
from fptbench.config import config_hash
from fptbench.errors import UsageError
from fptbench.paths import REPO_ROOT

__all__ = ["RECORD_VERSION", "RESULT_FILE", "RECORD_KEYS", "make_record", "read_record", "git_info", "device_info",
           "versions"]

RECORD_VERSION = 1
"""Bumped when a key of the record changes meaning or disappears."""

RESULT_FILE = "result.json"
"""The record's file name in a run folder (written by the engine, read by the launcher)."""

RECORD_KEYS = ("record_version", "created", "config", "config_hash", "git", "versions", "device",
               "dataset", "training", "metrics", "scored", "results")



def git_info(path: str | Path = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}`` of the git checkout at ``path``.

    ``dirty`` is true when ``git status --porcelain`` lists anything (untracked files included:
    a new module the run imported is a change). Outside a checkout of its own (a pip install,
    a tarball, no git) commit and dirty are ``None`` and ``reason`` says why.
    """
    path = Path(path).resolve()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()

    try:
        top = Path(git("rev-parse", "--show-toplevel")).resolve()
        if top != path:
            # e.g. site-packages inside some other repository: that commit says nothing of fptbench
            return {"commit": None, "dirty": None, "reason": f"{path} is not the top of a git checkout"}
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except FileNotFoundError:
        return {"commit": None, "dirty": None, "reason": "git is not installed"}
    except subprocess.CalledProcessError as err:
        message = " ".join((err.stderr or "").split()) or f"git exited with {err.returncode}"
        return {"commit": None, "dirty": None, "reason": f"not a git checkout: {message}"}
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"commit": None, "dirty": None, "reason": f"git failed: {err}"}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_info(device: Any = None) -> dict[str, Any]:
    """``{"type", "name", "count"}`` of the device the run used.

    ``device`` is a torch.device or string (default: cuda when available, else cpu). ``count``
    is the number of processes (one device each) of the run: torch.distributed's world size
    when initialised, else 1.
    """
    import torch
    import torch.distributed as dist

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        name = _cpu_name()
    else:
        name = device.type
    count = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return {"type": device.type, "name": name, "count": count}


def versions() -> dict[str, str | None]:
    """Versions of python and of the libraries a number depends on."""
    import torch
    import torchvision

    def dist_version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "fptbench": __version__,
            "pycocotools": dist_version("pycocotools")}


def _dataset_entry(cfg: Mapping, dataset: Any) -> dict[str, Any] | None:
    if dataset is None:
        return None
    if isinstance(dataset, Mapping):
        return {"name": dataset.get("name"), "images": dataset.get("images")}
    if isinstance(dataset, str):
        return {"name": dataset, "images": None}
    # a dataset object (fptbench.data.CocoDetection): its name if it has one, else the split
    name = getattr(dataset, "name", None) or cfg.get("data", {}).get("test")
    return {"name": name, "images": len(dataset)}


def make_record(
    cfg: Mapping[str, Any],
    *,
    metrics: Mapping[str, Any],
    dataset: Any = None,
    iterations: int | None = None,
    wall_time_s: float | None = None,
    extra: Mapping[str, Any] | None = None,
    device: Any = None,
    scored: bool = True,
    unscored_reason: str | None = None,
    results: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of one run.

    Args:
        cfg (dict): the resolved config (``load_config``); stored whole with its hash.
        metrics (dict): e.g. ``{"bbox": {"AP": ...}, "segm": {...}}`` from ``inference``, or
            ``{"segmentation": {"mIoU": ...}}`` from ``evaluate_segmentation``.
        dataset: the evaluated dataset (its ``len`` and ``name``, or ``cfg`` ``data.test``), a
            name, or ``{"name": str, "images": int}``; ``None`` when there was none.
        iterations (int): optimizer steps the weights had (``None``: not trained here).
        wall_time_s (float): training wall time, seconds.
        extra (dict): more top-level keys (e.g. ``checkpoint``, ``num_params``); may not
            replace a standard key.
        device: the torch device the run used (default: cuda if available, else cpu).
        scored (bool): whether ``metrics`` could be measured (False: a split without
            annotations or labels, ``metrics`` empty).
        unscored_reason (str): why not; required when ``scored`` is False, refused otherwise.
        results (dict): the files written for an evaluation server (see the module docstring);
            None when none were.
    """
    if scored == bool(unscored_reason):
        raise ValueError("an unscored record needs unscored_reason, and only an unscored one has it")
    record = {
        "record_version": RECORD_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": json.loads(json.dumps(cfg)),  # a plain copy; fails now if not JSON-able
        "config_hash": config_hash(cfg),
        "git": git_info(),
        "versions": versions(),
        "device": device_info(device),
        "dataset": _dataset_entry(cfg, dataset),
        "training": {"iterations": iterations,
                     "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 3)},
        "metrics": json.loads(json.dumps(metrics)),
        "scored": bool(scored),
        "results": None if results is None else json.loads(json.dumps(results)),
    }
    if not scored:
        record["unscored_reason"] = unscored_reason
    for key, value in (extra or {}).items():
        if key in record:
            raise ValueError(f"extra key {key!r} would replace the record's own {key!r}")
        record[key] = value
    return record


# ---------------------------------------------------------------------------------------------
# files

def read_record(path: str | Path) -> dict[str, Any]:
    """Read a run record written by :func:`fptbench.fileio.write_json_atomic`.

    Raises:
        UsageError: the file is missing, unreadable, not JSON, or not a record (a JSON object
            with ``config`` and ``metrics``); the message names the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: run record not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: cannot read the run record: {getattr(err, 'strerror', None) or err}") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(record, dict):
        raise UsageError(f"{path}: expected a run record (a JSON object), got a JSON {type(record).__name__}")
    missing = [key for key in ("config", "metrics") if key not in record]
    if missing:
        raise UsageError(f"{path}: not a run record: missing key(s) {', '.join(missing)}")
    return record
