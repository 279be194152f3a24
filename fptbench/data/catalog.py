"""Named dataset splits in the seed's layout, relative to ``data.root``.

``data/coco/annotations/instances_{split}.json`` holds the annotations and
``data/coco/images/{split}/`` the images, as in the authors' Detectron.pytorch-based code.
COCO 2014's ``minival`` and ``valminusminival`` are subsets of ``val2014``: their images live in
``images/val2014``.
"""

from __future__ import annotations

__all__ = ["DATASETS", "resolve_split"]

# name -> (annotation file relative to data.root, image folder relative to data.root)
DATASETS: dict[str, tuple[str, str]] = {
    "coco2017_train": ("annotations/instances_train2017.json", "images/train2017"),
    "coco2017_val": ("annotations/instances_val2017.json", "images/val2017"),
    "coco2014_train": ("annotations/instances_train2014.json", "images/train2014"),
    "coco2014_val": ("annotations/instances_val2014.json", "images/val2014"),
    "coco2014_minival": ("annotations/instances_minival2014.json", "images/val2014"),
    "coco2014_valminusminival": ("annotations/instances_valminusminival2014.json", "images/val2014"),
}


def resolve_split(name: str) -> tuple[str, str]:
    """``(annotation file, image folder)`` of a split, both relative to ``data.root``.

    A name of :data:`DATASETS` maps as listed; any other name ``S`` (e.g. the synthetic set's
    ``train``/``val``) means ``annotations/instances_S.json`` and ``images/S/``.
    """
    if name in DATASETS:
        return DATASETS[name]
    return f"annotations/instances_{name}.json", f"images/{name}"
