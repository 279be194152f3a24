"""Segmentation through the real trainer: exact resume, the run record, and the pieces around it
(the Segmenter's loss, the seeded training items, the poly schedule, SyncBatchNorm).

The runs are tiny (ResNet-18 at 32-px crops of 64-px synthetic images, 4 iterations, a 16-wide
pyramid) but go through the whole engine: data, sampler, checkpoints, schedule, RNG restore,
evaluation and the record.
"""

from __future__ import annotations

import json

import pytest
import torch

from fptbench.config import load_config
from fptbench.data.segmentation import SYNTH_CLASSES
from fptbench.data.synth import write_synth_seg
from fptbench.engine import trainer
from fptbench.engine.checkpoint import load_checkpoint
from fptbench.engine.distributed import DistInfo
from fptbench.engine.model import build_model
from fptbench.engine.schedule import build_lr_scheduler, warmup_poly_factor
from fptbench.modeling.segmenter import Segmenter
from fptbench.errors import UsageError

TINY = [
    ("model.fpn_channels", 16), ("gt.channels", 8), ("fpt.norm", "bn"), ("seg.ufp_kernels", "[1, 3]"),
    ("seg.crop_size", "[32, 32]"), ("seg.scale_range", "[0.5, 1.0]"),
    ("train.images_per_device", 2), ("train.max_iter", 4), ("train.checkpoint_period", 2), ("train.warmup_iters", 1),
    ("train.log_period", 2), ("data.max_images", 4), ("data.num_workers", 0),
    ("model.backbone_pretrain", ""),  # a fresh trunk: no pre-training (tests/engine/test_pretrain.py has it)
]


