"""The dataset a config names: ``build_dataset(cfg, "train" | "test")``, for either ``model.task``."""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import torch

from fptbench.data.catalog import coco_split
from fptbench.data.coco import CocoDetection
from fptbench.errors import UsageError

__all__ = ["DEBUG_MAX_IMAGES", "SegmentationTrainSet", "build_dataset"]

DEBUG_MAX_IMAGES = 8  # images per split with DEBUG=true unless data.max_images is set, as the seed's DEBUG


def build_dataset(cfg: Mapping[str, Any], split: str) -> Any:
    """The training (``"train"``: ``data.train``) or evaluation (``"test"``: ``data.test``)
    split of a config; the one place where ``model.task`` chooses the data.

    Detection: a :class:`CocoDetection` of :func:`~fptbench.data.catalog.coco_split` (training
    filters on in training, every annotation kept for evaluation; a named split's images in the
    seed's layout or COCO's; an ``image_info`` split such as ``coco2017_test-dev`` for
    evaluation only). Segmentation: a :class:`~fptbench.data.segmentation.SegmentationDataset` of
    the named split (``cityscapes_train``, ``voc2012_train_aug``, ``synth_seg_val``, ...), for
    training with the ``seg.*`` augmentation and wrapped as :class:`SegmentationTrainSet`; a split
    without labels (``cityscapes_test``, ``voc2012_test``) for evaluation only.

    Reads ``data.root``, ``data.train`` / ``data.test``, ``data.max_images`` (with ``DEBUG``
    true, 8 unless set), ``model.pixel`` and ``model.num_classes``; segmentation training also
    ``seg.crop_size``, ``seg.scale_range``, ``data.flip`` and ``seg.photometric``. A relative
    ``data.root`` is taken from the working directory.

    Raises:
        UsageError: as the dataset class, with the config keys that led to the file, e.g.
            ``data/coco/annotations/instances_val2017.json: not found (data.root=data/coco,
            data.test=coco2017_val)``; classes that do not fit ``model.num_classes``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data = cfg["data"]
    root, name = data["root"], data[split]
    max_images = data["max_images"] or (DEBUG_MAX_IMAGES if cfg.get("DEBUG") else 0)
    try:
        if cfg["model"]["task"] == "segmentation":
            return _segmentation(cfg, split, max_images)
        files = coco_split(name)
        dataset = CocoDetection(root, files.ann_file, files.image_dirs, pixel=cfg["model"]["pixel"],
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


def _segmentation(cfg: Mapping[str, Any], split: str, max_images: int) -> Any:
    from fptbench.data.segmentation import segmentation_dataset

    seg = cfg["seg"]
    augment = {"crop_size": tuple(seg["crop_size"]), "scale_range": tuple(seg["scale_range"]),
               "flip": cfg["data"]["flip"], "photometric": seg["photometric"]}
    dataset = segmentation_dataset(cfg["data"]["root"], cfg["data"][split], pixel=cfg["model"]["pixel"],
                                   train=split == "train", max_images=max_images, augment=augment)
    if dataset.num_classes != cfg["model"]["num_classes"]:
        # one logit per class, no background convention: another count would mis-score every pixel
        raise UsageError(f"{dataset.layout} has {dataset.num_classes} classes but model.num_classes="
                         f"{cfg['model']['num_classes']}: set model.num_classes {dataset.num_classes}")
    return SegmentationTrainSet(dataset) if split == "train" else dataset


class SegmentationTrainSet(torch.utils.data.Dataset):
    """A segmentation training split as the trainer reads it, exactly resumable.

    The random crop, scale, flip and colours of an item are drawn from torch's generator seeded
    with the item's ``seed`` (``torch.random.fork_rng``: the caller's stream is left as it was),
    so they are a function of the item's place in the training stream, whatever the data-loader
    workers and wherever a run was resumed [ours]. The training sampler draws the seeds
    (:class:`~fptbench.engine.sampler.TrainBatchSampler` with ``seeds=True``, as
    :attr:`seeded` asks).

    Args:
        dataset: a :class:`~fptbench.data.segmentation.SegmentationDataset` with its training
            transform.

    Items: ``dataset[(index, seed)] -> (image (3, h, w), {"sem_seg": (h, w) int64})``, ``(h, w)``
    the crop size.
    """

    seeded = True
    """Items are keyed ``(index, seed)``; a detection dataset's are ``(index, flip)``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.skipped: Counter = Counter()  # nothing is dropped (CocoDetection.skipped's counterpart)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image, label = self.dataset[index]
        return image, {"sem_seg": label}

    def __repr__(self) -> str:
        return f"SegmentationTrainSet({self.dataset!r})"
