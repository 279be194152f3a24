"""The dataset a config names: ``build_dataset(cfg, "train" | "test")``."""

from __future__ import annotations

from typing import Any, Mapping

from fptbench.data.catalog import resolve_split
from fptbench.data.coco import CocoDetection
from fptbench.errors import UsageError

__all__ = ["DEBUG_MAX_IMAGES", "build_dataset"]

DEBUG_MAX_IMAGES = 8  # images per split with DEBUG=true unless data.max_images is set, as the seed's DEBUG


def build_dataset(cfg: Mapping[str, Any], split: str) -> CocoDetection:
    """The training (``"train"``: ``data.train``, training filters on) or evaluation
    (``"test"``: ``data.test``, every annotation kept) split of a config.

    Reads ``data.root``, ``data.train`` / ``data.test``, ``data.max_images`` (with ``DEBUG``
    true, 8 unless set) and ``model.pixel``. A relative ``data.root`` is taken from the working
    directory.

    Raises:
        UsageError: as :class:`CocoDetection`, with the config keys that led to the file, e.g.
            ``data/coco/annotations/instances_val2017.json: not found (data.root=data/coco,
            data.test=coco2017_val)``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data = cfg["data"]
    root, name = data["root"], data[split]
    max_images = data["max_images"] or (DEBUG_MAX_IMAGES if cfg.get("DEBUG") else 0)
    ann_file, img_dir = resolve_split(name)
    try:
        dataset = CocoDetection(root, ann_file, img_dir, pixel=cfg["model"]["pixel"],
                                train=split == "train", max_images=max_images)
    except UsageError as err:
        raise UsageError(f"{err} (data.root={root}, data.{split}={name})") from None
    num_classes = cfg["model"]["num_classes"]
    too_large = [cat for cat in dataset.categories if cat >= num_classes]
    if too_large:
        # labels are category ids, 0 the background: an id >= num_classes would index past the
        # classifier's logits (an IndexError deep in the loss, or a CUDA assert)
        raise UsageError(f"{dataset.ann_file}: category id {max(too_large)} does not fit model.num_classes="
                         f"{num_classes} (ids must be < num_classes; 0 is the background): set model.num_classes "
                         f"{max(too_large) + 1}")
    return dataset
