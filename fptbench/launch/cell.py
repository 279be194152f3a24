"""One sweep cell as a submitit job: train -> evaluate -> profile -> the run record.

``CellRunner()(spec)`` is what every executor runs (local, SLURM, debug). It is checkpointable:
on preemption or at the time limit, submitit calls :meth:`CellRunner.checkpoint` and SLURM
requeues the same job, which resumes training from the last checkpoint of the run folder, so a
preempted cell ends with exactly the weights of an uninterrupted one (the trainer's resume is
exact). The number of attempts is counted in the run folder (``launch.json``) and bounded by the
cluster profile's ``max_requeues``: that count is the one that decides. (submitit also counts
time-outs, against the same bound; time-outs are a part of the requeues, so its count never ends a
cell first.)

The cell calls only the engine (:mod:`fptbench.engine`): it knows nothing of tensors or models.

The run folder (``results/<experiment>/<run id>/``) belongs to the cell alone: ``launch.json``
(attempts), ``error.json`` (the last exception), ``checkpoints/``, ``result.json``.
"""

from __future__ import annotations

import os
import socket
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from fptbench.launch.lock import CELL_LOCK, FolderLock, process_alive
from fptbench.launch.status import headline
from fptbench.launch.state import ERROR_FILE, LAUNCH_FILE, RESULT_FILE, now_iso, read_json
from fptbench.fileio import write_json_atomic

__all__ = ["CellSpec", "CellRunner"]


@dataclass(frozen=True)
class CellSpec:
    """Everything a cell needs, as plain data (it is pickled into the job)."""

    experiment: str
    matrix: str  # the matrix file, as the user named it
    run_id: str
    axes: dict[str, Any]
    config: dict[str, Any]  # resolved config of the cell
    run_dir: str  # absolute path of results/<experiment>/<run id>
    workdir: str  # absolute path the sweep was started from: relative data.root resolves here
    profile: dict[str, Any]  # the matrix's {"size": [H, W], "runs", "warmup"}
    executor: str
    max_requeues: int  # ClusterProfile.max_requeues: requeues a cell may use before failing
    owner: tuple[int, int | None] | None = None  # local: the sweep's (pid, start); the cell stops if it ends


def _job_id() -> str:
    try:
        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # not inside a submitit job (called directly)
        return "direct"


