"""What a sweep knows, on disk: the sweep's state file and each run folder's small files.

Layout of ``results/<experiment>/``::

    sweep.json            run id -> executor, job id, submitit folder, submissions (this module)
    .submitit/<stamp>/    submitit's pickles and logs, one folder per submission
    <run id>/result.json  the run record; complete once it has "cell", "profile" and "launch"
    <run id>/launch.json  attempts so far (written by the cell at every start, requeues included)
    <run id>/error.json   the last attempt's exception and traceback, if it raised
    <run id>/checkpoints/ training checkpoints (resume after preemption)

One writer each: the ``sweep`` command writes sweep.json, the cell writes its own run folder.
Every write is atomic (temp file + rename).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fptbench.errors import UsageError
from fptbench.fileio import write_json_atomic
from fptbench.records import RESULT_FILE

__all__ = [
    "COMPLETE_KEYS", "EXECUTORS", "STATE_FILE", "LAUNCH_FILE", "ERROR_FILE", "RESULT_FILE",
    "now_iso", "read_json", "json_problem", "is_complete", "read_complete_record", "SweepState",
]

LAUNCH_FILE = "launch.json"
ERROR_FILE = "error.json"
STATE_FILE = "sweep.json"
COMPLETE_KEYS = ("cell", "profile", "launch")
STATE_VERSION = 1


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it does not exist or is not a complete JSON object
    (files are written atomically, so a partial file means a foreign writer: treated as absent)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def json_problem(path: Path) -> str:
    """Why ``path`` exists but holds no JSON object ('' when it is absent or fine): a truncated or
    corrupt file, which every write here avoids (temp file + rename), so a disk fault or a hand."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return ""
    except IsADirectoryError:
        return "a folder, not a file"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as err:
        return f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
    return "" if isinstance(data, dict) else f"a JSON {type(data).__name__}, not an object"


def is_complete(record: dict[str, Any] | None) -> bool:
    """A finished cell's record: trained, evaluated, profiled, and signed by the launcher."""
    return record is not None and all(key in record for key in COMPLETE_KEYS) and "metrics" in record


def read_complete_record(run_dir: Path) -> dict[str, Any] | None:
    record = read_json(run_dir / RESULT_FILE)
    return record if is_complete(record) else None


EXECUTORS = ("local", "slurm", "debug")  # the launcher's executors (fptbench.launch.sweep uses this one)


def _entry_problem(entry: Any) -> str:
    """What is wrong with one cell's entry of sweep.json (hand-edited?), or '' if nothing."""
    if not isinstance(entry, dict):
        return f"expected an object, got {type(entry).__name__}"
    if entry.get("executor") not in EXECUTORS:
        return f"executor: expected one of {', '.join(EXECUTORS)}, got {entry.get('executor')!r}"
    for key in ("job_id", "folder"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            return f"{key}: expected a non-empty string, got {entry.get(key)!r}"
    if entry["executor"] == "local" and not entry["job_id"].isdigit():
        return f"job_id: a local job id is a process id, got {entry['job_id']!r}"
    if not isinstance(entry.get("submitted", ""), str):
        return f"submitted: expected an ISO time, got {entry['submitted']!r}"
    for key in ("submissions", "pid_start"):
        value = entry.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{key}: expected a non-negative integer, got {value!r}"
    return ""


class SweepState:
    """``results/<experiment>/sweep.json``: run id -> the job that runs (or ran) it.

    Entry of a cell: ``{"executor", "job_id", "folder", "submitted", "submissions"}``;
    ``submissions`` counts how many times the sweep command submitted the cell (requeues by
    the scheduler are counted by the cell itself, in its launch.json).
    """

    def __init__(self, root: Path, experiment: str, cells: dict[str, dict[str, Any]] | None = None):
        self.root = Path(root)
        self.experiment = experiment
        self.cells: dict[str, dict[str, Any]] = cells or {}

    @property
    def path(self) -> Path:
        return self.root / STATE_FILE

    @classmethod
    def load(cls, root: Path, experiment: str) -> "SweepState":
        path = Path(root) / STATE_FILE
        if not path.exists():
            return cls(root, experiment)
        data = read_json(path)
        if data is None or not isinstance(data.get("cells"), dict):
            raise UsageError(f"{path}: not a sweep state file (expected a JSON object with 'cells'); "
                             "move it away to start the sweep's bookkeeping afresh")
        if data.get("experiment") not in (None, experiment):
            raise UsageError(f"{path}: belongs to experiment '{data.get('experiment')}', not '{experiment}'")
        for run_id, entry in data["cells"].items():
            problem = _entry_problem(entry)
            if problem:
                raise UsageError(f"{path}: cell '{run_id}': {problem}; fix the entry or delete it (a cell without "
                                 f"one counts as never submitted; its finished record still counts)")
        return cls(root, experiment, data["cells"])

    def record_submission(self, run_id: str, *, executor: str, job_id: str, folder: str,
                          pid_start: int | None = None) -> None:
        entry = self.cells.get(run_id, {})
        self.cells[run_id] = {
            "executor": executor,
            "job_id": str(job_id),
            "folder": folder,
            "submitted": now_iso(),
            "submissions": int(entry.get("submissions", 0)) + 1,
        }
        if pid_start is not None:  # local: the controller's start time, against PID reuse
            self.cells[run_id]["pid_start"] = pid_start

    def save(self) -> Path:
        return write_json_atomic(self.path, {
            "state_version": STATE_VERSION,
            "experiment": self.experiment,
            "updated": now_iso(),
            "cells": self.cells,
        })
