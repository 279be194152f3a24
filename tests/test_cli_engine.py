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
        "--set", "train.images_per_device", "2", "--set", "model.box_score_thresh", "0.0",
        "--set", "model.backbone_pretrain", "''"]  # a fresh trunk: no pre-training


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


# ---------------------------------------------------------------------------------------------
# the seed's command lines, pasted (README of ZHANGDONG-NJUST/FPT), on a tiny run

def _seed_layout(tmp, data):
    """The synthetic set under the seed's coco2017 names (annotations/instances_train2017.json ...)."""
    root = tmp / "coco"
    if not root.exists():
        (root / "annotations").mkdir(parents=True)
        (root / "images").mkdir()
        for split, seed_split in (("train", "train2017"), ("val", "val2017")):
            (root / "annotations" / f"instances_{seed_split}.json").symlink_to(data / "annotations" / f"instances_{split}.json")
            (root / "images" / seed_split).symlink_to(data / "images" / split)
    return root


def _seed_set(*extra):
    """TINY as the seed writes overrides: one --set, every pair after it. --dataset coco2017 makes
    these COCO runs, which refuse a trunk without weights unless scratch is asked for by name."""
    pairs = [word for word in TINY if word != "--set"] + ["model.backbone_weights", "scratch"] + list(extra)
    return ["--set", *pairs]


@pytest.fixture(scope="module")
def seed_run(run):
    """`python tools/train_net_step.py --dataset coco2017 --cfg ... --use_tfboard --bs N --nw N`, as
    fptbench train, with a checkpoint every iteration so that a resume can start from the first."""
    tmp, data = run
    root = _seed_layout(tmp, data)
    out = tmp / "seed"
    proc = fptbench("train", "--dataset", "coco2017", "--cfg", "synth_r18_fpt", "--use_tfboard", "--bs", 1, "--nw", 0,
                    "--output", out, "--data-root", root, *_seed_set("train.checkpoint_period", "1"))
    return tmp, root, out, proc


def test_seed_train_command_line_maps_to_our_keys(seed_run):
    tmp, root, out, _ = seed_run
    record = json.loads((out / "result.json").read_text())
    cfg = record["config"]
    assert cfg["data"]["train"] == "coco2017_train" and cfg["data"]["test"] == "coco2017_val"  # --dataset coco2017
    assert cfg["train"]["images_per_device"] == 1  # --bs 1, one process
    assert cfg["data"]["num_workers"] == 0  # --nw 0
    assert cfg["train"]["checkpoint_period"] == 1 and cfg["model"]["backbone"] == "resnet18"  # one --set, many pairs
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))  # --use_tfboard: it is on anyway
    assert (out / "checkpoints" / "model_0000001.pth").exists() and record["training"]["iterations"] == 2


def test_seed_resume_from_a_checkpoint_ends_with_the_same_weights(seed_run):
    # `--load_ckpt PATH --resume`: step count, optimizer (and schedule, RNGs) from PATH, in a new
    # folder; the run continues at iteration 1 and ends where the uninterrupted one did, bitwise.
    tmp, root, out, _ = seed_run
    resumed = tmp / "seed_resumed"
    proc = fptbench("train", "--dataset", "coco2017", "--cfg", "synth_r18_fpt", "--bs", 1, "--nw", 0,
                    "--load_ckpt", out / "checkpoints" / "model_0000001.pth", "--resume", "--output", resumed,
                    "--data-root", root, *_seed_set("train.checkpoint_period", "1"))
    assert "at iteration 1" in proc.stderr + proc.stdout
    first = json.loads((out / "result.json").read_text())["training"]
    again = json.loads((resumed / "result.json").read_text())["training"]
    assert again["iterations"] == 2 and again["weights_sha256"] == first["weights_sha256"]
    # a different checkpoint in that folder is refused
    refused = fptbench("train", "--cfg", "synth_r18_fpt", "--bs", 1, "--nw", 0, "--load_ckpt",
                       out / "checkpoints" / "model_0000001.pth", "--resume", "--output", resumed, "--data-root", root,
                       "--dataset", "coco2017", *_seed_set("train.checkpoint_period", "1"), check=False)
    assert refused.returncode == 2, refused.stderr[-1500:]
    assert "already exists (iteration 2); continue it with --resume alone" in refused.stderr.strip().splitlines()[-1]


