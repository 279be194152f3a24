"""Training for real on the embedded dataset: exact resume after SIGKILL, and 2-process DDP.

The runs are tiny (ResNet-18 + FPT at 64 px, a few iterations) but go through the whole
engine: the CLI, the data loader, checkpoints, the schedule and the RNG restore.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from fptbench.config import load_config
from fptbench.data.synth import write_synth
from fptbench.engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]

TINY = [
    ("model.backbone", "resnet18"),
    ("model.min_size", "64"),
    ("model.max_size", "64"),
    ("train.images_per_device", "2"),
    ("train.max_iter", "8"),
    ("train.checkpoint_period", "2"),
    ("train.warmup_iters", "2"),
    ("train.steps", "[6]"),
    ("train.base_lr", "0.01"),
    ("train.eval_at_end", "false"),
    ("model.backbone_pretrain", "''"),  # a fresh trunk: no pre-training
    ("data.num_workers", "1"),
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synth(root, train=12, val=4, size=64, seed=0)
    return root


def _cmd(synth, out, *extra):
    args = [sys.executable, "-m", "fptbench", "train", "synth_r18_fpt", "--output", str(out), "--data-root", str(synth)]
    for key, value in TINY:
        args += ["--set", key, value]
    return args + list(extra)


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _final_weights(out):
    state = load_checkpoint(Path(out) / "checkpoints" / "last.pth")
    assert state["iteration"] == 8
    return state["model"]


def _kill_when(proc, path, delay):
    """SIGKILL ``proc`` ``delay`` seconds after ``path`` appears (or when it ends by itself)."""
    while not Path(path).exists():
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


@pytest.mark.slow
def test_sigkill_and_resume_end_bitwise_identical(synth, tmp_path):
    # Reference: one uninterrupted run.
    ref = tmp_path / "ref"
    # train.keep_checkpoints keeps the last 2 periodic checkpoints; iteration 2 is named so that
    # the end of this test can compare against it.
    subprocess.run(_cmd(synth, ref, "--set", "train.keep_checkpoints", "[2]"), check=True, env=_env(), capture_output=True)
    # Interrupted run: killed right after the first checkpoint, resumed, killed again in the
    # middle of later iterations, resumed to the end. Each resume must replay exactly.
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(synth, run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _kill_when(proc, run / "checkpoints" / "model_0000002.pth", 0.0), "run ended before the first kill"
    proc = subprocess.Popen(_cmd(synth, run, "--resume"), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = _kill_when(proc, run / "checkpoints" / "model_0000004.pth", 0.3)
    if not killed:
        assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    done = subprocess.run(_cmd(synth, run, "--resume"), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stderr + done.stdout
    a, b = _final_weights(ref), _final_weights(run)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    # The runs really trained: the weights moved away from the initialisation.
    assert not torch.equal(a["backbone.fpt.fuse.p2.0.weight"], load_checkpoint(ref / "checkpoints" / "model_0000002.pth")["model"]["backbone.fpt.fuse.p2.0.weight"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, port, cfg, out, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from fptbench.engine import train

    summary = train(cfg, out, progress=False)
    results[rank] = (summary["weights_sha256"], summary["world_size"], torch.distributed.get_backend())
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_on_gloo_keeps_replicas_identical(synth, tmp_path):
    # gloo on the CPU, whatever GPUs the machine has (two NCCL ranks cannot share one GPU)
    cfg = load_config("synth_r18_fpt", TINY + [("data.root", str(synth)), ("train.max_iter", "3"), ("data.num_workers", "0"),
                                               ("device", "cpu")])
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(_free_port(), cfg, str(tmp_path), results), nprocs=2, join=True)
    (d0, w0, b0), (d1, w1, b1) = results[0], results[1]
    assert w0 == w1 == 2 and b0 == b1 == "gloo"
    assert d0 == d1  # bitwise-identical weights on both ranks after 3 DDP steps
    # and they are the weights rank 0 saved
    from fptbench.engine.model import weights_digest
    from fptbench.modeling import build_model

    model = build_model(cfg)
    model.load_state_dict(load_checkpoint(tmp_path / "checkpoints" / "last.pth")["model"])
    assert weights_digest(model) == d0
