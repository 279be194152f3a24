"""Checkpoints: complete, atomic, and carrying every RNG state."""

import os
import random

import numpy as np
import pytest
import torch

from fptbench.engine.checkpoint import find_last, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fptbench.errors import UsageError


def _parts():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    return model, opt, sched


def test_save_writes_numbered_file_and_last(tmp_path):
    model, opt, sched = _parts()
    p2 = save_checkpoint(tmp_path, iteration=2, model=model, optimizer=opt, scheduler=sched)
    p4 = save_checkpoint(tmp_path, iteration=4, model=model, optimizer=opt, scheduler=sched)
    assert p2.name == "model_0000002.pth" and p4.exists()
    last = find_last(tmp_path)
    assert os.path.samefile(last, p4)  # last.pth is the newest, as a hard link
    state = load_checkpoint(last)
    assert state["iteration"] == 4
    assert torch.equal(state["model"]["weight"], model.weight)
    assert state["optimizer"]["state"][0]["momentum_buffer"] is not None
    # No temporary files are left behind.
    assert sorted(f.name for f in (tmp_path / "checkpoints").iterdir()) == ["last.pth", "model_0000002.pth", "model_0000004.pth"]


def test_rng_state_round_trip():
    # Restoring the saved state makes every generator repeat its next draws.
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_unreadable_checkpoint_is_a_usage_error(tmp_path):
    bad = tmp_path / "model.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="model.pth: not a readable checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(UsageError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")
    torch.save({"weights": 1}, tmp_path / "other.pth")
    with pytest.raises(UsageError, match="not an fptbench training checkpoint"):
        load_checkpoint(tmp_path / "other.pth")


def test_corrupt_last_is_replaced_by_the_newest_readable_checkpoint(tmp_path):
    from fptbench.engine.checkpoint import find_resumable

    model, opt, sched = _parts()
    for it in (2, 4, 6):
        save_checkpoint(tmp_path, iteration=it, model=model, optimizer=opt, scheduler=sched)
    folder = tmp_path / "checkpoints"
    with open(folder / "last.pth", "r+b") as f:  # a hard link: model_0000006.pth is truncated too
        f.truncate(100)
    lines = []
    path, state = find_resumable(tmp_path, lines.append)
    assert path.name == "model_0000004.pth" and state["iteration"] == 4
    assert os.path.samefile(folder / "last.pth", path)  # last.pth points to it again
    assert any("model_0000006.pth: not a readable checkpoint" in line for line in lines)
    for name in ("model_0000002.pth", "model_0000004.pth"):
        (folder / name).write_bytes(b"garbage")
    with pytest.raises(UsageError, match="no readable checkpoint to resume from"):
        find_resumable(tmp_path)
    assert find_resumable(tmp_path / "empty") is None


def test_prune_keeps_the_last_two_and_the_named_ones(tmp_path):
    from fptbench.engine.checkpoint import numbered_checkpoints, prune_checkpoints

    model, opt, sched = _parts()
    for it in range(1, 7):
        save_checkpoint(tmp_path, iteration=it, model=model, optimizer=opt, scheduler=sched)
    removed = prune_checkpoints(tmp_path, keep=[2, 99])
    assert sorted(numbered_checkpoints(tmp_path)) == [2, 5, 6]
    assert sorted(p.name for p in removed) == ["model_0000001.pth", "model_0000003.pth", "model_0000004.pth"]
    assert load_checkpoint(find_last(tmp_path))["iteration"] == 6


def test_temp_files_of_a_write_killed_midway_are_removed_on_start(tmp_path):
    import signal
    import subprocess
    import sys

    from fptbench.engine.checkpoint import clean_temp_files
    from tests.conftest import REPO_ROOT

    target = tmp_path / "checkpoints" / "model_0000002.pth"
    code = ("import time\nfrom fptbench.fileio import atomic_write\n"
            "def write(f):\n    f.write(b'x' * 4096); f.flush(); print('writing', flush=True); time.sleep(600)\n"
            f"atomic_write({str(target)!r}, write)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)  # killed in the middle of the write
    proc.wait()
    left = list(target.parent.glob(".*.tmp"))
    assert len(left) == 1 and not target.exists()
    (tmp_path / "result.json").write_text("{}")  # finished work stays
    assert clean_temp_files(tmp_path) == left
    assert list(target.parent.iterdir()) == [] and (tmp_path / "result.json").read_text() == "{}"
