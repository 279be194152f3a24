"""The engine's commands end to end through the CLI: data synth -> train -> eval -> infer.

Tiny sizes (64-px images, ResNet-18, 2 iterations): this checks the plumbing and the files
each command promises, and that bad input is one line with exit status 2.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "model.backbone", "resnet18", "--set", "model.min_size", "64", "--set", "model.max_size", "64",
        "--set", "train.max_iter", "2", "--set", "train.warmup_iters", "1", "--set", "train.steps", "[]",
        "--set", "train.images_per_device", "2", "--set", "model.box_score_thresh", "0.0"]


def fptbench(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "fptbench", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2",
                               "CUDA_VISIBLE_DEVICES": ""})  # a clean environment, CPU only
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One synthetic dataset and one tiny trained run, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "synth"
    out = fptbench("data", "synth", "--out", data, "--train", 6, "--val", 3, "--size", 64)
    assert "synth" in out.stdout.lower()
    fptbench("train", "synth_r18_fpt", "--output", tmp / "run", "--data-root", data, *TINY)
    return tmp, data


def test_train_writes_checkpoints_tensorboard_and_a_record(run):
    tmp, _ = run
    assert (tmp / "run" / "checkpoints" / "last.pth").exists()
    assert list((tmp / "run" / "tensorboard").glob("events.out.tfevents.*"))
    record = json.loads((tmp / "run" / "result.json").read_text())
    for kind in ("bbox", "segm"):
        assert set(record["metrics"][kind]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert record["training"]["iterations"] == 2 and len(record["training"]["weights_sha256"]) == 64
    assert record["config"]["model"]["backbone"] == "resnet18" and len(record["config_hash"]) == 12
    assert record["dataset"] == {"name": "val", "images": 3}
    assert record["versions"]["torch"] and record["device"]["type"] == "cpu"
    assert record["training"]["autocast_dtype"] == "float32"  # the CPU trains in fp32 unless train.cpu_bf16


def test_eval_of_the_checkpoint_reproduces_the_training_record(run):
    tmp, data = run
    fptbench("eval", "synth_r18_fpt", "--ckpt", tmp / "run" / "checkpoints" / "last.pth", "--output", tmp / "eval",
             "--data-root", data, *TINY)
    trained = json.loads((tmp / "run" / "result.json").read_text())
    evaluated = json.loads((tmp / "eval" / "result.json").read_text())
    assert evaluated["metrics"] == trained["metrics"]  # same weights, same data, same numbers
    assert evaluated["training"]["iterations"] == 2
    assert evaluated["training"]["weights_sha256"] == trained["training"]["weights_sha256"]


def test_infer_draws_every_image(run):
    tmp, data = run
    fptbench("infer", "synth_r18_fpt", "--ckpt", tmp / "run" / "checkpoints" / "last.pth", "--images",
             data / "images" / "val", "--output", tmp / "drawn", "--threshold", 0.0, "--data-root", data, *TINY)
    assert len(list((tmp / "drawn").glob("*.png"))) == 3
    detections = json.loads((tmp / "drawn" / "detections.json").read_text())
    assert len(detections["images"]) == 3


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "synth_r18_fpt", "--output", "{tmp}/x", "--data-root", "{tmp}/nowhere"], "instances_train.json"),
        (["eval", "synth_r18_fpt", "--ckpt", "{tmp}/missing.pth", "--output", "{tmp}/x", "--data-root", "{data}"], "missing.pth"),
        (["infer", "synth_r18_fpt", "--ckpt", "{tmp}/run/checkpoints/last.pth", "--images", "{tmp}/no-images",
          "--output", "{tmp}/y", "--data-root", "{data}"], "no-images"),
        (["train", "synth_r18_fpt", "--output", "{tmp}/x", "--set", "train.max_itr", "5"], "did you mean 'train.max_iter'"),
        (["data", "synth", "--out", "{tmp}/s", "--size", "8"], "--size"),
        (["infer", "synth_r18_fpt", "--ckpt", "a", "--images", "b", "--output", "c", "--threshold", "2"], "--threshold"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run, args, expected):
    tmp, data = run
    overrides = [] if args[0] == "data" else TINY
    proc = fptbench(*[a.format(tmp=tmp, data=data) for a in args], *overrides, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("fptbench: error: ") and expected in lines[-1], lines[-3:]
    assert "Traceback" not in proc.stderr


def test_cpu_bf16_autocast_trains(run):
    # train.cpu_bf16 runs the model (attention ops included) under bf16 autocast on the CPU.
    tmp, data = run
    proc = fptbench("train", "synth_r18_fpt", "--output", tmp / "bf16", "--data-root", data, "--no-save", *TINY,
                    "--set", "train.cpu_bf16", "true", "--set", "train.eval_at_end", "false", "--set", "train.max_iter", "1")
    assert "trained iterations 0..1" in proc.stderr + proc.stdout
    assert not (tmp / "bf16" / "checkpoints").exists()  # --no-save writes no checkpoint


def test_resume_refuses_what_it_cannot_replay(run):
    # The data stream depends on the batch per device (and seed, world size, split): resuming
    # with another one would silently train on different data, so it is a one-line error.
    tmp, data = run
    for extra, expected in [(["--set", "train.images_per_device", "1"], "cannot resume exactly"),
                            (["--set", "train.max_iter", "1"], "past train.max_iter=1")]:
        proc = fptbench("train", "synth_r18_fpt", "--output", tmp / "run", "--data-root", data, "--resume", *TINY,
                        *extra, check=False)
        assert proc.returncode == 2 and expected in proc.stderr.strip().splitlines()[-1], proc.stderr[-1500:]
