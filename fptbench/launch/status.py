"""The state of every cell of a sweep, from its run folder and the scheduler (via submitit).

States:
    done       the run record is complete (trained, evaluated, profiled)
    running    the job runs (a requeued job that runs again is "running", attempts > 1)
    pending    submitted, waiting for resources
    requeued   preempted or timed out, waiting to run again
    failed     the job ended without a complete record after the cell raised, or the scheduler
               ended it (time limit with no requeue left, out of memory, node failure, unknown job)
    cancelled  cancelled (``fptbench cancel``, scancel, Ctrl-C) before it finished: resumable
    missing    never submitted

A complete record is the truth whatever the scheduler says; the scheduler is asked (one sacct
call for all the sweep's SLURM jobs) only about cells without one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from fptbench.launch.lock import CELL_LOCK, is_locked, process_alive
from fptbench.launch.state import (ERROR_FILE, LAUNCH_FILE, RESULT_FILE, SweepState, json_problem,
                                   read_complete_record, read_json)

__all__ = ["CellStatus", "HEADLINES", "cell_statuses", "ACTIVE", "headline", "log_paths"]

ACTIVE = ("running", "pending", "requeued")
_SUBMIT_GRACE_S = 120.0  # sacct may not list a job yet right after its submission
_SLURM_PENDING = {"PENDING", "CONFIGURING", "READY"}
_SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
_SLURM_REQUEUED = {"REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "PREEMPTED", "SUSPENDED", "STOPPED"}


HEADLINES = (("bbox", "AP", "box AP"), ("segmentation", "mIoU", "mIoU"))
"""(metrics key, score, name) of the one number a cell is shown with, by what its record holds:
COCOeval's box AP for detection, mIoU for segmentation (both percent), first match."""


def headline(record: dict[str, Any]) -> tuple[str, float | None]:
    """``(name, value)`` of a record's headline score (:data:`HEADLINES`); ``("", None)`` when it
    has none of them."""
    metrics = record.get("metrics") or {}
    for kind, key, name in HEADLINES:
        if isinstance(metrics.get(kind), dict):
            return name, metrics[kind].get(key)
    return "", None


@dataclass
class CellStatus:
    run_id: str
    axes: dict[str, Any]
    state: str
    executor: str | None = None
    job_id: str | None = None
    attempts: int = 0
    elapsed_s: float | None = None
    metric: float | None = None  # headline score (percent): box AP, or mIoU for segmentation
    metric_name: str = ""  # "box AP" or "mIoU" (HEADLINES); "" without a record
    reason: str = ""  # why failed / cancelled, one line
    log_tail: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None


def _seconds_between(start: str | None, end: str | None = None) -> float | None:
    if not start:
        return None
    try:
        begin = datetime.fromisoformat(start)
        finish = datetime.fromisoformat(end) if end else datetime.now(begin.tzinfo)
    except ValueError:
        return None
    return max(0.0, (finish - begin).total_seconds())


def log_paths(entry: dict[str, Any]) -> tuple[Path, Path]:
    """(stdout, stderr) of a submitted cell's first task, as submitit names them."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(entry["folder"], job_id=entry["job_id"], task_id=0)
    return paths.stdout, paths.stderr


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    # tqdm redraws with carriage returns: keep each line's last state
    out = [line.rsplit("\r", 1)[-1].rstrip() for line in text.splitlines()]
    return [line for line in out if line][-lines:]


def _local_alive(entry: dict[str, Any], run_dir: Path) -> bool:
    """A local cell runs if its run folder is locked (the cell holds cell.lock while it runs) or its
    controller process, named by PID and start time (a reused PID is another process), runs."""
    return is_locked(run_dir / CELL_LOCK) or process_alive(entry["job_id"], entry.get("pid_start"))


def _result_pickle_exists(entry: dict[str, Any]) -> bool:
    from submitit.core.utils import JobPaths

    return JobPaths(entry["folder"], job_id=entry["job_id"], task_id=0).result_pickle.exists()


def _slurm_states(entries: Iterable[dict[str, Any]]) -> dict[str, str]:
    """job id -> SLURM state, from one sacct call made by submitit's watcher."""
    import submitit

    jobs = {e["job_id"]: submitit.SlurmJob(e["folder"], e["job_id"]) for e in entries}
    if not jobs:
        return {}
    watcher = submitit.SlurmJob.watcher
    watcher.update()
    return {job_id: watcher.get_state(job_id, mode="cache").split()[0].upper() for job_id in jobs}


