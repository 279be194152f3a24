"""COCO-format instance segmentation as ``(image, target)`` pairs for torchvision's detectors.

Annotations are read once with pycocotools (:func:`load_coco`); masks are decoded per item with
``pycocotools.mask`` (polygons, compressed and uncompressed RLE), exactly as
``COCO.annToMask`` does.

Training mode follows torchvision's detection references [code: references/detection/
coco_utils.py]: crowd regions are dropped (their pixels are neither positives nor negatives in
COCOeval, and torchvision's losses have no "ignore" region), and so are annotations with a
degenerate box (width or height <= 1 px after clipping to the image) [ours: the references drop
width/height <= 0 boxes and images whose boxes are all <= 1 px] or an empty mask [ours]; images
left with no annotation are left out. Every drop is counted in :attr:`CocoDetection.skipped`.
Evaluation mode keeps every annotation (COCOeval reads the ground truth from ``.coco``).

A file without ``annotations`` (COCO's ``image_info_test-dev2017.json``: images and categories
only) is a split to run the detector on for the evaluation server (:attr:`CocoDetection.annotated`
false, every target empty); training on it is refused.

Items are read from :class:`SerializedRecords`, every image's record pickled into one NumPy
buffer, as detectron2's ``DatasetFromList(serialize=True)``: data-loader workers forked from the
main process then share those pages for good, where reading (and the garbage collector walking)
a list of Python dicts would write reference counts into every page and copy the whole dataset
into each worker, one COCO annotation file per worker [benchmarks/loader_memory.py]. In training
the pycocotools index is dropped once the records are built (``.coco`` is None).
"""

from __future__ import annotations

import contextlib
import io
import json
import operator
import os
import pickle
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torchvision.transforms.v2.functional as F
from pycocotools.coco import COCO
from torch import Tensor
from torchvision import tv_tensors

from fptbench.data.image import PIXELS, read_image
from fptbench.errors import UsageError

__all__ = ["CocoDetection", "SerializedRecords", "load_coco", "segmentation_rle"]

# Counter keys of CocoDetection.skipped
SKIP_CROWD = "crowd"
SKIP_DEGENERATE = "degenerate_box"
SKIP_EMPTY_MASK = "empty_mask"
SKIP_IMAGE = "image_without_annotations"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_dataset(data: Any, path: Path) -> None:
    """The structure pycocotools and this module rely on; one-line UsageError at the first flaw.
    ``annotations`` may be absent (an ``image_info`` file), not malformed."""
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object with images, annotations and categories, "
                         f"got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key == "annotations" and key not in data:
            continue
        if not isinstance(data.get(key), list):
            got = "missing" if key not in data else type(data[key]).__name__
            raise UsageError(f"{path}: '{key}' must be a list ({got})")
    cat_ids: set = set()
    for i, cat in enumerate(data["categories"]):
        if not (isinstance(cat, dict) and isinstance(cat.get("id"), int) and isinstance(cat.get("name"), str)):
            raise UsageError(f"{path}: categories[{i}] must have an integer 'id' and a string 'name'")
        if cat["id"] < 1:
            raise UsageError(f"{path}: categories[{i}]: id {cat['id']} must be >= 1 (0 is the background label)")
        cat_ids.add(cat["id"])
    img_ids: set = set()
    for i, img in enumerate(data["images"]):
        ok = (isinstance(img, dict) and isinstance(img.get("id"), int) and isinstance(img.get("file_name"), str)
              and isinstance(img.get("height"), int) and isinstance(img.get("width"), int)
              and img["height"] > 0 and img["width"] > 0)
        if not ok:
            raise UsageError(f"{path}: images[{i}] must have an integer 'id', a string 'file_name' and "
                             f"positive integer 'height' and 'width'")
        if img["id"] in img_ids:
            raise UsageError(f"{path}: images[{i}]: image id {img['id']} appears twice")
        img_ids.add(img["id"])
    for i, ann in enumerate(data.get("annotations", [])):
        where = f"{path}: annotations[{i}]"
        if not (isinstance(ann, dict) and isinstance(ann.get("id"), int)):
            raise UsageError(f"{where} must be an object with an integer 'id'")
        where += f" (id {ann['id']})"
        if ann.get("image_id") not in img_ids:
            raise UsageError(f"{where}: image_id {ann.get('image_id')!r} is not an image of the file")
        if ann.get("category_id") not in cat_ids:
            raise UsageError(f"{where}: category_id {ann.get('category_id')!r} is not a category of the file")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
            raise UsageError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}")
        if not isinstance(ann.get("segmentation"), (list, dict)):
            raise UsageError(f"{where}: 'segmentation' must be a list of polygons or an RLE object")