@pytest.fixture(scope="module")
def synth_seg(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_seg")
    write_synth_seg(root, train=4, val=2, size=64, seed=0)
    return root


def tiny(root, name="synth_seg_r18_lgt", *extra):
    return load_config(name, TINY + [("data.root", str(root))] + list(extra))


# --- training ----------------------------------------------------------------------------------

class _Stop(Exception):
    pass


def test_an_interrupted_run_resumes_to_bitwise_the_same_weights(synth_seg, tmp_path, monkeypatch):
    # Reference: 4 uninterrupted iterations, no evaluation; data in the main process.
    cfg = tiny(synth_seg, "synth_seg_r18_lgt", ("train.eval_at_end", False))
    trainer.train(cfg, tmp_path / "ref", progress=False)
    reference = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pth")["model"]

    # Interrupted after the checkpoint of iteration 2, resumed to the end, with a data-loader
    # worker this time: the crops are a function of their place in the stream, not of the process.
    step, calls = trainer._step, []

    def stop_at_three(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise _Stop
        return step(*args, **kwargs)

    monkeypatch.setattr(trainer, "_step", stop_at_three)
    with pytest.raises(_Stop):
        trainer.train(cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(trainer, "_step", step)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pth")["iteration"] == 2
    workers = load_config("synth_seg_r18_lgt", TINY + [("data.root", str(synth_seg)), ("train.eval_at_end", False),
                                                       ("data.num_workers", 1)])
    trainer.train(workers, tmp_path / "run", resume=True, progress=False)
    resumed = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pth")
    assert resumed["iteration"] == 4 and resumed["model"].keys() == reference.keys()
    different = [k for k in reference if not torch.equal(reference[k], resumed["model"][k])]
    assert not different, different[:5]
    # it trained: FPT's fusion moved from its initialisation
    trainer.seed_everything(cfg["seed"])
    initial = build_model(cfg).state_dict()
    key = next(k for k in reference if k.startswith("fpt.fuse.") and k.endswith("weight"))
    assert not torch.equal(initial[key], reference[key])


def test_training_writes_a_record_with_metrics_segmentation(synth_seg, tmp_path):
    cfg = tiny(synth_seg, "synth_seg_r18_base", ("train.max_iter", 2))
    record = trainer.train(cfg, tmp_path, progress=False)
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["metrics"] == record["metrics"] and set(record["metrics"]) == {"segmentation"}
    seg = record["metrics"]["segmentation"]
    assert set(seg) == {"mIoU", "pixel_acc", "mean_acc", "per_class_iou"}
    assert list(seg["per_class_iou"]) == list(SYNTH_CLASSES) and SYNTH_CLASSES[:2] == ("background", "square")
    assert 0 <= seg["pixel_acc"] <= 100 and 0 <= seg["mIoU"] <= 100
    # what every record holds
    assert on_disk["config"] == cfg and len(on_disk["config_hash"]) == 12
    assert {"git", "versions", "device", "created"} <= set(on_disk)
    assert on_disk["dataset"] == {"name": "synth_seg_val", "images": 2}
    assert on_disk["training"]["iterations"] == 2 and on_disk["training"]["sync_bn"] is False
    assert (tmp_path / "tensorboard").is_dir() and (tmp_path / "checkpoints" / "last.pth").exists()


def test_evaluation_runs_the_configs_test_time_inference(synth_seg, monkeypatch):
    from fptbench.engine.evaluate import evaluate_model

    seen = {}

    def fake(model, dataset, **kwargs):
        seen.update(kwargs)
        return {"segmentation": {"mIoU": None, "pixel_acc": None, "mean_acc": None, "per_class_iou": {}}}

    monkeypatch.setattr("fptbench.evaluation.segmentation.evaluate_segmentation", fake)
    cfg = tiny(synth_seg, "synth_seg_r18_base", ("seg.test_mode", "slide"), ("seg.test_stride", "[16, 24]"),
               ("seg.test_flip", True), ("seg.test_scales", "[0.5, 1.0]"))
    record = evaluate_model(cfg, torch.nn.Identity(), "/nonexistent-never-written", info=DistInfo(rank=1, world_size=1),
                            progress=False)
    assert (seen["mode"], seen["crop_size"], seen["stride"], seen["flip"], seen["scales"]) == \
        ("slide", (32, 32), (16, 24), True, (0.5, 1.0))  # the window defaults to the training crop
    assert record["metrics"]["segmentation"]["mIoU"] is None
    cfg["seg"].update(test_crop_size=[48, 40], test_stride=[])
    evaluate_model(cfg, torch.nn.Identity(), "/nonexistent", info=DistInfo(rank=1), progress=False)
    assert (seen["crop_size"], seen["stride"]) == ((48, 40), None)


def test_a_missing_dataset_or_a_wrong_class_count_is_one_line(synth_seg, tmp_path):
    from fptbench.data import build_dataset

    with pytest.raises(UsageError) as info:
        build_dataset(tiny(tmp_path / "none"), "train")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'none' / 'images' / 'train'}: folder not found")
    assert message.endswith(f"(data.root={tmp_path / 'none'}, data.train=synth_seg_train)")
    with pytest.raises(UsageError, match=r"^synth has 8 classes but model.num_classes=9: set model.num_classes 8 "):
        build_dataset(tiny(synth_seg, "synth_seg_r18_base", ("model.num_classes", 9)), "test")


# --- the Segmenter -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def segmenter(synth_seg):
    torch.manual_seed(0)
    return build_model(tiny(synth_seg, "synth_seg_r18_fpt"))


def test_the_segmenter_is_the_segmentation_model_with_its_keys(segmenter, synth_seg):
    from fptbench.modeling.segmentation import SegmentationModel, build_segmentation_model

    assert isinstance(segmenter, Segmenter) and isinstance(segmenter, SegmentationModel)
    assert list(segmenter.state_dict()) == list(build_segmentation_model(tiny(synth_seg, "synth_seg_r18_fpt")).state_dict())
    assert "pixel_mean" not in segmenter.state_dict()  # a convention of the config, not a weight


def test_the_loss_is_cross_entropy_over_the_scored_pixels(segmenter):
    torch.manual_seed(1)
    images = [torch.rand(3, 32, 32) for _ in range(2)]
    labels = torch.randint(0, 8, (2, 32, 32))
    segmenter.eval()  # BatchNorm in eval: the same logits in both calls
    with torch.no_grad():
        out = segmenter(torch.stack(images))
    ignored = labels.clone()
    ignored[:, :8] = 255
    segmenter.training = True  # the losses, with every layer as in eval (BatchNorm, dropout): the same logits
    with torch.no_grad():
        losses = segmenter(images, [{"sem_seg": label} for label in ignored])
        everything = segmenter(images, [{"sem_seg": torch.full((32, 32), 255)} for _ in range(2)])
    scored = ignored != 255
    expected = torch.nn.functional.cross_entropy(out["out"].permute(0, 2, 3, 1)[scored], ignored[scored])
    torch.testing.assert_close(losses["loss_seg"], expected)
    expected_aux = torch.nn.functional.cross_entropy(out["aux"].permute(0, 2, 3, 1)[scored], ignored[scored])
    torch.testing.assert_close(losses["loss_aux"], 0.4 * expected_aux)
    assert float(everything["loss_seg"]) == 0.0 and float(everything["loss_aux"]) == 0.0  # not NaN


def test_the_segmenter_normalises_in_its_pixel_convention(segmenter):
    assert torch.allclose(segmenter.pixel_mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    segmenter.eval()
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        from fptbench.modeling.segmentation import SegmentationModel

        plain = SegmentationModel.forward(segmenter, (image - segmenter.pixel_mean) / segmenter.pixel_std)
        assert torch.equal(segmenter(image)["out"], plain["out"])
        assert torch.equal(segmenter([image[0]])["out"], plain["out"])  # a list of one size stacks
    with pytest.raises(ValueError, match="must have one size"):
        segmenter([torch.rand(3, 32, 32), torch.rand(3, 32, 48)])
    segmenter.train()
    with pytest.raises(ValueError, match="targets"):
        segmenter(image)


# --- the seeded training stream ------------------------------------------------------------------

def test_training_items_are_a_function_of_their_seed(synth_seg):
    from fptbench.data import SegmentationTrainSet, build_dataset
    from fptbench.engine.sampler import TrainBatchSampler

    train = build_dataset(tiny(synth_seg), "train")
    assert isinstance(train, SegmentationTrainSet) and train.seeded and not train.skipped
    torch.manual_seed(123)
    before = torch.get_rng_state()
    image, target = train[(1, 7)]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is left alone
    assert image.shape == (3, 32, 32) and target["sem_seg"].shape == (32, 32) and target["sem_seg"].dtype == torch.int64
    again, target_again = train[(1, 7)]
    assert torch.equal(image, again) and torch.equal(target["sem_seg"], target_again["sem_seg"])
    assert not torch.equal(image, train[(1, 8)][0])
    # the sampler's seeds: drawn after the permutation, so the order is the detection stream's
    seeded = TrainBatchSampler(4, images_per_device=2, seed=3, seeds=True)
    flips = TrainBatchSampler(4, images_per_device=2, seed=3)
    assert [[i for i, _ in seeded.batch(k)] for k in range(4)] == [[i for i, _ in flips.batch(k)] for k in range(4)]
    seeds = [s for k in range(4) for _, s in seeded.batch(k)]
    assert all(type(s) is int and 0 <= s < 2**63 for s in seeds) and len(set(seeds)) == 8


def test_poly_schedule_values_and_resume():
    f = lambda i: warmup_poly_factor(i, warmup_iters=0, warmup_factor=1.0, max_iter=100, power=0.9)
    assert f(0) == 1.0 and f(100) == 0.0 and f(150) == 0.0
    assert f(50) == pytest.approx(0.5 ** 0.9)
    floor = warmup_poly_factor(100, warmup_iters=0, warmup_factor=1.0, max_iter=100, power=0.9, min_factor=0.01)
    assert floor == pytest.approx(0.01)
    assert warmup_poly_factor(0, warmup_iters=10, warmup_factor=0.5, max_iter=100, power=1.0) == 0.5
    cfg = {"schedule": "poly", "warmup_iters": 0, "warmup_factor": 1.0, "max_iter": 4, "poly_power": 1.0,
           "poly_min_lr": 0.001, "base_lr": 0.01}
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.01)
    sched = build_lr_scheduler(opt, cfg)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.01, 0.00775, 0.0055, 0.00325, 0.001])  # mmsegmentation's PolyLR(eta_min)


