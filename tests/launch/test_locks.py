"""Folder locks and process identities (fptbench.launch.lock), and what status makes of them,
with real processes: a holder in another process, killed by SIGKILL; a PID that another process
has taken over. No training: fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fptbench.launch.lock import CELL_LOCK, FolderLock, LockHeld, is_locked, process_alive, process_start
from tests.launch.workspace import REPO_ROOT, fptbench, make_workspace, status_rows

HOLD = """
import sys, time
from fptbench.launch.lock import FolderLock
FolderLock(sys.argv[1], sys.argv[2], what="holder for a test").acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder(folder: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), name], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_names_its_holder_and_dies_with_it(tmp_path):
    proc = _holder(tmp_path, "x.lock")
    try:
        assert is_locked(tmp_path / "x.lock")
        with pytest.raises(LockHeld) as err:
            FolderLock(tmp_path, "x.lock").acquire(hint="try later")
        message = str(err.value)
        assert f"locked by pid {proc.pid} on " in message and "(holder for a test)" in message
        assert "since 20" in message and message.endswith("; try later") and "\n" not in message
    finally:
        proc.kill()  # SIGKILL: no cleanup runs; the kernel drops the lock with the descriptor
        proc.wait()
    assert not is_locked(tmp_path / "x.lock")
    with FolderLock(tmp_path, "x.lock") as lock:
        assert lock.held and is_locked(tmp_path / "x.lock")
        assert json.loads((tmp_path / "x.lock").read_text())["pid"] == os.getpid()
    assert not is_locked(tmp_path / "x.lock")


def test_wait_blocks_until_the_holder_ends(tmp_path):
    proc = _holder(tmp_path, "x.lock")
    got = []
    waiter = threading.Thread(target=lambda: got.append(FolderLock(tmp_path, "x.lock").acquire(wait=True)))
    waiter.start()
    waiter.join(3.0)
    assert waiter.is_alive() and not got  # still waiting while the holder lives
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    waiter.join(30)
    assert got and got[0].held
    got[0].release()


def test_a_process_is_its_pid_and_start_time():
    start = process_start(os.getpid())
    assert start is not None and process_alive(os.getpid(), start)
    assert not process_alive(os.getpid(), start + 1)  # same PID, another process: a reused PID
    proc = subprocess.Popen(["sleep", "0"])
    proc.wait()
    assert process_start(proc.pid) is None and not process_alive(proc.pid, None)


@pytest.fixture
def work(tmp_path):
    return make_workspace(tmp_path)


def _fake_local_entry(work: Path, **entry) -> tuple[str, Path]:
    """A sweep.json entry for tiny_bfp's cell, as a local sweep writes it; returns (run id, run folder)."""
    from fptbench.experiments import load_matrix

    os.chdir(work)
    (cell,) = load_matrix("tiny_bfp").cells
    root = work / "results" / "tiny_bfp"
    (root / cell.run_id).mkdir(parents=True)
    folder = root / ".submitit" / "x"
    folder.mkdir(parents=True)
    base = {"executor": "local", "folder": str(folder), "submitted": "2026-11-28T00:00:00+00:00", "submissions": 1}
    (root / "sweep.json").write_text(json.dumps({"experiment": "tiny_bfp", "cells": {cell.run_id: {**base, **entry}}}))
    return cell.run_id, root / cell.run_id


def test_status_does_not_take_a_reused_pid_for_the_cell(work, monkeypatch):
    """The cell's controller has ended and its PID now belongs to another process (here: this
    test's own PID with another start time): the cell is not running."""
    monkeypatch.chdir(work)
    rid, _ = _fake_local_entry(work, job_id=str(os.getpid()), pid_start=process_start(os.getpid()) - 1)
    rows = status_rows(fptbench(work, "status", "tiny_bfp").stdout)
    assert rows[rid][0] == "cancelled"


def test_status_sees_a_running_cell_by_its_lock_whatever_its_pid(work, monkeypatch):
    monkeypatch.chdir(work)
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    rid, run_dir = _fake_local_entry(work, job_id=str(dead.pid))
    proc = _holder(run_dir, CELL_LOCK)
    try:
        assert status_rows(fptbench(work, "status", "tiny_bfp").stdout)[rid][0] == "pending"
    finally:
        proc.kill()
        proc.wait()
    assert status_rows(fptbench(work, "status", "tiny_bfp").stdout)[rid][0] == "cancelled"


@pytest.mark.parametrize("edit, fragment", [
    ("{not json", "not a sweep state file"),
    ('{"cells": []}', "not a sweep state file"),
    ('{"cells": {"RID": 3}}', "cell 'RID': expected an object, got int"),
    ('{"cells": {"RID": {"executor": "lsf", "job_id": "1", "folder": "f"}}}', "executor: expected one of local, slurm, debug"),
    ('{"cells": {"RID": {"executor": "local", "job_id": 12, "folder": "f"}}}', "job_id: expected a non-empty string"),
    ('{"cells": {"RID": {"executor": "local", "job_id": "12_3", "folder": "f"}}}', "a local job id is a process id"),
    ('{"cells": {"RID": {"executor": "slurm", "job_id": "7", "folder": "f", "submissions": "two"}}}',
     "submissions: expected a non-negative integer"),
])
@pytest.mark.parametrize("command", ["status", "sweep"])
def test_a_hand_edited_sweep_json_is_one_line_exit_2(work, edit, fragment, command):
    root = work / "results" / "tiny_bfp"
    root.mkdir(parents=True)
    (root / "sweep.json").write_text(edit)
    result = fptbench(work, command, "tiny_bfp")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fptbench: error:") and fragment in lines[0], result.stderr
    assert "sweep.json" in lines[0]


def test_a_corrupt_record_is_reported_as_corrupt(work, monkeypatch):
    monkeypatch.chdir(work)
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    rid, run_dir = _fake_local_entry(work, job_id=str(dead.pid))
    (run_dir / "result.json").write_text('{"metrics": {"bbox": {"AP": 1.')  # truncated
    result = fptbench(work, "status", "tiny_bfp")
    assert status_rows(result.stdout)[rid][0] == "failed"
    assert "result.json: corrupt record (not valid JSON" in result.stdout
    assert "without a complete record" not in result.stdout
