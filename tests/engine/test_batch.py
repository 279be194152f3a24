"""The recipe at the batch a run really has [issue 18, point 2]: the linear scaling rule, gradient
accumulation, the optimizer's parameter groups, and what a run prints and records of them.

The rule is checked as arithmetic (fptbench.batch) and through the real trainer on the embedded
dataset (tiny ResNet-18 runs at 64 px); accumulation against gradients computed by hand on the
same real model; the parameter groups against the authors' grouping rebuilt from their
tools/train_net_step.py (lines 261-299), read, not copied.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from fptbench.batch import batch_plan, format_plan, plan_summary, scale_train
from fptbench.config import ConfigError, load_config
from fptbench.data.synth import write_synth
from fptbench.engine.distributed import DistInfo
from fptbench.engine.trainer import CONFIG_FILE, _step, _TrainState, param_groups, train
from fptbench.errors import UsageError

TINY = [("model.min_size", 64), ("model.max_size", 64), ("model.backbone_pretrain", ""), ("data.num_workers", 0),
        ("train.eval_at_end", False), ("train.steps", [6]), ("train.warmup_iters", 2), ("train.max_iter", 8),
        ("train.checkpoint_period", 4)]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synth(root, train=12, val=2, size=64, seed=0)
    return root


# --- the rule, as arithmetic ------------------------------------------------------------------

@pytest.mark.parametrize("world", [1, 2, 8, 16])
def test_every_world_size_runs_the_same_images_at_the_same_rate_per_image(world):
    cfg = load_config("maskrcnn_r50_fpt")  # 16 images per step = its reference batch
    plan = batch_plan(cfg, world)
    run = scale_train(cfg, plan)["train"]
    assert plan.batch == 2 * world and plan.factor == 2 * world / 16
    assert run["max_iter"] * plan.batch == 90000 * 16  # the same images
    assert run["base_lr"] / plan.batch == pytest.approx(0.02 / 16)  # at the same rate per image
    assert [s * plan.batch for s in run["steps"]] == [60000 * 16, 80000 * 16]
    assert run["warmup_iters"] * plan.batch == 1000 * 16 and run["checkpoint_period"] * plan.batch == 5000 * 16


def test_rounding_half_up_as_the_authors_and_floors():
    cfg = load_config("maskrcnn_r50_fpt_code", [("train.images_per_device", 3), ("train.keep_checkpoints", [7])])
    run = scale_train(cfg, batch_plan(cfg, 1))["train"]  # 3 images vs 16: iterations x 16/3
    assert run["max_iter"] == int(180000 * 16 / 3 + 0.5) == 960000
    assert run["steps"] == [640000, int(160000 * 16 / 3 + 0.5)] and run["warmup_iters"] == int(500 * 16 / 3 + 0.5)
    assert run["keep_checkpoints"] == [37] and run["base_lr"] == pytest.approx(0.05 * 3 / 16)
    big = load_config("synth_r18_bfp", [("train.reference_batch", 1), ("train.checkpoint_period", 1)])
    assert scale_train(big, batch_plan(big, 4))["train"]["checkpoint_period"] == 1  # never 0


def test_no_reference_or_the_reference_batch_leaves_the_config_as_given():
    synth = load_config("synth_r18_bfp")  # reference 0: as written for its one process
    assert scale_train(synth, batch_plan(synth, 8)) is synth
    coco = load_config("maskrcnn_r50_fpt")
    assert scale_train(coco, batch_plan(coco, 8)) is coco  # 8 x 2 = 16


def test_accumulation_reaches_the_reference_batch():
    cfg = load_config("maskrcnn_r50_fpt", [("train.accumulate", 0)])
    assert [batch_plan(cfg, w).accumulate for w in (1, 2, 4, 8)] == [8, 4, 2, 1]
    assert scale_train(cfg, batch_plan(cfg, 1)) is cfg  # 1 x 2 x 8 = 16: the recipe as given
    with pytest.raises(UsageError, match="must be a multiple of 3 process.* = 6"):
        batch_plan(cfg, 3)
    with pytest.raises(ConfigError, match="train.accumulate=0 accumulates up to train.reference_batch, which is 0"):
        load_config("synth_r18_bfp", [("train.accumulate", 0)])


def _printed(run_cli, world: int) -> tuple[int, float]:
    done = run_cli("config", "maskrcnn_r50_fpt", "--world-size", str(world))
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith(f"# at world size {world}:"))
    match = re.search(r"; ([\d,]+) images at LR ([\d.e-]+) per image$", line)
    return int(match.group(1).replace(",", "")), float(match.group(2))


def test_one_config_at_world_size_1_and_16_prints_the_same_epochs_and_per_image_lr(run_cli):
    one, sixteen = _printed(run_cli, 1), _printed(run_cli, 16)
    assert one == sixteen == (1_440_000, 0.00125)


# --- through the trainer --------------------------------------------------------------------

def test_a_run_prints_records_and_runs_its_scaled_schedule(synth, tmp_path, capsys):
    # synth_r18_bfp at 2 images per step against a reference of 4: LR halves, iterations double.
    cfg = load_config("synth_r18_bfp", [("data.root", str(synth)), *TINY, ("train.images_per_device", 2),
                                        ("train.reference_batch", 4)])
    summary = train(cfg, tmp_path / "run", progress=False)
    batch = summary["batch"]
    assert (batch["batch"], batch["reference"], batch["factor"]) == (2, 4, 0.5)
    assert batch["given"]["max_iter"] == 8 and batch["run"]["max_iter"] == 16 == summary["iterations"]
    assert batch["run"]["steps"] == [12] and batch["run"]["warmup_iters"] == 4 and batch["run"]["checkpoint_period"] == 8
    assert batch["run"]["base_lr"] == pytest.approx(cfg["train"]["base_lr"] / 2)
    assert batch["images"] == 32 and batch["lr_per_image"] == pytest.approx(cfg["train"]["base_lr"] / 4)
    out = capsys.readouterr()
    assert "batch 2 = 1 process(es) x 2 image(s) x 1 accumulated vs reference 4: linear scaling x0.5" in out.out + out.err
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("model_*.pth"))
    assert ckpts == ["model_0000008.pth", "model_0000016.pth"]
    # the resolved config as given, written when the run started, loadable, headed by its hash and batch
    text = (tmp_path / "run" / CONFIG_FILE).read_text()
    assert text.startswith("# fptbench config, hash ") and "linear scaling x0.5" in text.splitlines()[0]
    assert load_config(tmp_path / "run" / CONFIG_FILE) == cfg


def test_the_config_is_written_when_the_run_starts(synth, tmp_path):
    # A run that dies at its first step has left its config behind (not only result.json at the end).
    cfg = load_config("synth_r18_bfp", [("data.root", str(synth)), *TINY, ("train.base_lr", 1e30),
                                        ("train.warmup_iters", 0), ("train.clip_grad_norm", 0.0)])
    with pytest.raises(FloatingPointError):
        train(cfg, tmp_path / "dies", progress=False)
    assert load_config(tmp_path / "dies" / CONFIG_FILE) == cfg and not (tmp_path / "dies" / "result.json").exists()


def _tiny_detector(synth: Path, **extra):
    from fptbench.data import build_dataset
    from fptbench.engine.model import load_model
    from fptbench.engine.trainer import collate

    cfg = load_config("synth_r18_bfp", [("data.root", str(synth)), *TINY, ("model.backbone_norm", "frozen_bn"),
                                        ("train.momentum", 0.0), ("train.weight_decay", 0.0),
                                        ("train.clip_grad_norm", 0.0), ("train.warmup_iters", 0), *extra.items()])
    dataset = build_dataset(cfg, "train")
    batches = [collate([dataset[(i, False)], dataset[(i + 1, False)]]) for i in (0, 2)]
    torch.manual_seed(0)
    model = load_model(cfg)
    model.train()
    return cfg, model, batches


def test_accumulated_micro_batches_step_with_their_mean_gradient(synth):
    # One step over two micro-batches moves every parameter by -lr x the mean of the two gradients,
    # computed here by hand on the same model from the same random state (RoI sampling draws).
    cfg, model, batches = _tiny_detector(synth)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    expected_grads = {}
    for images, targets in batches:
        loss = sum(model(list(images), list(targets)).values())
        loss.backward()
    for name, param in model.named_parameters():
        if param.grad is not None:
            expected_grads[name] = param.grad.clone() / 2
    model.zero_grad(set_to_none=True)

    model.load_state_dict(start)
    state = _TrainState.create(model, cfg, DistInfo(), None, accumulate=2)
    torch.manual_seed(1)
    terms, loss_value, lr = _step(state, model, batches, 0, cfg["train"], DistInfo(), torch.autocast("cpu", enabled=False))
    assert lr == cfg["train"]["base_lr"] and set(terms) >= {"loss_classifier", "loss_mask"}
    moved = 0
    for name, param in model.named_parameters():
        if name in expected_grads:
            torch.testing.assert_close(param.detach(), start[name] - lr * expected_grads[name], rtol=1e-5, atol=1e-7)
            moved += int(expected_grads[name].abs().sum() > 0)
    assert moved > 20


def test_accumulation_through_the_trainer_is_one_optimizer_step_per_iteration(synth, tmp_path):
    cfg = load_config("synth_r18_bfp", [("data.root", str(synth)), *TINY, ("train.images_per_device", 1),
                                        ("train.accumulate", 2), ("train.max_iter", 3), ("train.checkpoint_period", 3)])
    summary = train(cfg, tmp_path / "acc", progress=False)
    assert summary["iterations"] == 3 and summary["batch"]["batch"] == 2 and summary["batch"]["accumulate"] == 2
    from fptbench.engine.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "acc" / "checkpoints" / "last.pth")
    assert state["iteration"] == 3 and state["scheduler"]["last_epoch"] == 3  # one schedule step per iteration
    assert "accumulate=2" in state["extra"]["stream"]  # resuming with another accumulation is refused


# --- the optimizer's parameter groups -------------------------------------------------------

def _authors_groups(model: torch.nn.Module, tcfg: dict) -> dict[str, tuple[float, float]]:
    """tools/train_net_step.py 261-299, as written there: GroupNorm modules' weight and bias names
    (261-265); every trainable parameter with 'bias' in its name goes to the bias group (273-275),
    else a GroupNorm parameter to the GN group (276-278), else to the non-bias group (279-281); the
    groups' decay: WEIGHT_DECAY, 0 unless BIAS_WEIGHT_DECAY, WEIGHT_DECAY_GN (287-299); the bias
    group's LR doubled with BIAS_DOUBLE_LR (lib/utils/net.py update_learning_rate, 76-77)."""
    gn_names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.GroupNorm):
            gn_names |= {name + ".weight", name + ".bias"}
    out = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if "bias" in name:
            out[name] = (2.0, 0.0)  # BIAS_DOUBLE_LR true, BIAS_WEIGHT_DECAY false
        elif name in gn_names:
            out[name] = (1.0, 0.0)  # WEIGHT_DECAY_GN 0
        else:
            out[name] = (1.0, tcfg["weight_decay"])
    return out


