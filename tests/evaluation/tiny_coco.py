"""A tiny COCO-format instance-segmentation set written by the tests, and outputs to score.

Three images (ids 7, 3, 12: not their indices, to catch an index used as an id) of distinct
sizes, two categories, objects in every COCO area range (small < 32^2 <= medium < 96^2 <= large),
masks as RLE and as a polygon, laid out so that no two objects overlap.
The dataset class follows fptbench.data.CocoDetection's API: dataset[i] -> (image, target),
.coco, .ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

CATEGORIES = [{"id": 1, "name": "box"}, {"id": 2, "name": "wedge"}]
CLASS_NAMES = {c["id"]: c["name"] for c in CATEGORIES}

# image id -> (height, width, [(category, x, y, w, h, kind)]); kind "rle" = filled rectangle
# stored as RLE, "poly" = right triangle stored as a polygon
LAYOUT = {
    7: (120, 160, [(1, 5, 5, 20, 20, "rle"),         # small: 400 px
                   (2, 40, 5, 50, 40, "rle"),         # medium: 2000 px
                   (1, 5, 50, 60, 60, "poly")]),      # polygon, medium
    3: (128, 144, [(1, 10, 10, 110, 90, "rle"),       # large: 9900 px
                   (2, 10, 110, 15, 15, "rle")]),     # small
    12: (112, 176, [(2, 100, 10, 50, 50, "rle"),      # medium
                    (1, 5, 70, 25, 30, "rle")]),      # small: 750 px
}
IMAGE_IDS = list(LAYOUT)


def write_tiny_coco(root: Path) -> tuple[Path, Path]:
    """Write ``root/annotations/instances_tiny.json`` and ``root/images/tiny/*.png``."""
    ann_file, img_dir = root / "annotations" / "instances_tiny.json", root / "images" / "tiny"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id, (h, w, objects) in LAYOUT.items():
        pixels = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        for category, x, y, bw, bh, kind in objects:
            if kind == "rle":
                mask = np.zeros((h, w), dtype=np.uint8)
                mask[y:y + bh, x:x + bw] = 1
                segmentation = mask_util.encode(np.asfortranarray(mask))
                segmentation["counts"] = segmentation["counts"].decode("ascii")
                bbox = [float(x), float(y), float(bw), float(bh)]
            else:
                segmentation = [[x, y, x + bw, y + bh, x, y + bh]]
                mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects(segmentation, h, w)))
                bbox = [float(v) for v in mask_util.toBbox(mask_util.encode(np.asfortranarray(mask)))]
            pixels[mask.astype(bool)] = (200, 40 + 100 * category, 90)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": bbox, "area": float(mask.sum()), "iscrowd": 0,
                                "segmentation": segmentation})
        name = f"{image_id:06d}.png"
        Image.fromarray(pixels).save(img_dir / name)
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return ann_file, img_dir


def load_coco(ann_file: Path) -> COCO:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann_file))


class TinyCocoDataset(torch.utils.data.Dataset):
    """fptbench.data.CocoDetection's evaluation API on the tiny set (RGB in [0, 1])."""

    def __init__(self, ann_file: Path, img_dir: Path):
        self.coco = load_coco(ann_file)
        self.ids = list(IMAGE_IDS)
        self.img_dir = Path(img_dir)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        pixels = np.asarray(Image.open(self.img_dir / info["file_name"]).convert("RGB"))
        image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id]))
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
        boxes[:, 2:] += boxes[:, :2]
        target = {"image_id": image_id, "boxes": boxes,
                  "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
                  "masks": torch.from_numpy(np.stack([self.coco.annToMask(a) for a in anns])),
                  "area": torch.tensor([a["area"] for a in anns]),
                  "iscrowd": torch.tensor([a["iscrowd"] for a in anns], dtype=torch.int64)}
        return image, target


def ground_truth_outputs(coco: COCO, image_id: int, *, shift: bool = False,
                         scores: list[float] | None = None) -> dict[str, torch.Tensor]:
    """The ground truth of one image as a torchvision detector output: boxes xyxy, labels,
    scores (1 unless given), masks (N, 1, H, W) float exact.

    ``shift``: every box moved right by a fifth of its width, so that its IoU with its ground
    truth is (w - w/5) / (w + w/5) = 2/3 exactly; masks stay exact.
    """
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64)
    if shift:
        boxes[:, 0] += boxes[:, 2] / 5
    boxes[:, 2:] += boxes[:, :2]
    masks = torch.from_numpy(np.stack([coco.annToMask(a) for a in anns])).float()[:, None]
    return {"boxes": boxes.float(), "labels": torch.tensor([a["category_id"] for a in anns]),
            "scores": torch.tensor(scores if scores is not None else [1.0] * len(anns)),
            "masks": masks}


def empty_outputs(coco: COCO, image_id: int) -> dict[str, torch.Tensor]:
    h, w = coco.imgs[image_id]["height"], coco.imgs[image_id]["width"]
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
            "scores": torch.zeros(0), "masks": torch.zeros(0, 1, h, w)}


def mixed_outputs(coco: COCO, image_id: int) -> dict[str, torch.Tensor]:
    """Non-trivial detections: image 7 exact, the others shifted, graded scores, plus a false
    positive (a box of category 2 in a corner) scoring 0.6 on every image."""
    n = len(coco.getAnnIds(imgIds=[image_id]))
    out = ground_truth_outputs(coco, image_id, shift=image_id != 7,
                               scores=[0.9 - 0.1 * k for k in range(n)])
    h, w = coco.imgs[image_id]["height"], coco.imgs[image_id]["width"]
    fp_mask = torch.zeros(1, 1, h, w)
    fp_mask[..., h - 12:h - 2, w - 12:w - 2] = 1.0
    return {"boxes": torch.cat([out["boxes"], torch.tensor([[w - 12.0, h - 12.0, w - 2.0, h - 2.0]])]),
            "labels": torch.cat([out["labels"], torch.tensor([2])]),
            "scores": torch.cat([out["scores"], torch.tensor([0.6])]),
            "masks": torch.cat([out["masks"], fp_mask])}
