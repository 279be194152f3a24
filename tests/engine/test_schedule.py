"""The authors' schedule: linear warm-up from 1/3, then x0.1 at each step [code]."""

import pytest
import torch

from fptbench.engine.schedule import build_lr_scheduler, warmup_multistep_factor


def test_factor_values():
    f = lambda i: warmup_multistep_factor(i, warmup_iters=500, warmup_factor=1 / 3, steps=[80000, 100000], gamma=0.1)
    assert f(0) == pytest.approx(1 / 3)
    assert f(250) == pytest.approx(2 / 3)
    assert f(500) == 1.0
    assert f(79999) == 1.0
    assert f(80000) == pytest.approx(0.1)
    assert f(100000) == pytest.approx(0.01)


def test_scheduler_drives_sgd_and_resumes_from_its_state():
    cfg = {"warmup_iters": 4, "warmup_factor": 0.5, "steps": [6], "gamma": 0.1}
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.2)
    sched = build_lr_scheduler(opt, cfg)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.125, 0.15, 0.175, 0.2, 0.2, 0.02, 0.02])
    # Rebuilt and loaded as the trainer resumes (optimizer, then scheduler), the schedule
    # continues where the first one was, also across the next step.
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    sched2 = build_lr_scheduler(opt2, cfg)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.02)
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.02)
