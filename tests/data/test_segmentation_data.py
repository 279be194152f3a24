"""Segmentation data: each layout on a tiny fake tree, the label maps, the one-line file errors,
the joint training transform, and the synthetic set's label maps against the detection masks.

Fake trees hold a few PNG/JPEG files of 6 x 8 pixels written here with PIL; expected labels are
written out by hand from the datasets' documentation (Cityscapes' labels.py, ADE20K's 0 =
"other"), not computed with the module's own tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fptbench.data import CocoDetection
from fptbench.data.image import PIXEL_STATS, read_image
from fptbench.data.segmentation import (
    IGNORE_INDEX,
    LAYOUTS,
    SEG_DATASETS,
    SegmentationDataset,
    SegmentationTrainTransform,
    resolve_seg_split,
    segmentation_dataset,
)
from fptbench.data.synth import CATEGORIES, NUM_CLASSES, seg_summary_line, write_synth, write_synth_seg
from fptbench.errors import UsageError

H, W = 6, 8


def rgb(seed: int, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path: Path, array: np.ndarray, palette: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette:  # VOC's labels: indices with a colour table
        image = image.convert("P")
        image.putpalette([(i * 37) % 256 for i in range(768)])
        image.putdata(array.reshape(-1).tolist())
    image.save(path)
    return path


def labels(values: list[int]) -> np.ndarray:
    """(H, W) uint8 whose first row holds ``values`` (the rest 0)."""
    out = np.zeros((H, W), dtype=np.uint8)
    out[0, : len(values)] = values
    return out


# -- Cityscapes --------------------------------------------------------------------------------

def cityscapes(root: Path) -> None:
    for split, city, stem in (("train", "bochum", "bochum_000000_000313"), ("train", "aachen", "aachen_000000_000019"),
                              ("val", "lindau", "lindau_000000_000019")):
        save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", rgb(len(stem) + len(city)))
        # 26 car, 7 road, 0 unlabeled, 33 bicycle, 255 (license plate's -1), 6 ground (void), 24 person, 11 building
        save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", labels([26, 7, 0, 33, 255, 6, 24, 11]))


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    cityscapes(tmp_path)
    ds = SegmentationDataset(tmp_path, "cityscapes", "train")
    assert ds.num_classes == 19 and ds.classes[13] == "car"
    assert [p[0].name for p in ds.pairs] == ["aachen_000000_000019_leftImg8bit.png", "bochum_000000_000313_leftImg8bit.png"]
    image, label = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    assert torch.equal(image, read_image(ds.pairs[0][0]))
    assert label.dtype == torch.int64 and label.shape == (H, W)
    assert label[0].tolist() == [13, 0, 255, 18, 255, 255, 11, 2]
    assert (label[1:] == 255).all()  # labelId 0 = unlabeled
    assert len(SegmentationDataset(tmp_path, "cityscapes", "val")) == 1


def test_missing_label_is_one_line_naming_the_file(tmp_path):
    cityscapes(tmp_path)
    gone = tmp_path / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png"
    gone.unlink()
    with pytest.raises(UsageError) as err:
        SegmentationDataset(tmp_path, "cityscapes", "train")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{gone}: label not found (the label of {tmp_path}/leftImg8bit/train/bochum/")
    assert "1 of the 2 labels" in message


def test_size_mismatch_and_colour_label_name_the_file(tmp_path):
    cityscapes(tmp_path)
    label = tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    save(label, np.zeros((H, W + 1), dtype=np.uint8))
    ds = SegmentationDataset(tmp_path, "cityscapes", "train")
    with pytest.raises(UsageError, match=f"^{label}: label is 9x6 pixels but its image .*aachen.* is 8x6$"):
        ds[0]
    save(label, rgb(0))  # a colour rendering instead of the ids
    with pytest.raises(UsageError, match=f"^{label}: a label must be a one-channel image .* got mode RGB$"):
        ds[0]


def test_missing_split_folder_and_unknown_names(tmp_path):
    with pytest.raises(UsageError, match=f"^{tmp_path}/leftImg8bit/train: folder not found"):
        SegmentationDataset(tmp_path, "cityscapes", "train")
    with pytest.raises(UsageError, match="no split 'testing'"):
        SegmentationDataset(tmp_path, "cityscapes", "testing")
    with pytest.raises(UsageError, match="'coco' is not a segmentation split .*cityscapes_train"):
        resolve_seg_split("coco")
    assert resolve_seg_split("voc2012_train_aug") == ("voc2012", "train_aug")
    assert resolve_seg_split("synth_seg_val") == ("synth", "val")
    assert {layout for layout, _ in SEG_DATASETS.values()} == set(LAYOUTS)


# -- VOC 2012 ----------------------------------------------------------------------------------

def voc(root: Path) -> Path:
    base = root / "VOCdevkit/VOC2012"
    for k, name in enumerate(("2007_000032", "2007_000039", "2007_000063")):
        save(base / "JPEGImages" / f"{name}.jpg", rgb(k))
        save(base / "SegmentationClass" / f"{name}.png", labels([0, 15, 255, 20, k]), palette=True)
    (base / "ImageSets/Segmentation").mkdir(parents=True)
    (base / "ImageSets/Segmentation/train.txt").write_text("2007_000032\n2007_000039\n")
    (base / "ImageSets/Segmentation/val.txt").write_text("2007_000063\n")
    return base


def test_voc_palette_indices_and_lists(tmp_path):
    voc(tmp_path)
    ds = SegmentationDataset(tmp_path, "voc2012", "train")
    assert ds.num_classes == 21 and ds.classes[15] == "person"
    assert [p[0].stem for p in ds.pairs] == ["2007_000032", "2007_000039"]
    image, label = ds[1]
    assert image.shape == (3, H, W)
    assert label[0, :5].tolist() == [0, 15, 255, 20, 1]  # the palette's indices, not its colours
    assert len(SegmentationDataset(tmp_path, "voc2012", "val")) == 1


def test_voc_listed_image_missing(tmp_path):
    base = voc(tmp_path)
    (base / "JPEGImages/2007_000039.jpg").unlink()
    with pytest.raises(UsageError, match=f"^{base}/JPEGImages/2007_000039.jpg: image not found; 1 of the 2 images"):
        SegmentationDataset(tmp_path, "voc2012", "train")


def test_voc_train_aug(tmp_path):
    base = voc(tmp_path)
    with pytest.raises(UsageError, match=f"^{base}/SegmentationClassAug: folder not found .*train_aug"):
        segmentation_dataset(tmp_path, "voc2012_train_aug")
    # SBD labels: one for a train image (differs from VOC's: VOC's is kept), one for a val image
    # (left out), one for an image only SBD has
    save(base / "SegmentationClassAug/2007_000032.png", labels([9, 9, 9]))
    save(base / "SegmentationClassAug/2007_000063.png", labels([9, 9, 9]))
    save(base / "SegmentationClassAug/2008_000002.png", labels([3, 4]))
    save(base / "JPEGImages/2008_000002.jpg", rgb(7))
    ds = segmentation_dataset(tmp_path, "voc2012_train_aug")
    assert [p[0].stem for p in ds.pairs] == ["2007_000032", "2007_000039", "2008_000002"]
    assert ds[0][1][0, :3].tolist() == [0, 15, 255]
    assert ds[2][1][0, :3].tolist() == [3, 4, 0]


# -- test splits without labels, and the servers' files -------------------------------------------

def png(data: bytes) -> Image.Image:
    import io

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_cityscapes_test_has_no_labels_and_writes_label_ids(tmp_path):
    # Cityscapes test: images only (gtFine/test holds placeholders; none here). Fails if the
    # split is refused for want of labels, if an item invents a label, if training on it is not
    # a one-line error, or if a prediction is written in trainIds (the server reads labelIds:
    # car 13 -> 26, road 0 -> 7, bicycle 18 -> 33, sky 10 -> 23; cityscapesScripts' labels.py)
    # or under another name than its image's.
    for city, stem in (("berlin", "berlin_000000_000019"), ("bonn", "bonn_000001_000019")):
        save(tmp_path / "leftImg8bit" / "test" / city / f"{stem}_leftImg8bit.png", rgb(len(city)))
    ds = segmentation_dataset(tmp_path, "cityscapes_test")
    assert not ds.labelled and [p[1] for p in ds.pairs] == [None, None]
    image, label = ds[0]
    assert image.shape == (3, H, W) and label is None
    assert ds.result_format.startswith("Cityscapes labelIds")
    pred = torch.zeros((H, W), dtype=torch.int64)
    pred[0, :4] = torch.tensor([13, 0, 18, 10])
    name, data = ds.result_file(1, pred)
    assert name == "bonn_000001_000019_leftImg8bit.png"
    written = png(data)
    assert written.mode == "L" and written.size == (W, H)
    values = np.asarray(written)
    assert values[0, :4].tolist() == [26, 7, 33, 23] and (values[1:] == 7).all()
    with pytest.raises(UsageError) as err:
        segmentation_dataset(tmp_path, "cityscapes_test", train=True, augment={"crop_size": 4})
    assert str(err.value).startswith("cityscapes test: the split has no labels") and "\n" not in str(err.value)
    assert SEG_DATASETS["cityscapes_test"] == ("cityscapes", "test")


def test_voc_test_writes_palette_indices_named_by_id(tmp_path):
    # VOC 2012 test: ids of ImageSets/Segmentation/test.txt in JPEGImages/, no labels. Fails if a
    # prediction is not a palette PNG of the class indices (the server reads the indices) with
    # the VOC colour map (aeroplane (128, 0, 0), person (192, 128, 128), tvmonitor (0, 64, 128):
    # the devkit's colours), or not results/VOC2012/Segmentation/comp6_test_cls/{id}.png.
    base = voc(tmp_path)
    save(base / "JPEGImages/2008_000001.jpg", rgb(9))
    (base / "ImageSets/Segmentation/test.txt").write_text("2008_000001\n")
    ds = segmentation_dataset(tmp_path, "voc2012_test")
    assert not ds.labelled and len(ds) == 1 and ds[0][1] is None
    pred = np.zeros((H, W), dtype=np.int64)
    pred[0, :3] = [1, 15, 20]
    name, data = ds.result_file(0, pred)
    assert name == "results/VOC2012/Segmentation/comp6_test_cls/2008_000001.png"
    written = png(data)
    assert written.mode == "P" and written.size == (W, H)
    assert np.asarray(written)[0, :4].tolist() == [1, 15, 20, 0]
    colours = np.asarray(written.convert("RGB"))[0, :4].tolist()
    assert colours == [[128, 0, 0], [192, 128, 128], [0, 64, 128], [0, 0, 0]]
    # a labelled split of the same layout is unchanged, and a layout without a server format says so
    assert SegmentationDataset(tmp_path, "voc2012", "val").labelled
    save(tmp_path / "ADEChallengeData2016/images/validation/a.jpg", rgb(1))
    save(tmp_path / "ADEChallengeData2016/annotations/validation/a.png", labels([1]))
    ade = segmentation_dataset(tmp_path, "ade20k_val")
    assert ade.result_format == ""
    with pytest.raises(ValueError, match="no evaluation-server format"):
        ade.result_file(0, pred)


# -- ADE20K, LIP -------------------------------------------------------------------------------

def test_ade20k_zero_is_ignored_and_ids_shift(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    save(base / "images/validation/ADE_val_00000001.jpg", rgb(1))
    save(base / "annotations/validation/ADE_val_00000001.png", labels([0, 1, 150, 151, 13]))
    ds = segmentation_dataset(tmp_path, "ade20k_val")
    assert ds.num_classes == 150 and ds.classes[0] == "wall" and ds.classes[149] == "flag"
    label = ds[0][1]
    assert label[0, :5].tolist() == [255, 0, 149, 255, 12]
    assert (label[1:] == 255).all()
    with pytest.raises(UsageError, match="ADEChallengeData2016/images/training: folder not found"):
        segmentation_dataset(tmp_path, "ade20k_train")


def lip(root: Path, values: np.ndarray) -> None:
    save(root / "TrainVal_images/train_images/100034_483681.jpg", rgb(2))
    save(root / "TrainVal_parsing_annotations/train_segmentations/100034_483681.png", values)


def test_lip_layout_and_flip_swaps_left_and_right(tmp_path):
    values = np.zeros((H, W), dtype=np.uint8)
    values[:, 0] = 14  # left arm on the left border
    values[:, 1] = 19  # right shoe next to it
    values[:, 2] = 5
    lip(tmp_path, values)
    plain = segmentation_dataset(tmp_path, "lip_train")
    assert plain.num_classes == 20 and plain.classes[14] == "left-arm"
    assert torch.equal(plain[0][1], torch.from_numpy(values).long())
    ds = segmentation_dataset(tmp_path, "lip_train", train=True, augment={"crop_size": (H, W), "scale_range": (1, 1)})
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        label = ds[0][1]
        if label[0, 0] == 0:  # flipped: the arm went to the right border and became a right arm
            assert label[0, -3:].tolist() == [5, 18, 15]
            seen.add("flipped")
        else:
            assert label[0, :3].tolist() == [14, 19, 5]
            seen.add("plain")
    assert seen == {"flipped", "plain"}


# -- training transform ------------------------------------------------------------------------

def test_crop_padding_uses_the_mean_and_the_ignore_index():
    image = torch.rand(3, H, W)
    label = torch.randint(0, 5, (H, W), dtype=torch.uint8)
    out_image, out_label = SegmentationTrainTransform(crop_size=(10, 12), scale_range=(1, 1), flip=False)(image, label)
    assert out_image.shape == (3, 10, 12) and out_label.shape == (10, 12)
    assert torch.equal(out_image[:, :H, :W], image) and torch.equal(out_label[:H, :W], label)
    padded = torch.ones(10, 12, dtype=torch.bool)
    padded[:H, :W] = False
    assert (out_label[padded] == IGNORE_INDEX).all()
    mean = torch.tensor(PIXEL_STATS["torchvision"][0])
    assert torch.allclose(out_image[:, padded], mean[:, None].expand(3, int(padded.sum())))


def test_crop_and_flip_move_image_and_label_together():
    # The label holds each pixel's position (8 * row + column) and the image's red channel the
    # same number: after any crop and flip the two must still agree pixel for pixel, and both
    # orientations must occur.
    label = torch.arange(H * W, dtype=torch.uint8).reshape(H, W)
    image = torch.stack([label.float() * 5 / 255, torch.rand(H, W), torch.rand(H, W)])
    transform = SegmentationTrainTransform(crop_size=(4, 5), scale_range=(1, 1))
    orientations, tops = set(), set()
    for seed in range(16):
        torch.manual_seed(seed)
        out_image, out_label = transform(image, label)
        assert out_label.shape == (4, 5)
        assert torch.equal((out_image[0] * 255 / 5).round().to(torch.uint8), out_label)
        step = int(out_label[0, 1]) - int(out_label[0, 0])
        assert step in (1, -1) and int(out_label[1, 0]) - int(out_label[0, 0]) == W
        orientations.add(step)
        tops.add(int(out_label[0, 0]) // W)
    assert orientations == {1, -1} and len(tops) > 1


def test_scaled_labels_keep_their_values():
    # Nearest-neighbour resizing: no value between two classes ever appears.
    torch.manual_seed(0)
    label = torch.tensor([0, 3, 7, 255], dtype=torch.uint8)[torch.randint(0, 4, (H, W))]
    transform = SegmentationTrainTransform(crop_size=9, scale_range=(0.3, 1.7), photometric=True)
    sizes = set()
    for _ in range(20):
        image, out = transform(torch.rand(3, H, W), label)
        assert image.shape == (3, 9, 9) and out.shape == (9, 9)
        assert set(out.unique().tolist()) <= {0, 3, 7, 255}
        sizes.add(int((out != 255).sum()))  # pixels of the scaled image inside the crop
    assert len(sizes) > 3  # the scale did vary


def test_photometric_changes_the_image_only():
    torch.manual_seed(0)
    image, label = torch.rand(3, H, W), torch.randint(0, 5, (H, W), dtype=torch.uint8)
    transform = SegmentationTrainTransform(crop_size=(H, W), scale_range=(1, 1), flip=False, photometric=True)
    out_image, out_label = transform(image, label)
    assert torch.equal(out_label, label)
    assert not torch.allclose(out_image, image) and 0 <= out_image.min() and out_image.max() <= 1


def test_train_items_in_the_caffe_convention(tmp_path):
    cityscapes(tmp_path)
    ds = segmentation_dataset(tmp_path, "cityscapes_train", pixel="caffe", train=True,
                              augment={"crop_size": (H, W), "scale_range": (1, 1), "flip": False})
    image, _ = ds[0]
    assert torch.equal(image, read_image(ds.pairs[0][0], "caffe"))  # BGR 0..255, exactly the file's


# -- synthetic segmentation set ----------------------------------------------------------------

@pytest.fixture(scope="module")
def synth_pair(tmp_path_factory) -> tuple[Path, Path, dict]:
    det, seg = tmp_path_factory.mktemp("det"), tmp_path_factory.mktemp("seg")
    write_synth(det, train=8, val=2, size=128, seed=0)
    return det, seg, write_synth_seg(seg, train=8, val=2, size=128, seed=0)


def test_synth_seg_images_are_the_detection_images(synth_pair):
    det, seg, _ = synth_pair
    for split, count in (("train", 8), ("val", 2)):
        names = sorted(p.name for p in (seg / "images" / split).iterdir())
        assert names == [f"{k:06d}.png" for k in range(1, count + 1)]
        for name in names:
            assert (seg / "images" / split / name).read_bytes() == (det / "images" / split / name).read_bytes()


def test_synth_seg_labels_agree_with_the_instance_masks(synth_pair):
    # Each COCO mask is the visible part of its object (what later objects left uncovered): its
    # pixels must carry its class, and pixels of no mask the background. Occluded objects and
    # dots on squares/discs make the painting order matter.
    det, seg, _ = synth_pair
    coco = CocoDetection(det, "annotations/instances_train.json", "images/train")
    ds = segmentation_dataset(seg, "synth_seg_train")
    assert len(ds) == len(coco) == 8
    occluded = 0
    for k in range(len(ds)):
        image, label = ds[k]
        det_image, target = coco[k]
        assert torch.equal(image, det_image)
        covered = torch.zeros_like(label, dtype=torch.bool)
        for mask, category in zip(target["masks"].bool(), target["labels"]):
            assert (label[mask] == category).all()
            covered |= mask
        assert (label[~covered] == 0).all()
        occluded += sum(a["visible"] < 1 for a in coco.coco.imgToAnns[coco.ids[k]])
    assert occluded > 0


def test_synth_seg_summary_and_classes(synth_pair):
    _, seg, summary = synth_pair
    classes = ["background"] + [c["name"] for c in CATEGORIES]
    assert summary["classes"] == classes and summary["num_classes"] == NUM_CLASSES
    assert json.loads((seg / "classes.json").read_text())["classes"] == classes
    ds = segmentation_dataset(seg, "synth_seg_val")
    assert list(ds.classes) == classes
    counts = torch.zeros(NUM_CLASSES, dtype=torch.int64)
    for _, label in ds:
        counts += torch.bincount(label.reshape(-1), minlength=NUM_CLASSES)
    assert counts.tolist() == list(summary["splits"]["val"]["pixels"].values())
    assert seg_summary_line(summary).startswith("wrote 8 train + 2 val label maps (8 classes")


def test_synth_seg_bad_argument(tmp_path):
    with pytest.raises(UsageError, match="--size expects an integer in 64..4096"):
        write_synth_seg(tmp_path, size=8)


def test_both_synthetic_sets_share_a_folder_with_the_same_arguments(tmp_path):
    # The synth_seg configs' data.root is the detection set's folder (their trunk pre-trains on its
    # annotations): the labels go beside it, over the same images, and other arguments are refused.
    root = tmp_path / "synth"
    write_synth(root, train=3, val=1, size=64, seed=0)
    images = {p: p.read_bytes() for p in sorted((root / "images").rglob("*.png"))}
    annotations = (root / "annotations" / "instances_train.json").read_bytes()
    write_synth_seg(root, train=3, val=1, size=64, seed=0)
    assert {p: p.read_bytes() for p in sorted((root / "images").rglob("*.png"))} == images
    assert len(segmentation_dataset(root, "synth_seg_train")) == 3
    write_synth(root, train=3, val=1, size=64, seed=0)  # again, over both: allowed, the same bytes
    assert (root / "annotations" / "instances_train.json").read_bytes() == annotations
    for kwargs, named in (({"seed": 1}, "--seed 0"), ({"size": 96}, "--size 64"), ({"train": 5}, "--train 3")):
        with pytest.raises(UsageError) as err:
            write_synth_seg(root, **{"train": 3, "val": 1, "size": 64, "seed": 0, **kwargs})
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{root}: holds the synthetic detection set") and named in message
        with pytest.raises(UsageError, match=f"holds the synthetic segmentation labels .*{named}"):
            write_synth(root, **{"train": 3, "val": 1, "size": 64, "seed": 0, **kwargs})
    assert {p: p.read_bytes() for p in sorted((root / "images").rglob("*.png"))} == images  # untouched
