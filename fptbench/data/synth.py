"""An embedded COCO-format instance-segmentation dataset: shapes at very different scales.

``write_synth(out_dir)`` writes, in the seed's layout (so ``data.root = out_dir`` and the
splits ``train`` / ``val`` load like COCO)::

    out_dir/annotations/instances_train.json   out_dir/images/train/000001.png ...
    out_dir/annotations/instances_val.json     out_dir/images/val/000001.png ...

What an image holds (``size`` x ``size`` pixels, default 128; lengths below at 128 px):

- a background of one random colour;
- 1-3 **large** objects, ``square`` (rotated, side 28-64 px: up to half the image) or
  ``disc`` (diameter 28-64 px);
- 0-3 **medium** objects, ``triangle`` (8-38 px) or ``ring`` (annulus, 13-38 px);
- 2-6 **small** dots (diameter 3-7 px: a few pixels) of three classes: ``dot_on_square``
  when the dot lies inside a square, ``dot_on_disc`` inside a disc, ``dot_alone`` on the
  background. Dots never lie on medium objects.

Every object is one flat colour drawn uniformly from RGB (re-drawn until it differs by at least
64 levels in some channel from everything it covers or touches), and the whole image gets
Gaussian noise (std 6 levels). Objects are painted in that order, each on top of the earlier
ones; masks are **exact**: an annotation's mask is the set of pixels painted with that object's
colour and still visible in the final image, so a partly occluded object's mask is its visible
part only (squares and discs under dots have dot-shaped holes), its box is the tight box of that
mask and its area the mask's pixel count. **Heavy occlusion never happens**: a placement that
would leave any earlier object with less than half of its own pixels visible is rejected and
tried elsewhere (up to 40 tries, then the new object is left out), so no painted object goes
unannotated and every annotated object shows at least 50% of itself (``visible`` in each
annotation, a fraction in [0.5, 1]; pycocotools ignores the extra key). An object that is fully
visible and a polygon (squares, triangles) is annotated with its polygon, which is also what
was painted (it is rasterised with pycocotools itself); every other mask is a compressed RLE
(``pycocotools.mask.encode``).

Why the dots make a fair test of cross-scale interaction. The three dot classes look the same
at their own scale: same sizes, same colour distribution, and each dot sits in a margin of at
least 2 px of one flat colour, drawn from the same distribution whether it is the background or
the inside of a large shape. The dot and its margin therefore say nothing about its class, and
a wider window usually shows only more of the same flat surface (the large shapes are 4-20
times the dot's size and the dot lies anywhere inside them); even where an edge comes into
view, a straight piece of it does not tell a square from a large disc. The class is set by the
*shape* of an object an order of magnitude larger, seen whole only at a coarse scale (corners
versus a round outline, or no outline at all). A detector classifies a dot from features pooled at the fine pyramid level P2, so it must
bring coarse-level context down to the fine level: what FPT's Grounding Transformer does
explicitly (fine queries attending to coarse keys), and what BFP can only do through its
top-down additions and receptive fields. Both models see the same pixels and the same labels;
neither is handed anything the other lacks, so a gap on the dot classes measures how well each
uses cross-scale context, not a rigged advantage. The large and medium classes are ordinary
shape recognition at their own scales and test the rest of the detector.

``write_synth_seg(out_dir)`` writes the same images with a semantic label map each (the class of
the object visible at every pixel, 0 on the background), for the segmentation task: layout
``synth`` of :mod:`fptbench.data.segmentation`.

Determinism: image ``i`` of split ``s`` is drawn from ``numpy.random.default_rng([seed, s, i])``
(s = 0 for train, 1 for val), so the same arguments give byte-identical files, and adding images
to a split does not change the earlier ones. 250 images of 128 px take a few seconds.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from fptbench.errors import UsageError

__all__ = ["CATEGORIES", "NUM_CLASSES", "seg_summary_line", "semantic_labels", "summary_line", "write_synth",
           "write_synth_seg"]

# COCO categories (ids 1..K are the torchvision labels; 0 is the background)
CATEGORIES: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": "square", "supercategory": "large"},
    {"id": 2, "name": "disc", "supercategory": "large"},
    {"id": 3, "name": "triangle", "supercategory": "medium"},
    {"id": 4, "name": "ring", "supercategory": "medium"},
    {"id": 5, "name": "dot_alone", "supercategory": "small"},
    {"id": 6, "name": "dot_on_square", "supercategory": "small"},
    {"id": 7, "name": "dot_on_disc", "supercategory": "small"},
)
NUM_CLASSES = len(CATEGORIES) + 1  # model.num_classes: categories + background
SQUARE, DISC, TRIANGLE, RING, DOT_ALONE, DOT_ON_SQUARE, DOT_ON_DISC = range(1, 8)
DOT_ON = {SQUARE: DOT_ON_SQUARE, DISC: DOT_ON_DISC}  # host category -> dot category

SPLITS = (("train", 0), ("val", 1))  # split name, code in the seed sequence
MIN_VISIBLE = 0.5  # an object keeps at least this fraction of its pixels visible
DOT_MARGIN = 2.0  # px of uniform surface around a dot
DOT_DIAMETER = (3.0, 7.0)  # px, at every image size
CONTRAST = 64  # levels: least max-channel difference from what an object covers or touches
NOISE_STD = 6.0  # levels
TRIES = 40  # placements tried per object before it is left out
MIN_SIZE, MAX_SIZE = 64, 4096  # accepted image sizes, px


class _Scene:
    """Painter's canvas: ``owner[y, x]`` = 1 + index of the object visible there, 0 = background."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.rng = rng
        self.size = size
        centres = np.arange(size, dtype=np.float64) + 0.5  # pixel (i, j) covers [j, j+1) x [i, i+1)
        self.yy, self.xx = np.meshgrid(centres, centres, indexing="ij")
        self.owner = np.zeros((size, size), dtype=np.int32)
        self.colors: list[np.ndarray] = [rng.integers(0, 256, 3)]  # by owner; 0 = background
        self.objects: list[dict[str, Any]] = []  # category, full (mask as painted), polygon or None

    # -- shapes: (H, W) bool masks -------------------------------------------------------------

    def disc(self, cx: float, cy: float, radius: float) -> np.ndarray:
        return (self.xx - cx) ** 2 + (self.yy - cy) ** 2 <= radius ** 2

    def polygon(self, points: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Mask of a polygon rasterised by pycocotools, and its (rounded) COCO coordinates."""
        coords = [round(float(v), 2) for v in points.reshape(-1)]
        rle = mask_utils.frPyObjects([coords], self.size, self.size)
        return mask_utils.decode(rle)[:, :, 0].astype(bool), coords

    # -- placement -----------------------------------------------------------------------------

    def visible(self, index: int) -> np.ndarray:
        return self.owner == index + 1

    def add(self, category: int, full: np.ndarray, polygon: list[float] | None = None) -> bool:
        """Paint an object on top if no earlier object drops below MIN_VISIBLE and a contrasting
        colour is found; returns whether it was painted."""
        if not _box_ok(full):
            return False
        for o in np.unique(self.owner[full]):
            if o == 0:
                continue
            earlier = self.objects[o - 1]
            left = self.visible(o - 1) & ~full
            if left.sum() < MIN_VISIBLE * earlier["full"].sum() or not _box_ok(left):
                return False
        near = np.unique(self.owner[_dilate(full)])
        for _ in range(20):
            color = self.rng.integers(0, 256, 3)
            if all(np.abs(color - self.colors[o]).max() >= CONTRAST for o in near):
                break
        else:
            return False
        self.owner[full] = len(self.objects) + 1
        self.colors.append(color)
        self.objects.append({"category": category, "full": full, "polygon": polygon})
        return True

    def add_large(self, lo: float, hi: float) -> None:
        rng, size = self.rng, self.size
        category = SQUARE if rng.random() < 0.5 else DISC
        for _ in range(TRIES):
            extent = rng.uniform(lo, hi)  # side or diameter, px
            if category == SQUARE:
                theta = rng.uniform(0.0, math.pi / 2)
                c, s = math.cos(theta), math.sin(theta)
                half = extent / 2 * (abs(c) + abs(s))  # half-width of the rotated square
                cx, cy = rng.uniform(half, size - half, 2)
                corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * extent / 2
                rotated = corners @ np.array([[c, s], [-s, c]]) + (cx, cy)
                mask, coords = self.polygon(rotated)
                if self.add(category, mask, coords):
                    return
            else:
                r = extent / 2
                cx, cy = rng.uniform(r, size - r, 2)
                if self.add(category, self.disc(cx, cy, r)):
                    return

    def add_medium(self, lo: float, hi: float) -> None:
        rng, size = self.rng, self.size
        category = TRIANGLE if rng.random() < 0.5 else RING
        for _ in range(TRIES):
            r = rng.uniform(lo, hi) / 2
            cx, cy = rng.uniform(r, size - r, 2)
            if category == TRIANGLE:
                angles = rng.uniform(0, 2 * math.pi) + np.array([0, 2, 4]) * math.pi / 3 + rng.uniform(-0.35, 0.35, 3)
                points = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)
                mask, coords = self.polygon(points)
                if self.add(category, mask, coords):
                    return
            else:
                inner = r - rng.uniform(2.0, max(2.5, r / 2))
                mask = self.disc(cx, cy, r) & ~self.disc(cx, cy, inner)
                if self.add(category, mask):
                    return

    def add_dot(self) -> None:
        """A dot on a square, on a disc, or alone, the class chosen uniformly among those possible."""
        rng, size = self.rng, self.size
        hosts = {cat: [k for k, o in enumerate(self.objects) if o["category"] == cat] for cat in DOT_ON}
        options = [None] + [cat for cat in DOT_ON if hosts[cat]]
        host_cat = options[rng.integers(len(options))]
        for _ in range(TRIES):
            r = rng.uniform(*DOT_DIAMETER) / 2
            if host_cat is None:
                host, category = None, DOT_ALONE
                cx, cy = rng.uniform(r + DOT_MARGIN, size - r - DOT_MARGIN, 2)
            else:
                host = hosts[host_cat][rng.integers(len(hosts[host_cat]))]
                category = DOT_ON[host_cat]
                pixels = np.flatnonzero(self.visible(host))
                y, x = divmod(int(pixels[rng.integers(len(pixels))]), size)
                cx, cy = x + rng.uniform(0.0, 1.0), y + rng.uniform(0.0, 1.0)
            reach = r + DOT_MARGIN
            if not (reach <= cx <= size - reach and reach <= cy <= size - reach):
                continue  # the margin must lie inside the image
            surround = self.disc(cx, cy, reach)
            if not (self.owner[surround] == (0 if host is None else host + 1)).all():
                continue
            if self.add(category, self.disc(cx, cy, r)):
                return

    def image(self) -> np.ndarray:
        """(H, W, 3) uint8: each pixel its owner's colour, plus noise."""
        flat = np.stack(self.colors).astype(np.float64)[self.owner]
        noisy = flat + self.rng.normal(0.0, NOISE_STD, flat.shape)
        return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """The mask grown by one pixel (4-neighbourhood)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _box_ok(mask: np.ndarray) -> bool:
    """At least 2 px wide and high: never a degenerate box for the training filter."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return rows.size > 0 and rows[-1] - rows[0] >= 1 and cols[-1] - cols[0] >= 1


def _render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, _Scene]:
    scene = _Scene(rng, size)
    large = (max(16.0, 0.22 * size), 0.5 * size)
    medium = (max(8.0, 0.06 * size), max(12.0, 0.3 * size))
    for _ in range(rng.integers(1, 4)):
        scene.add_large(*large)
    for _ in range(rng.integers(0, 4)):
        scene.add_medium(*medium)
    for _ in range(rng.integers(2, 7)):
        scene.add_dot()
    return scene.image(), scene


