"""Faults injected into real training runs: SIGKILL after the last checkpoint, a lost or truncated
record, a corrupt last.pth, a write killed midway, read-only and full file systems, an --output
that is a file or holds another run. Each test asserts that what was finished is still there and
that the next command completes the work (or says in one line why it cannot)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fptbench.data.synth import write_synth
from fptbench.engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]

TINY = [
    ("model.backbone", "resnet18"), ("model.min_size", "64"), ("model.max_size", "64"),
    ("model.rpn_pre_nms_top_n_test", "50"), ("model.rpn_post_nms_top_n_test", "50"),
    ("train.images_per_device", "1"), ("train.warmup_iters", "1"), ("train.steps", "[]"),
    ("data.num_workers", "0"), ("model.backbone_pretrain", "''"),  # a fresh trunk: no pre-training
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synth(root, train=4, val=2, size=64, seed=0)
    return root


def _cmd(synth, out, *extra, sets=()):
    args = [sys.executable, "-m", "fptbench", "train", "synth_r18_bfp", "--output", str(out), "--data-root", str(synth)]
    for key, value in TINY + list(sets):
        args += ["--set", key, value]
    return args + list(extra)


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _run(synth, out, *extra, sets=()):
    return subprocess.run(_cmd(synth, out, *extra, sets=sets), env=_env(), capture_output=True, text=True, timeout=600)


def _one_line_error(proc, fragment):
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line.partition("fptbench: error:")[2] for line in proc.stderr.splitlines() if "fptbench: error:" in line]
    assert len(errors) == 1 and fragment in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def _kill_when(proc, path):
    """SIGKILL ``proc`` as soon as ``path`` exists; False if it ended first."""
    while not Path(path).exists():
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _killed_write(path):
    """A process killed with SIGKILL in the middle of fptbench.fileio.atomic_write(path): returns
    the temporary file it leaves."""
    code = ("import sys, time\nfrom fptbench.fileio import atomic_write\n"
            "def write(f):\n    f.write(b'x' * 4096); f.flush(); print('writing', flush=True); time.sleep(600)\n"
            f"atomic_write({str(path)!r}, write)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (tmp,) = Path(path).parent.glob(f".{Path(path).name}.*.tmp")
    return tmp


@pytest.mark.slow
def test_a_run_killed_after_its_last_checkpoint_is_finished_on_resume_without_training(synth, tmp_path):
    sets = [("train.max_iter", "8"), ("train.checkpoint_period", "2"), ("train.keep_checkpoints", "[2]")]
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    # Killed right after the last checkpoint: during evaluation, before result.json.
    proc = subprocess.Popen(_cmd(synth, run, sets=sets), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _kill_when(proc, ckpts / "model_0000008.pth"), "the run ended before the kill"
    assert not (run / "result.json").exists()
    # keep_checkpoints: the last two (6, 8) and the one named (2); 4 was pruned
    assert sorted(p.name for p in ckpts.glob("model_*.pth")) == ["model_0000002.pth", "model_0000006.pth", "model_0000008.pth"]
    final = ckpts / "model_0000008.pth"
    before = (final.stat().st_ino, final.stat().st_mtime_ns)
    saved_loss = load_checkpoint(final)["extra"]["loss"]
    tmp = _killed_write(ckpts / "model_0000010.pth")  # the temp file of a checkpoint write killed midway

    done = _run(synth, run, "--resume", sets=sets)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained iterations 8..8" in done.stdout  # no step: the weights are those of the checkpoint
    assert (final.stat().st_ino, final.stat().st_mtime_ns) == before
    assert not tmp.exists()
    record = json.loads((run / "result.json").read_text())
    assert record["training"]["iterations"] == 8 and record["training"]["final_loss"] == saved_loss
    assert "bbox" in record["metrics"]

    # A truncated record is written again by the next resume, still without training.
    (run / "result.json").write_text((run / "result.json").read_text()[:100])
    again = _run(synth, run, "--resume", sets=sets)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((run / "result.json").read_text())["training"]["final_loss"] == saved_loss

    # Training again into the finished run without --resume is refused and changes nothing.
    kept = (run / "result.json").read_bytes()
    _one_line_error(_run(synth, run, sets=sets), "already holds a run")
    assert (run / "result.json").read_bytes() == kept

    # A corrupt last.pth (it is a hard link: model_0000008.pth is corrupt too): the resume falls
    # back to model_0000006.pth, trains 6..8 and finishes.
    with open(ckpts / "last.pth", "r+b") as f:
        f.truncate(1000)
    healed = _run(synth, run, "--resume", sets=sets)
    assert healed.returncode == 0, healed.stderr[-2000:]
    assert "replaced by model_0000006.pth" in healed.stdout and "trained iterations 6..8" in healed.stdout
    assert load_checkpoint(ckpts / "last.pth")["iteration"] == 8
    assert json.loads((run / "result.json").read_text())["training"]["iterations"] == 8


def test_output_that_is_a_file_is_one_line(synth, tmp_path):
    target = tmp_path / "result.json"
    target.write_text("{}")
    _one_line_error(_run(synth, target), "is a file, not a folder (the run folder)")
    assert target.read_text() == "{}"


def test_resuming_a_checkpoint_of_another_model_is_one_line(synth, tmp_path):
    from fptbench.config import load_config
    from fptbench.engine.checkpoint import save_checkpoint
    from fptbench.modeling import build_model

    cfg = load_config("synth_r18_fpt", TINY)  # FPT weights in a folder then resumed as BFP
    model = build_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(tmp_path / "run", iteration=1, model=model, optimizer=optimizer,
                    scheduler=torch.optim.lr_scheduler.StepLR(optimizer, 1))
    _one_line_error(_run(synth, tmp_path / "run", "--resume", sets=[("train.max_iter", "2")]),
                    "the checkpoint is of another model")


def test_category_ids_beyond_num_classes_are_one_line(synth, tmp_path):
    _one_line_error(_run(synth, tmp_path / "run", sets=[("model.num_classes", "3")]),
                    "does not fit model.num_classes=3")


# ---------------------------------------------------------------------------------------------
# read-only and full file systems: small tmpfs mounts (root only)

@pytest.fixture
def mount(tmp_path):
    """``mount(options)`` -> a fresh tmpfs folder mounted with ``options``; skips where mounting
    is refused (not root, no CAP_SYS_ADMIN)."""
    mounted = []

    def make(options):
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip() or out.returncode}")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_read_only_output_is_one_line_before_any_work(synth, mount, tmp_path):
    read_only = mount("ro,size=1m")
    _one_line_error(_run(synth, read_only / "run"), "cannot write in the run folder: Read-only file system")
    # eval checks its --output before loading and evaluating (the checkpoint need not even exist)
    proc = subprocess.run([sys.executable, "-m", "fptbench", "eval", "synth_r18_bfp", "--ckpt", str(tmp_path / "none.pth"),
                           "--output", str(read_only / "eval"), "--data-root", str(synth)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    _one_line_error(proc, "cannot write in the output folder: Read-only file system")


def test_full_disk_at_the_checkpoint_is_one_line_and_leaves_no_temp_file(synth, mount):
    run = mount("size=2m") / "run"  # a ResNet-18 checkpoint is ~100 MB
    proc = _run(synth, run, sets=[("train.max_iter", "1"), ("train.eval_at_end", "false")])
    _one_line_error(proc, "cannot write the checkpoint of iteration 1")
    assert "MiB free" in proc.stderr
    assert list((run / "checkpoints").iterdir()) == []


@pytest.mark.slow
def test_a_sweep_cell_killed_during_evaluation_is_finished_by_rerun_failed_without_training(tmp_path):
    from tests.launch.workspace import fptbench, make_workspace

    work = make_workspace(tmp_path)
    env = {**_env(), "PYTHONPATH": str(ROOT)}
    sweep = subprocess.Popen([sys.executable, "-m", "fptbench", "sweep", "tiny_bfp"], cwd=work, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    root = work / "results" / "tiny_bfp"
    deadline = time.monotonic() + 300
    while not list(root.glob("*/checkpoints/model_0000006.pth")):  # the cell's last checkpoint
        assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended before the kill"
        time.sleep(0.01)
    os.killpg(sweep.pid, signal.SIGKILL)  # the sweep and its cell, during evaluation
    sweep.wait()
    (final,) = root.glob("*/checkpoints/model_0000006.pth")
    run_dir = final.parent.parent
    assert not (run_dir / "result.json").exists()
    before = (final.stat().st_ino, final.stat().st_mtime_ns)

    again = fptbench(work, "sweep", "tiny_bfp", "--rerun-failed")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    record = json.loads((run_dir / "result.json").read_text())
    assert record["training"]["iterations"] == 6 and isinstance(record["training"]["final_loss"], float)
    assert record["profile"] and (final.stat().st_ino, final.stat().st_mtime_ns) == before  # not retrained
