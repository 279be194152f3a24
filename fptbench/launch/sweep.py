"""``fptbench sweep / status / cancel``: run a matrix's cells through submitit, idempotently.

    matrix (fptbench.experiments) -> plan (what to submit, and why) -> submitit executor
      (local | slurm | debug) -> CellRunner per cell -> results/<experiment>/<run id>/result.json

Re-running a sweep submits only what needs it: a cell with a complete record is skipped, a
queued or running one is left alone, a failed one is resubmitted only with ``rerun_failed``, a
cancelled or never-submitted one is (re)submitted and resumes from its checkpoint if it has one.

One sweep at a time per results folder: it holds ``sweep.lock`` there for its whole run
(:mod:`fptbench.launch.lock`) and plans under it; another says who holds it and exits 2, or waits
(``wait_lock``). SIGTERM stops a local sweep as Ctrl-C does (its cells are cancelled); a cell of a
sweep killed outright stops by itself (it watches the sweep's pid and start time).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from fptbench.errors import UsageError
from fptbench.launch.cell import CellRunner, CellSpec
from fptbench.launch.cluster import ClusterProfile
from fptbench.launch.lock import SWEEP_LOCK, FolderLock, is_locked, process_alive, process_start
from fptbench.launch.state import EXECUTORS, SweepState
from fptbench.launch.status import ACTIVE, CellStatus, cell_statuses, log_paths

__all__ = ["EXECUTORS", "PlanItem", "plan_sweep", "run_sweep", "sweep_status", "cancel_sweep",
           "format_plan", "format_status", "results_root", "visible_gpu_ids", "gpu_slots"]

LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # [ours] submitit's local default is 2 min: a cell may take hours
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize


@dataclass
class PlanItem:
    cell: Any  # fptbench.experiments.Cell
    status: CellStatus
    submit: bool
    reason: str


def results_root(results: str | os.PathLike, matrix: Any) -> Path:
    return Path(results) / matrix.name


def plan_sweep(cells: Sequence[Any], statuses: Sequence[CellStatus], *, rerun_failed: bool) -> list[PlanItem]:
    """Decide, for each cell, whether to submit it and why (one short reason)."""
    plan = []
    for cell, status in zip(cells, statuses):
        state = status.state
        if state == "done":
            item = PlanItem(cell, status, False, "done: its record is complete")
        elif state in ACTIVE:
            item = PlanItem(cell, status, False, f"{state} as {status.executor} job {status.job_id}: left alone")
        elif state == "failed":
            item = (PlanItem(cell, status, True, f"failed before ({status.reason}); --rerun-failed")
                    if rerun_failed else
                    PlanItem(cell, status, False, f"failed ({status.reason}); resubmit with --rerun-failed"))
        elif state == "cancelled":
            item = PlanItem(cell, status, True, "cancelled before: resumes from its last checkpoint")
        else:
            item = PlanItem(cell, status, True, "never submitted")
        plan.append(item)
    return plan


def _display_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _spec(matrix: Any, cell: Any, root: Path, executor: str, max_requeues: int,
          owner: tuple[int, int | None] | None = None) -> CellSpec:
    return CellSpec(
        experiment=matrix.name,
        matrix=_display_path(matrix.path),
        run_id=cell.run_id,
        axes=dict(cell.axes),
        config=cell.config,
        run_dir=str((root / cell.run_id).resolve()),
        workdir=os.getcwd(),
        profile=dict(matrix.profile),
        executor=executor,
        max_requeues=max_requeues,
        owner=owner,
    )


def _submitit_folder(root: Path) -> Path:
    # A fresh folder per submission: job ids restart when a (dev) cluster's state is wiped, and a
    # reused folder would return an earlier job's result for the same id.
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return root / ".submitit" / f"{stamp}-{os.getpid()}"


def visible_gpu_ids(count: int, env: Mapping[str, str] | None = None) -> list[int]:
    """The GPUs this process sees, as the ids its children's CUDA_VISIBLE_DEVICES must name them.

    ``count`` is how many the process sees (``cuda_device_count()``). Without CUDA_VISIBLE_DEVICES
    they are 0..count-1; with it, its first ``count`` entries (a child's CUDA_VISIBLE_DEVICES is
    read against the machine, not against its parent's).

    Raises:
        UsageError: CUDA_VISIBLE_DEVICES names GPUs by UUID or MIG id (submitit's local executor
            hands GPUs to a cell by index only).
    """
    env = os.environ if env is None else env
    if count < 1:
        return []
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    ids = [entry.strip() for entry in visible.split(",") if entry.strip()][:count]
    if not all(entry.isdigit() for entry in ids):
        raise UsageError(f"CUDA_VISIBLE_DEVICES={visible}: the local executor shares GPUs among cells by "
                         f"index only; name them by index (e.g. 0,1)")
    return [int(entry) for entry in ids]


def gpu_slots(gpu_ids: Sequence[int], world_size: int, jobs: int) -> list[list[int]]:
    """The GPUs of each of the ``jobs`` cells that run at once, ``world_size`` per cell: round
    robin over ``gpu_ids``, so concurrent cells get distinct GPUs while there are enough (and share
    them, evenly, when there are not). No GPUs: every cell gets none (it runs on the CPU)."""
    if not gpu_ids:
        return [[] for _ in range(jobs)]
    return [[gpu_ids[(slot * world_size + j) % len(gpu_ids)] for j in range(world_size)] for slot in range(jobs)]


def _executor(kind: str, folder: Path, matrix: Any, cluster: ClusterProfile | None):
    import submitit

    if kind == "slurm":
        assert cluster is not None
        # submitit counts time-outs against the same bound; the cell's launch.json counts every
        # requeue (time-outs included), so the cell's count is the one that ends a cell.
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=cluster.max_requeues)
        executor.update_parameters(name=f"fptbench-{matrix.name}", **cluster.submitit_parameters())
        return executor
    if kind == "debug":
        return submitit.DebugExecutor(folder=folder)
    executor = submitit.LocalExecutor(folder=folder)
    # GPUs are given per cell (_run_here: gpu_slots); none here means CUDA_VISIBLE_DEVICES="".
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, tasks_per_node=matrix.world_size, gpus_per_node=0)
    return executor


_TQDM = re.compile(r"(\w+):\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)")


def _cell_progress(entry: dict[str, Any]) -> str:
    """'train 12/30' from the tqdm bar in a running cell's log ('' if none yet)."""
    try:
        with open(log_paths(entry)[1], "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    found = _TQDM.findall(text)
    if found:
        what, done, total = found[-1]
        return f"{what} {done}/{total}"
    return "profile" if "evaluated" in text else ""


@dataclass
class SweepOutcome:
    planned: list[PlanItem]
    submitted: list[str]
    statuses: list[CellStatus]
    seconds: float

    def counts(self) -> dict[str, int]:
        return _counts(self.statuses)


def run_sweep(
    matrix: Any,
    *,
    executor: str = "local",
    cluster: ClusterProfile | None = None,
    results: str | os.PathLike = "results",
    dry_run: bool = False,
    rerun_failed: bool = False,
    jobs: int = 1,
    wait: bool | None = None,
    wait_lock: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> SweepOutcome:
    """Plan the matrix's cells and submit those that need it.

    Args:
        executor: ``local`` (this machine, ``jobs`` cells at a time; waits for them), ``slurm``
            (job arrays of at most the scheduler's MaxArraySize cells, with ``cluster``'s resources;
            returns once submitted unless ``wait``)
            or ``debug`` (in this process, one after the other; for pdb).
        wait: wait until every submitted cell has finished (default: True for local and debug).
        wait_lock: another sweep holds the results folder: wait for it instead of failing.

    Raises:
        LockHeld: another sweep holds ``results/<experiment>`` (and not ``wait_lock``); the
            message names it (pid, host, since, command).
    """
    if executor not in EXECUTORS:
        raise UsageError(f"--executor: expected one of {', '.join(EXECUTORS)}, got '{executor}'")
    if executor == "slurm":
        if cluster is None:
            raise UsageError("--executor slurm needs --cluster slurm/NAME.yaml (see slurm/example.yaml)")
        if cluster.world_size != matrix.world_size:
            raise UsageError(
                f"{_display_path(matrix.path)}: world_size {matrix.world_size} per cell, but {cluster.path} gives "
                f"{cluster.nodes} node(s) x {cluster.tasks} task(s) = {cluster.world_size}"
            )
    if jobs < 1:
        raise UsageError(f"--jobs: expected at least 1, got {jobs}")
    started = time.monotonic()
    root = results_root(results, matrix)
    if dry_run:  # reads only: no lock
        state = SweepState.load(root, matrix.name)
        statuses = cell_statuses(matrix.cells, root, state)
        plan = plan_sweep(matrix.cells, statuses, rerun_failed=rerun_failed)
        todo = [item for item in plan if item.submit]
        echo(format_plan(plan, executor=executor))
        if executor == "slurm" and todo:
            params = " ".join(f"{k}={v}" for k, v in cluster.submitit_parameters().items())
            arrays = -(-len(todo) // max_array_size())
            echo(f"would submit {arrays} job array(s) of {len(todo)} cell(s) in all with {cluster.path}: {params}")
        return SweepOutcome(plan, [], statuses, time.monotonic() - started)
    # One sweep at a time per results folder, for its whole run: plan, submit, wait. The state is
    # read under the lock, so a sweep that waited for another plans from what that one did.
    lock = FolderLock(root, SWEEP_LOCK)
    if wait_lock and is_locked(lock.path):
        echo(f"sweep {matrix.name}: waiting for the lock on {root} ...")
    lock.acquire(wait=wait_lock, hint="one sweep at a time per results folder; wait for it to end or "
                                      "pass --wait-lock to queue behind it")
    try:
        with _sigterm_as_interrupt():
            return _locked_sweep(matrix, root, executor, cluster, results, rerun_failed, jobs, wait, progress,
                                 echo, started)
    finally:
        lock.release()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (kill, a session's end, a scheduler) stops the sweep as Ctrl-C does: its local cells
    are cancelled instead of left running as orphans. Only in the main thread (signals need it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _locked_sweep(matrix: Any, root: Path, executor: str, cluster: ClusterProfile | None, results: Any,
                  rerun_failed: bool, jobs: int, wait: bool | None, progress: bool,
                  echo: Callable[[str], None], started: float) -> SweepOutcome:
    state = SweepState.load(root, matrix.name)
    statuses = cell_statuses(matrix.cells, root, state)
    plan = plan_sweep(matrix.cells, statuses, rerun_failed=rerun_failed)
    todo = [item for item in plan if item.submit]
    if not todo:
        echo(f"sweep {matrix.name}: nothing to submit; " + _count_line(statuses))
        return SweepOutcome(plan, [], statuses, time.monotonic() - started)

    gpu_ids = _local_gpus(matrix, todo, executor, jobs, echo)
    root.mkdir(parents=True, exist_ok=True)
    folder = _submitit_folder(root)
    max_requeues = (cluster or ClusterProfile()).max_requeues
    # A local cell watches this process (pid + start time) and stops if the sweep is killed.
    owner = (os.getpid(), process_start(os.getpid())) if executor == "local" else None
    specs = {item.cell.run_id: _spec(matrix, item.cell, root, executor, max_requeues, owner) for item in todo}
    runner = CellRunner()
    wait = executor != "slurm" if wait is None else wait
    submitted: list[str] = []
    try:
        if executor == "slurm":
            arrays = _submit_slurm(matrix, cluster, folder, runner, specs, state, submitted)
            echo(f"sweep {matrix.name}: submitted {len(submitted)} cell(s) as SLURM job array(s) "
                 f"{', '.join(arrays)} ({cluster.path}); logs in {folder}")
            if wait:
                _wait_slurm(matrix, root, state, submitted, progress)
        else:
            ex = _executor(executor, folder, matrix, cluster)
            _run_here(ex, executor, runner, specs, state, folder, jobs, progress, submitted,
                      gpu_slots(gpu_ids, matrix.world_size, jobs))
    except KeyboardInterrupt:
        if executor == "slurm":  # Ctrl-C stops the waiting, not the cluster's jobs
            echo(f"sweep {matrix.name}: stopped waiting; the SLURM jobs go on (`fptbench status {matrix.name}`, "
                 f"`fptbench cancel {matrix.name}`)")
            raise
        cancelled = cancel_sweep(matrix, results=results, echo=lambda line: None, wait_s=30.0)
        echo(f"sweep {matrix.name}: interrupted; cancelled {cancelled} running cell(s); run the sweep again to resume")
        raise
    statuses = cell_statuses(matrix.cells, root, SweepState.load(root, matrix.name))
    outcome = SweepOutcome(plan, submitted, statuses, time.monotonic() - started)
    for status in statuses:
        if status.run_id in submitted and status.state == "failed":
            echo(f"  failed {status.run_id}: {status.reason}")
    echo(f"sweep {matrix.name}: submitted {len(submitted)} of {len(plan)} cells; {_count_line(statuses)} "
         f"in {outcome.seconds / 60:.1f} min -> {root}")
    return outcome


def max_array_size() -> int:
    """The scheduler's MaxArraySize (``scontrol show config``): a job array holds at most this many
    tasks (indices 0 .. MaxArraySize - 1). SLURM's default, 1001, when scontrol does not say."""
    import subprocess

    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY_SIZE
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return max(1, int(value.strip()))
    return DEFAULT_MAX_ARRAY_SIZE


def _submit_slurm(matrix: Any, cluster: ClusterProfile, folder: Path, runner: CellRunner,
                  specs: dict[str, CellSpec], state: SweepState, submitted: list[str]) -> list[str]:
    """Submit the cells as job arrays of at most MaxArraySize tasks each (SLURM refuses a larger
    one); sweep.json is saved after each array, so a failure part-way loses no submitted job.
    Returns the array ids."""
    size = max_array_size()
    rids = list(specs)
    arrays = []
    for first in range(0, len(rids), size):
        chunk = rids[first:first + size]
        ex = _executor("slurm", folder, matrix, cluster)  # a new one per array (slurm-notes: trap 8)
        with ex.batch():
            jobs_by_id = {rid: ex.submit(runner, specs[rid]) for rid in chunk}
        for rid, job in jobs_by_id.items():
            state.record_submission(rid, executor="slurm", job_id=job.job_id, folder=str(folder))
            submitted.append(rid)
        state.save()
        arrays.append(next(iter(jobs_by_id.values())).job_id.split("_")[0])
    return arrays


def _local_gpus(matrix: Any, todo: Sequence[PlanItem], executor: str, jobs: int,
                echo: Callable[[str], None]) -> list[int]:
    """The GPUs the local executor shares among its cells ([] for the CPU, and for the others).

    Refuses, in one line, what could only fail in the cells: a cell with ``device: cuda`` where
    no CUDA device is usable, and more ranks per cell than GPUs (NCCL needs one per rank).
    """
    if executor not in ("local", "debug"):
        return []
    from fptbench.engine.distributed import cuda_device_count  # the engine's answer: no torch here

    count = cuda_device_count()
    where = _display_path(matrix.path)
    wants_cuda = [item.cell.run_id for item in todo if item.cell.config["device"] == "cuda"]
    if wants_cuda and count == 0:
        raise UsageError(f"{where}: cell {wants_cuda[0]} has device: cuda, but no CUDA device is usable here "
                         f"(device: auto or cpu runs it on the CPU)")
    if executor == "debug" or count == 0 or all(item.cell.config["device"] == "cpu" for item in todo):
        return []
    ids = visible_gpu_ids(count)
    if matrix.world_size > len(ids):
        raise UsageError(f"{where}: world_size {matrix.world_size} per cell, but {len(ids)} GPU(s) visible: "
                         f"NCCL needs one GPU per rank (--set device cpu trains on the CPU with gloo)")
    if min(jobs, len(todo)) * matrix.world_size > len(ids):
        echo(f"sweep {matrix.name}: {min(jobs, len(todo))} cells x {matrix.world_size} GPU(s) at once on "
             f"{len(ids)} visible GPU(s): some cells share a GPU")
    return ids


def _run_here(ex, executor: str, runner: CellRunner, specs: dict[str, CellSpec], state: SweepState,
              folder: Path, jobs: int, progress: bool, submitted: list[str], slots: list[list[int]]) -> None:
    """Local and debug executors: at most ``jobs`` cells at a time, waiting for all of them.

    ``slots[k]``: the GPUs of the k-th of the cells running at once (:func:`gpu_slots`); a cell
    takes a free slot when it starts and gives it back when it ends, so that concurrent cells
    never share a GPU while there are enough of them. A cell with none sees no GPU.
    """
    from tqdm import tqdm

    queue = list(specs)
    running: dict[str, Any] = {}
    slot_of: dict[str, int] = {}
    free = list(range(jobs))
    bar = tqdm(total=len(queue), desc=f"sweep {next(iter(specs.values())).experiment}", unit="cell",
               disable=not progress, dynamic_ncols=True)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                rid = queue.pop(0)
                slot = free.pop(0)
                if executor == "local" and slots[slot]:
                    ex.update_parameters(gpus_per_node=len(slots[slot]), visible_gpus=tuple(slots[slot]))
                job = ex.submit(runner, specs[rid])
                # a local job id is the controller's PID: with its start time it names one process
                start = process_start(job.job_id) if executor == "local" else None
                state.record_submission(rid, executor=executor, job_id=job.job_id, folder=str(folder),
                                        pid_start=start)
                state.save()
                submitted.append(rid)
                if executor == "debug":  # runs now, in this process
                    try:
                        job.result()
                    except Exception:  # noqa: BLE001 - the cell wrote error.json; status reports it
                        pass
                    bar.update(1)
                    free.append(slot)
                    continue
                running[rid] = job
                slot_of[rid] = slot
            if not running:
                continue
            time.sleep(1.0)
            for rid, job in list(running.items()):
                if job.done():
                    del running[rid]
                    free.append(slot_of.pop(rid))
                    bar.update(1)
            shown = [f"{rid} {_cell_progress(state.cells[rid])}".strip() for rid in running]
            bar.set_postfix_str("; ".join(shown), refresh=True)
    finally:
        bar.close()


def _wait_slurm(matrix: Any, root: Path, state: SweepState, submitted: list[str], progress: bool) -> None:
    from tqdm import tqdm

    cells = [cell for cell in matrix.cells if cell.run_id in set(submitted)]
    started = time.monotonic()
    bar = tqdm(total=len(cells), desc=f"sweep {matrix.name} (slurm)", unit="cell", disable=not progress,
               dynamic_ncols=True)
    try:
        while True:
            statuses = cell_statuses(cells, root, state, logs=0)
            finished = sum(status.state not in ACTIVE for status in statuses)
            bar.update(finished - bar.n)
            bar.set_postfix_str(_count_line(statuses), refresh=True)
            if finished == len(cells):
                return
            time.sleep(1.0 if time.monotonic() - started < 30 else 5.0)  # fast at first, then every 5 s
    finally:
        bar.close()


def sweep_status(matrix: Any, *, results: str | os.PathLike = "results", logs: int = 8) -> list[CellStatus]:
    root = results_root(results, matrix)
    return cell_statuses(matrix.cells, root, SweepState.load(root, matrix.name), logs=logs)


def cancel_sweep(matrix: Any, *, results: str | os.PathLike = "results", echo: Callable[[str], None] = print,
                 wait_s: float = 0.0) -> int:
    """Cancel the sweep's queued and running jobs (scancel through submitit; SIGINT to a local
    job's controller, as submitit's LocalJob.cancel does, which stops its tasks). With ``wait_s``,
    wait up to that long for the local ones to end. Returns how many cells were cancelled."""
    import submitit

    count = 0
    state = SweepState.load(results_root(results, matrix), matrix.name)
    local: list[tuple[int, int | None]] = []
    for status in sweep_status(matrix, results=results, logs=0):
        if status.state not in ACTIVE:
            continue
        entry = state.cells[status.run_id]
        if entry["executor"] == "slurm":
            submitit.SlurmJob(entry["folder"], entry["job_id"]).cancel(check=False)
        else:
            pid, start = int(entry["job_id"]), entry.get("pid_start")
            if not process_alive(pid, start):
                continue  # ended, or the PID is another process's now: never signal that one
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                continue
            local.append((pid, start))
        count += 1
        echo(f"cancelled {status.run_id} ({entry['executor']} job {entry['job_id']}, {status.state})")
    deadline = time.monotonic() + wait_s
    while local and time.monotonic() < deadline:
        local = [job for job in local if process_alive(*job)]
        time.sleep(0.1)
    echo(f"cancel {matrix.name}: {count} cell(s) cancelled")
    return count


# ---------------------------------------------------------------------------------------------
# tables

def _counts(statuses: Sequence[CellStatus]) -> dict[str, int]:
    return dict(Counter(status.state for status in statuses))


def _count_line(statuses: Sequence[CellStatus]) -> str:
    counts = _counts(statuses)
    order = ("done", "running", "pending", "requeued", "failed", "cancelled", "missing")
    return ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_plan(plan: Sequence[PlanItem], *, executor: str) -> str:
    rows = [[item.cell.run_id, item.status.state, "submit" if item.submit else "skip", item.reason] for item in plan]
    todo = sum(item.submit for item in plan)
    return (_table(["run id", "state", "action", "why"], rows)
            + f"\ndry run: would submit {todo} of {len(plan)} cells to the {executor} executor; "
            + _count_line([item.status for item in plan]))


def format_status(statuses: Sequence[CellStatus], *, experiment: str, metric_name: str = "box AP") -> str:
    """The status table; its score column is named by the records' headline (box AP, mIoU), else
    ``metric_name`` (the matrix's task: no record yet)."""
    rows = []
    for s in statuses:
        metric = "-" if s.metric is None else f"{s.metric:.1f}"
        rows.append([s.run_id, s.state, s.job_id or "-", _elapsed(s.elapsed_s), str(s.attempts), metric])
    header = " / ".join(sorted({s.metric_name for s in statuses if s.metric_name})) or metric_name
    text = _table(["run id", "state", "job", "elapsed", "attempts", header], rows)
    for s in statuses:
        if s.state in ("failed", "cancelled"):
            text += f"\n\n{s.state} {s.run_id}: {s.reason}"
            text += "".join(f"\n    {line}" for line in s.log_tail)
    return text + f"\n{experiment}: {len(statuses)} cells: {_count_line(statuses)}"
