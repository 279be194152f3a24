"""`fptbench sweep --executor slurm` against a real SLURM scheduler (slurm/dev-cluster.sh).

Skipped, with the reason, where no scheduler can be started (see conftest.slurm_cluster). The
cells are those of the local-executor tests, so the two executors' records can be compared.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.launch.workspace import REPO_ROOT, fptbench, records, stable, status_rows

pytestmark = pytest.mark.slow

DEV = str(REPO_ROOT / "slurm" / "dev.yaml")


@pytest.fixture(scope="module")
def slurm_sweep(slurm_cluster, local_sweep):
    """The tiny matrix through SLURM (one job array, --wait) into results-slurm/."""
    work, _ = local_sweep
    result = fptbench(work, "sweep", "tiny", "--executor", "slurm", "--cluster", DEV,
                      "--results", "results-slurm", "--wait")
    return work, result


def test_the_array_runs_and_records_equal_the_local_ones_but_for_time_and_job(slurm_sweep):
    work, result = slurm_sweep
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]  # the broken cell
    assert "as SLURM job array" in result.stdout and "2 done, 1 failed" in result.stdout
    local, slurm = records(work / "results" / "tiny"), records(work / "results-slurm" / "tiny")
    assert sorted(slurm) == sorted(local) and len(slurm) == 2
    arrays = set()
    for rid in slurm:
        assert slurm[rid]["launch"]["executor"] == "slurm"
        arrays.add(slurm[rid]["launch"]["job_id"].split("_")[0])
        assert stable(slurm[rid]) == stable(local[rid]), rid
    assert len(arrays) == 1  # one job array for the sweep


def test_status_shows_the_failed_cells_traceback_and_a_second_sweep_submits_nothing(slurm_sweep):
    work, _ = slurm_sweep
    status = fptbench(work, "status", "tiny", "--results", "results-slurm")
    rows = status_rows(status.stdout)
    assert {rid.split("-")[0]: row[0] for rid, row in rows.items()} == {"bfp": "done", "fpt": "done", "broken": "failed"}
    assert all("_" in row[1] for row in rows.values())  # array job ids
    assert "instances_no_such_split.json: not found" in status.stdout and 'File "' in status.stdout
    before = (work / "results-slurm" / "tiny" / "sweep.json").read_text()
    again = fptbench(work, "sweep", "tiny", "--executor", "slurm", "--cluster", DEV, "--results", "results-slurm")
    assert again.returncode == 0 and "nothing to submit" in again.stdout, again.stdout + again.stderr
    assert (work / "results-slurm" / "tiny" / "sweep.json").read_text() == before


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_preempted_cell_is_requeued_and_ends_with_the_uninterrupted_weights(slurm_sweep):
    import submitit

    work, _ = slurm_sweep
    submitted = fptbench(work, "sweep", "tiny_bfp", "--executor", "slurm", "--cluster", DEV, "--results", "results-preempt")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    root = work / "results-preempt" / "tiny_bfp"
    (rid, entry), = json.loads((root / "sweep.json").read_text())["cells"].items()
    seen = []

    def state():
        row = status_rows(fptbench(work, "status", "tiny_bfp", "--results", "results-preempt").stdout)[rid]
        seen.append(row[0])
        return row

    # preempt once the first checkpoint (iteration 2 of 6) is on disk
    _wait_for(lambda: (root / rid / "checkpoints" / "model_0000002.pth").exists(), 120, "the first checkpoint")
    submitit.SlurmJob(entry["folder"], entry["job_id"])._interrupt()  # SIGTERM + USR2, as a preemption
    row = _wait_for(lambda: (lambda r: r if r[0] == "done" else None)(state()), 240, "the requeued cell to finish")
    assert row[3] == "2"  # attempts
    assert "requeued" in seen, seen  # between the preemption and the second start
    record = json.loads((root / rid / "result.json").read_text())
    assert record["launch"]["attempts"] == 2 and record["launch"]["requeues"] == 1
    launch = json.loads((root / rid / "launch.json").read_text())
    assert len(launch["job_ids"]) == 2 and launch["job_ids"][0] == launch["job_ids"][1]  # the same job, requeued
    uninterrupted = json.loads((work / "results" / "tiny" / rid / "result.json").read_text())
    assert record["training"]["weights_sha256"] == uninterrupted["training"]["weights_sha256"]
    def same(r):
        return {k: v for k, v in stable(r).items() if k != "cell"}

    assert same(record) == same(uninterrupted)


def test_cancel_cancels_queued_and_running_jobs_and_a_new_sweep_resumes_them(slurm_sweep):
    work, _ = slurm_sweep
    results = ["--results", "results-cancel"]
    submitted = fptbench(work, "sweep", "tiny_bfp", "--executor", "slurm", "--cluster", DEV, *results)
    assert submitted.returncode == 0, submitted.stderr
    root = work / "results-cancel" / "tiny_bfp"
    (rid,) = json.loads((root / "sweep.json").read_text())["cells"]
    _wait_for(lambda: (root / rid / "launch.json").exists(), 120, "the cell to start")
    cancelled = fptbench(work, "cancel", "tiny_bfp", *results)
    assert cancelled.returncode == 0 and "1 cell(s) cancelled" in cancelled.stdout, cancelled.stdout + cancelled.stderr
    _wait_for(lambda: status_rows(fptbench(work, "status", "tiny_bfp", *results).stdout)[rid][0] == "cancelled",
              60, "the cell to show as cancelled")
    plan = fptbench(work, "sweep", "tiny_bfp", "--executor", "slurm", "--cluster", DEV, "--dry-run", *results)
    assert "would submit 1 of 1" in plan.stdout and "resumes from its last checkpoint" in plan.stdout


def test_a_two_task_cell_runs_ddp_across_srun_tasks(slurm_sweep, tmp_path):
    """world_size 2 on SLURM: one job with 2 tasks (srun), DDP (gloo) initialised from submitit's
    TorchDistributedEnvironment with the port drawn from the job id; rank 0 writes the record."""
    work, _ = slurm_sweep
    text = (work / "experiments" / "tiny_bfp.yaml").read_text()
    (work / "experiments" / "tiny_ddp2.yaml").write_text(text.replace("profile:", "world_size: 2\nprofile:"))
    profile = tmp_path / "two_tasks.yaml"
    profile.write_text("partition: dev\ntasks_per_node: 2\ncpus_per_task: 1\nmem_per_task_gb: 3\n"
                       "timeout_min: 30\narray_parallelism: 1\nsignal_delay_s: 15\n")
    result = fptbench(work, "sweep", "tiny_ddp2", "--executor", "slurm", "--cluster", str(profile),
                      "--results", "results-ddp", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    (record,) = records(work / "results-ddp" / "tiny_ddp2").values()
    assert record["training"]["world_size"] == 2 and record["launch"]["executor"] == "slurm"
    # the mismatch between a matrix's world size and a profile's tasks is refused before submitting
    wrong = fptbench(work, "sweep", "tiny_bfp", "--executor", "slurm", "--cluster", str(profile), "--dry-run")
    assert wrong.returncode == 2 and "world_size 1 per cell" in wrong.stderr


def test_a_cell_given_gpus_that_torch_cannot_use_fails_at_once_with_one_line(slurm_sweep, tmp_path):
    """Issue #10: the dev cluster's fake GPUs are what a node whose driver is older than torch's
    CUDA looks like to torch: SLURM allocated GPUs, CUDA is unusable. The cell must fail with one
    line naming SLURM's variable, never train on the CPU."""
    work, _ = slurm_sweep
    profile = tmp_path / "gpu.yaml"
    profile.write_text((REPO_ROOT / "slurm" / "dev.yaml").read_text().replace("gpus_per_node: 0", "gpus_per_node: 1"))
    result = fptbench(work, "sweep", "tiny_bfp", "--executor", "slurm", "--cluster", str(profile),
                      "--results", "results-gpu", "--wait")
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    (error,) = (work / "results-gpu" / "tiny_bfp").glob("*/error.json")
    message = json.loads(error.read_text())["error"]
    assert message.startswith("UsageError: SLURM_") and "asks for CUDA, but torch" in message and "\n" not in message
    assert not list((work / "results-gpu" / "tiny_bfp").glob("*/checkpoints/*.pth"))  # nothing trained
