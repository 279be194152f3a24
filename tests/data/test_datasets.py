"""COCO loading with real pycocotools on tiny annotation files written by the tests.

The fixture ``coco`` is a 3-image split whose annotations exercise every path: a polygon, a
compressed RLE, an uncompressed RLE whose box leaves the image, crowd regions, a box that is
degenerate as given and one that is degenerate only after clipping, an empty mask. Expected
masks are built here with numpy (the uncompressed RLE with an encoder written in the test), so
a decoding mistake in the dataset cannot agree with its own oracle.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image

from fptbench.config import load_config
from fptbench.data import DATASETS, CocoDetection, CocoSplit, build_dataset, coco_split, resolve_split
from fptbench.data.image import read_image, to_uint8_rgb
from fptbench.errors import UsageError

H, W = 16, 20


def column_major_runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts: run lengths of the column-major flattening, zeros first."""
    runs, current, count = [], 0, 0
    for value in mask.flatten(order="F"):
        if value == current:
            count += 1
        else:
            runs.append(count)
            current, count = value, 1
    runs.append(count)
    return runs


def pixels(height: int = H, width: int = W) -> np.ndarray:
    """(H, W, 3) uint8 with every channel distinct: R = 10x, G = 10y + 5, B = 200."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([10 * x, 10 * y + 5, np.full_like(x, 200)], axis=-1).astype(np.uint8)


# expected masks of image 1
POLY_MASK = np.zeros((H, W), np.uint8)
POLY_MASK[3:9, 2:8] = 1  # polygon (2,3)-(8,3)-(8,9)-(2,9): pixel-edge coordinates, 6 x 6 pixels
L_MASK = np.zeros((H, W), np.uint8)
L_MASK[10:15, 1:3] = 1
L_MASK[13:15, 3:7] = 1  # an L shape, compressed RLE
EDGE_MASK = np.zeros((H, W), np.uint8)
EDGE_MASK[10:15, 15:20] = 1  # at the right edge, uncompressed RLE; its bbox says width 8
CROWD_MASK = np.zeros((H, W), np.uint8)
CROWD_MASK[0:3, 10:16] = 1


def write_split(root: Path, name: str, images: list[dict], annotations: list[dict],
                categories: list[dict] | None = None) -> None:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "images" / name).mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations,
            "categories": categories or [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]}
    (root / "annotations" / f"instances_{name}.json").write_text(json.dumps(data))


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """data.root of a split ``demo``; image ids listed out of order (3, 1, 2)."""
    compressed = mask_utils.encode(np.asfortranarray(L_MASK))
    images = [
        {"id": 3, "file_name": "c.png", "height": H, "width": W},
        {"id": 1, "file_name": "a.png", "height": H, "width": W},
        {"id": 2, "file_name": "b.png", "height": H, "width": W},
    ]
    crowd = {"size": [H, W], "counts": column_major_runs(CROWD_MASK)}
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 36.0, "bbox": [2, 3, 6, 6],
         "segmentation": [[2, 3, 8, 3, 8, 9, 2, 9]]},
        {"id": 11, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 18.0, "bbox": [1, 10, 6, 5],
         "segmentation": {"size": [H, W], "counts": compressed["counts"].decode("ascii")}},
        {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 25.0, "bbox": [15, 10, 8, 5],
         "segmentation": {"size": [H, W], "counts": column_major_runs(EDGE_MASK)}},
        {"id": 13, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 18.0, "bbox": [10, 0, 6, 3],
         "segmentation": crowd},
        {"id": 14, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 4.0, "bbox": [5, 5, 1, 4],
         "segmentation": [[5, 5, 6, 5, 6, 9, 5, 9]]},  # 1 px wide: degenerate
        {"id": 15, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 0.0, "bbox": [1, 1, 3, 3],
         "segmentation": {"size": [H, W], "counts": [H * W]}},  # all zeros: empty mask
        {"id": 16, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 5.0, "bbox": [19.5, 2, 5, 5],
         "segmentation": [[19, 2, 20, 2, 20, 7, 19, 7]]},  # 0.5 px wide once clipped: degenerate
        {"id": 20, "image_id": 2, "category_id": 1, "iscrowd": 1, "area": 18.0, "bbox": [10, 0, 6, 3],
         "segmentation": crowd},  # image 2 has only a crowd region
        {"id": 30, "image_id": 3, "category_id": 2, "iscrowd": 0, "area": 30.0, "bbox": [4, 4, 10, 8],
         "segmentation": [[4, 4, 14, 4, 4, 12]]},
    ]
    write_split(tmp_path, "demo", images, annotations)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(pixels()).save(tmp_path / "images" / "demo" / name)
    return tmp_path


def open_demo(root: Path, **kwargs) -> CocoDetection:
    return CocoDetection(root, "annotations/instances_demo.json", "images/demo", **kwargs)


def test_named_splits_follow_both_layouts():
    # Fails if a named split points at the wrong file or folder (minival images live in val2014),
    # if COCO's own layout (images next to annotations/) is not a candidate after the seed's, or
    # if a test split is not its image_info file with the server's image set name.
    assert DATASETS["coco2017_val"] == CocoSplit("annotations/instances_val2017.json", ("images/val2017", "val2017"),
                                                 "val2017")
    assert DATASETS["coco2014_minival"].ann_file == "annotations/instances_minival2014.json"
    assert DATASETS["coco2014_minival"].image_dirs == DATASETS["coco2014_valminusminival"].image_dirs \
        == ("images/val2014", "val2014")
    assert DATASETS["coco2017_test-dev"] == CocoSplit("annotations/image_info_test-dev2017.json",
                                                      ("images/test2017", "test2017"), "test-dev2017")
    assert DATASETS["coco2017_test"].ann_file == "annotations/image_info_test2017.json"
    assert set(DATASETS) == {"coco2017_train", "coco2017_val", "coco2017_test-dev", "coco2017_test", "coco2014_train",
                             "coco2014_val", "coco2014_minival", "coco2014_valminusminival"}
    # another name: the seed's layout only (the synthetic set)
    assert coco_split("train") == CocoSplit("annotations/instances_train.json", ("images/train",), "train")
    assert resolve_split("train") == ("annotations/instances_train.json", "images/train")
    assert resolve_split("coco2017_train") == ("annotations/instances_train2017.json", "images/train2017")


def test_training_drops_and_counts_each_reason(coco):
    # Fails if a crowd region, a degenerate box (as given or after clipping) or an empty mask is
    # kept, if image 2 (only a crowd region) is not left out, or if a drop is not counted.
    ds = open_demo(coco, train=True)
    assert ds.skipped == Counter(crowd=2, degenerate_box=2, empty_mask=1, image_without_annotations=1)
    assert ds.ids == [1, 3]
    _, target = ds[0]
    assert target["labels"].tolist() == [1, 2, 1]  # annotations 10, 11, 12, in id order
    assert target["iscrowd"].tolist() == [0, 0, 0]


def test_evaluation_keeps_every_annotation(coco):
    # Fails if evaluation mode filters (COCOeval needs crowds and every image) or reorders ids.
    ds = open_demo(coco)
    assert ds.ids == [1, 2, 3] and not ds.skipped
    _, target = ds[0]
    assert target["iscrowd"].tolist() == [0, 0, 0, 1, 0, 0, 0]
    assert target["masks"].shape == (7, H, W)
    assert target["masks"][3].numpy().tolist() == CROWD_MASK.tolist()
    assert ds.categories == {1: "thing", 2: "other"}


def test_polygon_and_both_rle_kinds_decode_exactly(coco):
    # Fails if any of the three encodings decodes to other pixels (e.g. a transposed RLE, a
    # polygon rasterised with pixel-centre instead of pixel-edge coordinates).
    _, target = open_demo(coco, train=True)[0]
    masks = target["masks"]
    assert masks.dtype == torch.uint8 and masks.shape == (3, H, W)
    assert masks[0].numpy().tolist() == POLY_MASK.tolist()
    assert masks[1].numpy().tolist() == L_MASK.tolist()
    assert masks[2].numpy().tolist() == EDGE_MASK.tolist()


def test_target_types_and_boxes_clipped_to_the_image(coco):
    # Fails if boxes are not xyxy pixels, not clipped (annotation 12 says x + w = 23 > 20), or
    # if a field has the wrong dtype for torchvision's detector.
    _, target = open_demo(coco, train=True)[0]
    assert target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[2, 3, 8, 9], [1, 10, 7, 15], [15, 10, 20, 15]]
    assert target["labels"].dtype == torch.int64 and target["iscrowd"].dtype == torch.int64
    assert target["area"].tolist() == [36.0, 18.0, 25.0]
    assert target["image_id"] == 1 and isinstance(target["image_id"], int)


def test_flip_mirrors_image_boxes_and_masks_exactly(coco):
    # Fails if the flip is off by one pixel (x -> W - 1 - x for boxes), forgets the masks, or
    # mirrors vertically.
    ds = open_demo(coco, train=True)
    image, target = ds[0]
    flipped, ftarget = ds[(0, True)]
    assert torch.equal(flipped, image.flip(-1))
    assert ftarget["boxes"].tolist() == [[12, 3, 18, 9], [13, 10, 19, 15], [0, 10, 5, 15]]
    assert torch.equal(ftarget["masks"], target["masks"].flip(-1))
    assert ftarget["masks"][2].numpy().tolist() == EDGE_MASK[:, ::-1].tolist()
    assert torch.equal(ftarget["labels"], target["labels"])
    # the flipped box is still the tight box of the flipped mask
    ys, xs = np.nonzero(ftarget["masks"][0].numpy())
    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == ftarget["boxes"][0].tolist()


def test_pixel_conventions(coco):
    # Fails if caffe is not BGR in 0..255 or torchvision not RGB in 0..1 (a swapped channel or
    # a forgotten /255 changes every value: R = 10x, G = 10y + 5, B = 200 are all distinct).
    expected = torch.from_numpy(pixels()).permute(2, 0, 1).float()
    tv, _ = open_demo(coco)[0]
    caffe, _ = open_demo(coco, pixel="caffe")[0]
    assert tv.dtype == caffe.dtype == torch.float32
    assert torch.allclose(tv, expected / 255)
    assert torch.equal(caffe, expected[[2, 1, 0]])
    assert caffe[0, 0, 0] == 200 and caffe[2, 0, 1] == 10  # B first, R last
    for pixel, image in (("torchvision", tv), ("caffe", caffe)):
        assert torch.equal(to_uint8_rgb(image, pixel), expected.to(torch.uint8))
    with pytest.raises(UsageError, match="model.pixel"):
        open_demo(coco, pixel="bgr")


def test_max_images_keeps_the_first_sorted_ids(coco):
    # Fails if max_images counts images in file order (3, 1, 2) or, in training, counts images
    # that are then filtered out.
    assert open_demo(coco, max_images=2).ids == [1, 2]
    assert open_demo(coco, train=True, max_images=1).ids == [1]
    assert open_demo(coco, train=True, max_images=2).ids == [1, 3]


def test_missing_image_is_a_one_line_error_naming_it(coco):
    # Fails if a missing image surfaces later, in a data-loader worker, or without its path.
    (coco / "images" / "demo" / "c.png").unlink()
    with pytest.raises(UsageError) as err:
        open_demo(coco)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(coco / "images" / "demo" / "c.png") + ": image not found")


def test_malformed_json_names_file_line_and_column(tmp_path):
    # Fails if pycocotools' bare JSONDecodeError (no file name) escapes.
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "instances_demo.json"
    path.write_text('{"images": [\n  {"id": 1,, "file_name": "a.png"}]}')
    with pytest.raises(UsageError) as err:
        open_demo(tmp_path)
    assert str(err.value) == f"{path}: malformed JSON at line 2, column 12: Expecting property name enclosed in double quotes"


def test_structural_flaw_is_named(coco):
    # Fails if an annotation of an unknown image reaches pycocotools (a KeyError deep inside).
    write_split(coco, "bad", [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
                [{"id": 7, "image_id": 99, "category_id": 1, "bbox": [0, 0, 2, 2], "segmentation": []}])
    with pytest.raises(UsageError, match=r"instances_bad.json: annotations\[0\] \(id 7\): image_id 99 is not an image"):
        CocoDetection(coco, "annotations/instances_bad.json", "images/bad")


def test_undecodable_segmentation_is_named(coco):
    # Fails if an RLE of the wrong size is decoded silently into a wrongly shaped mask.
    write_split(coco, "bad", [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
                [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2],
                  "segmentation": {"size": [W, H], "counts": [H * W]}}])
    with pytest.raises(UsageError, match=r"instances_bad.json: annotation id 7: cannot decode .* RLE size"):
        CocoDetection(coco, "annotations/instances_bad.json", "images/bad", train=True)


def test_image_size_must_match_the_annotations(coco):
    # Fails if an image of another size is returned with masks of the annotated size.
    Image.fromarray(pixels(H, W + 1)).save(coco / "images" / "demo" / "a.png")
    ds = open_demo(coco)
    with pytest.raises(UsageError, match=r"a.png: image is 21x16 pixels but .* says 20x16"):
        ds[0]


def test_read_image_errors_name_the_file(tmp_path):
    # Fails if PIL's own exception (no hint that it is our input) escapes.
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(UsageError, match="x.png: cannot read the image"):
        read_image(bad)
    with pytest.raises(UsageError, match="y.png: image not found"):
        read_image(tmp_path / "y.png")


def test_build_dataset_names_the_config_keys(tmp_path):
    # Fails if the error does not say which config keys led to the missing file.
    cfg = load_config("synth_r18_bfp", {"data.root": str(tmp_path / "coco"), "data.test": "coco2017_val"})
    with pytest.raises(UsageError) as err:
        build_dataset(cfg, "test")
    root = tmp_path / "coco"
    assert str(err.value) == (f"{root}/annotations/instances_val2017.json: not found "
                              f"(data.root={root}, data.test=coco2017_val)")


def test_build_dataset_reads_the_config(tmp_path):
    # Fails if DEBUG does not cap the split at 8 images, if data.max_images does not win over
    # it, if model.pixel is ignored, or if "train" does not turn the training filter on (here:
    # every image is empty, so training has none: a one-line error, not an empty run).
    images = [{"id": i, "file_name": f"{i}.png", "height": 4, "width": 6} for i in range(1, 11)]
    write_split(tmp_path, "tiny", images, [])
    for i in range(1, 11):
        Image.fromarray(pixels(4, 6)).save(tmp_path / "images" / "tiny" / f"{i}.png")
    base = {"data.root": str(tmp_path), "data.train": "tiny", "data.test": "tiny"}
    assert len(build_dataset(load_config("synth_r18_bfp", base), "test")) == 10
    debug = build_dataset(load_config("synth_r18_bfp", {**base, "DEBUG": True, "model.pixel": "caffe"}), "test")
    assert debug.ids == list(range(1, 9)) and debug.pixel == "caffe" and not debug.train
    assert len(build_dataset(load_config("synth_r18_bfp", {**base, "DEBUG": True, "data.max_images": 3}), "test")) == 3
    with pytest.raises(UsageError, match=r"instances_tiny.json: no images to train on \(dropped: "
                                         r"image_without_annotations=10\) \(data.root=.*, data.train=tiny\)"):
        build_dataset(load_config("synth_r18_bfp", base), "train")
    image, target = debug[0]  # an image without annotations: empty, well-shaped target
    assert image.shape == (3, 4, 6)
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 4, 6) and target["labels"].shape == (0,)


# -- image sizes for aspect-ratio grouping ------------------------------------------------------

def test_image_sizes_follow_the_items_without_reading_them(tmp_path, monkeypatch):
    # Fails if a size is (width, height), if the sizes are in file order (ids listed 9, 4, 6) or
    # keep an image the training filter dropped (id 6 has only a crowd region), or if reading
    # them unpickles records or opens images (the cheapness the sampler relies on).
    images = [{"id": 9, "file_name": "tall.png", "height": 12, "width": 5},
              {"id": 4, "file_name": "wide.png", "height": 4, "width": 10},
              {"id": 6, "file_name": "crowd.png", "height": 7, "width": 7}]
    box = {"iscrowd": 0, "area": 9.0, "bbox": [1, 1, 3, 3], "segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]]}
    annotations = [{"id": 1, "image_id": 9, "category_id": 1, **box}, {"id": 2, "image_id": 4, "category_id": 2, **box},
                   {"id": 3, "image_id": 6, "category_id": 1, **box, "iscrowd": 1}]
    write_split(tmp_path, "sizes", images, annotations)
    for info in images:
        Image.fromarray(pixels(info["height"], info["width"])).save(tmp_path / "images" / "sizes" / info["file_name"])
    args = (tmp_path, "annotations/instances_sizes.json", "images/sizes")
    test, train = CocoDetection(*args), CocoDetection(*args, train=True)
    assert test.ids == [4, 6, 9] and test.image_sizes == [(4, 10), (7, 7), (12, 5)]
    assert train.ids == [4, 9] and train.image_sizes == [(4, 10), (12, 5)]
    assert all(type(v) is int for size in train.image_sizes for v in size)
    for ds in (test, train, CocoDetection(*args, train=True, serialize=False)):
        assert [tuple(ds[i][0].shape[-2:]) for i in range(len(ds))] == ds.image_sizes
    # nothing is unpickled or decoded to answer
    from fptbench.data import coco as coco_module

    def refuse(*_args, **_kwargs):
        raise AssertionError("image_sizes read an item")

    monkeypatch.setattr(coco_module.SerializedRecords, "__getitem__", refuse)
    monkeypatch.setattr(coco_module, "read_image", refuse)
    assert train.image_sizes == [(4, 10), (12, 5)]


# -- COCO's own layout and splits without annotations ------------------------------------------

TINY_IMAGES = [{"id": 5, "file_name": "000005.png", "height": 4, "width": 6},
               {"id": 2, "file_name": "000002.png", "height": 4, "width": 6}]


def coco_tree(root: Path, ann_name: str, folders: list[str], *, annotations: bool = True) -> Path:
    """data.root with ``annotations/{ann_name}`` (two images, one box; no ``annotations`` key
    when not ``annotations``, as COCO's image_info files) and the images in each of ``folders``."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    data = {"info": {"description": "fake"}, "images": TINY_IMAGES,
            "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]}
    if annotations:
        data["annotations"] = [{"id": 1, "image_id": 5, "category_id": 1, "iscrowd": 0, "area": 4.0,
                                "bbox": [1, 1, 2, 2], "segmentation": [[1, 1, 3, 1, 3, 3, 1, 3]]}]
    (root / "annotations" / ann_name).write_text(json.dumps(data))
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for info in TINY_IMAGES:
            Image.fromarray(pixels(4, 6)).save(root / folder / info["file_name"])
    return root


def coco_cfg(root: Path, **overrides):
    return load_config("synth_r18_bfp", {"data.root": str(root), "model.backbone_pretrain": "", **overrides})


def test_named_split_in_cocos_own_layout(tmp_path):
    # Fails if a named split only looks in images/val2017 (COCO's archives unpack to val2017/).
    root = coco_tree(tmp_path, "instances_val2017.json", ["val2017"])
    ds = build_dataset(coco_cfg(root, **{"data.test": "coco2017_val"}), "test")
    assert ds.img_dir == root / "val2017" and ds.ids == [2, 5] and ds.annotated
    assert ds[1][1]["boxes"].tolist() == [[1, 1, 3, 3]]


def test_the_seeds_layout_wins_when_both_exist(tmp_path):
    # Fails if COCO's layout is preferred, or if the choice depends on listing order.
    root = coco_tree(tmp_path, "instances_val2017.json", ["val2017", "images/val2017"])
    assert build_dataset(coco_cfg(root, **{"data.test": "coco2017_val"}), "test").img_dir == root / "images" / "val2017"


def test_no_image_folder_names_both_candidates(tmp_path):
    # Fails if the message names one layout only, or spans lines.
    root = coco_tree(tmp_path, "instances_val2017.json", [])
    with pytest.raises(UsageError) as err:
        build_dataset(coco_cfg(root, **{"data.test": "coco2017_val"}), "test")
    assert str(err.value) == (f"image folder not found: neither {root}/images/val2017 nor {root}/val2017 exists "
                              f"(images of {root}/annotations/instances_val2017.json) "
                              f"(data.root={root}, data.test=coco2017_val)")
    # an unnamed split has one candidate: the message of a single folder
    write_split(tmp_path, "mine", TINY_IMAGES, [])
    (tmp_path / "images" / "mine").rmdir()
    with pytest.raises(UsageError, match=rf"^{tmp_path}/images/mine: image folder not found \(images of "):
        build_dataset(coco_cfg(root, **{"data.test": "mine"}), "test")


def test_test_dev_image_info_is_evaluated_not_trained_on(tmp_path):
    # COCO test-dev: annotations/image_info_test-dev2017.json (images and categories, no
    # "annotations") with its images in test2017/. Fails if the file is refused for evaluation,
    # if its items are not empty targets with their ids, or if training on it is anything but a
    # one-line error naming the file.
    root = coco_tree(tmp_path, "image_info_test-dev2017.json", ["test2017"], annotations=False)
    ds = build_dataset(coco_cfg(root, **{"data.test": "coco2017_test-dev"}), "test")
    assert not ds.annotated and ds.ids == [2, 5] and ds.img_dir == root / "test2017"
    assert "annotations" not in ds.coco.dataset and ds.categories == {1: "thing", 2: "other"}
    image, target = ds[1]
    assert image.shape == (3, 4, 6) and target["image_id"] == 5
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 4, 6)
    with pytest.raises(UsageError) as err:
        build_dataset(coco_cfg(root, **{"data.train": "coco2017_test-dev"}), "train")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{root}/annotations/image_info_test-dev2017.json: no 'annotations' (images only")
    assert message.endswith("(data.root=" + str(root) + ", data.train=coco2017_test-dev)")


def test_annotations_present_but_malformed_is_still_an_error(tmp_path):
    # Fails if accepting image_info files made a broken "annotations" pass as absent.
    write_split(tmp_path, "bad", TINY_IMAGES, [])
    path = tmp_path / "annotations" / "instances_bad.json"
    data = json.loads(path.read_text())
    data["annotations"] = None
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError, match=r"instances_bad.json: 'annotations' must be a list \(NoneType\)$"):
        CocoDetection(tmp_path, "annotations/instances_bad.json", "images/bad")
