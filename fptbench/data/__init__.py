"""Data: COCO-format instance segmentation for torchvision's detectors, semantic segmentation
splits, and an embedded synthetic set of both.

- :data:`DATASETS` / :func:`coco_split` / :func:`resolve_split` (``catalog.py``): named COCO
  splits, their files in the seed's layout or COCO's.
- :class:`CocoDetection` (``coco.py``): ``(image, target)`` pairs read with pycocotools.
- ``segmentation.py``: Cityscapes, VOC 2012, ADE20K, LIP and synthetic ``(image, label)`` splits.
- :func:`read_image` / :data:`PIXEL_STATS` (``image.py``): the two pixel conventions.
- :func:`build_dataset` (``build.py``): the dataset a config names, for either ``model.task``.
- :func:`~fptbench.data.synth.write_synth`, :func:`~fptbench.data.synth.write_synth_seg`
  (``synth.py``): the embedded synthetic dataset.

Importing this package is cheap: torch and pycocotools load only when a name that needs them
is first used (``fptbench data synth`` needs neither torch nor torchvision).
"""

from __future__ import annotations

import importlib
from typing import Any

from fptbench.data.catalog import DATASETS, CocoSplit, coco_split, resolve_split

__all__ = [
    "DATASETS",
    "CocoSplit",
    "PIXEL_STATS",
    "CocoDetection",
    "SegmentationTrainSet",
    "build_dataset",
    "coco_split",
    "read_image",
    "resolve_split",
    "write_synth",
    "write_synth_seg",
]

# public name -> submodule that defines it, imported on first use (PEP 562)
_LAZY = {
    "CocoDetection": "coco",
    "load_coco": "coco",
    "build_dataset": "build",
    "SegmentationTrainSet": "build",
    "read_image": "image",
    "to_pixels": "image",
    "to_uint8_rgb": "image",
    "PIXEL_STATS": "image",
    "write_synth": "synth",
    "write_synth_seg": "synth",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"fptbench.data.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'fptbench.data' has no attribute {name!r}")
