"""`fptbench sweep / status / report` through submitit's local executor, on real tiny cells.

The session fixture ``local_sweep`` runs the tiny matrix (bfp, fpt, and a cell whose training
split does not exist) once; the tests read what it left and run the commands again.
"""

from __future__ import annotations

import json

import pytest

from fptbench.config import config_hash

from tests.launch.workspace import fptbench, records, status_rows

pytestmark = pytest.mark.slow  # the fixture trains two cells (~40 s)


def test_every_cell_runs_and_a_failing_cell_does_not_stop_the_others(local_sweep):
    work, sweep = local_sweep
    assert sweep.returncode == 1, sweep.stderr[-2000:]  # a cell failed
    assert "failed broken-" in sweep.stdout and "2 done, 1 failed" in sweep.stdout
    found = records(work / "results" / "tiny")
    assert sorted(rid.split("-")[0] for rid in found) == ["bfp", "fpt"]
    for rid, record in found.items():
        assert record["cell"] == {"experiment": "tiny", "run_id": rid, "axes": {"ablation": rid.split("-")[0]},
                                  "matrix": "experiments/tiny.yaml"}
        assert record["launch"]["executor"] == "local" and record["launch"]["attempts"] == 1
        assert record["launch"]["requeues"] == 0
        assert record["training"]["iterations"] == 6
        assert set(record["metrics"]) == {"bbox", "segm"}
        assert record["profile"]["input_size"] == [128, 128] and record["profile"]["params"] > 1e6
        # the run id hashes the record's config and the cell's batch (fptbench.experiments.matrix)
        batch = record["training"]["batch"]["batch"]
        assert rid.endswith(config_hash({"config": record["config_hash"], "batch": batch})[:8])
    # the FPT cell profiles its attention; the BFP cell has none
    by_neck = {rid.split("-")[0]: r for rid, r in found.items()}
    assert by_neck["fpt"]["profile"]["attention"]["macs"] > 0 == by_neck["bfp"]["profile"]["attention"]["macs"]


def test_status_reports_states_and_the_failed_cells_traceback(local_sweep):
    work, _ = local_sweep
    result = fptbench(work, "status", "tiny")
    assert result.returncode == 0, result.stderr
    rows = status_rows(result.stdout)
    states = {rid.split("-")[0]: row[0] for rid, row in rows.items()}
    assert states == {"bfp": "done", "fpt": "done", "broken": "failed"}
    assert all(row[3] == "1" for row in rows.values())  # attempts
    # the traceback's last line names the missing annotation file
    assert "instances_no_such_split.json: not found" in result.stdout
    assert 'File "' in result.stdout  # traceback lines of the failed cell
    assert "tiny: 3 cells: 2 done, 1 failed" in result.stdout


def test_a_second_sweep_submits_nothing(local_sweep):
    work, _ = local_sweep
    state = json.loads((work / "results" / "tiny" / "sweep.json").read_text())
    folders = sorted((work / "results" / "tiny" / ".submitit").iterdir())
    again = fptbench(work, "sweep", "tiny")
    assert again.returncode == 0, again.stderr
    assert "nothing to submit; 2 done, 1 failed" in again.stdout
    assert json.loads((work / "results" / "tiny" / "sweep.json").read_text())["cells"] == state["cells"]
    assert sorted((work / "results" / "tiny" / ".submitit").iterdir()) == folders


def test_dry_run_says_what_would_be_submitted_and_why(local_sweep):
    work, _ = local_sweep
    plain = fptbench(work, "sweep", "tiny", "--dry-run")
    rerun = fptbench(work, "sweep", "tiny", "--dry-run", "--rerun-failed")
    assert "would submit 0 of 3 cells" in plain.stdout and "resubmit with --rerun-failed" in plain.stdout
    assert "would submit 1 of 3 cells" in rerun.stdout
    broken = [line for line in rerun.stdout.splitlines() if line.startswith("broken-")]
    assert broken and broken[0].split()[1:3] == ["failed", "submit"]


