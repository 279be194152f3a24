"""The local executor's GPUs: concurrent cells get distinct GPUs, round robin over the visible
ones (issue #10). The arithmetic takes the GPU ids as arguments, so it is tested without a GPU."""

from __future__ import annotations

import pytest

from fptbench.errors import UsageError
from fptbench.launch.sweep import gpu_slots, visible_gpu_ids


@pytest.mark.parametrize("gpus, world_size, jobs, slots", [
    ([0, 1, 2, 3, 4, 5, 6, 7], 1, 4, [[0], [1], [2], [3]]),  # --jobs 4 on 8 GPUs: one each
    ([0, 1, 2, 3, 4, 5, 6, 7], 2, 4, [[0, 1], [2, 3], [4, 5], [6, 7]]),  # 2-rank cells
    ([0, 1, 2, 3], 1, 6, [[0], [1], [2], [3], [0], [1]]),  # more cells than GPUs: shared evenly
    ([4, 5], 1, 2, [[4], [5]]),  # the parent's CUDA_VISIBLE_DEVICES=4,5
    ([], 2, 3, [[], [], []]),  # no GPU: every cell on the CPU
])
def test_concurrent_cells_get_gpus_round_robin(gpus, world_size, jobs, slots):
    assert gpu_slots(gpus, world_size, jobs) == slots


def test_concurrent_cells_never_share_a_gpu_while_there_are_enough():
    for count in range(1, 9):
        for world_size in range(1, count + 1):
            jobs = count // world_size
            used = [gpu for slot in gpu_slots(list(range(count)), world_size, jobs) for gpu in slot]
            assert len(used) == len(set(used)) == jobs * world_size


@pytest.mark.parametrize("count, env, ids", [
    (0, {}, []),
    (2, {}, [0, 1]),
    (2, {"CUDA_VISIBLE_DEVICES": "3,5"}, [3, 5]),  # a child's ids are the machine's, not the parent's
    (1, {"CUDA_VISIBLE_DEVICES": "6, 2"}, [6]),
    (0, {"CUDA_VISIBLE_DEVICES": ""}, []),
])
def test_visible_gpu_ids_are_the_machines_ids(count, env, ids):
    assert visible_gpu_ids(count, env) == ids


def test_gpus_named_by_uuid_are_refused_in_one_line():
    with pytest.raises(UsageError, match="CUDA_VISIBLE_DEVICES=GPU-8a1b,GPU-77c0: the local executor shares GPUs"):
        visible_gpu_ids(2, {"CUDA_VISIBLE_DEVICES": "GPU-8a1b,GPU-77c0"})