def cell_statuses(cells: Iterable[Any], root: Path, state: SweepState, *, logs: int = 8) -> list[CellStatus]:
    """The status of each matrix cell (objects with ``run_id`` and ``axes``), in order.

    ``logs``: for failed cells, how many last lines of the traceback (or log) to keep.
    """
    cells = list(cells)
    out: list[CellStatus] = []
    pending_slurm = []
    for cell in cells:
        run_dir = root / cell.run_id
        record = read_complete_record(run_dir)
        entry = state.cells.get(cell.run_id)
        status = CellStatus(cell.run_id, dict(cell.axes), "missing")
        if entry:
            status.executor, status.job_id = entry.get("executor"), entry.get("job_id")
        launch = read_json(run_dir / LAUNCH_FILE) if record is None else record["launch"]
        status.attempts = int((launch or {}).get("attempts", 0))
        if record is not None:
            status.state, status.record = "done", record
            status.executor, status.job_id = record["launch"].get("executor"), record["launch"].get("job_id")
            status.elapsed_s = _seconds_between(record["launch"].get("started"), record["launch"].get("finished"))
            status.metric_name, status.metric = headline(record)
        elif entry and entry.get("executor") == "slurm":
            pending_slurm.append((status, entry, launch))
        elif entry:
            _local_status(status, entry, launch, run_dir, logs)
        out.append(status)
    states = _slurm_states(entry for _, entry, _ in pending_slurm) if pending_slurm else {}
    for status, entry, launch in pending_slurm:
        _slurm_status(status, entry, launch, states.get(entry["job_id"], "UNKNOWN"), root / status.run_id, logs)
    return out


def _failed(status: CellStatus, entry: dict[str, Any], run_dir: Path, logs: int, default: str) -> None:
    corrupt = json_problem(run_dir / RESULT_FILE)
    error = read_json(run_dir / ERROR_FILE)
    if corrupt:
        status.state = "failed"
        status.reason = (f"{run_dir / RESULT_FILE}: corrupt record ({corrupt}); --rerun-failed redoes what it "
                         f"lacks from the run's checkpoints")
    elif error is not None:
        status.state, status.reason = "failed", error.get("error", default)
        status.log_tail = [line for line in error.get("traceback", "").splitlines() if line.strip()][-logs:]
    else:
        status.state, status.reason = "failed", default
        status.log_tail = _tail(log_paths(entry)[1], logs)


def _local_status(status: CellStatus, entry: dict[str, Any], launch: dict | None, run_dir: Path, logs: int) -> None:
    if entry["executor"] == "local" and _local_alive(entry, run_dir):
        status.state = "running" if launch else "pending"
        status.elapsed_s = _seconds_between((launch or {}).get("last_started"))
        return
    if (read_json(run_dir / ERROR_FILE) is not None or _result_pickle_exists(entry)
            or json_problem(run_dir / RESULT_FILE)):
        _failed(status, entry, run_dir, logs, "the job ended without a complete record")
    else:
        status.state, status.reason = "cancelled", "the process ended without a result (cancelled or killed)"
        status.log_tail = _tail(log_paths(entry)[1], logs)


def _slurm_status(status: CellStatus, entry: dict[str, Any], launch: dict | None, slurm: str, run_dir: Path, logs: int) -> None:
    status.elapsed_s = _seconds_between((launch or {}).get("last_started"))
    if slurm in _SLURM_RUNNING:
        status.state = "running"
    elif slurm in _SLURM_REQUEUED or (slurm in _SLURM_PENDING and launch):
        status.state = "requeued"
    elif slurm in _SLURM_PENDING:
        status.state, status.elapsed_s = "pending", None
    elif slurm == "UNKNOWN" and (_seconds_between(entry.get("submitted")) or 0.0) < _SUBMIT_GRACE_S:
        status.state, status.elapsed_s = "pending", None
    elif slurm.startswith("CANCELLED") and read_json(run_dir / ERROR_FILE) is None:
        status.state, status.reason = "cancelled", f"SLURM job {entry['job_id']} was cancelled"
        status.elapsed_s = None
    else:
        status.elapsed_s = None
        what = "is not known to sacct" if slurm == "UNKNOWN" else f"ended {slurm}"
        _failed(status, entry, run_dir, logs, f"SLURM job {entry['job_id']} {what} without a complete record")

