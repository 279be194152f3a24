"""Pieces of the training loop that need no training: DEBUG, multi-scale sizes, weight digests."""

import torch

from fptbench.config import load_config
from fptbench.engine.model import set_train_sizes, weights_digest
from fptbench.engine.trainer import effective_config
from fptbench.modeling import build_model

SMALL = [("model.backbone", "resnet18"), ("model.min_size", "96"), ("model.max_size", "160")]


def test_debug_caps_the_run():
    cfg = load_config("synth_r18_fpt", [("DEBUG", "true")])
    run = effective_config(cfg)
    assert run["train"]["max_iter"] == 20 and run["train"]["checkpoint_period"] <= 20
    assert cfg["train"]["max_iter"] == 180  # the caller's config is not modified
    assert effective_config(load_config("synth_r18_fpt"))["train"]["max_iter"] == 180


def test_multi_scale_in_training_and_the_test_scale_in_evaluation():
    # torchvision's transform draws one of min_size per training image: multi-scale training.
    cfg = load_config("synth_r18_bfp", SMALL + [("train.min_sizes", "[64, 80, 96]"), ("train.max_size", "200")])
    model = build_model(cfg)
    set_train_sizes(model, cfg, training=True)
    assert model.transform.min_size == (64, 80, 96) and model.transform.max_size == 200
    set_train_sizes(model, cfg, training=False)
    assert model.transform.min_size == (96,) and model.transform.max_size == 160
    # With train.min_sizes empty, training uses the test scale.
    cfg = load_config("synth_r18_bfp", SMALL)
    set_train_sizes(model, cfg, training=True)
    assert model.transform.min_size == (96,) and model.transform.max_size == 160


def test_weights_digest_sees_every_bit():
    torch.manual_seed(0)
    model = torch.nn.BatchNorm2d(3)
    before = weights_digest(model)
    assert before == weights_digest(model)
    model.running_var[1] = torch.nextafter(model.running_var[1], torch.tensor(2.0))  # one ulp
    assert weights_digest(model) != before