def _annotations(scene: _Scene, image_id: int) -> list[dict[str, Any]]:
    out = []
    for k, obj in enumerate(scene.objects):
        visible = scene.visible(k)
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        full_area = int(obj["full"].sum())
        area = int(mask_utils.area(rle))
        if obj["polygon"] is not None and area == full_area:
            segmentation: Any = [obj["polygon"]]
        else:
            segmentation = {"size": [scene.size, scene.size], "counts": rle["counts"].decode("ascii")}
        out.append({
            "image_id": image_id,
            "category_id": obj["category"],
            "segmentation": segmentation,
            "area": float(area),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "iscrowd": 0,
            "visible": round(area / full_area, 4),
        })
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise UsageError(f"data synth: --{name} expects an integer {bound}, got {value!r}")


def _check_shared(out: Path, *, seg: bool, train: int, val: int, size: int, seed: int) -> None:
    """Refuse to write one task's set into a folder that holds the other's with other arguments.

    The detection set (``annotations/``) and the segmentation labels (``labels/``, ``classes.json``)
    share ``images/`` when written with the same arguments (the synth_seg configs' trunk pre-trains
    on the detection set of their data.root); other arguments would replace the images under the
    other set's annotations or labels.
    """
    try:
        if seg:
            found = out / "annotations" / "instances_train.json"
            if not found.exists():
                return
            info = json.loads(found.read_bytes())["info"]
            theirs = {"seed": info["seed"], "size": info["size"]}
            for split, _ in SPLITS:
                path = out / "annotations" / f"instances_{split}.json"
                theirs[split] = len(json.loads(path.read_bytes())["images"]) if path.exists() else None
            other = "detection set (annotations/)"
        else:
            found = out / "classes.json"
            if not found.exists():
                return
            info = json.loads(found.read_bytes())
            theirs = {"seed": info["seed"], "size": info["size"]}
            for split, _ in SPLITS:
                theirs[split] = len(list((out / "labels" / split).glob("*.png")))
            other = "segmentation labels (labels/)"
    except (OSError, ValueError, KeyError, TypeError):
        return  # not a set written here: nothing to keep consistent
    ours = {"seed": seed, "size": size, "train": train, "val": val}
    differ = [f"--{key} {theirs[key]}" for key in ("train", "val", "size", "seed")
              if theirs[key] is not None and theirs[key] != ours[key]]
    if differ:
        raise UsageError(f"{out}: holds the synthetic {other} of {', '.join(differ)}; this one would replace its "
                         f"images: write it with those values, or into another --out")


