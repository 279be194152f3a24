"""The training data stream: an infinite, seeded, resumable sequence of (index, flip) batches, or
(index, seed) batches for datasets that draw their own augmentation (segmentation crops)."""

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

    def _load_epoch(self, epoch: int) -> None:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + epoch)
        self._perm = torch.randperm(self.size, generator=g).tolist()
        if self.seeds:
            self._draws = torch.randint(2**63 - 1, (self.size,), generator=g).tolist()
        else:
            self._draws = (torch.rand(self.size, generator=g) < 0.5).tolist() if self.flip else [False] * self.size
        self._epoch = epoch

    def item(self, position: int) -> tuple[int, bool | int]:
        """The (index, flip), or (index, seed), at a global position of the stream."""
        epoch, offset = divmod(position, self.size)
        if epoch != self._epoch:
            self._load_epoch(epoch)
        return self._perm[offset], self._draws[offset]

    def batch(self, iteration: int) -> list[tuple[int, bool | int]]:
        """This rank's batch at ``iteration``."""
        first = (iteration * self.world_size + self.rank) * self.images_per_device
        return [self.item(p) for p in range(first, first + self.images_per_device)]

    def __iter__(self) -> Iterator[list[tuple[int, bool | int]]]:
        iteration = self.start_iter
        while True:
            yield self.batch(iteration)
            iteration += 1
