"""infer_images: drawings and detections.json from a real (small, random-weight) Mask R-CNN."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fptbench.config import load_config
from fptbench.errors import UsageError
from fptbench.modeling import build_model
from fptbench.visualize import infer_images
from tests.evaluation.tiny_coco import CLASS_NAMES, write_tiny_coco


def read_image(path) -> torch.Tensor:
    """uint8 RGB (3, H, W), read independently of the code under test."""
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)


@pytest.fixture(scope="module")
def model():
    # seed 0: the random ResNet-18 Mask R-CNN scores its proposals ~1/3 per class, so at
    # threshold 0 it detects something in every image (pinned here, checked below)
    torch.manual_seed(0)
    return build_model(load_config("maskrcnn_r50_bfp", [("model.backbone", "resnet18"), ("model.min_size", "128"),
                                                        ("model.max_size", "160"), ("model.num_classes", "3")]))


@pytest.fixture
def image_dir(tmp_path):
    _, img_dir = write_tiny_coco(tmp_path / "tiny")
    # one JPEG among the PNGs, with the stem of a PNG: two outputs that must not collide
    first = sorted(img_dir.iterdir())[0]
    Image.open(first).save(img_dir / f"{first.stem}.jpg", quality=95)
    (img_dir / "notes.txt").write_text("not an image")
    return img_dir


def test_one_drawing_per_image_and_a_json(model, image_dir, tmp_path):
    out = tmp_path / "out"
    images = infer_images(model, image_dir, out, class_names=CLASS_NAMES, threshold=0.0, progress=False)
    inputs = sorted(p for p in image_dir.iterdir() if p.suffix in (".png", ".jpg"))
    assert [im["file"] for im in images] == [p.name for p in inputs]
    assert sorted(p.name for p in out.iterdir()) == sorted(["detections.json"] + [im["output"] for im in images])
    assert len({im["output"] for im in images}) == len(inputs)  # 000007.png and 000007.jpg both kept
    saved = json.loads((out / "detections.json").read_text())
    assert saved["images"] == json.loads(json.dumps(images)) and saved["threshold"] == 0.0
    for im, path in zip(images, inputs):
        source = read_image(path)
        drawn = read_image(out / im["output"])
        assert drawn.shape == source.shape == (3, im["height"], im["width"])
        assert im["detections"], im["file"]
        assert not torch.equal(drawn, source)  # boxes and masks were drawn
        for det in im["detections"]:
            assert det["class"] == CLASS_NAMES.get(det["label"], str(det["label"]))
            assert 0.0 <= det["score"] <= 1.0
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 <= x2 <= im["width"] and 0 <= y1 <= y2 <= im["height"]
            assert det["segmentation"]["size"] == [im["height"], im["width"]]  # scale 1: small images


def test_threshold_filters_what_is_drawn_and_listed(model, image_dir, tmp_path):
    # Nothing scores 1.0: nothing is listed, and each drawing is its input pixel for pixel.
    images = infer_images(model, image_dir, tmp_path / "out", class_names=CLASS_NAMES, threshold=1.0,
                          progress=False)
    for im in images:
        assert im["detections"] == []
        source = read_image(image_dir / im["file"])
        assert torch.equal(read_image(tmp_path / "out" / im["output"]), source)


def test_bad_folders_are_usage_errors(model, image_dir, tmp_path):
    with pytest.raises(UsageError, match="image folder not found: .*missing"):
        infer_images(model, tmp_path / "missing", tmp_path / "out", class_names={})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=f"{empty}: no images"):
        infer_images(model, empty, tmp_path / "out", class_names={})
    with pytest.raises(UsageError, match="is the image folder"):
        infer_images(model, image_dir, image_dir, class_names={})
    with pytest.raises(UsageError, match="threshold: 1.5"):
        infer_images(model, image_dir, tmp_path / "out", class_names={}, threshold=1.5)
    assert not (tmp_path / "out").exists()  # refused before anything was written
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    with pytest.raises(UsageError, match="none of the 1 images could be read; the first: .*a.png: cannot read the image"):
        infer_images(model, broken, tmp_path / "out2", class_names={}, progress=False)
    assert json.loads((tmp_path / "out2" / "detections.json").read_text())["skipped"][0]["file"] == "a.png"


def test_unreadable_images_are_skipped_and_listed_and_the_others_drawn(model, image_dir, tmp_path):
    files = sorted(p.name for p in image_dir.iterdir() if p.suffix in (".png", ".jpg"))
    (image_dir / "000000.png").write_bytes(b"not a png")  # sorted first
    jpg = next(image_dir.glob("*.jpg"))
    jpg.write_bytes(jpg.read_bytes()[:200])  # truncated
    Image.new("1", (20000, 20000)).save(image_dir / "bomb.png")  # 400 Mpx in a small file
    lines = []
    images = infer_images(model, image_dir, tmp_path / "out", class_names=CLASS_NAMES, threshold=0.0,
                          progress=False, log=lines.append)
    saved = json.loads((tmp_path / "out" / "detections.json").read_text())
    skipped = {s["file"]: s["reason"] for s in saved["skipped"]}
    assert sorted(skipped) == sorted(["000000.png", "bomb.png", jpg.name])
    assert "cannot read the image" in skipped["000000.png"] and "decompression bomb" in skipped["bomb.png"]
    assert all("\n" not in reason for reason in skipped.values()) and len(lines) == 3
    drawn = sorted(set(files) - {"000000.png", jpg.name})
    assert [im["file"] for im in images] == drawn and saved["complete"] is True
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(["detections.json"] + [im["output"] for im in images])


def test_a_large_photograph_is_drawn_on_the_models_canvas_with_masks_only_above_the_threshold(model, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (3000, 4500, 3), dtype=np.uint8)).save(folder / "big.jpg", quality=80)
    kept = []  # what the detector's heads return, before the masks are pasted at canvas size
    hook = model.roi_heads.register_forward_hook(lambda module, args, out: kept.append(out[0][0]["scores"]))
    try:
        (im,) = infer_images(model, folder, tmp_path / "out", class_names={}, threshold=0.36, progress=False)
    finally:
        hook.remove()
    assert model.roi_heads.score_thresh == pytest.approx(0.05)  # the model's own, restored
    assert (im["width"], im["height"]) == (4500, 3000)
    drawing = read_image(tmp_path / "out" / "big.png")
    assert drawing.shape == (3, 889, 1333)  # MAX_CANVAS_SIDE: 4500 x 3000 -> 1333 x 889
    assert im["scale"] == pytest.approx(1333 / 4500, rel=0.001)
    # seed 0's random model scores this image's 100 best detections 0.35..0.38: a threshold within
    assert len(kept) == 1 and bool((kept[0] >= 0.36).all()) and 0 < len(kept[0]) == len(im["detections"]) < 100
    for det in im["detections"]:
        assert det["segmentation"]["size"] == [889, 1333]
        assert 0 <= det["box"][0] <= det["box"][2] <= 4500  # in the file's pixels
