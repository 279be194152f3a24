"""The training data stream: an infinite, seeded, resumable sequence of (index, flip) batches, or
(index, seed) batches for datasets that draw their own augmentation (segmentation crops), with
detection images batched by orientation (aspect-ratio grouping)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

__all__ = ["TrainBatchSampler"]


class TrainBatchSampler:
    """Batches of (dataset index, horizontal flip) for one rank, from iteration ``start_iter`` on.

    The stream is a function of (seed, position) only [ours]: epoch e is a permutation of the
    dataset drawn from a generator seeded with (seed, e), and each item's flip is drawn with it.
    Iteration i takes the global positions [i * B, (i + 1) * B) with B = images per device x
    world size, and rank r takes its consecutive slice of images per device. So every rank sees
    disjoint data, and a run resumed at iteration i sees exactly what an uninterrupted run saw,
    with no state to save beyond i.

    Args:
        size: number of items in the dataset.
        images_per_device: batch size on one device.
        seed: base seed of the stream.
        rank, world_size: this process and the number of processes.
        start_iter: the first iteration to yield.
        flip: draw flips with probability 0.5 (False: never flip).
        seeds: yield (index, seed) instead, seed an integer in [0, 2^63) drawn with the epoch's
            permutation, after it: the augmentation of the item at that place of the stream
            (:class:`fptbench.data.build.SegmentationTrainSet`); flips are then not drawn.
        groups: a group id per item (0 for width >= height, 1 otherwise: ``train.aspect_grouping``),
            or None. With two or more groups each batch holds items of one group, as torchvision's
            references' ``GroupedBatchSampler`` and detectron2's ``AspectRatioGroupedDataset`` make
            them [detectron2]: walking the epoch's permutation, an item joins its group's bucket and
            a full bucket (``images_per_device`` items) is the next batch, so batches come in the
            order they fill. Statelessly [ours]: each epoch's batches are made from that epoch alone
            and a bucket still partial at its end is dropped (fewer than ``images_per_device`` items
            per group and epoch; detectron2 carries them over), so batch b of the stream is
            batch ``b % C`` of epoch ``b // C`` with C batches per epoch, whatever came before. Rank r
            of iteration i takes batch ``i * world_size + r``. With one group (or too few items for
            one batch) the stream is the ungrouped one, item for item.
    Yields:
        list[tuple[int, bool]] (list[tuple[int, int]] with ``seeds``): one batch for this rank.
    """

    def __init__(
        self,
        size: int,
        *,
        images_per_device: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
        flip: bool = True,
        seeds: bool = False,
        groups: list[int] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("TrainBatchSampler: the dataset is empty")
        self.size = size
        self.images_per_device = images_per_device
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_iter = start_iter
        self.flip = flip
        self.seeds = seeds
        self._epoch = -1
        self._perm: list[int] = []
        self._draws: list = []  # per position of the epoch: its flip, or its seed
        self.groups = None
        if groups is not None:
            if len(groups) != size:
                raise ValueError(f"TrainBatchSampler: {len(groups)} group ids for {size} items")
            counts = {g: groups.count(g) for g in set(groups)}
            per_epoch = sum(n // images_per_device for n in counts.values())
            if len(counts) > 1 and per_epoch > 0:
                self.groups = list(groups)
                self.batches_per_epoch = per_epoch
        self._chunks: list[list[int]] = []  # grouped: the epoch's batches, as offsets into its permutation

    def _load_epoch(self, epoch: int) -> None:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + epoch)
        self._perm = torch.randperm(self.size, generator=g).tolist()
        if self.seeds:
            self._draws = torch.randint(2**63 - 1, (self.size,), generator=g).tolist()
        else:
            self._draws = (torch.rand(self.size, generator=g) < 0.5).tolist() if self.flip else [False] * self.size
        if self.groups is not None:
            buckets: dict[int, list[int]] = {}
            self._chunks = []
            for offset, index in enumerate(self._perm):
                bucket = buckets.setdefault(self.groups[index], [])
                bucket.append(offset)
                if len(bucket) == self.images_per_device:
                    self._chunks.append(bucket)
                    buckets[self.groups[index]] = []
        self._epoch = epoch

    def item(self, position: int) -> tuple[int, bool | int]:
        """The (index, flip), or (index, seed), at a global position of the stream."""
        epoch, offset = divmod(position, self.size)
        if epoch != self._epoch:
            self._load_epoch(epoch)
        return self._perm[offset], self._draws[offset]

    def batch(self, iteration: int) -> list[tuple[int, bool | int]]:
        """This rank's batch at ``iteration``."""
        if self.groups is not None:
            epoch, k = divmod(iteration * self.world_size + self.rank, self.batches_per_epoch)
            if epoch != self._epoch:
                self._load_epoch(epoch)
            return [(self._perm[o], self._draws[o]) for o in self._chunks[k]]
        first = (iteration * self.world_size + self.rank) * self.images_per_device
        return [self.item(p) for p in range(first, first + self.images_per_device)]

    def __iter__(self) -> Iterator[list[tuple[int, bool | int]]]:
        iteration = self.start_iter
        while True:
            yield self.batch(iteration)
            iteration += 1