def load_coco(path: str | Path) -> COCO:
    """A pycocotools ``COCO`` index of an instance-annotation (or ``image_info``) file, checked.

    The JSON is parsed here (not by ``COCO(path)``) so that a syntax error is reported with its
    line and column, and the structure is checked before pycocotools indexes it.

    Raises:
        UsageError: ``"PATH: not found"``, ``"PATH: malformed JSON at line L, column C: ..."``, or
            the first structural flaw (a missing key, an annotation of an unknown image, ...).
    """
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: not found") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    _check_dataset(data, path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
        coco.createIndex()
    return coco


def segmentation_rle(segm: list | dict, height: int, width: int) -> dict:
    """One RLE of an annotation's ``segmentation``, as ``COCO.annToRLE`` builds it.

    Args:
        segm: a list of polygons ``[[x0, y0, x1, y1, ...], ...]`` (pixel-edge coordinates), an
            uncompressed RLE ``{"size": [h, w], "counts": [int, ...]}`` (column-major runs,
            starting with zeros) or a compressed one (``counts`` a string).
        height, width: the image size.

    Returns:
        dict: a compressed RLE of size (height, width); an empty polygon list gives an empty mask.

    Raises:
        ValueError: the RLE's size is not (height, width), or pycocotools rejects the input.
    """
    if isinstance(segm, list):
        if not segm:
            return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    size = list(segm.get("size", ()))
    if size != [height, width]:
        raise ValueError(f"RLE size {size} is not the image's [height, width] = [{height}, {width}]")
    if isinstance(segm.get("counts"), list):  # uncompressed RLE (COCO's crowd regions)
        return mask_utils.frPyObjects(segm, height, width)
    return segm


