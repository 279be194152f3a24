"""Weights from local files: torchvision ImageNet trunks, torchvision/own detection checkpoints,
Detectron (caffe2) ``.pkl`` ResNets.

Every file is written here (``torch.save`` / ``pickle``) from a torchvision model built with
``weights=None``; nothing is downloaded. The file's tensors are redrawn at random from a fixed
seed, so that no loaded tensor can equal the target model's own initialisation by accident
(BN's default ones/zeros would otherwise "load" without being copied).
"""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.detection import maskrcnn_resnet50_fpn

from fptbench.weights import LoadReport, load_backbone_weights, load_detection_weights, load_detectron_weights
from fptbench.weights.detectron import caffe2_to_torchvision
from fptbench.config import load_config
from fptbench.errors import UsageError
from fptbench.modeling import build_model
from fptbench.modeling.backbone import bfp_backbone, resnet_body

SMALL = {"model.min_size": 128, "model.max_size": 160}  # no forward of a detector here; kept small anyway

CAFFE_MEAN = [102.9801, 115.9465, 122.7717]  # Detectron's PIXEL_MEANS (BGR)

PREDICTORS = {
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_predictor.mask_fcn_logits.weight",
    "roi_heads.mask_predictor.mask_fcn_logits.bias",
}


def make_model(name: str, **overrides: Any) -> nn.Module:
    """A shipped config with dotted-key overrides (``**{"model.backbone": "resnet18"}``), built."""
    return build_model(load_config(name, {**SMALL, **overrides}))