def _ours(model: torch.nn.Module, tcfg: dict) -> dict[str, tuple[float, float]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (group["lr"] / tcfg["base_lr"], group["weight_decay"])
            for group in param_groups(model, tcfg) for p in group["params"]}


def test_the_code_preset_groups_parameters_as_the_authors_do():
    from fptbench.modeling import build_model

    cfg = load_config("maskrcnn_r50_fpt_code", [("model.backbone", "resnet18"), ("model.backbone_weights", "scratch"),
                                                 ("model.stride_in_1x1", False), ("model.fpn_channels", 64),
                                                 ("gt.channels", 32), ("model.box_head_dim", 64),
                                                 ("model.box_head_conv_dim", 32), ("model.mask_head_channels", 64)])
    model = build_model(cfg)
    ours, theirs = _ours(model, cfg["train"]), _authors_groups(model, cfg["train"])
    assert ours == theirs
    kinds = {v for v in ours.values()}
    assert kinds == {(2.0, 0.0), (1.0, 0.0), (1.0, 1e-4)}  # biases, GN weights, the rest (BN weights included)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the neck's BN: 1e-4, theirs too


def test_detectron2s_groups_and_torchs_single_group():
    from fptbench.modeling import build_model

    cfg = load_config("maskrcnn_r50_fpt", [("model.backbone", "resnet18"), ("model.backbone_weights", "scratch"),
                                           ("model.fpn_channels", 64), ("gt.channels", 32), ("fpt.norm", "bn")])
    model = build_model(cfg)
    ours = _ours(model, cfg["train"])
    norms = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and m.weight.requires_grad}
    assert norms and all(ours[n] == (1.0, 0.0) for n in norms)  # detectron2: every norm's weight, no decay
    assert all(v == (1.0, 1e-4) for n, v in ours.items() if n.endswith(".bias"))  # biases: the plain decay, LR x1
    # the schema's defaults: one group, torch's SGD over model.parameters() in their order
    plain = load_config("synth_r18_bfp")
    model = build_model(plain)
    groups = param_groups(model, plain["train"])
    assert len(groups) == 1 and groups[0]["params"] == [p for p in model.parameters() if p.requires_grad]


def test_the_synthetic_recipe_is_unchanged():
    # The demo's configs name no reference batch and keep one parameter group and the plain stream:
    # their runs (and the README's figures) are those measured before the linear rule existed.
    cfg = load_config("synth_r18_bfp")
    assert (cfg["train"]["reference_batch"], cfg["train"]["accumulate"]) == (0, 1)
    assert scale_train(cfg, batch_plan(cfg, 1)) is cfg
    assert format_plan(plan_summary(cfg, cfg, batch_plan(cfg, 1))).startswith(
        "batch 4 = 1 process(es) x 4 image(s) x 1 accumulated (train.reference_batch 0: schedule as given)")
