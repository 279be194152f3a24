"""Named COCO splits, relative to ``data.root``, in either of two layouts.

The annotation file is ``data.root/annotations/...`` in both; the images are in

- the seed's layout, ``data.root/images/{train2017,val2017,...}/`` (the authors'
  Detectron.pytorch-based code), or
- COCO's own, ``data.root/{train2017,val2017,...}/`` (the archives unpacked as they come:
  ``train2017.zip`` next to ``annotations_trainval2017.zip``; detectron2's and mmdetection's layout).

A named split looks for its images in both places, the seed's first (:attr:`CocoSplit.image_dirs`).
COCO 2014's ``minival`` and ``valminusminival`` are subsets of ``val2014``: their images live in
``val2014``. The test splits (``coco2017_test-dev``, ``coco2017_test``) are ``image_info`` files:
images and categories, no annotations; they are run for the evaluation server, not scored here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DATASETS", "CocoSplit", "coco_split", "resolve_split"]


@dataclass(frozen=True)
class CocoSplit:
    """Where a split's files are, and what the COCO evaluation server calls its images.

    Attributes:
        ann_file (str): the instances (or ``image_info``) JSON, relative to ``data.root``.
        image_dirs (tuple[str, ...]): candidate image folders relative to ``data.root``, in order
            of preference: the first that exists holds the images.
        image_set (str): the ``[testset]`` of COCO's results file names
            (``detections_[testset]_[alg]_results.json``): ``val2017``, ``test-dev2017``, ...
    """

    ann_file: str
    image_dirs: tuple[str, ...]
    image_set: str


def _named(ann_file: str, folder: str, image_set: str) -> CocoSplit:
    return CocoSplit(ann_file, (f"images/{folder}", folder), image_set)


DATASETS: dict[str, CocoSplit] = {
    "coco2017_train": _named("annotations/instances_train2017.json", "train2017", "train2017"),
    "coco2017_val": _named("annotations/instances_val2017.json", "val2017", "val2017"),
    # the 20,288 test-dev images: the split of the paper's test-dev numbers and of the public leaderboard
    "coco2017_test-dev": _named("annotations/image_info_test-dev2017.json", "test2017", "test-dev2017"),
    # all 40,670 test2017 images (test-dev and test-challenge): what a challenge entry is run on
    "coco2017_test": _named("annotations/image_info_test2017.json", "test2017", "test-challenge2017"),
    "coco2014_train": _named("annotations/instances_train2014.json", "train2014", "train2014"),
    "coco2014_val": _named("annotations/instances_val2014.json", "val2014", "val2014"),
    "coco2014_minival": _named("annotations/instances_minival2014.json", "val2014", "minival2014"),
    "coco2014_valminusminival": _named("annotations/instances_valminusminival2014.json", "val2014",
                                       "valminusminival2014"),
}
"""Split name (``data.train`` / ``data.test``) -> :class:`CocoSplit`."""


def coco_split(name: str) -> CocoSplit:
    """The :class:`CocoSplit` of a split name.

    A name of :data:`DATASETS` maps as listed; any other name ``S`` (e.g. the synthetic set's
    ``train``/``val``) means ``annotations/instances_S.json`` with its images in ``images/S/``
    (the seed's layout only), image set ``S`` with every ``_`` and ``/`` written ``-`` (the COCO
    server splits results file names on ``_``: ``val_small`` -> ``detections_val-small_...``).
    """
    if name in DATASETS:
        return DATASETS[name]
    return CocoSplit(f"annotations/instances_{name}.json", (f"images/{name}",),
                     name.replace("_", "-").replace("/", "-") or "split")


def resolve_split(name: str) -> tuple[str, str]:
    """``(annotation file, image folder in the seed's layout)`` of a split, relative to
    ``data.root`` (:func:`coco_split`; the dataset itself also looks in COCO's layout)."""
    split = coco_split(name)
    return split.ann_file, split.image_dirs[0]
