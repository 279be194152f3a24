"""Draw a detector's boxes, masks, class names and scores on a folder of images.

The seed's ``infer_simple.py``, with torchvision's drawing utilities
(``draw_segmentation_masks``, ``draw_bounding_boxes``).

Memory is bounded whatever the photographs [ours]: each image is decoded at most at the size the
model resizes it to (JPEG draft mode decodes at 1/2..1/8 scale directly), the user's threshold is
the detector's score threshold so that masks are pasted only for what is drawn, and drawings are
made at that size. An image that cannot be read (corrupt, truncated, a decompression bomb beyond
PIL's pixel limit) is skipped and listed in ``detections.json``; the others are still drawn.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from PIL import Image
from torch import nn
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks
from tqdm import tqdm

from fptbench.data.image import to_pixels
from fptbench.errors import UsageError
from fptbench.evaluation.coco_evaluator import masks_to_rle
from fptbench.fileio import writable_dir, write_bytes_atomic, write_json_atomic

__all__ = ["IMAGE_SUFFIXES", "MAX_CANVAS_SIDE", "PALETTE", "infer_images", "list_images", "read_canvas"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

MAX_CANVAS_SIDE = 1333
"""Long side of the largest drawing, pixels [ours]: COCO's test scale (model.max_size), which the
detector resizes to anyway; a mask pasted at this size is 1.8 MB."""

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
    log: Callable[[str], None] | None = tqdm.write,
    max_side: int = MAX_CANVAS_SIDE,
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
        log: called with one line per skipped image (None: silent).
        max_side (int): long side of the canvas, pixels: larger images are read downscaled to it,
            detected and drawn at that size.

    Returns:
        list[dict]: per image drawn, ``{"file", "output", "width", "height" (the file's, pixels),
        "scale" (drawing / file, <= 1), "detections": [{"label", "class", "score", "box" (xyxy,
        the file's pixels), "segmentation" (COCO RLE of the drawing's size, Mask R-CNN only)}]}``:
        the ``images`` list of ``detections.json``, which also lists ``skipped`` images
        (``{"file", "reason"}``) and whether the folder was ``complete`` (false when interrupted).

    Raises:
        UsageError: missing or empty ``image_dir``, no image readable, a bad threshold or pixel.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise UsageError(f"threshold: {threshold} is not in [0, 1]")
    to_pixels(torch.zeros(3, 1, 1, dtype=torch.uint8), pixel)  # checks pixel before any work
    files = list_images(image_dir)
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(image_dir).resolve():
        raise UsageError(f"output folder {out_dir} is the image folder: the drawings would overwrite the images")
    names = _output_names(files)
    writable_dir(out_dir)

    was_training = model.training
    model.eval()
    heads = getattr(model, "roi_heads", None)
    model_thresh = getattr(heads, "score_thresh", None)
    if model_thresh is not None:  # masks are pasted (full canvas each) only for what is kept
        heads.score_thresh = max(model_thresh, float(threshold))
    images_out: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    complete = False
    try:
        for path, name in tqdm(list(zip(files, names)), desc="infer", unit="img", disable=not progress,
                               dynamic_ncols=True):
            try:
                image, (width, height) = read_canvas(path, max_side)
            except UsageError as err:
                skipped.append({"file": path.name, "reason": str(err)})
                if log is not None:
                    log(f"[fptbench] skipped {err}")
                continue
            scale = image.shape[2] / width
            with torch.inference_mode():
                output = model([to_pixels(image, pixel).to(device)])[0]
            output = {k: v.detach().cpu() for k, v in output.items()}
            keep = output["scores"] >= threshold
            output = {k: v[keep] for k, v in output.items()}
            write_bytes_atomic(out_dir / name, _png_bytes(_draw(image, output, class_names)))
            images_out.append({"file": path.name, "output": name, "width": width, "height": height,
                               "scale": round(scale, 6), "detections": _detections(output, class_names, scale)})
        complete = True
    finally:
        model.train(was_training)
        if model_thresh is not None:
            heads.score_thresh = model_thresh
        if images_out or skipped:  # what was done, even when interrupted
            write_json_atomic(out_dir / "detections.json",
                              {"threshold": float(threshold), "image_dir": str(image_dir), "complete": complete,
                               "images": images_out, "skipped": skipped})
    if not images_out:
        raise UsageError(f"{image_dir}: none of the {len(files)} images could be read; the first: {skipped[0]['reason']}")
    return images_out


def read_canvas(path: str | Path, max_side: int = MAX_CANVAS_SIDE) -> tuple[torch.Tensor, tuple[int, int]]:
    """An image file as uint8 RGB (3, h, w), downscaled so that its long side is at most
    ``max_side`` (never upscaled), and the file's (width, height). JPEGs are decoded at the
    reduced scale (PIL's draft mode): a 50-megapixel photograph never exists in memory at full size.

    Raises:
        UsageError: the file is not a readable image, is truncated, or has more pixels than PIL's
            decompression-bomb limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``); the message names it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # decoded reduced below
            with Image.open(path) as img:
                width, height = img.size
                scale = min(1.0, max_side / max(width, height))
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                if scale < 1:
                    img.draft("RGB", size)  # JPEG: decode at 1/2, 1/4 or 1/8 when that is enough
                rgb = img.convert("RGB")
                if rgb.size != size:
                    rgb = rgb.resize(size, Image.BILINEAR, reducing_gap=2.0)
    except Image.DecompressionBombError as err:
        raise UsageError(f"{path}: refused: {err}") from None
    except FileNotFoundError:
        raise UsageError(f"{path}: image not found") from None
    except (OSError, ValueError, SyntaxError) as err:  # PIL: UnidentifiedImageError, truncated files
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UsageError(f"{path}: cannot read the image: {reason}") from None
    return pil_to_tensor(rgb), (width, height)


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


def _detections(output: Mapping[str, torch.Tensor], class_names: Mapping[int, str],
                scale: float = 1.0) -> list[dict[str, Any]]:
    """The JSON of ``output`` (drawn at ``scale``): boxes in the file's pixels, masks as drawn."""
    rles = masks_to_rle(output["masks"]) if "masks" in output else None
    detections = []
    for k, (label, score, box) in enumerate(zip(output["labels"].tolist(), output["scores"].tolist(),
                                                output["boxes"].tolist())):
        detection = {"label": label, "class": _class_name(class_names, label), "score": round(score, 4),
                     "box": [round(v / scale, 2) for v in box]}
        if rles is not None:
            detection["segmentation"] = rles[k]
        detections.append(detection)
    return detections
