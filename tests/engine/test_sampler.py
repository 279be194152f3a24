"""The training stream: disjoint across ranks, a permutation per epoch, and resumable."""

import pytest

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


# --- aspect-ratio grouping (train.aspect_grouping) ---------------------------------------------

GROUPS = [0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1]  # 7 portrait (1), 6 landscape (0)


def test_grouped_batches_hold_one_orientation_and_cover_each_epoch():
    s = TrainBatchSampler(len(GROUPS), images_per_device=3, seed=4, groups=GROUPS)
    assert s.batches_per_epoch == 2 + 2  # 6 // 3 landscape, 7 // 3 portrait: one portrait item left per epoch
    epoch = take(s, 4)
    assert all(len({GROUPS[i] for i, _ in b}) == 1 for b in epoch)
    seen = [i for b in epoch for i, _ in b]
    assert len(seen) == len(set(seen)) == 12  # a permutation, less the partial bucket
    assert take(TrainBatchSampler(len(GROUPS), images_per_device=3, seed=4, groups=GROUPS, start_iter=4), 4) != epoch


def test_grouped_stream_resumes_and_splits_across_ranks():
    full = take(TrainBatchSampler(len(GROUPS), images_per_device=2, seed=1, groups=GROUPS), 12)
    resumed = take(TrainBatchSampler(len(GROUPS), images_per_device=2, seed=1, groups=GROUPS, start_iter=7), 5)
    assert resumed == full[7:]  # a function of the position: exact resume
    r0 = take(TrainBatchSampler(len(GROUPS), images_per_device=2, seed=1, groups=GROUPS, rank=0, world_size=2), 6)
    r1 = take(TrainBatchSampler(len(GROUPS), images_per_device=2, seed=1, groups=GROUPS, rank=1, world_size=2), 6)
    assert [b for pair in zip(r0, r1) for b in pair] == full  # rank r of iteration i: batch i * 2 + r


def test_one_orientation_is_the_ungrouped_stream():
    # The synthetic set is square (one group): grouping leaves its stream, and the demo's runs, as they were.
    plain = take(TrainBatchSampler(10, images_per_device=3, seed=2), 8)
    assert take(TrainBatchSampler(10, images_per_device=3, seed=2, groups=[0] * 10), 8) == plain
    # too few of each orientation for one batch: ungrouped too
    assert take(TrainBatchSampler(4, images_per_device=3, seed=2, groups=[0, 1, 0, 1]), 3) == take(
        TrainBatchSampler(4, images_per_device=3, seed=2), 3)


def _mixed_coco(root):
    """A COCO set of landscape (64 x 96) and portrait (96 x 64) images, one box and polygon each."""
    import json

    import numpy as np
    from PIL import Image

    (root / "annotations").mkdir(parents=True)
    (root / "images" / "train").mkdir(parents=True)
    images, annotations = [], []
    for i in range(8):
        h, w = (64, 96) if i % 3 else (96, 64)
        Image.fromarray(np.full((h, w, 3), 40 * (i % 5), dtype=np.uint8)).save(root / "images" / "train" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": h, "width": w})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [8, 8, 30, 30], "area": 900,
                            "iscrowd": 0, "segmentation": [[8, 8, 38, 8, 38, 38, 8, 38]]})
    (root / "annotations" / "instances_train.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}))


def test_the_training_loader_batches_by_orientation(tmp_path):
    import torch

    from fptbench.config import load_config
    from fptbench.engine.distributed import DistInfo
    from fptbench.engine.trainer import _loader, _train_data

    _mixed_coco(tmp_path)
    overrides = [("data.root", str(tmp_path)), ("data.num_workers", 0), ("train.images_per_device", 2),
                 ("model.num_classes", 2)]
    logs = []
    cfg = load_config("synth_r18_bfp", overrides)
    loader = _loader(cfg, DistInfo(), *_train_data(cfg, DistInfo(), 2, logs.append))
    assert any("5 landscape (width >= height), 3 portrait images" in line for line in logs)
    batches = [next(it) for it in [iter(loader)] for _ in range(6)]
    shapes = [{img.shape[1] > img.shape[2] for img in images} for images, _ in batches]
    assert all(len(s) == 1 for s in shapes) and {True} in shapes and {False} in shapes
    # with grouping off, a batch mixes them (same seed, same stream otherwise)
    off_cfg = load_config("synth_r18_bfp", overrides + [("train.aspect_grouping", False)])
    off = _loader(off_cfg, DistInfo(), *_train_data(off_cfg, DistInfo(), 2, lambda _: None))
    mixed = [next(it) for it in [iter(off)] for _ in range(6)]
    assert any(len({img.shape[1] > img.shape[2] for img in images}) == 2 for images, _ in mixed)
    assert isinstance(batches[0][0][0], torch.Tensor)


def test_a_grouped_stream_is_part_of_what_a_resume_checks(tmp_path):
    # A checkpoint says whether its stream was grouped: one from before grouping existed (or with
    # it off) is refused by a grouped run instead of resuming on another stream; a square set's
    # stream (one orientation) is the plain one and carries no mark.
    from fptbench.config import load_config
    from fptbench.engine.checkpoint import load_checkpoint
    from fptbench.engine.trainer import train
    from fptbench.errors import UsageError

    _mixed_coco(tmp_path / "data")
    overrides = [("data.root", str(tmp_path / "data")), ("data.num_workers", 0), ("train.images_per_device", 2),
                 ("model.num_classes", 2), ("model.backbone_pretrain", ""), ("model.min_size", 64),
                 ("model.max_size", 96), ("train.max_iter", 2), ("train.checkpoint_period", 1),
                 ("train.eval_at_end", False), ("train.warmup_iters", 1), ("train.steps", [])]
    train(load_config("synth_r18_bfp", overrides), tmp_path / "grouped", progress=False)
    stream = load_checkpoint(tmp_path / "grouped" / "checkpoints" / "last.pth")["extra"]["stream"]
    assert stream[-1] == "aspect_grouping"
    plain = load_config("synth_r18_bfp", overrides + [("train.aspect_grouping", False), ("train.max_iter", 3)])
    with pytest.raises(UsageError, match="cannot resume exactly: the checkpoint's data stream"):
        train(plain, tmp_path / "grouped", resume=True, progress=False)
