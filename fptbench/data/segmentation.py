"""Semantic segmentation splits in their standard layouts, as ``(image, label)`` pairs.

Paths are relative to ``data.root``, the folder the dataset's archives were unpacked in:

- ``cityscapes``: ``leftImg8bit/{train,val}/{city}/{stem}_leftImg8bit.png`` with
  ``gtFine/{split}/{city}/{stem}_gtFine_labelIds.png``. labelIds map to the 19 trainIds of
  cityscapesScripts' ``labels.py``; every other id (void classes, license plate) is ignored.
- ``voc2012``: ``VOCdevkit/VOC2012/JPEGImages/{id}.jpg`` with ``SegmentationClass/{id}.png``
  (palette PNGs whose indices are the 21 classes, background 0, object boundaries 255), the
  ids listed in ``ImageSets/Segmentation/{train,val}.txt``. ``train_aug`` is the SBD-augmented
  training set (10,582 images): every id of ``train.txt`` or with a label in
  ``SegmentationClassAug/`` (SBD's labels as index PNGs, the layout of the common trainaug
  archive and of mmsegmentation's ``tools/dataset_converters/voc_aug.py``), less the ids of
  ``val.txt``; an id of ``train.txt`` keeps its VOC label (boundaries ignored), the others take
  SBD's, as mmsegmentation's ``voc12aug`` config pairs them.
- ``ade20k``: ``ADEChallengeData2016/images/{training,validation}/*.jpg`` with
  ``annotations/{training,validation}/*.png``; label 0 ("other") is ignored and 1..150 become
  0..149 (mmsegmentation's ``reduce_zero_label``).
- ``lip``: ``TrainVal_images/{train,val}_images/*.jpg`` with
  ``TrainVal_parsing_annotations/{train,val}_segmentations/*.png``, 20 classes with the
  background; the layout of HRNet-Semantic-Segmentation's data README (the official archives
  nest each folder once more, ``TrainVal_images/TrainVal_images/...``: move them up one level).
  A horizontal flip turns a left arm, leg or shoe into a right one: :attr:`Layout.flip_pairs`.
- ``synth``: ``images/{train,val}/*.png`` with ``labels/{train,val}/*.png``, written by
  :func:`fptbench.data.synth.write_synth_seg` (the shapes of the detection set, background 0).

Splits without labels, for the evaluation servers: Cityscapes ``test``
(``leftImg8bit/test/{city}/*_leftImg8bit.png``) and VOC 2012 ``test`` (the ids of
``ImageSets/Segmentation/test.txt`` in ``JPEGImages/``, as the VOC2012 test archive unpacks into
the same ``VOCdevkit/VOC2012``). Their items have no label; a prediction becomes the file each
server takes (:meth:`Layout.result_png`, :meth:`Layout.result_path`): Cityscapes, a grey PNG of
labelIds (cityscapesScripts' ids, not trainIds) named as its ``*_leftImg8bit.png`` image; VOC, a
palette PNG of class indices (the VOC colour map) ``results/VOC2012/Segmentation/comp6_test_cls/{id}.png``
(comp6: trained with data beyond VOC's own, SBD's labels in ``train_aug``).

Named splits (:data:`SEG_DATASETS`, :func:`resolve_seg_split`) pick a layout and a split, as
:mod:`fptbench.data.catalog` does for COCO. Images come in the pixel convention of
:mod:`fptbench.data.image` (not normalised: the model normalises, as torchvision's detectors
do); labels are (H, W) int64 class indices with :data:`IGNORE_INDEX` where nothing is scored.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms.v2 import ColorJitter, InterpolationMode

from fptbench.data.image import PIXEL_STATS, PIXELS, read_image, to_pixels, to_uint8_rgb
from fptbench.data.synth import CATEGORIES as SYNTH_CATEGORIES
from fptbench.errors import UsageError

__all__ = [
    "IGNORE_INDEX",
    "LAYOUTS",
    "SEG_DATASETS",
    "Layout",
    "SegmentationDataset",
    "SegmentationTrainTransform",
    "read_label",
    "resolve_seg_split",
    "segmentation_dataset",
    "voc_palette",
]

IGNORE_INDEX = 255
"""Label of pixels that are neither scored nor trained on (the convention of all four datasets)."""

Pairs = list[tuple[Path, Path | None]]
"""(image file, label file) of each item; the label None in a split without labels."""


# -- layouts: (image, label) file pairs of a split ---------------------------------------------

def _folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UsageError(f"{path}: folder not found ({what})")
    return path


def _ids(path: Path) -> list[str]:
    """The image ids of a VOC list file, one per line."""
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise UsageError(f"{path}: split list not found") from None


def _by_stem(images: Path, labels: Path, image_glob: str, label_suffix: str, what: str) -> Pairs:
    """Every image of a folder, each with the label file of the same stem in another folder."""
    return [(p, labels / (p.stem + label_suffix)) for p in sorted(_folder(images, what).glob(image_glob))]


def _cityscapes(root: Path, split: str) -> Pairs:
    images = _folder(root / "leftImg8bit" / split, "cityscapes images: leftImg8bit/SPLIT/CITY/*_leftImg8bit.png")
    if split == "test":  # gtFine/test holds placeholders, not labels
        return [(p, None) for p in sorted(images.glob("*/*_leftImg8bit.png"))]
    labels = root / "gtFine" / split
    return [(p, labels / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"))
            for p in sorted(images.glob("*/*_leftImg8bit.png"))]


def _voc2012(root: Path, split: str) -> Pairs:
    base = root / "VOCdevkit" / "VOC2012"
    lists = base / "ImageSets" / "Segmentation"
    voc_labels = base / "SegmentationClass"
    if split == "test":
        return [(base / "JPEGImages" / f"{i}.jpg", None) for i in _ids(lists / "test.txt")]
    if split != "train_aug":
        return [(base / "JPEGImages" / f"{i}.jpg", voc_labels / f"{i}.png") for i in _ids(lists / f"{split}.txt")]
    sbd_labels = base / "SegmentationClassAug"
    if not sbd_labels.is_dir():
        raise UsageError(f"{sbd_labels}: folder not found (voc2012 train_aug needs SBD's labels as index PNGs, "
                         f"the trainaug layout)")
    train = set(_ids(lists / "train.txt"))
    ids = ({p.stem for p in sbd_labels.glob("*.png")} | train) - set(_ids(lists / "val.txt"))
    return [(base / "JPEGImages" / f"{i}.jpg", (voc_labels if i in train else sbd_labels) / f"{i}.png")
            for i in sorted(ids)]


def _ade20k(root: Path, split: str) -> Pairs:
    folder = {"train": "training", "val": "validation"}[split]
    base = root / "ADEChallengeData2016"
    return _by_stem(base / "images" / folder, base / "annotations" / folder, "*.jpg", ".png",
                    "ade20k images: ADEChallengeData2016/images/SPLIT/*.jpg")


def _lip(root: Path, split: str) -> Pairs:
    return _by_stem(root / "TrainVal_images" / f"{split}_images",
                    root / "TrainVal_parsing_annotations" / f"{split}_segmentations", "*.jpg", ".png",
                    "lip images: TrainVal_images/SPLIT_images/*.jpg")


def _synth(root: Path, split: str) -> Pairs:
    return _by_stem(root / "images" / split, root / "labels" / split, "*.png", ".png",
                    "synthetic images: images/SPLIT/*.png, written by write_synth_seg")


@dataclass(frozen=True)
class Layout:
    """What a dataset's files are and what its label values mean.

    Attributes:
        classes (tuple[str, ...]): class names, index = class id.
        label_map (dict[int, int]): value in a label file -> class id; every other value of
            0..255 -> :data:`IGNORE_INDEX`.
        splits (tuple[str, ...]): the split names ``pairs`` takes.
        pairs (callable): ``pairs(root, split)`` -> sorted ``[(image path, label path), ...]``;
            the label path None in the splits of ``unlabelled``.
        flip_pairs (tuple[tuple[int, int], ...]): classes that swap under a horizontal flip
            (LIP's left and right limbs).
        unlabelled (tuple[str, ...]): the splits without labels (a server's test set).
        result_path (callable | None): ``result_path(image path)`` -> where the server wants the
            prediction of that image, relative to the results folder; None: no server format.
        palette (tuple[int, ...]): RGB triplets of a palette PNG (VOC's); () = grey PNG.
        result_format (str): what the server's files are, in words (for the run record).
    """

    classes: tuple[str, ...]
    label_map: Mapping[int, int]
    splits: tuple[str, ...]
    pairs: Callable[[Path, str], Pairs]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    unlabelled: tuple[str, ...] = ()
    result_path: Callable[[Path], str] | None = None
    palette: tuple[int, ...] = ()
    result_format: str = ""

    def lookup(self) -> np.ndarray:
        """(256,) uint8: label file value -> class id or :data:`IGNORE_INDEX`."""
        table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for value, index in self.label_map.items():
            table[value] = index
        return table

    def file_values(self) -> np.ndarray:
        """(C,) uint8: class id -> its value in a label file, the inverse of ``label_map``
        (Cityscapes: trainId -> labelId)."""
        table = np.zeros(len(self.classes), dtype=np.uint8)
        for value, index in sorted(self.label_map.items(), reverse=True):  # the smallest value wins
            table[index] = value
        return table

    def result_png(self, pred: np.ndarray) -> bytes:
        """A prediction as the server's PNG.

        Args:
            pred (ndarray): (H, W) integer class ids in 0..C-1.

        Returns:
            bytes: a PNG of the label file values (:meth:`file_values`), grey (mode ``L``) or
            with :attr:`palette` (mode ``P``), H x W pixels.
        """
        values = self.file_values()[np.asarray(pred, dtype=np.int64)]
        image = Image.fromarray(np.ascontiguousarray(values))  # (H, W) uint8: mode L
        if self.palette:
            image.putpalette(list(self.palette))  # L -> P, the values kept as the indices
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()


def voc_palette() -> tuple[int, ...]:
    """The VOC colour map (the devkit's ``VOClabelcolormap.m``): 256 RGB triplets, index i's bits
    spread over the high bits of R, G, B (1 aeroplane (128, 0, 0), 15 person (192, 128, 128), 255
    void (224, 224, 192))."""
    colours = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= (c & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours += [r, g, b]
    return tuple(colours)


def _cityscapes_result(image: Path) -> str:
    # the image's own name: cityscapesScripts' evaluation finds {city}_{seq}_{frame}*.png
    return image.name


def _voc2012_result(image: Path) -> str:
    return f"results/VOC2012/Segmentation/comp6_test_cls/{image.stem}.png"


CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
# labelIds of the 19 evaluated classes in trainId order (cityscapesScripts helpers/labels.py)
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")

# ADEChallengeData2016 objectInfo150's first names, as mmsegmentation lists them
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

LIP_CLASSES = ("background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks",
               "pants", "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg", "right-leg",
               "left-shoe", "right-shoe")

SYNTH_CLASSES = ("background", *(c["name"] for c in SYNTH_CATEGORIES))


def _identity(num_classes: int) -> dict[int, int]:
    return {k: k for k in range(num_classes)}


LAYOUTS: dict[str, Layout] = {
    "cityscapes": Layout(CITYSCAPES_CLASSES, {v: k for k, v in enumerate(CITYSCAPES_LABEL_IDS)},
                         ("train", "val", "test"), _cityscapes, unlabelled=("test",), result_path=_cityscapes_result,
                         result_format="Cityscapes labelIds PNG per *_leftImg8bit image"),
    "voc2012": Layout(VOC_CLASSES, _identity(len(VOC_CLASSES)), ("train", "val", "train_aug", "test"), _voc2012,
                      unlabelled=("test",), result_path=_voc2012_result, palette=voc_palette(),
                      result_format="VOC2012 class-index palette PNG per image id (comp6)"),
    "ade20k": Layout(ADE20K_CLASSES, {k + 1: k for k in range(len(ADE20K_CLASSES))}, ("train", "val"), _ade20k),
    "lip": Layout(LIP_CLASSES, _identity(len(LIP_CLASSES)), ("train", "val"), _lip,
                  flip_pairs=((14, 15), (16, 17), (18, 19))),
    "synth": Layout(SYNTH_CLASSES, _identity(len(SYNTH_CLASSES)), ("train", "val"), _synth),
}
"""Layout name -> :class:`Layout`."""

SEG_DATASETS: dict[str, tuple[str, str]] = {
    f"{name}_{split}": (layout, split)
    for name, layout in (("cityscapes", "cityscapes"), ("voc2012", "voc2012"), ("ade20k", "ade20k"), ("lip", "lip"),
                         ("synth_seg", "synth"))
    for split in LAYOUTS[layout].splits
}
"""Named split (``data.train`` / ``data.test``) -> (layout, split), e.g. ``"voc2012_train_aug" ->
("voc2012", "train_aug")``, ``"synth_seg_val" -> ("synth", "val")``."""


def resolve_seg_split(name: str) -> tuple[str, str]:
    """``(layout, split)`` of a named split of :data:`SEG_DATASETS`.

    Raises:
        UsageError: the name is not one of them (the message lists them).
    """
    if name not in SEG_DATASETS:
        raise UsageError(f"{name!r} is not a segmentation split (one of {', '.join(SEG_DATASETS)})")
    return SEG_DATASETS[name]


# -- files -------------------------------------------------------------------------------------

def read_label(path: str | Path) -> np.ndarray:
    """A label file's values: (H, W) uint8, as stored (no mapping).

    Only one-channel PNGs of indices are labels: grey (``L``) or palette (``P``, VOC's), whose
    indices are read, never their colours.

    Raises:
        UsageError: the file is missing, unreadable, or not a one-channel index image.
    """
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P"):
                raise UsageError(f"{path}: a label must be a one-channel image of class indices (PNG mode L or P), "
                                 f"got mode {img.mode}")
            return np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise UsageError(f"{path}: label not found") from None
    except (UnidentifiedImageError, OSError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UsageError(f"{path}: cannot read the label: {reason}") from None


def _missing(paths: Sequence[Path]) -> list[int]:
    """Indices of the paths that are not in their folder: one listing per folder, not one stat per file."""
    listings: dict[Path, set[str]] = {}
    missing = []
    for i, path in enumerate(paths):
        if path.parent not in listings:
            listings[path.parent] = set(os.listdir(path.parent)) if path.parent.is_dir() else set()
        if path.name not in listings[path.parent]:
            missing.append(i)
    return missing


# -- training transform ------------------------------------------------------------------------

# the fill of padded image pixels: the torchvision convention's mean, hence 0 once normalised
_MEAN_RGB = PIXEL_STATS["torchvision"][0]

# ColorJitter ranges: contrast, saturation and hue of mmsegmentation's PhotoMetricDistortion
# (factors 0.5..1.5, hue +-18 degrees); brightness as a factor 1 +- 0.125 where mmsegmentation adds
# +-32 levels [ours: ColorJitter scales]
PHOTOMETRIC = {"brightness": 0.125, "contrast": 0.5, "saturation": 0.5, "hue": 0.05}


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or (height, width), got {value!r}")
    return pair  # type: ignore[return-value]


class SegmentationTrainTransform:
    """Random scale, crop, flip and photometric distortion of an image and its label, jointly.

    In mmsegmentation's order [code: RandomResize, RandomCrop, RandomFlip, PhotoMetricDistortion,
    Pad]: the image and label are resized by one factor drawn uniformly from ``scale_range``
    (image bilinear with antialiasing, label nearest), a ``crop_size`` window is cut at a uniform
    position (the whole side where the image is smaller), both are flipped with probability 0.5,
    the image's colours are jittered, and a crop smaller than ``crop_size`` is padded at the
    bottom and right: the image with the mean colour, the label with ``ignore_index``. Draws
    come from torch's global generator (the data loader seeds each worker's).

    [ours] not done: mmsegmentation's ``cat_max_ratio`` (redrawing crops that one class fills).

    Args:
        crop_size (int | (int, int)): output (height, width), px [ours: 512].
        scale_range ((float, float)): range of the resize factor, relative to the image's own
            size [ours: relative to the image where mmsegmentation scales a fixed base size;
            0.5..2.0 as its configs].
        flip (bool): flip horizontally with probability 0.5.
        photometric (bool): jitter brightness, contrast, saturation and hue (:data:`PHOTOMETRIC`,
            torchvision's ``ColorJitter``, in random order).
        flip_pairs (sequence of (int, int)): classes swapped in a flipped label (the layout's
            :attr:`Layout.flip_pairs`).
        ignore_index (int): label of padded pixels.

    Call: ``transform(image, label) -> (image, label)``; image (3, H, W) float32 RGB in [0, 1]
    (the torchvision convention), label (H, W) uint8; out (3, h, w) and (h, w), ``(h, w) =
    crop_size``.
    """

    def __init__(
        self,
        *,
        crop_size: int | Sequence[int] = 512,
        scale_range: Sequence[float] = (0.5, 2.0),
        flip: bool = True,
        photometric: bool = False,
        flip_pairs: Sequence[tuple[int, int]] = (),
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.crop_size = _pair(crop_size, "crop_size")
        low, high = (float(v) for v in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {tuple(scale_range)}")
        self.scale_range = (low, high)
        self.flip = flip
        self.jitter = ColorJitter(**PHOTOMETRIC) if photometric else None
        self.flip_pairs = tuple((int(a), int(b)) for a, b in flip_pairs)
        self.ignore_index = ignore_index
        swap = torch.arange(256, dtype=torch.uint8)
        for a, b in self.flip_pairs:
            swap[a], swap[b] = b, a
        self._swap = swap

    def __call__(self, image: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        low, high = self.scale_range
        factor = low + (high - low) * float(torch.rand(()))
        height, width = image.shape[-2:]
        size = [max(1, round(height * factor)), max(1, round(width * factor))]
        image = F.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        # NEAREST_EXACT samples at pixel centres, the grid the bilinear image is resampled on
        label = F.resize(label[None], size, interpolation=InterpolationMode.NEAREST_EXACT)[0]

        crop_h, crop_w = self.crop_size
        h, w = min(crop_h, size[0]), min(crop_w, size[1])
        top = int(torch.randint(size[0] - h + 1, ()))
        left = int(torch.randint(size[1] - w + 1, ()))
        image, label = F.crop(image, top, left, h, w), F.crop(label, top, left, h, w)

        if self.flip and float(torch.rand(())) < 0.5:
            image, label = F.horizontal_flip(image), self._swap[F.horizontal_flip(label).long()]
        if self.jitter is not None:
            image = self.jitter(image)

        padding = [0, 0, crop_w - w, crop_h - h]  # left, top, right, bottom
        image = F.pad(image, padding, fill=list(_MEAN_RGB))
        label = F.pad(label[None], padding, fill=self.ignore_index)[0]
        return image, label

    def __repr__(self) -> str:
        return (f"SegmentationTrainTransform(crop_size={self.crop_size}, scale_range={self.scale_range}, "
                f"flip={self.flip}, photometric={self.jitter is not None}, flip_pairs={self.flip_pairs})")


# -- dataset -----------------------------------------------------------------------------------

class SegmentationDataset(torch.utils.data.Dataset):
    """A split of a layout of :data:`LAYOUTS`.

    Args:
        root (str | Path): the folder the layout's paths are relative to (``data.root``).
        layout (str): a key of :data:`LAYOUTS`.
        split (str): one of the layout's splits.
        pixel (str): ``"torchvision"`` (RGB in [0, 1]) or ``"caffe"`` (BGR in [0, 255]).
        transform (callable | None): training augmentation, ``(image, label) -> (image, label)``
            on an RGB [0, 1] image and a uint8 label (:class:`SegmentationTrainTransform`);
            None for evaluation (the file's pixels, full size).
        max_images (int): keep the first N pairs in sorted order (0 = all).

    Attributes:
        classes (tuple[str, ...]), num_classes (int), flip_pairs, ignore_index (int): of the layout.
        pairs (list[(Path, Path | None)]): (image, label) files of the items, in order; the label
            None where the split has no labels.
        labelled (bool): the split has labels (can be scored and trained on); False for a
            server's test split (:attr:`Layout.unlabelled`).

    Items: ``dataset[i] -> (image, label)``: image (3, H, W) float32 in the ``pixel``
    convention; label (H, W) int64, class ids and :data:`IGNORE_INDEX`; None when not
    :attr:`labelled`.

    Raises:
        UsageError: unknown layout or split, a missing folder or split list, no images, an image
            or label file missing (all checked at construction, the first named), a training
            transform on a split without labels; when an item
            is read, an unreadable file, a label that is not an index image, or a label whose
            size differs from its image's. Each message names the file.
    """

    def __init__(
        self,
        root: str | Path,
        layout: str,
        split: str,
        *,
        pixel: str = "torchvision",
        transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
        max_images: int = 0,
    ) -> None:
        if layout not in LAYOUTS:
            raise UsageError(f"{layout!r} is not a segmentation layout (one of {', '.join(LAYOUTS)})")
        spec = LAYOUTS[layout]
        if split not in spec.splits:
            raise UsageError(f"{layout}: no split {split!r} (one of {', '.join(spec.splits)})")
        if pixel not in PIXELS:
            raise UsageError(f"model.pixel: {pixel!r} is not one of {', '.join(PIXELS)}")
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 0:
            raise UsageError(f"data.max_images: {max_images!r} is not an integer >= 0")
        self.root = Path(root)
        self.layout, self.split, self.pixel, self.transform = layout, split, pixel, transform
        self.classes = spec.classes
        self.num_classes = len(spec.classes)
        self.flip_pairs = spec.flip_pairs
        self.ignore_index = IGNORE_INDEX
        self._lookup = spec.lookup()
        self._spec = spec
        self.labelled = split not in spec.unlabelled
        if transform is not None and not self.labelled:
            raise UsageError(f"{layout} {split}: the split has no labels (a test set for the evaluation server): "
                             f"nothing to train on; train on a labelled split")
        pairs = spec.pairs(self.root, split)
        if not pairs:
            raise UsageError(f"{self.root}: no images in the {layout} {split} split")
        self.pairs = pairs[:max_images] if max_images else pairs
        images, labels = [p[0] for p in self.pairs], [p[1] for p in self.pairs]
        for kind, paths in (("image", images), ("label", labels if self.labelled else [])):
            missing = _missing(paths)
            if missing:
                first = missing[0]
                of = f" (the label of {images[first]})" if kind == "label" else ""
                raise UsageError(f"{paths[first]}: {kind} not found{of}; {len(missing)} of the {len(paths)} "
                                 f"{kind}s of the {layout} {split} split missing")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor | None]:
        image_path, label_path = self.pairs[index]
        image = read_image(image_path, "torchvision" if self.transform is not None else self.pixel)
        if label_path is None:
            return image, None
        label = torch.from_numpy(self._lookup[read_label(label_path)])
        if tuple(label.shape) != tuple(image.shape[-2:]):
            raise UsageError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} pixels but its image "
                             f"{image_path} is {image.shape[-1]}x{image.shape[-2]}")
        if self.transform is not None:
            image, label = self.transform(image, label)
            if self.pixel != "torchvision":
                image = to_pixels(to_uint8_rgb(image), self.pixel)
        return image, label.long()

    @property
    def result_format(self) -> str:
        """What :meth:`result_file` writes, in words; "" when the layout has no server format."""
        return self._spec.result_format if self._spec.result_path is not None else ""

    def result_file(self, index: int, pred: Tensor | np.ndarray) -> tuple[str, bytes]:
        """The evaluation server's file of item ``index``'s prediction.

        Args:
            index (int): the item.
            pred (Tensor | ndarray): (H, W) integer class ids in 0..C-1, at the image's size.

        Returns:
            (str, bytes): the file's path relative to a results folder, and its PNG bytes
            (:meth:`Layout.result_png`).

        Raises:
            ValueError: the layout has no server format, or ``pred`` is not 2-D.
        """
        if self._spec.result_path is None:
            raise ValueError(f"the {self.layout} layout has no evaluation-server format")
        pred = pred.detach().cpu().numpy() if isinstance(pred, Tensor) else np.asarray(pred)
        image_path = self.pairs[index][0]
        if pred.ndim != 2:
            raise ValueError(f"pred must be (H, W) class ids, got shape {pred.shape}")
        return self._spec.result_path(image_path), self._spec.result_png(pred)

    def __repr__(self) -> str:
        return (f"SegmentationDataset({self.root}, {self.layout} {self.split}, {len(self)} images, "
                f"{self.num_classes} classes, pixel={self.pixel}, transform={self.transform})")


def segmentation_dataset(
    root: str | Path,
    name: str,
    *,
    pixel: str = "torchvision",
    train: bool = False,
    max_images: int = 0,
    augment: Mapping[str, Any] | None = None,
) -> SegmentationDataset:
    """The named split ``name`` (:data:`SEG_DATASETS`) under ``root``.

    Args:
        train (bool): augment with :class:`SegmentationTrainTransform`, given ``augment`` as
            keyword arguments and the layout's flip pairs; otherwise no transform.
        augment (dict | None): ``crop_size``, ``scale_range``, ``flip``, ``photometric``;
            unused unless ``train``.
    """
    layout, split = resolve_seg_split(name)
    transform = None
    if train:
        transform = SegmentationTrainTransform(flip_pairs=LAYOUTS[layout].flip_pairs, **dict(augment or {}))
    return SegmentationDataset(root, layout, split, pixel=pixel, transform=transform, max_images=max_images)
