"""The training stream: disjoint across ranks, a permutation per epoch, and resumable."""

from fptbench.engine.sampler import TrainBatchSampler


def take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_each_epoch_is_a_permutation_and_epochs_differ():
    s = TrainBatchSampler(10, images_per_device=5, seed=3)
    e0, e1 = [i for b in take(s, 2) for i, _ in b], [i for b in take(TrainBatchSampler(10, images_per_device=5, seed=3, start_iter=2), 2) for i, _ in b]
    assert sorted(e0) == sorted(e1) == list(range(10))
    assert e0 != e1  # reshuffled each epoch


def test_ranks_split_each_global_batch():
    # Two ranks together see exactly what one process with the doubled batch sees.
    one = take(TrainBatchSampler(7, images_per_device=4, seed=1), 5)
    r0 = take(TrainBatchSampler(7, images_per_device=2, seed=1, rank=0, world_size=2), 5)
    r1 = take(TrainBatchSampler(7, images_per_device=2, seed=1, rank=1, world_size=2), 5)
    assert [a + b for a, b in zip(r0, r1)] == one


def test_resume_continues_the_same_stream():
    # A sampler started at iteration 6 yields exactly what an uninterrupted one yields from 6 on.
    full = take(TrainBatchSampler(9, images_per_device=2, seed=5), 10)
    resumed = take(TrainBatchSampler(9, images_per_device=2, seed=5, start_iter=6), 4)
    assert resumed == full[6:]


def test_flips_are_drawn_and_can_be_switched_off():
    flips = [f for b in take(TrainBatchSampler(100, images_per_device=10, seed=0), 10) for _, f in b]
    assert 30 < sum(flips) < 70
    assert not any(f for b in take(TrainBatchSampler(100, images_per_device=10, seed=0, flip=False), 10) for _, f in b)
    # The seed matters.
    assert take(TrainBatchSampler(100, images_per_device=10, seed=1), 1) != take(TrainBatchSampler(100, images_per_device=10, seed=0), 1)
