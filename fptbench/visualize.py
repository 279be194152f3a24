"""Draw a detector's boxes, masks, class names and scores on a folder of images.

The seed's ``infer_simple.py``, with torchvision's drawing utilities
(``draw_segmentation_masks``, ``draw_bounding_boxes``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import torch
from PIL import Image
from torch import nn
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks
from tqdm import tqdm

from fptbench.data.image import read_image, to_pixels, to_uint8_rgb
from fptbench.errors import UsageError
from fptbench.evaluation.coco_evaluator import masks_to_rle
from fptbench.fileio import write_bytes_atomic, write_json_atomic

__all__ = ["IMAGE_SUFFIXES", "PALETTE", "infer_images", "list_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# colours by class id (label % len): Detectron's first twelve, distinct on photographs
PALETTE = [(0, 114, 189), (217, 83, 25), (237, 177, 32), (126, 47, 142), (119, 172, 48),
           (77, 190, 238), (162, 20, 47), (76, 76, 76), (255, 0, 0), (255, 128, 0),
           (191, 191, 0), (0, 255, 0)]


def list_images(image_dir: str | Path) -> list[Path]:
    """The .png/.jpg/.jpeg files directly in ``image_dir``, sorted by name.

    Raises:
        UsageError: the folder does not exist or holds no such image.
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise UsageError(f"image folder not found: {image_dir}")
    files = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def _png_bytes(image: torch.Tensor) -> bytes:
    """uint8 RGB (3, H, W) -> PNG file content (Pillow: torchvision.io's codecs are deprecated)."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def _output_names(files: list[Path]) -> list[str]:
    """``a.jpg -> a.png``; two inputs with one stem (``a.jpg``, ``a.png``) -> ``a_jpg.png``, ``a_png.png``."""
    stems = [f.stem for f in files]
    return [f"{f.stem}.png" if stems.count(f.stem) == 1 else f"{f.stem}_{f.suffix[1:].lower()}.png"
            for f in files]


def infer_images(
    model: nn.Module,
    image_dir: str | Path,
    out_dir: str | Path,
    *,
    class_names: Mapping[int, str],
    threshold: float = 0.5,
    device: torch.device | str = "cpu",
    pixel: str = "torchvision",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Detect objects in every image of ``image_dir`` and save them drawn, plus a JSON.

    Args:
        model (nn.Module): a torchvision ``GeneralizedRCNN`` on ``device`` (put in eval mode).
        image_dir: folder of .png/.jpg/.jpeg images (not searched recursively), taken sorted.
        out_dir: receives ``<stem>.png`` per image (boxes, masks, ``"<class> <score>"`` drawn)
            and ``detections.json``; created if needed. Must not be ``image_dir``.
        class_names (dict[int, str]): label -> name; a label missing here is shown as its number.
        threshold (float): detections scoring below this are neither drawn nor listed.
        device: where the model runs.
        pixel (str): the model's pixel convention, ``torchvision`` or ``caffe`` (``model.pixel``).
        progress (bool): tqdm bar.

    Returns:
        list[dict]: per image, ``{"file", "output", "width", "height", "detections": [{"label",
        "class", "score", "box" (xyxy pixels), "segmentation" (COCO RLE, Mask R-CNN only)}]}``,
        the ``images`` list of ``detections.json``.

    Raises:
        UsageError: missing or empty ``image_dir``, an unreadable image, a bad threshold or pixel.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise UsageError(f"threshold: {threshold} is not in [0, 1]")
    to_pixels(torch.zeros(3, 1, 1, dtype=torch.uint8), pixel)  # checks pixel before any work
    files = list_images(image_dir)
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(image_dir).resolve():
        raise UsageError(f"output folder {out_dir} is the image folder: the drawings would overwrite the images")
    names = _output_names(files)

    was_training = model.training
    model.eval()
    images_out: list[dict[str, Any]] = []
    try:
        for path, name in tqdm(list(zip(files, names)), desc="infer", unit="img", disable=not progress,
                               dynamic_ncols=True):
            image = to_uint8_rgb(read_image(path))  # exact: x / 255 comes back to x
            with torch.inference_mode():
                output = model([to_pixels(image, pixel).to(device)])[0]
            output = {k: v.detach().cpu() for k, v in output.items()}
            keep = output["scores"] >= threshold
            output = {k: v[keep] for k, v in output.items()}
            write_bytes_atomic(out_dir / name, _png_bytes(_draw(image, output, class_names)))
            images_out.append({"file": path.name, "output": name, "width": int(image.shape[2]),
                               "height": int(image.shape[1]),
                               "detections": _detections(output, class_names)})
    finally:
        model.train(was_training)
    write_json_atomic(out_dir / "detections.json",
                      {"threshold": float(threshold), "image_dir": str(image_dir), "images": images_out})
    return images_out


def _class_name(class_names: Mapping[int, str], label: int) -> str:
    return class_names.get(label, str(label))


def _draw(image: torch.Tensor, output: Mapping[str, torch.Tensor], class_names: Mapping[int, str]) -> torch.Tensor:
    """uint8 (3, H, W) with masks (alpha 0.5) then boxes and ``"<class> <score>"`` labels drawn."""
    labels = output["labels"].tolist()
    if not labels:
        return image  # nothing above the threshold: the image unchanged (torchvision would warn)
    colors = [PALETTE[label % len(PALETTE)] for label in labels]
    if "masks" in output:
        image = draw_segmentation_masks(image, output["masks"][:, 0] > 0.5, alpha=0.5, colors=colors)
    texts = [f"{_class_name(class_names, label)} {score:.2f}"
             for label, score in zip(labels, output["scores"].tolist())]
    return draw_bounding_boxes(image, output["boxes"], labels=texts, colors=colors, width=2)


def _detections(output: Mapping[str, torch.Tensor], class_names: Mapping[int, str]) -> list[dict[str, Any]]:
    rles = masks_to_rle(output["masks"]) if "masks" in output else None
    detections = []
    for k, (label, score, box) in enumerate(zip(output["labels"].tolist(), output["scores"].tolist(),
                                                output["boxes"].tolist())):
        detection = {"label": label, "class": _class_name(class_names, label), "score": round(score, 4),
                     "box": [round(v, 2) for v in box]}
        if rles is not None:
            detection["segmentation"] = rles[k]
        detections.append(detection)
    return detections
