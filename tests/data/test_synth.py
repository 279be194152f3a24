"""The embedded synthetic dataset: deterministic, exact masks, the context rule of the dot classes.

One small set (24 train + 6 val images of 128 px, seed 0; about a second) is written per module;
the numbers pinned here are properties every seed must have, checked on that seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fptbench.config import load_config
from fptbench.data import CocoDetection
from fptbench.data.synth import CATEGORIES, NUM_CLASSES, summary_line, write_synth
from fptbench.errors import UsageError

SIZE = 128
NAMES = {c["id"]: c["name"] for c in CATEGORIES}


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth")
    return root, write_synth(root, train=24, val=6, size=SIZE, seed=0)


@pytest.fixture(scope="module")
def items(synth) -> list[tuple[dict, np.ndarray, list[dict]]]:
    """(target as numpy, image (H, W, 3) uint8, annotations) for every train image."""
    root, _ = synth
    ds = CocoDetection(root, "annotations/instances_train.json", "images/train")
    out = []
    for i, img_id in enumerate(ds.ids):
        image, target = ds[i]
        anns = sorted(ds.coco.imgToAnns[img_id], key=lambda a: a["id"])
        rgb = (image * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)
        out.append(({k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in target.items()}, rgb, anns))
    return out


def grow(mask: np.ndarray, steps: int) -> np.ndarray:
    """Dilation by ``steps`` pixels, 4-neighbourhood."""
    out = mask.copy()
    for _ in range(steps):
        prev = out.copy()
        out[1:] |= prev[:-1]
        out[:-1] |= prev[1:]
        out[:, 1:] |= prev[:, :-1]
        out[:, :-1] |= prev[:, 1:]
    return out


def test_same_seed_gives_byte_identical_files(synth, tmp_path):
    # Fails if any randomness escapes the seeded generator (global numpy state, set or dict
    # order, a timestamp in a file), or if another seed is ignored.
    root, summary = synth
    again = write_synth(tmp_path / "again", train=24, val=6, size=SIZE, seed=0)
    assert files(tmp_path / "again") == files(root)
    assert again["splits"] == summary["splits"]
    write_synth(tmp_path / "other", train=2, val=1, size=SIZE, seed=1)
    assert (tmp_path / "other/images/train/000001.png").read_bytes() != (root / "images/train/000001.png").read_bytes()


def test_adding_images_keeps_the_earlier_ones(synth, tmp_path):
    # Fails if image i depends on how many images the split has (one stream for the split).
    root, _ = synth
    write_synth(tmp_path, train=3, val=1, size=SIZE, seed=0)
    for name in ("000001.png", "000002.png", "000003.png"):
        assert (tmp_path / "images/train" / name).read_bytes() == (root / "images/train" / name).read_bytes()


def test_layout_categories_and_summary(synth):
    # Fails if the layout differs from the seed's (the config's data.root would not load), if a
    # category name is unreadable, or if the summary disagrees with the files.
    root, summary = synth
    assert (root / "images/val/000006.png").is_file() and not (root / "images/val/000007.png").exists()
    data = json.loads((root / "annotations/instances_train.json").read_text())
    assert [c["id"] for c in data["categories"]] == list(range(1, 8))
    assert [c["name"] for c in data["categories"]] == summary["categories"] == [
        "square", "disc", "triangle", "ring", "dot_alone", "dot_on_square", "dot_on_disc"]
    assert summary["num_classes"] == NUM_CLASSES == 8
    assert summary["splits"]["train"]["images"] == len(data["images"]) == 24
    assert summary["splits"]["train"]["annotations"] == len(data["annotations"])
    assert sum(summary["splits"]["train"]["per_category"].values()) == len(data["annotations"])
    assert summary_line(summary).startswith("wrote 24 train + 6 val images (")


def test_masks_are_exact_and_agree_with_boxes_and_areas(items):
    # Fails if a mask is empty, overlaps another (masks are visible parts), or if a box or area
    # is not that of its mask (e.g. the box of the unoccluded shape).
    for target, _, anns in items:
        masks = target["masks"].astype(bool)
        assert masks.any(axis=(1, 2)).all()
        assert masks.sum(0).max() <= 1
        for mask, box, area, ann in zip(masks, target["boxes"], target["area"], anns):
            ys, xs = np.nonzero(mask)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert area == mask.sum()
            assert 0.5 <= ann["visible"] <= 1


def test_masks_cover_exactly_the_painted_pixels(items):
    # Fails if a mask is off by a pixel from what was painted: every mask pixel has its object's
    # colour (up to noise, std 6) and no pixel of the 1-px ring around it has (colours differ by
    # >= 64 levels from everything they touch).
    for target, rgb, _ in items:
        image = rgb.astype(int)
        for mask in target["masks"].astype(bool):
            colour = np.median(image[mask], axis=0)
            inside = np.abs(image[mask] - colour).max(axis=1)
            ring = grow(mask, 1) & ~mask
            outside = np.abs(image[ring] - colour).max(axis=1)
            assert (inside <= 32).all()
            assert (outside > 32).all()


def test_dot_classes_follow_the_context_rule(items):
    # Fails if a dot's label disagrees with what surrounds it: the 2-px margin of a dot_on_square
    # lies inside one square, of a dot_on_disc inside one disc, and of a dot_alone on background.
    seen = set()
    for target, _, anns in items:
        masks = target["masks"].astype(bool)
        labels = target["labels"]
        for mask, label in zip(masks, labels):
            name = NAMES[int(label)]
            if not name.startswith("dot"):
                continue
            seen.add(name)
            margin = grow(mask, 2) & ~mask
            hosts = [k for k in range(len(masks)) if (masks[k] & margin).any()]
            expected = {"dot_alone": [], "dot_on_square": ["square"], "dot_on_disc": ["disc"]}[name]
            assert [NAMES[int(labels[k])] for k in hosts] == expected
            if hosts:  # the one host covers the whole margin
                assert masks[hosts[0]][margin].all()
    assert seen == {"dot_alone", "dot_on_square", "dot_on_disc"}


def test_scales_span_a_few_pixels_to_half_the_image(items):
    # Fails if the set loses its scale range: dots of a few pixels and objects up to about half
    # the image side (a 64-px square has 4096 pixels).
    areas = np.concatenate([t["area"] for t, _, _ in items])
    assert areas.min() <= 16
    assert areas.max() >= 0.15 * SIZE * SIZE
    dot_sides = [np.sqrt(a) for t, _, _ in items for a, l in zip(t["area"], t["labels"]) if l >= 5]
    assert max(dot_sides) < 8


def test_occlusion_and_both_mask_encodings(synth):
    # Fails if nothing is occluded, if an occluded object keeps its polygon (the polygon would
    # include hidden pixels), or if polygons are never used.
    root, summary = synth
    anns = json.loads((root / "annotations/instances_train.json").read_text())["annotations"]
    polygons = [a for a in anns if isinstance(a["segmentation"], list)]
    rles = [a for a in anns if isinstance(a["segmentation"], dict)]
    assert polygons and rles
    assert all(a["visible"] == 1 for a in polygons)
    partly = [a for a in anns if a["visible"] < 0.95]  # more than dot holes
    assert partly and summary["splits"]["train"]["occluded"] == sum(a["visible"] < 1 for a in anns)
    assert all(a["iscrowd"] == 0 for a in anns)


def test_training_filter_drops_nothing(synth):
    # Fails if the generator emits an annotation the training filter would drop (box <= 1 px,
    # empty mask) or an image without objects.
    root, _ = synth
    ds = CocoDetection(root, "annotations/instances_train.json", "images/train", train=True)
    assert not ds.skipped and len(ds) == 24


@pytest.mark.parametrize("kwargs, key", [({"size": 32}, "--size"), ({"train": 0}, "--train"),
                                         ({"seed": -1}, "--seed"), ({"val": 1.5}, "--val")])
def test_bad_arguments_are_usage_errors(tmp_path, kwargs, key):
    # Fails if a bad argument raises something the CLI would print as a traceback.
    with pytest.raises(UsageError, match=f"data synth: {key} expects an integer"):
        write_synth(tmp_path, **kwargs)


def test_synth_configs_fit_the_dataset():
    # Fails if the ready configs drift from the dataset (class count, image size, layout) or if
    # the FPT run differs from the BFP run in anything but the neck.
    bfp, fpt = load_config("synth_r18_bfp"), load_config("synth_r18_fpt")
    for cfg in (bfp, fpt):
        assert cfg["model"]["num_classes"] == NUM_CLASSES
        assert cfg["model"]["backbone"] == "resnet18" and cfg["model"]["head"] == "mask_rcnn"
        assert cfg["model"]["min_size"] == cfg["model"]["max_size"] == SIZE
        assert cfg["data"]["root"] == "data/synth"
        assert (cfg["data"]["train"], cfg["data"]["test"]) == ("train", "val")
    assert [bfp["fpt"][k] for k in ("st", "gt", "rt")] == [False] * 3
    assert [fpt["fpt"][k] for k in ("st", "gt", "rt")] == [True] * 3
    assert {**fpt, "fpt": bfp["fpt"]} == bfp