def write_synth(out_dir: str | Path, *, train: int = 200, val: int = 50, size: int = 128, seed: int = 0) -> dict:
    """Write the synthetic dataset (see the module docstring) into ``out_dir``.

    Args:
        out_dir: dataset folder (``data.root``), created if needed; files of an earlier run
            with the same names are replaced (atomically, one by one).
        train, val (int): images per split, >= 1.
        size (int): image side, px, 64..4096.
        seed (int): >= 0; the same arguments give byte-identical files.

    Returns:
        dict: ``out_dir``, ``seed``, ``size``, ``num_classes`` (K + 1), ``categories``
        (names, id order) and ``splits``: ``{"train": {"images", "annotations", "occluded"
        (annotations with visible < 1), "per_category": {name: count}}, "val": {...}}``.

    Raises:
        UsageError: an argument out of range, ``out_dir`` cannot be written, or it holds the
            segmentation labels of :func:`write_synth_seg` with other arguments (the shared images).
    """
    _check_int("train", train, 1)
    _check_int("val", val, 1)
    _check_int("size", size, MIN_SIZE, MAX_SIZE)
    _check_int("seed", seed, 0)
    out = Path(out_dir)
    _check_shared(out, seg=False, train=train, val=val, size=size, seed=seed)
    names = {c["id"]: c["name"] for c in CATEGORIES}
    summary: dict[str, Any] = {
        "out_dir": str(out), "seed": seed, "size": size, "num_classes": NUM_CLASSES,
        "categories": [c["name"] for c in CATEGORIES], "splits": {},
    }
    counts = {"train": train, "val": val}
    try:
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        for split, code in SPLITS:
            img_dir = out / "images" / split
            img_dir.mkdir(parents=True, exist_ok=True)
            images: list[dict[str, Any]] = []
            annotations: list[dict[str, Any]] = []
            for index in range(counts[split]):
                pixels, scene = _render(np.random.default_rng([seed, code, index]), size)
                image_id = index + 1
                file_name = f"{image_id:06d}.png"
                _write_atomic(img_dir / file_name, _png(pixels))
                images.append({"id": image_id, "file_name": file_name, "height": size, "width": size})
                for ann in _annotations(scene, image_id):
                    annotations.append({"id": len(annotations) + 1, **ann})
            dataset = {
                "info": {"description": f"fptbench synthetic shapes, split {split}",
                         "seed": seed, "size": size, "version": "1"},
                "licenses": [],
                "images": images,
                "annotations": annotations,
                "categories": [dict(c) for c in CATEGORIES],
            }
            text = json.dumps(dataset, separators=(",", ":"))
            _write_atomic(out / "annotations" / f"instances_{split}.json", text.encode("utf-8"))
            per_category = Counter(names[a["category_id"]] for a in annotations)
            summary["splits"][split] = {
                "images": len(images),
                "annotations": len(annotations),
                "occluded": sum(a["visible"] < 1 for a in annotations),
                "per_category": {name: per_category[name] for name in summary["categories"]},
            }
    except OSError as err:
        raise UsageError(f"{err.filename or out}: cannot write: {err.strerror or err}") from None
    return summary