class SerializedRecords:
    """A read-only list of picklable records held as one ``uint8`` buffer plus ``int64`` end
    offsets (two NumPy arrays: no Python object per record, nothing for reference counts or the
    garbage collector to write into once a worker is forked).

    ``records[i]`` unpickles record ``i`` afresh: a copy the caller may change.
    """

    def __init__(self, records: list) -> None:
        blobs = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in records]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8) if blobs else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> Any:
        index = operator.index(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        index %= len(self)
        start = int(self._ends[index - 1]) if index else 0
        return pickle.loads(memoryview(self._buffer[start:int(self._ends[index])]))


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format instance-segmentation split.

    Args:
        root (str | Path): dataset folder (``data.root``); ``ann_file`` and ``img_dir`` are
            relative to it (or absolute).
        ann_file (str | Path): the instances JSON, or an ``image_info`` JSON (no ``annotations``:
            evaluation only).
        img_dir (str | Path | sequence of them): the folder that ``images[].file_name`` is
            relative to, or candidate folders, the first that exists taken (a named split's
            layouts, :attr:`fptbench.data.catalog.CocoSplit.image_dirs`).
        pixel (str): ``"torchvision"`` (RGB in [0, 1]) or ``"caffe"`` (BGR in [0, 255]).
        train (bool): drop crowd regions, degenerate boxes, empty masks, and images left with
            no annotation (counted in :attr:`skipped`); otherwise keep everything.
        max_images (int): keep only the first N images by sorted image id (0 = all); in
            training the first N that still have an annotation.
        serialize (bool): hold the records in one buffer (:class:`SerializedRecords`) and, in
            training, drop the COCO index; False keeps both as Python objects, the layout whose
            memory grows in each worker (for ``benchmarks/loader_memory.py``).

    Attributes:
        coco (COCO | None): the pycocotools index of the whole file (the evaluator's ground
            truth); None in training, where the items are read from their serialized records.
        annotated (bool): the file has ``annotations`` (can be scored and trained on); False for
            an ``image_info`` file, whose items have empty targets.
        img_dir (Path): the image folder (the first candidate that exists).
        ids (list[int]): image ids of the items, in order (sorted).
        image_sizes (list[tuple[int, int]]): ``(height, width)`` of each item's image, in item
            order, as the annotation file states them (no image is decoded): what an
            aspect-ratio grouping sampler needs.
        skipped (Counter): what was dropped and why: ``crowd``, ``degenerate_box``,
            ``empty_mask`` (annotations), ``image_without_annotations`` (images).
        categories (dict[int, str]): category id (= label) -> name.

    Items: ``dataset[i]`` or ``dataset[(i, flip)]`` returns ``(image, target)``:
        image (Tensor): (3, H, W) float32 in the ``pixel`` convention, the file's full size.
        target (dict): ``boxes`` (N, 4) float32 xyxy pixels; ``labels`` (N,) int64 (category
        ids); ``masks`` (N, H, W) uint8; ``image_id`` int; ``area`` (N,) float32 (the
        annotation's ``area``, else its box's); ``iscrowd`` (N,) int64. ``flip=True`` mirrors image, boxes and masks
        horizontally (x -> W - x).

    Raises:
        UsageError: annotation file missing or malformed, training on a file without annotations,
            no image left, image folder (every candidate) or an image file missing (checked for
            every kept image at construction), an unreadable image, an image whose size differs
            from its annotation, an undecodable segmentation.
    """

    def __init__(
        self,
        root: str | Path,
        ann_file: str | Path,
        img_dir: str | Path | Sequence[str | Path],
        *,
        pixel: str = "torchvision",
        train: bool = False,
        max_images: int = 0,
        serialize: bool = True,
    ) -> None:
        if pixel not in PIXELS:
            raise UsageError(f"model.pixel: {pixel!r} is not one of {', '.join(PIXELS)}")
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 0:
            raise UsageError(f"data.max_images: {max_images!r} is not an integer >= 0")
        self.root = Path(root)
        self.ann_file = self.root / ann_file
        candidates = [img_dir] if isinstance(img_dir, (str, os.PathLike)) else list(img_dir)
        if not candidates:
            raise ValueError("img_dir: no candidate folder")
        self._img_dirs = [self.root / d for d in candidates]
        self.img_dir = next((d for d in self._img_dirs if d.is_dir()), self._img_dirs[0])
        self.pixel = pixel
        self.train = train
        self.coco: COCO | None = load_coco(self.ann_file)
        self.annotated = "annotations" in self.coco.dataset
        if train and not self.annotated:
            raise UsageError(f"{self.ann_file}: no 'annotations' (images only, an image_info file of a test split): "
                             f"nothing to train on; train on an annotated split")
        self.categories: dict[int, str] = {c["id"]: c["name"] for c in self.coco.dataset["categories"]}
        self.skipped: Counter = Counter()
        # per item: (image id, file name, height, width, its annotations sorted by id: the kept
        # ones only in training)
        records: list[tuple[int, str, int, int, list[dict]]] = []
        for img_id in sorted(self.coco.imgs):
            if max_images and len(records) >= max_images:
                break
            info = self.coco.imgs[img_id]
            anns = sorted(self.coco.imgToAnns.get(img_id, []), key=operator.itemgetter("id"))
            if train:
                anns = [ann for ann in anns if self._keep(ann, info)]
                if not anns:
                    self.skipped[SKIP_IMAGE] += 1
                    continue
            records.append((img_id, info["file_name"], info["height"], info["width"], anns))
        if not records:
            dropped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
            raise UsageError(f"{self.ann_file}: no images to {'train on' if train else 'evaluate'}"
                             + (f" (dropped: {dropped})" if dropped else ""))
        self._ids = np.array([r[0] for r in records], dtype=np.int64)
        # (N, 2) int32 beside the serialized records: sizes without unpickling an item
        self._sizes = np.array([(r[2], r[3]) for r in records], dtype=np.int32).reshape(-1, 2)
        self._check_image_files([r[1] for r in records])
        self._records = SerializedRecords(records) if serialize else records
        del records
        if train and serialize:
            self.coco = None  # the whole file's index: what the workers would copy

    @property
    def ids(self) -> list[int]:
        return self._ids.tolist()

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """``(height, width)`` of each item's image in pixels, in item order (``dataset[i]``'s
        image is ``image_sizes[i]``), from the annotation file: nothing is decoded or unpickled.
        Held as one (N, 2) int32 array; the list is built on each call."""
        return [(h, w) for h, w in self._sizes.tolist()]

    # -- construction helpers -----------------------------------------------------------------

    def _rle(self, ann: dict, height: int, width: int) -> dict:
        try:
            return segmentation_rle(ann["segmentation"], height, width)
        except (ValueError, TypeError, IndexError, KeyError, OverflowError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise UsageError(f"{self.ann_file}: annotation id {ann['id']}: cannot decode the "
                             f"segmentation: {reason}") from None

    @staticmethod
    def _xyxy(ann: dict, height: int, width: int) -> tuple[float, float, float, float]:
        """The annotation's box as xyxy, clipped to the image."""
        x, y, w, h = ann["bbox"]
        x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        return float(x1), float(y1), float(x2), float(y2)

    def _keep(self, ann: dict, info: dict) -> bool:
        """Training filter; counts the reason of a drop. The mask is measured as an RLE (no decoding)."""
        if ann.get("iscrowd", 0):
            self.skipped[SKIP_CROWD] += 1
            return False
        x1, y1, x2, y2 = self._xyxy(ann, info["height"], info["width"])
        if x2 - x1 <= 1 or y2 - y1 <= 1:
            self.skipped[SKIP_DEGENERATE] += 1
            return False
        if int(mask_utils.area(self._rle(ann, info["height"], info["width"]))) == 0:
            self.skipped[SKIP_EMPTY_MASK] += 1
            return False
        return True

    def _check_image_files(self, names: list[str]) -> None:
        """Every kept image exists: one listing of the folder, not one stat per file."""
        if not self.img_dir.is_dir():
            if len(self._img_dirs) > 1:
                looked = " nor ".join(str(d) for d in self._img_dirs)
                raise UsageError(f"image folder not found: neither {looked} exists (images of {self.ann_file})")
            raise UsageError(f"{self.img_dir}: image folder not found (images of {self.ann_file})")
        present = set(os.listdir(self.img_dir))
        missing = []
        for name in names:
            found = name in present if "/" not in name else (self.img_dir / name).is_file()
            if not found:
                missing.append(name)
        if missing:
            raise UsageError(f"{self.img_dir / missing[0]}: image not found ({len(missing)} of the "
                             f"{len(names)} images of {self.ann_file} missing)")

    # -- items --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, key: int | tuple[int, bool]) -> tuple[Tensor, dict[str, Any]]:
        if isinstance(key, tuple):
            index, flip = key
        else:
            index, flip = key, False
        img_id, file_name, height, width, anns = self._records[index]
        path = self.img_dir / file_name
        image = read_image(path, self.pixel)
        if tuple(image.shape[-2:]) != (height, width):
            raise UsageError(f"{path}: image is {image.shape[-1]}x{image.shape[-2]} pixels but "
                             f"{self.ann_file} says {width}x{height}")
        n = len(anns)
        boxes = torch.tensor([self._xyxy(a, height, width) for a in anns], dtype=torch.float32).reshape(n, 4)
        if n:
            decoded = [mask_utils.decode(self._rle(a, height, width)) for a in anns]  # (H, W) uint8 each
            masks = torch.from_numpy(np.ascontiguousarray(np.stack(decoded)))
        else:
            masks = torch.zeros((0, height, width), dtype=torch.uint8)
        target = {
            "boxes": boxes,
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "masks": masks,
            "image_id": int(img_id),
            "area": torch.tensor([float(a["area"] if "area" in a else a["bbox"][2] * a["bbox"][3])
                                  for a in anns], dtype=torch.float32),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
        }
        if flip:
            image = F.horizontal_flip(image)
            target["boxes"] = F.horizontal_flip_bounding_boxes(
                boxes, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(height, width))
            target["masks"] = F.horizontal_flip_mask(masks)
        return image, target

    def __repr__(self) -> str:
        mode = "train" if self.train else "test"
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return (f"CocoDetection({self.ann_file}, {len(self)} images, {len(self.categories)} categories, "
                f"{mode}, pixel={self.pixel}, skipped: {skipped})")
