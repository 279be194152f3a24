"""Trunk weights (fptbench.trunks): which file each config starts from, whether it is there and
sound, and a COCO run that has none stops before it starts [issue 18, point 1].

No file is downloaded: a trunk file here is a torchvision ResNet's real state_dict written locally;
a published checksum that a local file can match is made by giving the catalogue entry the file's
own sha256 prefix (the check itself is the real one).
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm

from fptbench import trunks
from fptbench.config import BACKBONES, load_config
from fptbench.errors import UsageError
from fptbench.trunks import (DETECTRON_FILES, IMAGENET_FILES, WEIGHTS_DIR_ENV, require_trunk, survey, trunk_source,
                             trunk_status, weights_dir)

ROOT = Path(__file__).resolve().parents[1]

WEIGHT_ENUMS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights",
                "resnet101": "ResNet101_Weights", "resnet152": "ResNet152_Weights",
                "resnext101_32x8d": "ResNeXt101_32X8D_Weights", "resnext101_64x4d": "ResNeXt101_64X4D_Weights"}


def test_imagenet_files_are_torchvisions_own():
    # The copy (kept torch-free for `fptbench weights` and `sweep --dry-run`) equals torchvision's
    # IMAGENET1K_V1 entry of every trunk, name, URL and the checksum prefix in its name.
    assert set(IMAGENET_FILES) == set(BACKBONES)
    for backbone, published in IMAGENET_FILES.items():
        url = getattr(tvm, WEIGHT_ENUMS[backbone]).IMAGENET1K_V1.url
        assert published.url == url and url.endswith("/" + published.name), backbone
        assert published.name == f"{backbone}-{published.sha256_prefix}.pth"
    # torchvision's detection builders start from the V1 file: what the COCO configs use
    import inspect

    from torchvision.models.detection import maskrcnn_resnet50_fpn

    default = inspect.signature(maskrcnn_resnet50_fpn).parameters["weights_backbone"].default
    assert default.url == IMAGENET_FILES["resnet50"].url


def test_detectron_files_are_bottleneck_trunks_without_a_published_checksum():
    assert set(DETECTRON_FILES) <= set(BACKBONES) and "resnet18" not in DETECTRON_FILES
    for published in DETECTRON_FILES.values():
        assert published.name.endswith(".pkl") and published.sha256_prefix is None  # none published: never guessed
        assert published.url.startswith("https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/")


def _cfg(name="maskrcnn_r50_bfp", **overrides) -> dict:
    return load_config(name, list(overrides.items()))


def test_every_coco_detection_config_starts_from_a_named_frozen_trunk():
    from fptbench.config import available_configs

    coco = [n for n in available_configs() if n.startswith(("maskrcnn_", "fasterrcnn_"))]
    assert len(coco) == 16
    for name in coco:
        cfg = load_config(name)
        assert trunks.is_coco_detection(cfg), name
        assert cfg["model"]["backbone_norm"] == "frozen_bn" and cfg["model"]["trainable_backbone_layers"] == 3, name
        source = trunk_source(cfg)
        expected = "detectron" if name.endswith("_code") else "imagenet"
        assert source.kind == expected and source.published is not None, name
        assert source.path == Path("data/pretrained") / source.published.name, name


def test_where_named_files_are_looked_up(monkeypatch, tmp_path):
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    assert weights_dir(_cfg())[0] == Path("data/pretrained")
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path / "env"))
    assert weights_dir(_cfg())[0] == tmp_path / "env"
    assert weights_dir(_cfg(**{"model.weights_dir": str(tmp_path / "key")}))[0] == tmp_path / "key"  # the key wins
    assert trunk_source(_cfg()).path == tmp_path / "env" / "resnet50-0676ba61.pth"


def test_a_backbone_axis_finds_each_trunks_own_file():
    # paper_backbones spans: each cell's file, with no --set
    from fptbench.experiments import load_matrix

    matrix = load_matrix("paper_backbones")
    files = {c.config["model"]["backbone"]: trunk_source(c.config).path.name for c in matrix.cells}
    assert files == {b: IMAGENET_FILES[b].name for b in ("resnet50", "resnet101", "resnext101_64x4d")}


def test_no_weights_on_a_coco_detection_run_is_refused_unless_scratch_is_asked_for(tmp_path):
    cfg = _cfg(**{"model.backbone_weights": "", "model.weights_dir": str(tmp_path)})
    with pytest.raises(UsageError) as err:
        require_trunk(cfg)
    message = str(err.value)
    assert "\n" not in message and message.startswith("model.backbone_weights is '': a COCO detection run")
    assert f"{tmp_path}/resnet50-0676ba61.pth" in message and "scratch" in message
    assert require_trunk(_cfg(**{"model.backbone_weights": "scratch"})).kind == "scratch"
    # not a COCO split (the synthetic set): '' stays a random trunk, as before
    assert require_trunk(load_config("synth_r18_pretrain")).kind == "none"


def test_a_missing_named_file_names_the_key_the_folder_and_the_download(tmp_path):
    cfg = _cfg(**{"model.weights_dir": str(tmp_path)})
    status = trunk_status(cfg)
    assert status.state == "missing" and not status.present
    assert status.problem.startswith(f"{tmp_path}/resnet50-0676ba61.pth: missing, the trunk of "
                                     f"model.backbone_weights=imagenet for model.backbone=resnet50")
    assert IMAGENET_FILES["resnet50"].url in status.problem
    with pytest.raises(UsageError, match="detectron file is published for model.backbone=resnet18"):
        trunk_source(_cfg(**{"model.backbone": "resnet18", "model.backbone_weights": "detectron"}))


def _resnet18_file(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save(tvm.resnet18().state_dict(), path)
    return path


def test_checksums_match_or_are_refused(tmp_path, monkeypatch):
    path = _resnet18_file(tmp_path / IMAGENET_FILES["resnet18"].name)
    cfg = _cfg(**{"model.backbone": "resnet18", "model.weights_dir": str(tmp_path)})
    # A file that is not torchvision's (this one) does not match the published prefix: refused.
    status = trunk_status(cfg)
    assert status.state == "checksum mismatch" and status.matches is False
    assert "does not match the published f37072fd" in status.problem and "download it again" in status.problem
    with pytest.raises(UsageError, match="does not match the published"):
        require_trunk(cfg)
    # The same check passes a file whose sha256 starts with the published prefix.
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    entry = trunks.TrunkFile("resnet18", "imagenet", path.name, "https://example/" + path.name, digest[:8])
    monkeypatch.setitem(IMAGENET_FILES, "resnet18", entry)
    status = trunk_status(cfg)
    assert status.state == "ok" and status.matches is True and status.sha256 == digest
    # presence only, without reading the file
    assert trunk_status(cfg, verify=False).sha256 is None


def test_a_coco_train_without_its_trunk_stops_in_one_line_writing_nothing(run_cli, tmp_path):
    out = tmp_path / "run"
    done = run_cli("train", "maskrcnn_r50_fpt", "--output", str(out), env={WEIGHTS_DIR_ENV: str(tmp_path / "w")})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fptbench: error: {tmp_path}/w/resnet50-0676ba61.pth: missing")
    assert not out.exists()
    done = run_cli("train", "maskrcnn_r50_fpt", "--output", str(out), "--set", "model.backbone_weights", "''")
    assert done.returncode == 2 and "a COCO detection run (data.train=coco2017_train)" in done.stderr
    assert not out.exists()


def test_fptbench_weights_lists_a_matrixs_files(run_cli, tmp_path, monkeypatch):
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / IMAGENET_FILES["resnet101"].name).write_bytes(b"not the published file")
    done = run_cli("weights", "paper_backbones", env={WEIGHTS_DIR_ENV: str(folder)})
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "trunk weights of paper_backbones (12 cells): 3 trunk source(s), 3 not usable"
    rows = {line.split()[0]: line for line in lines[2:5]}
    assert "missing: download " + IMAGENET_FILES["resnet50"].url in rows["resnet50"]
    assert "checksum mismatch" in rows["resnet101"] and rows["resnet101"].endswith("  4")
    assert f"named files looked up in {folder} (${WEIGHTS_DIR_ENV})" in lines[-1]
    # a config, and a trunk asked to start from scratch
    done = run_cli("weights", "maskrcnn_r50_fpt_code", "--set", "model.backbone_weights", "scratch")
    assert done.returncode == 0 and "scratch" in done.stdout and "random init" in done.stdout


def test_survey_counts_cells_per_file_and_checks_each_once(tmp_path):
    cfgs = [_cfg(**{"model.weights_dir": str(tmp_path), "seed": s}) for s in range(3)]
    cfgs.append(_cfg(**{"model.backbone_weights": "scratch"}))
    rows = survey(cfgs)
    assert [(r.value, r.cells, r.usable) for r in rows] == [("imagenet", 3, False), ("scratch", 1, True)]


def test_the_model_loader_builds_and_never_trains():
    # engine/model.py resolves trunk files (fptbench.trunks) and loads them (fptbench.weights); it
    # imports neither the pre-training nor the trainer, so evaluate -> model -> pretrain -> trainer
    # -> evaluate is no circle (not even through imports inside functions).
    for module in ("model.py", "evaluate.py"):
        tree = ast.parse((ROOT / "fptbench" / "engine" / module).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not any(name and name.endswith(("pretrain", "trainer")) for name in imported), (module, imported)
    tree = ast.parse((ROOT / "fptbench" / "trunks.py").read_text())
    assert not any(isinstance(node, (ast.Import, ast.ImportFrom)) and "torch" in ast.unparse(node)
                   for node in ast.walk(tree))  # torch-free: `fptbench weights` and dry runs need no torch


def test_a_detectron_pkl_is_a_config_key(tmp_path):
    # model.backbone_weights PATH.pkl is read as Detectron blobs, so sweeps can use it (--load-detectron
    # is its command-line spelling): a tiny R-50 .pkl made from a real torchvision trunk.
    import pickle

    import numpy as np

    from fptbench.engine.model import load_model
    from fptbench.weights.detectron import caffe2_to_torchvision

    torch.manual_seed(1)
    reference = tvm.resnet50().state_dict()
    inverse, blobs = {}, {}
    names = ["conv1_w", "res_conv1_bn_s", "res_conv1_bn_b"]
    for stage, blocks in zip(range(2, 6), (3, 4, 6, 3)):
        for block in range(blocks):
            for branch in ("2a", "2b", "2c") + (("1",) if block == 0 else ()):
                names += [f"res{stage}_{block}_branch{branch}_{kind}" for kind in ("w", "bn_s", "bn_b")]
    for name in names:
        inverse[name] = caffe2_to_torchvision(name)
        blobs[name] = reference[inverse[name]].numpy().astype(np.float32)
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"blobs": blobs}))
    cfg = _cfg("maskrcnn_r50_fpt_code", **{"model.backbone_weights": str(path)})
    assert trunk_source(cfg).format == "detectron"
    model = load_model(cfg, pretrained=True)
    body = model.backbone.body.state_dict()
    for name, key in inverse.items():
        assert torch.equal(body[key], reference[key]), name


def test_a_resumed_run_needs_no_trunk_file_and_records_the_same_trunk(tmp_path):
    # A requeued cell on a node whose weights folder moved resumes from its own checkpoint (which
    # holds every weight) and records where its trunk started, as the uninterrupted run does.
    from fptbench.data.synth import write_synth
    from fptbench.engine import train

    write_synth(tmp_path / "synth", train=4, val=2, size=64, seed=0)
    trunk = _resnet18_file(tmp_path / "trunk.pth")
    overrides = [("data.root", str(tmp_path / "synth")), ("model.backbone_pretrain", ""),
                 ("model.backbone_weights", str(trunk)), ("model.min_size", 64), ("model.max_size", 64),
                 ("data.num_workers", 0), ("train.checkpoint_period", 1), ("train.eval_at_end", False),
                 ("train.warmup_iters", 1), ("train.steps", []), ("train.max_iter", 1)]
    first = train(load_config("synth_r18_bfp", overrides), tmp_path / "run", progress=False)
    assert first["trunk"] == {"kind": "file", "key": "model.backbone_weights", "value": str(trunk),
                              "path": str(trunk), "format": "torchvision",
                              "sha256": hashlib.sha256(trunk.read_bytes()).hexdigest()}
    trunk.rename(tmp_path / "moved.pth")
    more = load_config("synth_r18_bfp", overrides[:-1] + [("train.max_iter", 2)])
    with pytest.raises(UsageError, match="trunk.pth: no such file"):
        train(more, tmp_path / "fresh", progress=False)  # a new run needs it
    resumed = train(more, tmp_path / "run", resume=True, progress=False)
    assert resumed["iterations"] == 2 and {k: v for k, v in resumed["trunk"].items() if k != "sha256"} == {
        k: v for k, v in first["trunk"].items() if k != "sha256"}
    assert resumed["trunk"]["sha256"] is None  # the file is not here to digest: said, not guessed


def test_a_sweep_of_multi_process_cells_needs_its_pretraining_made_first(run_cli, tmp_path):
    # One-process cells pre-train a missing synthetic trunk themselves (the first one, under a lock);
    # cells of several processes cannot, so the sweep stops before submitting and names the command.
    from fptbench.data.synth import write_synth

    write_synth(tmp_path / "synth", train=4, val=2, size=64, seed=0)
    matrix = tmp_path / "two.yaml"
    matrix.write_text(f"base: synth_r18_bfp\nset: {{data.root: {tmp_path / 'synth'}}}\nworld_size: 2\n"
                      "axes: {seed: [0, 1]}\n")
    done = run_cli("sweep", str(matrix), "--dry-run", "--results", str(tmp_path / "results"))
    assert done.returncode == 2 and "dry run" not in done.stdout
    assert "2 cell(s) lack their trunk weights" in done.stderr and "`fptbench pretrain synth_r18_pretrain`" in done.stderr
    assert "its 2-process cells cannot pre-train it themselves" in done.stderr
    matrix.write_text(matrix.read_text().replace("world_size: 2", "world_size: 1"))
    done = run_cli("sweep", str(matrix), "--dry-run", "--results", str(tmp_path / "results"))
    assert done.returncode == 0 and "dry run: would submit 2 of 2 cells" in done.stdout, done.stderr[-800:]