def test_report_builds_from_the_sweeps_records(local_sweep):
    work, _ = local_sweep
    result = fptbench(work, "report", "tiny", "--format", "md,csv")
    assert result.returncode == 0, result.stderr
    index = work / "reports" / "tiny" / "index.md"
    text = index.read_text()
    assert "broken" in text  # the failed cell is a dash with a footnote, not dropped
    assert list((work / "reports" / "tiny").rglob("*.png"))
    assert "2 of 3 cells have records" in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (("sweep", "no_such_matrix", "--dry-run"), "no_such_matrix"),
    (("sweep", "tiny", "--executor", "slurm"), "--executor slurm needs --cluster"),
    (("sweep", "tiny", "--cluster", "slurm/nope.yaml", "--executor", "slurm"), "slurm/nope.yaml: cluster profile not found"),
    (("sweep", "tiny", "--jobs", "0"), "--jobs: expected at least 1"),
    (("sweep", "tiny", "--set", "device", "cuda"), "has device: cuda, but no CUDA device is usable here"),
    (("report", "tiny", "--format", "html"), "--format: expected a comma-separated list"),
])
def test_bad_input_is_one_line_exit_2(local_sweep, args, fragment):
    work, _ = local_sweep
    result = fptbench(work, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fptbench: error:") and fragment in lines[0], result.stderr


def test_a_two_process_cell_trains_with_ddp_from_the_job_environment(local_sweep):
    """world_size 2: the local executor starts 2 tasks; the cell initialises gloo DDP from
    submitit's TorchDistributedEnvironment and rank 0 writes the record."""
    work, _ = local_sweep
    text = (work / "experiments" / "tiny_bfp.yaml").read_text()
    (work / "experiments" / "tiny_ddp.yaml").write_text(text.replace("profile:", "world_size: 2\nprofile:"))
    result = fptbench(work, "sweep", "tiny_ddp")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    (record,) = records(work / "results" / "tiny_ddp").values()
    assert record["training"]["world_size"] == 2 and record["training"]["rank"] == 0
    assert record["training"]["iterations"] == 6 and set(record["metrics"]) == {"bbox", "segm"}


def test_interrupting_a_local_sweep_cancels_its_cell_and_the_next_sweep_resumes_it_exactly(local_sweep):
    """Ctrl-C on `fptbench sweep` (SIGINT to it): the running cell is cancelled (exit 130), status
    says so, and the next sweep resumes it from its checkpoint to the uninterrupted weights."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from fptbench.launch.lock import CELL_LOCK
    from tests.launch.workspace import REPO_ROOT

    work, _ = local_sweep
    results = ["--results", "results-int"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "fptbench", "sweep", "tiny_bfp", *results], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = work / "results-int" / "tiny_bfp"
    deadline = time.monotonic() + 120
    while not list(root.glob("*/checkpoints/model_0000002.pth")):
        assert time.monotonic() < deadline and proc.poll() is None, "the cell did not reach its first checkpoint"
        time.sleep(0.01)
    # The cell is held (SIGSTOP) while the sweep gets its Ctrl-C, so that the interruption lands
    # in training: its 4 remaining iterations (~1 s) could otherwise end before the cancel does.
    (lock,) = root.glob(f"*/{CELL_LOCK}")
    cell_pid = json.loads(lock.read_text())["pid"]
    os.kill(cell_pid, signal.SIGSTOP)
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)  # the sweep cancels its job while the cell cannot run on
    finally:
        os.kill(cell_pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err[-2000:]
    assert "interrupted; cancelled 1 running cell(s)" in out
    time.sleep(2)  # the local job's controller stops its task
    (rid,) = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert status_rows(fptbench(work, "status", "tiny_bfp", *results).stdout)[rid][0] == "cancelled"
    again = fptbench(work, "sweep", "tiny_bfp", *results)
    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    record = json.loads((root / rid / "result.json").read_text())
    assert record["launch"]["attempts"] == 2
    uninterrupted = json.loads((work / "results" / "tiny" / rid / "result.json").read_text())
    assert record["training"]["weights_sha256"] == uninterrupted["training"]["weights_sha256"]
