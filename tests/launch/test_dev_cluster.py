"""The dev SLURM cluster (slurm/dev-cluster.sh) does what fptbench's slurm executor relies on.

Plain submitit against the real scheduler, no fptbench launcher: results come back, job arrays
run, accounting (sacct) knows job states, a checkpointable job is requeued with its state, and
fake GPUs schedule. The jobs run in ``python -m submitit.core._submit`` on the node; this module's
functions travel by value (cloudpickle) so that the job need not import the tests package.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

cloudpickle.register_pickle_by_value(sys.modules[__name__])

JOB_TIMEOUT_S = 180  # generous: other CPU-heavy work may share the 2 cores


def _executor(folder: Path, cluster: dict, **params) -> submitit.AutoExecutor:
    """A new executor per parameter set (``update_parameters(x=None)`` does not unset ``x``)."""
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    defaults = {"timeout_min": 60, "cpus_per_task": 1, "mem_gb": 0.5}
    executor.update_parameters(slurm_partition=cluster["partition"], **{**defaults, **params})
    return executor


def _wait_done(job: submitit.Job, timeout: float = JOB_TIMEOUT_S) -> None:
    """Poll the scheduler (sacct) until ``job`` is done; fail with its state and stderr if not."""
    deadline = time.monotonic() + timeout
    while not job.done(force_check=True):
        if time.monotonic() > deadline:
            pytest.fail(f"job {job.job_id} not done after {timeout} s (state {job.state}); "
                        f"stderr:\n{job.stderr()}")
        time.sleep(1)


def _wait_state(job: submitit.Job, state: str, timeout: float = JOB_TIMEOUT_S) -> None:
    """Poll sacct until ``job`` is in ``state`` (the result file comes before COMPLETED)."""
    deadline = time.monotonic() + timeout
    while job.watcher.get_state(job.job_id, mode="force") != state:
        if time.monotonic() > deadline:
            pytest.fail(f"job {job.job_id} not {state} after {timeout} s (state {job.state})")
        time.sleep(1)


def _square(x: int) -> dict:
    """x squared, with the SLURM job environment the task saw."""
    return {"value": x * x, "job_id": os.environ.get("SLURM_JOB_ID"),
            "array_task": os.environ.get("SLURM_ARRAY_TASK_ID"),
            "partition": os.environ.get("SLURM_JOB_PARTITION")}


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _gpu_env() -> dict:
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "SLURM_GPUS_ON_NODE": os.environ.get("SLURM_GPUS_ON_NODE")}


class _PreemptedOnce(submitit.helpers.Checkpointable):
    """Attempt 1 stores a value in ``self`` and waits to be preempted; attempt 2 returns it.

    Every attempt appends a line to ``log``, so the test counts attempts from outside the job.
    """

    def __init__(self) -> None:
        self.carried: str | None = None

    def __call__(self, log: str) -> dict:
        with open(log, "a") as f:
            f.write(f"attempt restart_count={os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
        attempts = len(Path(log).read_text().splitlines())
        if self.carried is None:
            self.carried = f"set by attempt {attempts}"
            time.sleep(600)  # the test preempts this long before
            return {"error": "never preempted"}
        return {"attempts": attempts, "carried": self.carried,
                "restart_count": os.environ.get("SLURM_RESTART_COUNT")}


def test_result_comes_back(slurm_cluster, submitit_folder):
    job = _executor(submitit_folder, slurm_cluster).submit(_square, 7)
    _wait_done(job)
    result = job.result()
    assert result["value"] == 49
    assert result["job_id"] == job.job_id
    assert result["partition"] == slurm_cluster["partition"]


def test_job_array_returns_every_result(slurm_cluster, submitit_folder):
    executor = _executor(submitit_folder, slurm_cluster, slurm_array_parallelism=3)
    jobs = executor.map_array(_square, [1, 2, 3])
    for job in jobs:
        _wait_done(job)
    results = [job.result() for job in jobs]
    assert [r["value"] for r in results] == [1, 4, 9]
    assert [r["array_task"] for r in results] == ["0", "1", "2"]
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1  # one array, three tasks


def test_accounting_knows_finished_and_cancelled_jobs(slurm_cluster, submitit_folder):
    # Without slurmdbd submitit sees UNKNOWN, and a job killed before it writes a result
    # (scancel, OOM) would hang job.result() forever.
    executor = _executor(submitit_folder, slurm_cluster)
    done = executor.submit(_square, 3)
    killed = executor.submit(_sleep, 600)
    _wait_state(done, "COMPLETED")
    assert done.result()["value"] == 9
    _wait_state(killed, "RUNNING")
    killed.cancel()
    _wait_done(killed)
    assert killed.watcher.get_state(killed.job_id, mode="force").startswith("CANCELLED")
    killed._results_timeout_s = 0  # no result file will come (submitit waits 15 s for slow filesystems)
    assert isinstance(killed.exception(), submitit.core.utils.UncompletedJobError)


@pytest.mark.slow
def test_checkpointable_job_is_requeued_with_its_state(slurm_cluster, submitit_folder, tmp_path):
    log = tmp_path / "attempts.txt"
    job = _executor(submitit_folder, slurm_cluster).submit(_PreemptedOnce(), str(log))
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (log.exists() and log.read_text()):  # attempt 1 runs and has set its handler
        if time.monotonic() > deadline:
            pytest.fail(f"job {job.job_id} did not start in {JOB_TIMEOUT_S} s (state {job.state})")
        time.sleep(0.5)
    time.sleep(1)  # the signal handler is set before the call; leave the job a moment anyway
    job._interrupt()  # preemption: SIGTERM then USR2; submitit checkpoints and requeues
    _wait_done(job)
    result = job.result()
    assert result == {"attempts": 2, "carried": "set by attempt 1", "restart_count": "1"}
    _wait_state(job, "COMPLETED")


def test_fake_gpus_schedule(slurm_cluster, submitit_folder):
    assert slurm_cluster["gpus_per_node"] == 2  # dev-cluster.sh declares gpu:2 on its node
    job = _executor(submitit_folder, slurm_cluster, gpus_per_node=2).submit(_gpu_env)
    _wait_done(job)
    assert job.result() == {"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_GPUS_ON_NODE": "2"}