def test_seed_resume_needs_a_training_checkpoint(seed_run, tmp_path):
    import torch

    tmp, root, out, _ = seed_run
    weights = tmp_path / "weights.pth"
    torch.save({"model": {}, "iteration": 3}, weights)  # no optimizer state: nothing to resume
    proc = fptbench("train", "synth_r18_fpt", "--load_ckpt", weights, "--resume", "--output", tmp_path / "o",
                    "--data-root", root, "--dataset", "coco2017", *TINY, check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert f"--load_ckpt {weights} --resume: {weights} holds no optimizer state" in line, line


def test_seed_test_command_line_evaluates_like_ours(seed_run):
    # `python tools/test_net.py --dataset coco2017 --cfg ... --load_ckpt PATH` (+ --output_dir)
    tmp, root, out, _ = seed_run
    fptbench("eval", "--dataset", "coco2017", "--cfg", "synth_r18_fpt", "--load_ckpt", out / "checkpoints" / "last.pth",
             "--output_dir", tmp / "seed_eval", "--data-root", root, *_seed_set())
    trained = json.loads((out / "result.json").read_text())
    evaluated = json.loads((tmp / "seed_eval" / "result.json").read_text())
    assert evaluated["metrics"] == trained["metrics"] and evaluated["config"]["data"]["test"] == "coco2017_val"


# ---------------------------------------------------------------------------------------------
# semantic segmentation (model.task segmentation): data synth --seg -> train -> eval -> forward

SEG_TINY = ["--set", "model.fpn_channels", "16", "--set", "gt.channels", "8", "--set", "fpt.norm", "bn",
            "--set", "seg.ufp_kernels", "[1, 3]",
            "--set", "seg.crop_size", "[32, 32]", "--set", "train.max_iter", "2", "--set", "train.images_per_device", "2",
            "--set", "model.backbone_pretrain", "''"]  # a fresh trunk: the synth_seg configs fine-tune a pre-trained one


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    """The synthetic segmentation set, written by the CLI, and one tiny trained run on it."""
    tmp = tmp_path_factory.mktemp("cli_seg")
    data = tmp / "synth_seg"
    out = fptbench("data", "synth", "--seg", "--out", data, "--train", 4, "--val", 2, "--size", 64)
    assert "wrote 4 train + 2 val label maps (8 classes with the background" in out.stdout
    fptbench("train", "synth_seg_r18_lgt", "--output", tmp / "run", "--data-root", data, *SEG_TINY)
    return tmp, data


def test_data_synth_seg_writes_images_and_label_maps(seg_run):
    _, data = seg_run
    for split, count in (("train", 4), ("val", 2)):
        assert len(list((data / "images" / split).glob("*.png"))) == count
        assert len(list((data / "labels" / split).glob("*.png"))) == count
    assert json.loads((data / "classes.json").read_text())["classes"][0] == "background"
    assert not (data / "annotations").exists()  # not the detection set


def test_segmentation_train_and_eval_agree(seg_run):
    tmp, data = seg_run
    trained = json.loads((tmp / "run" / "result.json").read_text())
    assert set(trained["metrics"]) == {"segmentation"} and trained["config"]["model"]["task"] == "segmentation"
    assert trained["dataset"] == {"name": "synth_seg_val", "images": 2}
    fptbench("eval", "synth_seg_r18_lgt", "--ckpt", tmp / "run" / "checkpoints" / "last.pth", "--output",
             tmp / "eval", "--data-root", data, *SEG_TINY)
    evaluated = json.loads((tmp / "eval" / "result.json").read_text())
    assert evaluated["metrics"] == trained["metrics"]  # same weights, same data, same numbers
    assert evaluated["training"]["weights_sha256"] == trained["training"]["weights_sha256"]


def test_forward_of_a_segmentation_config(seg_run):
    proc = fptbench("forward", "synth_seg_r18_lgt", "--size", 64, 96, *SEG_TINY)
    assert "task: segmentation" in proc.stdout and "gt.window=5" in proc.stdout
    assert "  out: (1, 8, 64, 96)" in proc.stdout and "  aux: (1, 8, 64, 96)" in proc.stdout
    assert "pyramid levels after FPT (N, C, H, W):\n  0: (1, 16, 8, 12)\n  1: (1, 16, 8, 12)\n" in proc.stdout


@pytest.mark.parametrize("args, expected", [
    (["train", "synth_seg_r18_base", "--output", "{tmp}/x", "--data-root", "{tmp}/nowhere", "--set",
      "model.backbone_pretrain", "''"], "{tmp}/nowhere/images/train: folder not found"),
    (["train", "synth_seg_r18_base", "--output", "{tmp}/x", "--data-root", "{tmp}/nowhere"],  # its trunk's data
     "{tmp}/nowhere/annotations/instances_train.json: cannot read the pre-training annotations"),
    (["infer", "synth_seg_r18_base", "--ckpt", "{tmp}/run/checkpoints/last.pth", "--images", "{data}/images/val",
      "--output", "{tmp}/y"], "infer draws detections, and synth_seg_r18_base is a segmentation config"),
    (["train", "synth_seg_r18_base", "--output", "{tmp}/x", "--set", "seg.crop_size", "[16, 16]"],
     "seg.crop_size=[16, 16] must be [H, W], each side >= 32 px"),
])
def test_segmentation_mistakes_are_one_line_and_exit_2(seg_run, args, expected):
    tmp, data = seg_run
    proc = fptbench(*[a.format(tmp=tmp, data=data) for a in args], check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("fptbench: error: ") and expected.format(tmp=tmp) in line, line
    assert "Traceback" not in proc.stderr
