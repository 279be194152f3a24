"""The pre-trained trunk of model.backbone_pretrain: made once, cached by digest, reused, recorded.

Real runs, tiny: ResNet-18 Mask R-CNN at 64 px for 2 iterations of pre-training on 8 synthetic
images. What is checked is what a demo user relies on: the second run does not pre-train again,
the fine-tuned model starts from exactly the pre-trained trunk, another recipe or other data is
another trunk, and concurrent runs pre-train once.
"""

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from fptbench.config import load_config
from fptbench.data.synth import write_synth
from fptbench.engine import train
from fptbench.engine.checkpoint import find_last, load_checkpoint
from fptbench.engine.model import load_model
from fptbench.engine.pretrain import ensure_trunk, prepare_trunk
from fptbench.errors import UsageError
from fptbench.trunks import pretrain_path as trunk_path

ROOT = Path(__file__).resolve().parents[2]

TINY = [
    ("model.min_size", 64), ("model.max_size", 64),
    ("train.images_per_device", 2), ("train.warmup_iters", 1), ("train.steps", []),
    ("train.checkpoint_period", 1), ("data.num_workers", 0),
]


def _recipe(folder: Path, iterations: int = 2) -> Path:
    """A pre-training config file: synth_r18_bfp for ``iterations`` steps at 64 px, no evaluation."""
    path = folder / f"pre{iterations}.yaml"
    path.write_text(textwrap.dedent(f"""\
        _base_: {ROOT / 'fptbench/configs/synth_r18_bfp.yaml'}
        model: {{backbone_pretrain: "", min_size: 64, max_size: 64}}
        train: {{max_iter: {iterations}, images_per_device: 2, warmup_iters: 1, steps: [], checkpoint_period: 1,
                 eval_at_end: false}}
        data: {{num_workers: 0}}
        """))
    return path


@pytest.fixture()
def synth(tmp_path):
    root = tmp_path / "synth"
    write_synth(root, train=8, val=2, size=64, seed=0)
    return root


def _cfg(synth: Path, recipe: Path, **extra) -> dict:
    overrides = [("data.root", str(synth)), ("model.backbone_pretrain", str(recipe)), *TINY, *extra.items()]
    return load_config("synth_r18_fpt", overrides)


