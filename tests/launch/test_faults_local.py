"""Faults injected into real local sweeps of the tiny matrix: two sweeps at once, a sweep killed
(SIGKILL, SIGTERM) while its cell trains, a record truncated after the fact. Each test asserts that
what was finished is still there and that the next command completes the work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fptbench.launch.lock import CELL_LOCK, SWEEP_LOCK, is_locked, process_alive
from tests.launch.workspace import REPO_ROOT, fptbench, make_workspace, status_rows, write_matrix

pytestmark = pytest.mark.slow  # each test trains a tiny cell (~20 s on 2 cores)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = make_workspace(tmp_path_factory.mktemp("faults"))
    # The kill lands while the cell trains: its first checkpoint (iteration 2) is the cue, and a
    # 6-iteration cell can finish (~0.3 s an iteration) before its watcher sees the sweep gone.
    write_matrix(work, "tiny_long", f"    bfp: {{train.max_iter: {LONG_ITERS}}}\n")
    return work


LONG_ITERS = 30


def _start(work: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-m", "fptbench", *args], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, what: str, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert proc is None or proc.poll() is None, f"the sweep ended before {what}: {proc.communicate()}"
        time.sleep(0.1)


def _run_dir(root: Path) -> Path:
    (run_dir,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_dir


def test_two_sweeps_at_once_run_the_cell_once_and_a_third_waits_for_the_lock(work):
    results = ["--results", "results-twice"]
    root = work / "results-twice" / "tiny_bfp"
    first, second = _start(work, "sweep", "tiny_bfp", *results), _start(work, "sweep", "tiny_bfp", *results)
    # while the winner runs, a third sweep with --wait-lock queues behind it
    _wait_for(lambda: is_locked(root / SWEEP_LOCK), "the sweep lock")
    third = _start(work, "sweep", "tiny_bfp", *results, "--wait-lock")
    outs = [(p.returncode, out, err) for p in (first, second) for out, err in [p.communicate(timeout=300)]]
    codes = sorted(rc for rc, _, _ in outs)
    assert codes == [0, 2], outs
    _, loser_out, loser_err = next(o for o in outs if o[0] == 2)
    winner = next(o for o in outs if o[0] == 0)
    lines_err = loser_err.strip().splitlines()
    assert len(lines_err) == 1 and lines_err[0].startswith("fptbench: error:"), loser_err
    assert "locked by pid " in lines_err[0] and " since " in lines_err[0] and "sweep tiny_bfp" in lines_err[0]
    assert "--wait-lock" in lines_err[0]
    assert "1 done" in winner[1]
    # the third sweep waited, then planned from what the first did: nothing left
    third_out, third_err = third.communicate(timeout=300)
    assert third.returncode == 0, third_out + third_err[-2000:]
    assert "waiting for the lock" in third_out and "nothing to submit; 1 done" in third_out
    # one run of the cell: one attempt, one submission, one job
    record = json.loads((_run_dir(root) / "result.json").read_text())
    assert record["launch"]["attempts"] == 1 and record["launch"]["requeues"] == 0
    assert len(json.loads((_run_dir(root) / "launch.json").read_text())["job_ids"]) == 1
    (entry,) = json.loads((root / "sweep.json").read_text())["cells"].values()
    assert entry["submissions"] == 1
    assert len(list((root / ".submitit").iterdir())) == 1  # the loser submitted nothing


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_sweep_leaves_no_cell_running_and_the_next_one_finishes_it(work, sig):
    results = ["--results", f"results-{sig.name}"]
    root = work / f"results-{sig.name}" / "tiny_long"
    sweep = _start(work, "sweep", "tiny_long", *results)
    _wait_for(lambda: list(root.glob("*/checkpoints/model_0000002.pth")), "the first checkpoint", sweep)
    run_dir = _run_dir(root)
    (entry,) = json.loads((root / "sweep.json").read_text())["cells"].values()
    controller = (int(entry["job_id"]), entry["pid_start"])
    cell_pid = json.loads((run_dir / CELL_LOCK).read_text())["pid"]
    assert process_alive(*controller) and is_locked(run_dir / CELL_LOCK)
    sweep.send_signal(sig)
    out, err = sweep.communicate(timeout=120)
    if sig == signal.SIGTERM:  # stopped as by Ctrl-C: it cancels its cell and says so
        assert sweep.returncode == 130 and "interrupted; cancelled 1 running cell(s)" in out, out + err[-2000:]
    # no orphan: the controller and the cell's process end (SIGKILL: the cell sees its sweep gone)
    _wait_for(lambda: not process_alive(*controller) and not is_locked(run_dir / CELL_LOCK) and _gone(cell_pid),
              "the cell to stop", timeout=60)
    assert not is_locked(root / SWEEP_LOCK)
    assert list((run_dir / "checkpoints").glob("model_*.pth"))  # what was done stays
    status = fptbench(work, "status", "tiny_long", *results).stdout
    assert status_rows(status)[run_dir.name][0] == "cancelled", status
    again = fptbench(work, "sweep", "tiny_long", *results)
    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    record = json.loads((run_dir / "result.json").read_text())
    assert record["launch"]["attempts"] == 2 and record["training"]["iterations"] == LONG_ITERS


def _gone(pid: int) -> bool:
    """The process has ended (a zombie, not yet reaped, has ended too)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_truncated_record_is_reported_and_the_next_sweep_completes_it(work):
    results = ["--results", "results-corrupt"]
    root = work / "results-corrupt" / "tiny_bfp"
    first = fptbench(work, "sweep", "tiny_bfp", *results)
    assert first.returncode == 0, first.stdout + first.stderr[-2000:]
    run_dir = _run_dir(root)
    good = json.loads((run_dir / "result.json").read_text())
    text = (run_dir / "result.json").read_text()
    (run_dir / "result.json").write_text(text[: len(text) // 2])  # a disk fault, a hand
    status = fptbench(work, "status", "tiny_bfp", *results)
    assert status.returncode == 0, status.stderr
    assert status_rows(status.stdout)[run_dir.name][0] == "failed"
    assert "result.json: corrupt record (not valid JSON" in status.stdout
    again = fptbench(work, "sweep", "tiny_bfp", *results, "--rerun-failed")
    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    record = json.loads((run_dir / "result.json").read_text())
    assert record["training"]["weights_sha256"] == good["training"]["weights_sha256"]
    assert record["metrics"] == good["metrics"]