def semantic_labels(scene: _Scene) -> np.ndarray:
    """(H, W) uint8: the category of the object visible at each pixel, 0 on the background.

    Read from the painter's canvas (``owner``), so a pixel takes the class of the last object
    painted over it, the one whose colour the image shows, and the label map agrees with the
    detection set's masks (each the visible part of its object).
    """
    categories = np.array([0] + [o["category"] for o in scene.objects], dtype=np.uint8)
    return categories[scene.owner]


def write_synth_seg(out_dir: str | Path, *, train: int = 200, val: int = 50, size: int = 128, seed: int = 0) -> dict:
    """Write the synthetic set for semantic segmentation into ``out_dir``::

        out_dir/images/{train,val}/000001.png ...   the images of write_synth (same bytes)
        out_dir/labels/{train,val}/000001.png ...   grey PNGs, class per pixel (:func:`semantic_labels`)
        out_dir/classes.json                        {"classes": ["background", "square", ...],
                                                     "ignore_index": 255, "seed", "size", "version"}

    The images are drawn as :func:`write_synth` draws them (the same generator and seeds), so
    with the same arguments both can share ``out_dir`` (the synth_seg configs' data.root, whose
    detection annotations pre-train their trunk); with others, each refuses to write into a folder
    that holds the other's set. Class ids are the COCO category ids,
    0 the background: ``model.num_classes`` is :data:`NUM_CLASSES` in both tasks. No pixel is
    ignored (255 never appears).

    Args:
        out_dir: dataset folder (``data.root``), created if needed; files of an earlier run
            with the same names are replaced (atomically, one by one).
        train, val (int): images per split, >= 1.
        size (int): image side, px, 64..4096.
        seed (int): >= 0; the same arguments give byte-identical files.

    Returns:
        dict: ``out_dir``, ``seed``, ``size``, ``num_classes`` (K + 1), ``classes`` (names, id
        order, background first) and ``splits``: ``{"train": {"images", "pixels": {name:
        count}}, "val": {...}}``.

    Raises:
        UsageError: an argument out of range, ``out_dir`` cannot be written, or it holds the
            detection set of :func:`write_synth` with other arguments (the shared images).
    """
    _check_int("train", train, 1)
    _check_int("val", val, 1)
    _check_int("size", size, MIN_SIZE, MAX_SIZE)
    _check_int("seed", seed, 0)
    out = Path(out_dir)
    _check_shared(out, seg=True, train=train, val=val, size=size, seed=seed)
    classes = ["background"] + [c["name"] for c in CATEGORIES]
    summary: dict[str, Any] = {"out_dir": str(out), "seed": seed, "size": size, "num_classes": NUM_CLASSES,
                               "classes": classes, "splits": {}}
    counts = {"train": train, "val": val}
    try:
        for split, code in SPLITS:
            img_dir, label_dir = out / "images" / split, out / "labels" / split
            img_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            pixels_per_class = np.zeros(NUM_CLASSES, dtype=np.int64)
            for index in range(counts[split]):
                pixels, scene = _render(np.random.default_rng([seed, code, index]), size)
                labels = semantic_labels(scene)
                file_name = f"{index + 1:06d}.png"
                _write_atomic(img_dir / file_name, _png(pixels))
                _write_atomic(label_dir / file_name, _png(labels))
                pixels_per_class += np.bincount(labels.reshape(-1), minlength=NUM_CLASSES)
            summary["splits"][split] = {"images": counts[split],
                                        "pixels": dict(zip(classes, pixels_per_class.tolist()))}
        info = {"classes": classes, "ignore_index": 255, "seed": seed, "size": size, "version": "1"}
        _write_atomic(out / "classes.json", (json.dumps(info, indent=2) + "\n").encode("utf-8"))
    except OSError as err:
        raise UsageError(f"{err.filename or out}: cannot write: {err.strerror or err}") from None
    return summary


def summary_line(summary: dict) -> str:
    """One line for the command line, e.g. ``wrote 200 train + 50 val images (1530 + 377 objects,
    7 classes, size 128, seed 0) to data/synth``."""
    tr, va = summary["splits"]["train"], summary["splits"]["val"]
    return (f"wrote {tr['images']} train + {va['images']} val images ({tr['annotations']} + "
            f"{va['annotations']} objects, {summary['num_classes'] - 1} classes, size {summary['size']}, "
            f"seed {summary['seed']}) to {summary['out_dir']}")


def seg_summary_line(summary: dict) -> str:
    """One line for the command line, e.g. ``wrote 200 train + 50 val label maps (8 classes with
    the background, size 128, seed 0) to data/synth``."""
    tr, va = summary["splits"]["train"], summary["splits"]["val"]
    return (f"wrote {tr['images']} train + {va['images']} val label maps ({summary['num_classes']} classes with "
            f"the background, size {summary['size']}, seed {summary['seed']}) to {summary['out_dir']}")