def test_trunk_is_pretrained_once_reused_and_loaded_exactly(synth, tmp_path):
    cfg = _cfg(synth, _recipe(tmp_path))
    logs: list[str] = []
    first = ensure_trunk(cfg, log=logs.append, progress=False)
    assert first["pretrained_here"] and len(logs) == 2
    path = Path(first["path"])
    assert path.parent == synth / "pretrained" and path.name.startswith("pre2-")
    assert first["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    again = ensure_trunk(cfg, log=logs.append, progress=False)
    assert not again["pretrained_here"] and again["sha256"] == first["sha256"] and len(logs) == 2

    # The file is the pre-training run's final trunk under torchvision's classification keys...
    trunk = torch.load(path, weights_only=True)
    assert set(trunk) == set(resnet18().state_dict()) - {"fc.weight", "fc.bias"}
    run = load_checkpoint(find_last(path.with_suffix("")))
    assert run["iteration"] == 2
    for key, value in trunk.items():
        assert torch.equal(value, run["model"][f"backbone.body.{key}"]), key
    # ... and the fine-tuned model starts from it exactly (and differs from a fresh trunk).
    model = load_model(cfg, pretrained=True)
    body = model.backbone.body.state_dict()
    for key, value in trunk.items():
        assert torch.equal(body[key], value), key
    fresh = load_model(cfg).backbone.body.state_dict()
    assert not torch.equal(fresh["layer1.0.conv1.weight"], trunk["layer1.0.conv1.weight"])


def test_pretrained_heads_come_with_the_trunk_and_the_neck_stays_fresh(synth, tmp_path):
    cfg = _cfg(synth, _recipe(tmp_path))
    assert cfg["model"]["pretrain_heads"]  # as the synthetic configs ship
    trunk = Path(ensure_trunk(cfg, log=lambda m: None, progress=False)["path"])
    run = load_checkpoint(find_last(trunk.with_suffix("")))["model"]
    torch.manual_seed(5)
    model = load_model(cfg, pretrained=True).state_dict()
    heads = [k for k in model if k.startswith(("rpn.", "roi_heads."))]
    assert heads and all(torch.equal(model[k], run[k]) for k in heads)
    neck = [k for k in model if k.startswith("backbone.fpn.") and k.endswith("weight")]
    assert neck and not any(torch.equal(model[k], run[k]) for k in neck)  # fresh: the cells' difference
    # without the key the heads are fresh too
    plain = load_model(_cfg(synth, _recipe(tmp_path), **{"model.pretrain_heads": False}), pretrained=True).state_dict()
    assert not torch.equal(plain["rpn.head.conv.0.0.weight"], run["rpn.head.conv.0.0.weight"])
    # heads of another shape are refused in one line, naming the key
    with pytest.raises(UsageError, match="has model.num_classes=8, this run model.num_classes=5"):
        load_model(_cfg(synth, _recipe(tmp_path), **{"model.num_classes": 5}), pretrained=True)


def test_digest_follows_the_recipe_and_the_data(synth, tmp_path, monkeypatch):
    two, three = _recipe(tmp_path, 2), _recipe(tmp_path, 3)
    assert trunk_path(_cfg(synth, two)) == trunk_path(_cfg(synth, two))
    # a key added to the schema with its default does not throw the cache away
    from fptbench import config

    cached = trunk_path(_cfg(synth, two))
    monkeypatch.setitem(config.SCHEMA, "train.new_key", config.Key(7, int, "added later"))
    assert "new_key" in _cfg(synth, two)["train"] and trunk_path(_cfg(synth, two)) == cached
    monkeypatch.undo()
    # the data folder spelt another way is the same data (the digest covers its annotations' bytes)
    monkeypatch.chdir(synth.parent)
    assert trunk_path(_cfg(Path(synth.name), two)).resolve() == cached.resolve()
    # the cells' own seed and neck do not change the trunk they share
    assert trunk_path(_cfg(synth, two, seed=1, **{"fpt.st": False})) == trunk_path(_cfg(synth, two))
    assert trunk_path(_cfg(synth, three)) != trunk_path(_cfg(synth, two))
    before = trunk_path(_cfg(synth, two))
    annotations = synth / "annotations" / "instances_train.json"
    annotations.write_bytes(annotations.read_bytes().replace(b'"area"', b'"area" ', 1))
    assert trunk_path(_cfg(synth, two)) != before


def test_a_run_records_its_trunk_and_a_missing_one_is_named(synth, tmp_path):
    cfg = _cfg(synth, _recipe(tmp_path), **{"train.max_iter": 1, "train.eval_at_end": False})
    # The loader and the trainer build and train; they never pre-train: a missing trunk is named,
    # with the command that makes it, before anything is built or written.
    with pytest.raises(UsageError, match=r"not pre-trained yet; make it with `fptbench pretrain .*pre2.yaml`"):
        load_model(cfg, pretrained=True)
    with pytest.raises(UsageError, match=r"not pre-trained yet"):
        train(cfg, tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()
    # prepare_trunk (what `fptbench train` and a sweep's cell call first) makes it once
    assert prepare_trunk(cfg, log=lambda m: None, progress=False)["pretrained_here"]
    assert not prepare_trunk(cfg, log=lambda m: None, progress=False)["pretrained_here"]
    summary = train(cfg, tmp_path / "run", progress=False)
    trunk = summary["trunk"]
    assert trunk["kind"] == "pretrain" and trunk["key"] == "model.backbone_pretrain"
    assert trunk["sha256"] == hashlib.sha256(Path(trunk["path"]).read_bytes()).hexdigest()
    assert Path(trunk["path"]) == trunk_path(cfg)


def test_a_trunk_of_another_network_is_refused(synth, tmp_path):
    cfg = _cfg(synth, _recipe(tmp_path), **{"model.backbone": "resnet34"})
    with pytest.raises(UsageError, match="has model.backbone=resnet18, this run model.backbone=resnet34"):
        trunk_path(cfg)
    with pytest.raises(Exception, match="both give the trunk's starting weights"):
        _cfg(synth, _recipe(tmp_path), **{"model.backbone_weights": "x.pth"})


def test_concurrent_runs_pretrain_once(synth, tmp_path):
    # Two processes ask for the same trunk at once: the lock makes one pre-train, the other wait
    # and reuse its file.
    recipe = _recipe(tmp_path)
    script = textwrap.dedent(f"""
        from fptbench.config import load_config
        from fptbench.engine.pretrain import ensure_trunk
        cfg = load_config("synth_r18_fpt", [("data.root", {str(synth)!r}), ("model.backbone_pretrain", {str(recipe)!r})])
        print("MADE" if ensure_trunk(cfg, log=lambda m: None, progress=False)["pretrained_here"] else "REUSED")
        """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = sorted(p.communicate(timeout=300)[0].split()[-1] for p in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["MADE", "REUSED"]


def test_cli_pretrain_makes_then_reuses(synth, tmp_path):
    recipe = _recipe(tmp_path)
    cmd = [sys.executable, "-m", "fptbench", "pretrain", str(recipe), "--data-root", str(synth)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "pre-trained now" in first.stdout
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "cached" in second.stdout


@pytest.mark.slow
def test_a_killed_pretraining_resumes_to_the_same_trunk(tmp_path):
    # SIGKILL `fptbench pretrain` once its first checkpoint is written; the next call resumes the
    # run and its trunk equals, bitwise, that of a pre-training never stopped (another data copy).
    import shutil
    import signal
    import time

    recipe = _recipe(tmp_path, 6)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    trunks = []
    for name, kill in (("killed", True), ("whole", False)):
        root = tmp_path / name
        write_synth(root, train=8, val=2, size=64, seed=0)
        cmd = [sys.executable, "-m", "fptbench", "pretrain", str(recipe), "--data-root", str(root)]
        if kill:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 240
            while not list((root / "pretrained").glob("*/checkpoints/model_0000002.pth")) and time.time() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert not list((root / "pretrained").glob("*.pth")), "killed too late: nothing left to resume"
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        if kill:
            assert "resum" in done.stdout + done.stderr
        trunks.append(torch.load(next((root / "pretrained").glob("pre6-*[0-9a-f].pth")), weights_only=True))
    assert trunks[0].keys() == trunks[1].keys()
    for key in trunks[0]:
        assert torch.equal(trunks[0][key], trunks[1][key]), key
    shutil.rmtree(tmp_path / "killed")


def test_cli_pretrain_refuses_overrides_that_would_not_reach_it(synth, tmp_path):
    # The pre-training's recipe is its file: a --set of its schedule would be silently dropped.
    cmd = [sys.executable, "-m", "fptbench", "pretrain", str(_recipe(tmp_path)), "--data-root", str(synth),
           "--set", "train.max_iter", "5"]
    done = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--set train.max_iter would not reach the pre-training" in done.stderr
    assert not (synth / "pretrained").exists()


# --- segmentation: the same trunk in the dilated ResNet of a segmentation model ------------------

SEG_TINY = [
    ("model.fpn_channels", 16), ("gt.channels", 8), ("fpt.norm", "bn"), ("seg.ufp_kernels", "[1, 3]"),
    ("seg.crop_size", "[32, 32]"), ("seg.scale_range", "[0.5, 1.0]"), ("train.images_per_device", 2),
    ("train.max_iter", 1), ("train.warmup_iters", 1), ("train.checkpoint_period", 1000),
    ("train.log_period", 1000), ("data.num_workers", 0), ("data.max_images", 2),
    ("model.backbone_pretrain", ""),  # the configs' synth_r18_pretrain; each test sets what it loads
]


def _seg_cfg(root: Path, name: str = "synth_seg_r18_fpt", **extra) -> dict:
    return load_config(name, SEG_TINY + [("data.root", str(root)), *extra.items()])


def test_a_segmentation_run_starts_from_the_cached_trunk_and_records_it(synth, tmp_path):
    # The detection set and the segmentation labels share one folder (same write_synth args: same images).
    from fptbench.data.synth import write_synth_seg

    write_synth_seg(synth, train=8, val=2, size=64, seed=0)
    cfg = _seg_cfg(synth, **{"model.backbone_pretrain": str(_recipe(tmp_path))})
    assert prepare_trunk(cfg, log=lambda m: None, progress=False)["pretrained_here"]  # nothing cached yet
    summary = train(cfg, tmp_path / "seg", progress=False, save=False)
    trunk = summary["training"]["trunk"]  # named in the record as detection records name it
    path = Path(trunk["path"])
    assert trunk["kind"] == "pretrain" and path.parent == synth / "pretrained" and path.name.startswith("pre2-")
    assert path == trunk_path(_cfg(synth, _recipe(tmp_path)))  # the detection configs' trunk, not a second one
    assert summary["metrics"]["segmentation"]["mIoU"] is not None

    # Every trunk tensor, and nothing else, goes into the dilated trunk (keys `backbone.` + torchvision's).
    tensors = torch.load(path, weights_only=True)
    model = load_model(cfg, pretrained=True)
    state = model.state_dict()
    assert {k[len("backbone."):] for k in state if k.startswith("backbone.")} == set(tensors)
    for key, value in tensors.items():
        assert torch.equal(state[f"backbone.{key}"], value), key
    assert model.backbone.layer4[1].conv2.dilation == (4, 4)  # still the a-trous trunk at output stride 8
    fresh = load_model(cfg).state_dict()  # without pretrained=True: a fresh trunk
    assert not torch.equal(fresh["backbone.layer1.0.conv1.weight"], tensors["layer1.0.conv1.weight"])


def _resnet18_file(tmp_path: Path, edit=None) -> tuple[Path, dict]:
    """A torchvision ResNet-18 classification state_dict (random weights, fc included) as a file."""
    torch.manual_seed(3)
    state = resnet18().state_dict()
    if edit is not None:
        edit(state)
    path = tmp_path / "trunk.pth"
    torch.save(state, path)
    return path, state


def test_a_segmentation_trunk_gets_exactly_the_files_tensors(tmp_path):
    path, state = _resnet18_file(tmp_path)
    model = load_model(_seg_cfg(tmp_path, **{"model.backbone_weights": str(path)}), pretrained=True)
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(state) - {"fc.weight", "fc.bias"}  # the classifier is no part of the trunk
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("edit, named", [
    (lambda s: s.pop("layer3.1.bn2.running_var"), "1 missing from the file (layer3.1.bn2.running_var)"),
    (lambda s: s.update({"backbone.conv1.weight": s.pop("conv1.weight")}), "not in the model (backbone.conv1.weight)"),
    (lambda s: s.update({"layer4.0.conv1.weight": s["layer4.0.conv1.weight"][:, :128]}),
     "shapes differ (layer4.0.conv1.weight: file (512, 128, 3, 3) vs model (512, 256, 3, 3))"),
], ids=["missing", "renamed", "shape"])
def test_a_trunk_file_that_does_not_fit_the_segmentation_trunk_is_one_line(tmp_path, edit, named):
    path, _ = _resnet18_file(tmp_path, edit)
    cfg = _seg_cfg(tmp_path, **{"model.backbone_weights": str(path)})
    with pytest.raises(UsageError) as err:
        load_model(cfg, pretrained=True)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: does not fit the model's trunk") and named in message


def test_pretrain_heads_is_refused_for_segmentation(tmp_path):
    # The RPN and RoI heads of the pre-training run have no counterpart in a segmentation model.
    with pytest.raises(UsageError) as err:
        _seg_cfg(tmp_path, **{"model.backbone_pretrain": "synth_r18_pretrain", "model.pretrain_heads": True})
    message = str(err.value)
    assert "\n" not in message and "model.pretrain_heads=true" in message and "segmentation model has none" in message


def test_a_segmentation_folder_without_the_detection_annotations_names_the_command(tmp_path):
    from fptbench.data.synth import write_synth_seg

    write_synth_seg(tmp_path / "seg", train=2, val=1, size=64, seed=0)
    cfg = _seg_cfg(tmp_path / "seg", **{"model.backbone_pretrain": "synth_r18_pretrain"})
    with pytest.raises(UsageError, match=r"instances_train.json: cannot read the pre-training annotations.*"
                                         r"`fptbench data synth --out .*seg`"):
        trunk_path(cfg)
