"""The serialized dataset (records in one NumPy buffer) returns exactly the samples that the
pycocotools index gives, read here independently of fptbench.data.coco."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from fptbench.data.coco import CocoDetection, SerializedRecords
from fptbench.data.synth import write_synth


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synth(root, train=24, val=6, size=64, seed=3)
    return root


def _reference(root, split, train):
    """(image uint8, boxes, labels, masks, area, iscrowd) per item, from pycocotools alone."""
    coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
    items = []
    for img_id in sorted(coco.imgs):
        info = coco.imgs[img_id]
        h, w = info["height"], info["width"]
        anns = sorted(coco.imgToAnns.get(img_id, []), key=lambda a: a["id"])
        boxes = []
        kept = []
        for a in anns:
            x, y, bw, bh = a["bbox"]
            box = [min(max(x, 0.0), w), min(max(y, 0.0), h), min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)]
            if train and (a.get("iscrowd", 0) or box[2] - box[0] <= 1 or box[3] - box[1] <= 1
                          or coco.annToMask(a).sum() == 0):
                continue
            kept.append(a)
            boxes.append(box)
        if train and not kept:
            continue
        image = np.array(Image.open(root / "images" / split / info["file_name"]).convert("RGB"))
        masks = np.stack([coco.annToMask(a) for a in kept]) if kept else np.zeros((0, h, w), np.uint8)
        items.append((img_id, image, np.array(boxes, np.float32).reshape(-1, 4), [a["category_id"] for a in kept],
                      masks, [float(a.get("area", a["bbox"][2] * a["bbox"][3])) for a in kept],
                      [int(a.get("iscrowd", 0)) for a in kept]))
    return items


@pytest.mark.parametrize("split, train", [("train", True), ("val", False)])
def test_serialized_items_equal_the_pycocotools_reference(synth, split, train):
    ds = CocoDetection(synth, f"annotations/instances_{split}.json", f"images/{split}", train=train)
    assert (ds.coco is None) == train  # training keeps only the serialized records
    reference = _reference(synth, split, train)
    assert len(ds) == len(reference) and ds.ids == [r[0] for r in reference]
    for i, (img_id, image, boxes, labels, masks, area, iscrowd) in enumerate(reference):
        got, target = ds[i]
        assert target["image_id"] == img_id
        assert torch.equal((got * 255).round().to(torch.uint8), torch.from_numpy(image).permute(2, 0, 1))
        assert torch.equal(target["boxes"], torch.from_numpy(boxes))
        assert target["labels"].tolist() == labels and target["iscrowd"].tolist() == iscrowd
        assert torch.equal(target["masks"], torch.from_numpy(masks))
        assert target["area"].tolist() == pytest.approx(area)
        flipped, ftarget = ds[(i, True)]
        assert torch.equal(flipped, got.flip(-1)) and torch.equal(ftarget["masks"], target["masks"].flip(-1))
    # the Python-object layout (benchmarks/loader_memory.py's "before") gives the same items
    plain = CocoDetection(synth, f"annotations/instances_{split}.json", f"images/{split}", train=train, serialize=False)
    for i in range(len(ds)):
        (a, ta), (b, tb) = ds[i], plain[i]
        assert torch.equal(a, b) and all(torch.equal(ta[k], tb[k]) if torch.is_tensor(ta[k]) else ta[k] == tb[k] for k in ta)


def test_records_round_trip_and_hold_no_python_objects():
    records = [(i, f"{i}.png", {"anns": [{"bbox": [i, 2.5, 3, 4]}] * (i % 3)}) for i in range(50)]
    serialized = SerializedRecords(records)
    assert len(serialized) == 50 and [serialized[i] for i in range(50)] == records
    assert serialized[-1] == records[-1]
    with pytest.raises(IndexError):
        serialized[50]
    assert serialized[3] is not serialized[3]  # a fresh copy each time
    assert {type(v) for v in vars(serialized).values()} == {np.ndarray}
