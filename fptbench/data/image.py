"""Image files to tensors in the model's pixel convention, and back.

Two conventions (config ``model.pixel``):

- ``torchvision``: RGB, float32 in [0, 1]; the detector normalises with ImageNet's mean/std.
- ``caffe``: BGR, float32 in [0, 255]; the detector subtracts the Detectron mean and divides by 1
  (the convention of Detectron's ``.pkl`` weights: ``cfg.PIXEL_MEANS``, no std).

:data:`PIXEL_STATS` holds the matching ``(image_mean, image_std)`` for torchvision's
``GeneralizedRCNNTransform``, in the channel order and scale of the convention.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from fptbench.errors import UsageError

__all__ = ["PIXELS", "PIXEL_STATS", "read_image", "to_pixels", "to_uint8_rgb"]

PIXELS = ("torchvision", "caffe")

# convention -> (image_mean, image_std) for GeneralizedRCNNTransform, per channel in its order
PIXEL_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "torchvision": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet RGB, [0, 1] scale
    "caffe": ((102.9801, 115.9465, 122.7717), (1.0, 1.0, 1.0)),  # Detectron PIXEL_MEANS, BGR, [0, 255]
}


def _check_pixel(pixel: str) -> None:
    if pixel not in PIXELS:
        raise UsageError(f"model.pixel: {pixel!r} is not one of {', '.join(PIXELS)}")


def to_pixels(image: Tensor, pixel: str = "torchvision") -> Tensor:
    """An RGB uint8 image in the model's convention.

    Args:
        image (Tensor): (3, H, W) uint8, RGB.
        pixel (str): ``"torchvision"`` or ``"caffe"``.

    Returns:
        Tensor: (3, H, W) float32: RGB / 255 (torchvision) or BGR in 0..255 (caffe).
    """
    _check_pixel(pixel)
    if pixel == "torchvision":
        return F.to_dtype(image, torch.float32, scale=True)
    return F.to_dtype(image.flip(0), torch.float32, scale=False)  # RGB -> BGR, values kept


def to_uint8_rgb(image: Tensor, pixel: str = "torchvision") -> Tensor:
    """Inverse of :func:`to_pixels` (for drawing): (3, H, W) float32 -> (3, H, W) uint8 RGB."""
    _check_pixel(pixel)
    if pixel == "torchvision":
        return F.to_dtype(image.clamp(0, 1), torch.uint8, scale=True)
    return image.flip(0).round().clamp(0, 255).to(torch.uint8)


def read_image(path: str | Path, pixel: str = "torchvision") -> Tensor:
    """Read an image file with PIL (any mode: grey, palette, RGBA -> RGB).

    Returns:
        Tensor: (3, H, W) float32 in the ``pixel`` convention (see :func:`to_pixels`).

    Raises:
        UsageError: the file is missing or not an image PIL can read; the message names it.
    """
    _check_pixel(pixel)
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise UsageError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UsageError(f"{path}: cannot read the image: {reason}") from None
    return to_pixels(F.pil_to_tensor(rgb), pixel)