@torch.no_grad()
def redraw(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Fill every float tensor of ``module`` with U(0.5, 1.5) (positive: valid BN variances); its state_dict."""
    g = torch.Generator().manual_seed(seed)
    for tensor in module.state_dict().values():
        if tensor.is_floating_point():
            tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
    return module.state_dict()


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_one_line_error(err: pytest.ExceptionInfo, path: Path, *fragments: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, message


# ---------------------------------------------------------------------------------------------
# torchvision ImageNet trunk


@pytest.mark.parametrize("norm, wrapped", [("bn", False), ("frozen_bn", True)])
def test_imagenet_resnet18_loads_into_trunk(tmp_path, norm, wrapped):
    torch.manual_seed(0)
    state = redraw(torchvision.models.resnet18(weights=None), seed=1)
    path = tmp_path / "resnet18.pth"
    torch.save({"model": state, "epoch": 90} if wrapped else state, path)
    model = make_model("maskrcnn_r50_bfp", **{"model.backbone": "resnet18", "model.backbone_norm": norm})
    before = snapshot(model)

    report = load_backbone_weights(model, path)

    body = model.backbone.body.state_dict()
    assert set(report.loaded) == {"backbone.body." + k for k in body}
    for key, value in body.items():
        assert torch.equal(value, state[key]), key
    for key, value in model.state_dict().items():  # nothing outside the trunk moved
        if not key.startswith("backbone.body."):
            assert torch.equal(value, before[key]), key
    # FrozenBatchNorm2d has no step counter: the file's 20 are skipped with fc.
    counters = [k for k in state if k.endswith("num_batches_tracked")] if norm == "frozen_bn" else []
    assert sorted(report.skipped) == sorted(["fc.weight", "fc.bias", *counters])
    # A trainable BN trunk gets the one warning; the pixel convention (torchvision) is right.
    assert len(report.warnings) == (norm == "bn")
    assert all("frozen_bn" in w for w in report.warnings)
    assert report.summary().startswith(f"loaded {len(body)} tensors from {path}; {len(report.skipped)} skipped (")


@pytest.mark.parametrize("other, fragments", [
    # ResNet-34 has 3 blocks in layer1 where ResNet-18 has 2.
    ("resnet34", ["not in the model (layer1.2.conv1.weight", "BasicBlock ResNet, blocks [2, 2, 2, 2]"]),
    # ResNet-50's bottleneck starts with a 1x1 conv where ResNet-18's block has a 3x3.
    ("resnet50", ["layer1.0.conv1.weight: file (64, 64, 1, 1) vs model (64, 64, 3, 3)"]),
])
def test_imagenet_wrong_trunk_is_an_error(tmp_path, other, fragments):
    path = tmp_path / f"{other}.pth"
    torch.save(getattr(torchvision.models, other)(weights=None).state_dict(), path)
    model = make_model("maskrcnn_r50_bfp", **{"model.backbone": "resnet18"})
    before = snapshot(model)
    with pytest.raises(UsageError) as err:
        load_backbone_weights(model, path)
    assert_one_line_error(err, path, "does not fit the model's trunk", *fragments)
    for key, value in model.state_dict().items():  # checked before anything is copied
        assert torch.equal(value, before[key]), key


def test_unreadable_files_are_one_line_errors(tmp_path):
    model = make_model("maskrcnn_r50_bfp", **{"model.backbone": "resnet18"})
    with pytest.raises(UsageError) as err:
        load_backbone_weights(model, tmp_path / "absent.pth")
    assert_one_line_error(err, tmp_path / "absent.pth", "no such file")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(UsageError) as err:
        load_detection_weights(model, text)
    assert_one_line_error(err, text, "cannot be read by torch.load")
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(UsageError) as err:
        load_detection_weights(model, listed)
    assert_one_line_error(err, listed, "holds a list")


# ---------------------------------------------------------------------------------------------
# torchvision COCO Mask R-CNN, and our own checkpoints


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """torchvision's ``maskrcnn_resnet50_fpn`` (91 classes) state_dict, saved as its COCO .pth is:
    trained with a FrozenBatchNorm2d trunk, so without the trunk's ``num_batches_tracked`` counters
    (and the COCO configs freeze the trunk's BN as well)."""
    torch.manual_seed(0)
    theirs = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    state = {k: v for k, v in redraw(theirs, seed=2).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("coco") / "maskrcnn_resnet50_fpn_coco.pth"
    torch.save(state, path)
    return path, state


def test_coco_maskrcnn_into_bfp_loads_every_tensor(coco_file):
    path, state = coco_file
    model = make_model("maskrcnn_r50_bfp")
    report = load_detection_weights(model, path)
    target = model.state_dict()
    assert sorted(report.loaded) == sorted(target) == sorted(state)
    assert report.skipped == report.fresh == report.warnings == []
    for key, value in target.items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("fpt_input", ["fpn", "lateral"])
def test_coco_maskrcnn_into_fpt_leaves_the_neck_fresh(coco_file, fpt_input):
    path, state = coco_file
    model = make_model("maskrcnn_r50_fpt", **{"fpt.input": fpt_input})
    before = snapshot(model)
    report = load_detection_weights(model, path)
    target = model.state_dict()
    new = {k for k in target if k.startswith("backbone.fpt.")}
    if fpt_input == "lateral":  # the seed's arrangement: 1x1 laterals replace the FPN
        new |= {k for k in target if k.startswith("backbone.laterals.")}
        assert set(report.skipped) == {k for k in state if k.startswith("backbone.fpn.")} != set()
        assert len(report.warnings) == 1 and "fpt.input lateral" in report.warnings[0]
    else:
        assert report.skipped == report.warnings == []
    assert len(new) > 100 and set(report.fresh) == new
    assert set(report.loaded) == set(target) - new
    for key in report.loaded:
        assert torch.equal(target[key], state[key]), key
    for key in new:  # left exactly as initialised
        assert torch.equal(target[key], before[key]), key
    assert f"{len(new)} initialised fresh (backbone.fpt.*: " in report.summary()


def test_coco_maskrcnn_into_five_classes_skips_the_predictors(coco_file):
    path, state = coco_file
    model = make_model("maskrcnn_r50_bfp", **{"model.num_classes": 5})
    before = snapshot(model)
    report = load_detection_weights(model, path)
    target = model.state_dict()
    assert set(report.skipped) == set(report.fresh) == PREDICTORS
    assert set(report.loaded) == set(target) - PREDICTORS
    for key in PREDICTORS:
        assert torch.equal(target[key], before[key]), key
    for key in report.loaded:
        assert torch.equal(target[key], state[key]), key
    assert len(report.warnings) == 1
    assert "num_classes" in report.warnings[0] and "file (91, 1024) vs model (5, 1024)" in report.warnings[0]


def test_own_ddp_checkpoint_loads(tmp_path):
    # The engine's checkpoints: {"model": state_dict, ...}, saved from DDP with "module." keys.
    torch.manual_seed(0)
    source = make_model("maskrcnn_r50_fpt", **{"model.backbone": "resnet18"})
    state = redraw(source, seed=3)
    path = tmp_path / "last.pth"
    torch.save({"model": {"module." + k: v for k, v in state.items()}, "iteration": 7}, path)
    torch.manual_seed(1)
    model = make_model("maskrcnn_r50_fpt", **{"model.backbone": "resnet18"})
    report = load_detection_weights(model, path)
    assert report.fresh == report.skipped == [] and len(report.loaded) == len(state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_detection_checkpoint_that_does_not_fit_is_an_error(tmp_path):
    model = make_model("maskrcnn_r50_bfp", **{"model.backbone": "resnet18"})
    state = dict(model.state_dict())
    del state["rpn.head.conv.0.0.weight"]
    state["roi_heads.extra_head.weight"] = torch.zeros(3)
    state["backbone.fpn.inner_blocks.0.0.weight"] = torch.zeros(256, 256, 1, 1)  # an R-50 FPN's C2 lateral
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    before = snapshot(model)
    with pytest.raises(UsageError) as err:
        load_detection_weights(model, path)
    assert_one_line_error(err, path, "1 missing from the file (rpn.head.conv.0.0.weight)",
                          "1 not in the model (roi_heads.extra_head.weight)",
                          "backbone.fpn.inner_blocks.0.0.weight: file (256, 256, 1, 1) vs model (256, 64, 1, 1)")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


# ---------------------------------------------------------------------------------------------
# Detectron (caffe2) .pkl


def detectron_blobs(resnet: torchvision.models.ResNet) -> dict[str, np.ndarray]:
    """A torchvision bottleneck ResNet's trunk in Detectron's blob names (ResNet.py's naming:
    ``res{stage}_{block}_branch{1|2a|2b|2c}``, affine channel ``_bn_s``/``_bn_b``), written from
    the module structure, independently of the loader's regular expressions."""
    sd = {k: v.numpy().copy() for k, v in resnet.state_dict().items()}
    blobs = {"conv1_w": sd["conv1.weight"], "res_conv1_bn_s": sd["bn1.weight"], "res_conv1_bn_b": sd["bn1.bias"]}
    for stage, layer in enumerate([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4], start=2):
        for index, block in enumerate(layer):
            tv, c2 = f"layer{stage - 1}.{index}", f"res{stage}_{index}"
            for branch, conv, bn in [("2a", block.conv1, "bn1"), ("2b", block.conv2, "bn2"),
                                     ("2c", block.conv3, "bn3")]:
                blobs[f"{c2}_branch{branch}_w"] = conv.weight.detach().numpy().copy()
                blobs[f"{c2}_branch{branch}_bn_s"] = sd[f"{tv}.{bn}.weight"]
                blobs[f"{c2}_branch{branch}_bn_b"] = sd[f"{tv}.{bn}.bias"]
            if block.downsample is not None:
                blobs[f"{c2}_branch1_w"] = block.downsample[0].weight.detach().numpy().copy()
                blobs[f"{c2}_branch1_bn_s"] = sd[f"{tv}.downsample.1.weight"]
                blobs[f"{c2}_branch1_bn_b"] = sd[f"{tv}.downsample.1.bias"]
    return blobs


# Blobs a Detectron file carries besides the trunk: the ImageNet classifier, SGD momentum, a
# detection model's FPN; all skipped.
EXTRA_BLOBS = ["fc1000_w", "fc1000_b", "conv1_w_momentum", "res2_0_branch2a_w_momentum", "fpn_inner_res5_2_sum_w"]


@pytest.fixture(scope="module")
def resnet50_blobs() -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(weights=None)
    state = redraw(resnet, seed=4)
    blobs = detectron_blobs(resnet)
    assert len(blobs) == 3 + 16 * 9 + 4 * 3  # stem + 16 blocks x (3 convs, 3 scales, 3 biases) + 4 shortcuts
    for name in EXTRA_BLOBS:
        blobs[name] = np.ones(3, dtype=np.float32)
    return state, blobs


def write_pkl(path: Path, obj: Any) -> Path:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)  # Detectron's files are Python 2 pickles
    return path


def caffe_model(**overrides: Any) -> nn.Module:
    """R-50 BFP set up as Detectron weights want it: frozen affine BN, caffe pixels."""
    model = make_model("maskrcnn_r50_bfp", **{"model.backbone_norm": "frozen_bn", "model.pixel": "caffe", **overrides})
    assert list(model.transform.image_mean) == CAFFE_MEAN and list(model.transform.image_std) == [1.0, 1.0, 1.0]
    return model


@pytest.mark.parametrize("layout", ["wrapped", "bare"])
def test_detectron_pkl_loads_trunk_exactly(tmp_path, resnet50_blobs, layout):
    state, blobs = resnet50_blobs
    path = write_pkl(tmp_path / "R-50.pkl", {"blobs": blobs, "cfg": "MODEL: {}"} if layout == "wrapped" else blobs)
    model = caffe_model()
    before = snapshot(model)
    report = load_detectron_weights(model, path)

    body = model.backbone.body.state_dict()
    statistics = {k for k in body if k.endswith(("running_mean", "running_var"))}
    assert set(report.loaded) == {"backbone.body." + k for k in set(body) - statistics}
    assert set(report.derived) == {"backbone.body." + k for k in statistics}
    assert sorted(report.skipped) == sorted(EXTRA_BLOBS)
    for key in set(body) - statistics:
        assert torch.equal(body[key], state[key]), key
    for key, value in model.state_dict().items():
        if not key.startswith("backbone.body."):
            assert torch.equal(value, before[key]), key
    # caffe pixels and frozen BN: the only warning is the stride placement of MSRA's ResNet-50.
    assert len(report.warnings) == 1 and "1x1" in report.warnings[0]

    # Affine channel exactly: FrozenBatchNorm2d(x) == s * x + b, bit for bit, with s, b the blobs.
    bn = model.backbone.body.layer2[0].bn2
    s = torch.from_numpy(blobs["res3_0_branch2b_bn_s"]).view(1, -1, 1, 1)
    b = torch.from_numpy(blobs["res3_0_branch2b_bn_b"]).view(1, -1, 1, 1)
    x = torch.randn(2, bn.weight.numel(), 5, 7, generator=torch.Generator().manual_seed(5)) * 10
    assert torch.equal(bn(x), x * s + b)
    # ...which the textbook choice (running_var = 1) would miss: rsqrt(1 + 1e-5) != 1.
    bn.running_var.fill_(1.0)
    assert not torch.equal(bn(x), x * s + b)


def test_detectron_pkl_warns_about_pixels_and_trainable_bn(tmp_path, resnet50_blobs):
    path = write_pkl(tmp_path / "R-50.pkl", {"blobs": resnet50_blobs[1]})
    model = make_model("maskrcnn_r50_bfp", **{"model.backbone_norm": "bn"})  # torchvision pixels, nn.BatchNorm2d
    report = load_detectron_weights(model, path)
    assert len(report.warnings) == 3
    assert "model.pixel caffe" in report.warnings[0] and "frozen_bn" in report.warnings[1]
    assert "3 warnings" in report.summary()


def _extra_block(blobs: dict) -> None:  # an R-101's res4_6 in an R-50 file
    blobs["res4_6_branch2a_w"] = blobs["res4_5_branch2a_w"]


def _missing_blob(blobs: dict) -> None:
    del blobs["res5_2_branch2c_bn_b"]


def _conv_bias(blobs: dict) -> None:  # torchvision's convs have no bias: nowhere to put it
    blobs["res2_0_branch2a_b"] = np.zeros(64, dtype=np.float32)


def _wrong_shape(blobs: dict) -> None:
    blobs["conv1_w"] = np.zeros((64, 3, 3, 3), dtype=np.float32)


@pytest.mark.parametrize("edit, fragment", [
    (_extra_block, "1 not in the model (res4_6_branch2a_w (layer3.6.conv1.weight))"),
    (_missing_blob, "1 missing from the file (layer4.2.bn3.bias)"),
    (_conv_bias, "1 unrecognised (res2_0_branch2a_b)"),
    (_wrong_shape, "conv1_w: file (64, 3, 3, 3) vs model (64, 3, 7, 7)"),
])
def test_detectron_pkl_that_does_not_fit_is_an_error(tmp_path, resnet50_blobs, edit: Callable, fragment):
    blobs = dict(resnet50_blobs[1])
    edit(blobs)
    path = write_pkl(tmp_path / "R-50.pkl", {"blobs": blobs})
    model = bfp_backbone(body=resnet_body(name="resnet50", norm="frozen_bn"))  # a backbone alone: cheaper, accepted too
    before = snapshot(model)
    with pytest.raises(UsageError) as err:
        load_detectron_weights(model, path)
    assert_one_line_error(err, path, "Bottleneck ResNet, blocks [3, 4, 6, 3]", fragment)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_detectron_pkl_refuses_basic_blocks_and_foreign_pickles(tmp_path, resnet50_blobs):
    path = write_pkl(tmp_path / "R-50.pkl", {"blobs": resnet50_blobs[1]})
    with pytest.raises(UsageError) as err:
        load_detectron_weights(caffe_model(**{"model.backbone": "resnet18"}), path)
    assert_one_line_error(err, path, "bottleneck trunks only", "BasicBlock")
    foreign = write_pkl(tmp_path / "counter.pkl", {"blobs": Counter(a=1)})
    with pytest.raises(UsageError) as err:
        load_detectron_weights(bfp_backbone(body=resnet_body(name="resnet50", norm="frozen_bn")), foreign)
    assert_one_line_error(err, foreign, "refusing to unpickle collections.Counter")


def test_caffe2_names():
    # Spot checks of the table in the loader's docstring (stage resN is layer{N-1}).
    assert caffe2_to_torchvision("conv1_w") == "conv1.weight"
    assert caffe2_to_torchvision("res_conv1_bn_b") == "bn1.bias"
    assert caffe2_to_torchvision("res3_0_branch1_bn_s") == "layer2.0.downsample.1.weight"
    assert caffe2_to_torchvision("res5_2_branch2a_w") == "layer4.2.conv1.weight"
    assert caffe2_to_torchvision("res4_22_branch2c_bn_b") == "layer3.22.bn3.bias"
    assert caffe2_to_torchvision("fc1000_w") is None
    assert caffe2_to_torchvision("res2_0_branch2a_w_momentum") is None


def test_report_summary_is_one_line():
    report = LoadReport("w.pth", loaded=["a.b"] * 3, skipped=["fc.weight", "fc.bias"],
                        fresh=[f"backbone.fpt.st.{i}.w" for i in range(4)], warnings=["x"])
    assert report.summary() == ("loaded 3 tensors from w.pth; 2 skipped (fc.*: 2); "
                                "4 initialised fresh (backbone.fpt.*: 4); 1 warning")


def detectron_resnet50(x: torch.Tensor, blobs: dict[str, np.ndarray]) -> list[torch.Tensor]:
    """C2..C5 of Detectron's MSRA ResNet-50, written from its definition (Detectron
    ``modeling/ResNet.py``: ``add_ResNet_convX_body`` stem conv1 7x7/2 + AffineChannel + ReLU +
    MaxPool 3x3/2 pad 1; ``add_stage`` of 3/4/6/3 ``bottleneck_transformation`` blocks with
    ``STRIDE_1X1: True``, i.e. the stride of a stage's first block in ``branch2a`` (1x1), the
    3x3 ``branch2b`` unstrided; ``branch1`` a strided 1x1 projection on the first block; every
    BN an AffineChannel y = s * x + b), from the blobs alone."""

    def t(name):
        return torch.from_numpy(blobs[name])

    def affine(y, name):
        return y * t(f"{name}_s").view(1, -1, 1, 1) + t(f"{name}_b").view(1, -1, 1, 1)

    y = F.relu(affine(F.conv2d(x, t("conv1_w"), stride=2, padding=3), "res_conv1_bn"))
    y = F.max_pool2d(y, 3, stride=2, padding=1)
    outs = []
    for stage, (blocks, stride) in enumerate([(3, 1), (4, 2), (6, 2), (3, 2)], start=2):
        for i in range(blocks):
            p = f"res{stage}_{i}"
            s = stride if i == 0 else 1
            z = F.relu(affine(F.conv2d(y, t(f"{p}_branch2a_w"), stride=s), f"{p}_branch2a_bn"))
            z = F.relu(affine(F.conv2d(z, t(f"{p}_branch2b_w"), padding=1), f"{p}_branch2b_bn"))
            z = affine(F.conv2d(z, t(f"{p}_branch2c_w")), f"{p}_branch2c_bn")
            short = affine(F.conv2d(y, t(f"{p}_branch1_w"), stride=s), f"{p}_branch1_bn") if i == 0 else y
            y = F.relu(z + short)
        outs.append(y)
    return outs


def test_stride_in_1x1_computes_the_detectron_trunk(tmp_path):
    """model.stride_in_1x1 [code]: a converted MSRA trunk computes what Detectron computed;
    with torchvision's placement (the default) the same weights compute something else."""
    # torchvision's own initialisation keeps activations finite through 16 un-normalised blocks
    # (the module fixture's U(0.5, 1.5) weights overflow to inf, where everything is "close").
    torch.manual_seed(1)
    blobs = detectron_blobs(torchvision.models.resnet50(weights=None))
    path = write_pkl(tmp_path / "R-50.pkl", {"blobs": blobs})
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(6))
    expected = detectron_resnet50(x, blobs)
    assert all(torch.isfinite(e).all() for e in expected)
    for stride_in_1x1 in (True, False):
        model = caffe_model(**{"model.stride_in_1x1": stride_in_1x1}).eval()
        report = load_detectron_weights(model, path)
        assert any("stride_in_1x1" in w for w in report.warnings) == (not stride_in_1x1)
        with torch.no_grad():
            got = list(model.backbone.body(x).values())
        close = [torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item()) for a, b in zip(got, expected)]
        assert close == [True, stride_in_1x1, stride_in_1x1, stride_in_1x1], (stride_in_1x1, close)


def test_stride_in_1x1_refuses_trunks_without_a_strided_1x1():
    for name in ("resnet18", "resnext101_32x8d"):
        with pytest.raises(ValueError, match="model.stride_in_1x1"):
            resnet_body(name=name, stride_in_1x1=True)