def _rank() -> tuple[int, int]:
    """(global rank, number of tasks) of this process in its job; (0, 1) outside submitit."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:
        return 0, 1
    return env.global_rank, env.num_tasks


_OWNER_POLL_S = 1.0
# Set when the watcher has interrupted the cell: an exception after that is the interruption's (a
# KeyboardInterrupt that surfaced inside a library as its own error), not the cell's failure.
_OWNER_GONE = threading.Event()
_OWNER_GRACE_S = 20.0  # after the interrupt, how long the cell may take to stop before it is ended


def _stop_with_owner(owner: tuple[int, int | None]) -> None:
    """Stop this cell when the local sweep that started it ends (killed, even by SIGKILL, which it
    cannot pass on): a watcher thread interrupts the main thread as Ctrl-C would, then ends the
    process if it has not stopped within a grace period. The checkpoints stay; the next sweep
    resumes the cell. Without it a killed sweep's cells run on as orphans beside the next sweep's."""
    import _thread
    import time

    def watch() -> None:
        while process_alive(*owner):
            time.sleep(_OWNER_POLL_S)
        print(f"[fptbench] the sweep (pid {owner[0]}) has ended: stopping this cell", flush=True)
        _OWNER_GONE.set()
        _thread.interrupt_main()
        time.sleep(_OWNER_GRACE_S)
        os._exit(143)

    threading.Thread(target=watch, name="fptbench-owner", daemon=True).start()


class CellRunner(submitit.helpers.Checkpointable):
    """The callable submitted for every cell. Stateless: all it needs is in the spec and on disk."""

    def __call__(self, spec: CellSpec) -> dict[str, Any]:
        os.chdir(spec.workdir)
        run_dir = Path(spec.run_dir)
        rank, tasks = _rank()
        if spec.owner is not None:
            _stop_with_owner(spec.owner)
        lock = FolderLock(run_dir, CELL_LOCK, what=f"cell {spec.run_id} ({spec.executor} job {_job_id()})")
        if rank == 0:
            # One process per run folder: a second one (two sweeps, a stale job) fails here before
            # it writes anything, and leaves the folder to the one that runs.
            lock.acquire(hint="this cell already runs elsewhere")
            launch = self._start_attempt(spec, run_dir)
        try:
            if tasks > 1:
                # [code] submitit's helper: MASTER_ADDR = first host, MASTER_PORT drawn from the job
                # id (so cells sharing a node do not collide), RANK / WORLD_SIZE / LOCAL_RANK.
                submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            record = self._train_evaluate(spec, run_dir)
            if rank != 0:
                return {"run_id": spec.run_id, "rank": rank}
            profile = self._profile(spec, run_dir)
            launch = read_json(run_dir / LAUNCH_FILE) or launch
            record["cell"] = {"experiment": spec.experiment, "run_id": spec.run_id,
                              "axes": dict(spec.axes), "matrix": spec.matrix}
            record["profile"] = profile
            record["launch"] = {
                "executor": spec.executor,
                "job_id": _job_id(),
                "attempts": launch["attempts"],
                "requeues": launch["attempts"] - 1,
                "hostname": socket.gethostname(),
                "started": launch["first_started"],
                "finished": now_iso(),
            }
            write_json_atomic(run_dir / RESULT_FILE, record)
            name, score = headline(record)
            shown = "-" if score is None else f"{score:.1f}"
            print(f"[fptbench] cell {spec.run_id} done: {name or 'score'} {shown} -> {run_dir / RESULT_FILE}", flush=True)
            return {"run_id": spec.run_id, "metrics": {name: score}}
        except Exception as err:
            if _OWNER_GONE.is_set():  # stopped by its sweep's end: cancelled, as a Ctrl-C would leave it
                raise KeyboardInterrupt(f"the sweep (pid {spec.owner[0]}) has ended") from err
            if rank == 0:
                write_json_atomic(run_dir / ERROR_FILE, {
                    "run_id": spec.run_id, "job_id": _job_id(), "time": now_iso(),
                    "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(),
                })
            raise
        finally:
            from fptbench.engine.distributed import close_distributed

            close_distributed()
            lock.release()

    def checkpoint(self, spec: CellSpec) -> submitit.helpers.DelayedSubmission | None:
        """Called by submitit on rank 0 at preemption or time limit: requeue unless the cell has
        used up ``max_requeues``. The trainer's checkpoints are already on disk (periodic); the
        requeued job resumes from the last one."""
        launch = read_json(Path(spec.run_dir) / LAUNCH_FILE) or {"attempts": 1}
        if launch["attempts"] - 1 >= spec.max_requeues:
            return None  # submitit then ends the job as failed: "checkpoint function returned None"
        return submitit.helpers.DelayedSubmission(self, spec)

    # -----------------------------------------------------------------------------------------

    @staticmethod
    def _start_attempt(spec: CellSpec, run_dir: Path) -> dict[str, Any]:
        launch = read_json(run_dir / LAUNCH_FILE) or {"attempts": 0, "job_ids": [], "first_started": now_iso()}
        launch["attempts"] = int(launch["attempts"]) + 1
        launch["job_ids"] = list(launch.get("job_ids", [])) + [_job_id()]
        launch["last_started"] = now_iso()
        launch["hostname"] = socket.gethostname()
        write_json_atomic(run_dir / LAUNCH_FILE, launch)
        (run_dir / ERROR_FILE).unlink(missing_ok=True)  # the last attempt's error, if any, is history
        print(f"[fptbench] cell {spec.run_id}: attempt {launch['attempts']} (job {_job_id()}) in {run_dir}", flush=True)
        return launch

    @staticmethod
    def _train_evaluate(spec: CellSpec, run_dir: Path) -> dict[str, Any]:
        from fptbench.engine import evaluate_checkpoint, prepare_trunk, train
        from fptbench.engine.checkpoint import find_last

        prepare_trunk(spec.config, log=lambda m: print(f"[fptbench] {m}", flush=True))
        result = train(spec.config, run_dir, resume=True, progress=True)
        if spec.config["train"]["eval_at_end"]:
            return result
        return evaluate_checkpoint(spec.config, str(find_last(run_dir)), run_dir, progress=True)

    @staticmethod
    def _profile(spec: CellSpec, run_dir: Path) -> dict[str, Any]:
        """Profile the trained weights at the matrix's profiling size, on CUDA if there is one."""
        from fptbench.engine import profile_checkpoint
        from fptbench.engine.checkpoint import find_last

        last = find_last(run_dir)
        return profile_checkpoint(spec.config, str(last) if last is not None else None,
                                  size=tuple(spec.profile["size"]), runs=spec.profile["runs"],
                                  warmup=spec.profile["warmup"])