# --- SyncBatchNorm -------------------------------------------------------------------------------

def test_sync_batchnorm_under_cuda_ddp_for_segmentation(segmenter, synth_seg):
    from fptbench.engine.trainer import _sync_batchnorm

    cfg = tiny(synth_seg, "synth_seg_r18_base")
    cuda2 = DistInfo(world_size=2, device=torch.device("cuda", 0))
    assert not _sync_batchnorm(build_model(cfg), cfg, DistInfo())  # one process: nothing to sync
    assert not _sync_batchnorm(build_model(cfg), cfg, DistInfo(world_size=2))  # CPU DDP: BatchNorm kept
    model = build_model(cfg)
    keys = list(model.state_dict())
    assert _sync_batchnorm(model, cfg, cuda2)  # null = on for segmentation
    assert not any(type(m) is torch.nn.BatchNorm2d for m in model.modules())
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert list(model.state_dict()) == keys  # checkpoints load either way
    cfg["model"]["sync_bn"] = False
    assert not _sync_batchnorm(build_model(cfg), cfg, cuda2)
    cfg["model"]["sync_bn"] = True
    with pytest.raises(UsageError, match="model.sync_bn=true: torch's SyncBatchNorm needs CUDA devices"):
        _sync_batchnorm(build_model(cfg), cfg, DistInfo(world_size=2))
    detection = load_config("synth_r18_bfp")
    assert not _sync_batchnorm(build_model(detection), detection, cuda2)  # detection: off unless asked


# --- DDP -----------------------------------------------------------------------------------------

def _ddp_worker(rank, port, cfg, out, results):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    record = trainer.train(cfg, out, progress=False)  # every rank evaluates and returns the record
    training = record["training"]
    results[rank] = (training["weights_sha256"], training["world_size"], training["sync_bn"],
                     record["metrics"]["segmentation"]["mIoU"])
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two processes
def test_two_process_ddp_on_gloo_keeps_replicas_identical_and_evaluates_together(synth_seg, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tiny(synth_seg, "synth_seg_r18_lgt", ("train.max_iter", 2), ("device", "cpu"))
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(port, cfg, str(tmp_path), results), nprocs=2, join=True)
    (d0, w0, s0, m0), (d1, w1, s1, m1) = results[0], results[1]
    assert w0 == w1 == 2 and s0 is s1 is False  # gloo on the CPU: BatchNorm stays (SyncBatchNorm is CUDA's)
    assert d0 == d1  # bitwise-identical weights on both ranks
    assert m0 == m1  # the confusion matrix summed over the ranks: one mIoU
    assert json.loads((tmp_path / "result.json").read_text())["metrics"]["segmentation"]["mIoU"] == m0
