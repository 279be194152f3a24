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
