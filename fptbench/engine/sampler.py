"""The training data stream: an infinite, seeded, resumable sequence of (index, flip) batches."""

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
    Yields:
        list[tuple[int, bool]]: one batch for this rank.
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
        self._epoch = -1
        self._perm: list[int] = []
        self._flips: list[bool] = []

    def _load_epoch(self, epoch: int) -> None:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + epoch)
        self._perm = torch.randperm(self.size, generator=g).tolist()
        self._flips = (torch.rand(self.size, generator=g) < 0.5).tolist() if self.flip else [False] * self.size
        self._epoch = epoch

    def item(self, position: int) -> tuple[int, bool]:
        """The (index, flip) at a global position of the stream."""
        epoch, offset = divmod(position, self.size)
        if epoch != self._epoch:
            self._load_epoch(epoch)
        return self._perm[offset], self._flips[offset]

    def batch(self, iteration: int) -> list[tuple[int, bool]]:
        """This rank's batch at ``iteration``."""
        first = (iteration * self.world_size + self.rank) * self.images_per_device
        return [self.item(p) for p in range(first, first + self.images_per_device)]

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        iteration = self.start_iter
        while True:
            yield self.batch(iteration)
            iteration += 1
