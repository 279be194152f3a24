"""profile_model: parameters and MACs by part, fixed proposal counts, latency, memory, JSON.

Small and fast: ResNet-18 on 64 x 64 inputs with 20 proposals and 5 detections (the RoI heads
would otherwise dominate the time). The attention figure is checked against the spec's minimal
count written out from the pyramid's shapes.
"""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

from fptbench.config import load_config
from fptbench.engine.profile import PARTS, TOP_PARTS, count_parameters, format_profile, profile_model
from fptbench.errors import UsageError
from fptbench.modeling import build_model

SIZE = (64, 64)  # P2..P5 = 16x16, 8x8, 4x4, 2x2
SMALL = [("model.rpn_post_nms_top_n_test", 20), ("model.box_detections_per_img", 5)]


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _torchvision_coco_recipe() -> torch.nn.Module:
    """torchvision's maskrcnn_resnet50_fpn as its builder makes it from ImageNet weights (without
    downloading them): a FrozenBatchNorm2d ResNet-50, 3 trainable stages, 91 classes."""
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    return MaskRCNN(_resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3), num_classes=91)


def test_bfp_parameters_equal_torchvision():
    # With FPT off the model is torchvision's Mask R-CNN R50-FPN (91 classes), part by part: as
    # torchvision builds it from ImageNet weights for the COCO config (frozen BN, whose affine
    # tensors are buffers), and from scratch (every BatchNorm trained).
    model = build_model(load_config("maskrcnn_r50_bfp"))
    reference = _torchvision_coco_recipe()
    counts = count_parameters(model)
    assert counts["total"] == params(reference)
    trainable = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert trainable(model) == trainable(reference) < params(reference)  # stem and res2 frozen
    model = build_model(load_config("maskrcnn_r50_bfp", [("model.backbone_norm", "bn")]))
    reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    counts = count_parameters(model)
    assert counts["total"] == params(reference)
    assert counts["backbone"] == params(reference.backbone.body)
    assert counts["bfp"] == params(reference.backbone.fpn)
    assert counts["rpn"] == params(reference.rpn) and counts["roi_heads"] == params(reference.roi_heads)
    assert counts["fpt"] == 0
    assert sum(counts[p] for p in TOP_PARTS) == counts["total"]


def test_fpt_parameters_by_part():
    model = build_model(load_config("maskrcnn_r50_fpt"))
    counts = count_parameters(model)
    fpt = model.backbone.fpt
    assert counts["fpt"] == params(fpt) > 0
    assert counts["fpt"] == counts["fpt.st"] + counts["fpt.gt"] + counts["fpt.rt"] + counts["fpt.fusion"]
    assert counts["fpt.gt"] == params(fpt.gt) and counts["fpt.fusion"] == params(fpt.fuse)
    assert sum(counts[p] for p in TOP_PARTS) == counts["total"]


def expected_attention(size: tuple[int, int]) -> tuple[int, int]:
    """ST: Lq = Lk = level positions, D = Dv = d (the config's pyramid width). GT: fine queries,
    coarse keys, 4 Euclidean parts of gt.channels / 4 (+1 each) and Dv = gt.channels, for every
    (fine, coarse) pair (fpt.pairs all)."""
    cfg = load_config("synth_r18_fpt")
    d, c = cfg["model"]["fpn_channels"], cfg["gt"]["channels"]
    assert cfg["gt"]["parts"] == 4 and cfg["fpt"]["pairs"] == "all"
    h, w = size
    positions = [(h // s) * (w // s) for s in (4, 8, 16, 32)]
    st = sum(n * n * (d + d) for n in positions)
    gt = sum(positions[f] * positions[c_] * (c + 4 + c) for f in range(4) for c_ in range(f + 1, 4))
    return st, gt


@pytest.fixture(scope="module")
def fpt_profile():
    cfg = load_config("synth_r18_fpt", SMALL)
    torch.manual_seed(0)
    model = build_model(cfg)  # training mode, the config's 128 px transform
    result = profile_model(cfg, size=SIZE, runs=2, warmup=1, model=model)
    return result, model


def test_profile_counts(fpt_profile):
    result, _ = fpt_profile
    json.dumps(result, allow_nan=False)  # JSON-able as it is
    assert result["input_size"] == [64, 64] and result["device"] == "cpu"
    assert result["flops"] == 2 * result["macs"] and result["attention"]["flops"] == 2 * result["attention"]["macs"]
    parts = result["by_part"]
    assert set(PARTS) <= set(parts) and "other" not in parts
    for row in parts.values():
        assert row["flops"] == 2 * row["macs"]
    assert sum(parts[p]["macs"] for p in TOP_PARTS) == result["macs"]
    assert sum(parts[p]["params"] for p in TOP_PARTS) == result["params"]
    assert parts["fpt"]["macs"] == sum(parts[p]["macs"] for p in ("fpt.st", "fpt.gt", "fpt.rt", "fpt.fusion"))
    assert parts["transform"]["params"] == 0
    st, gt = expected_attention(SIZE)
    assert result["attention"]["by_part"] == {"fpt.st": st, "fpt.gt": gt}
    assert result["attention"]["macs"] == st + gt
    assert parts["fpt.st"]["macs"] > st and parts["fpt.gt"]["macs"] > gt  # + the 1x1 convs
    ops = result["uncounted_ops"]
    assert "torchvision::roi_align" in ops and "aten::softmax" in ops  # listed, not hidden
    assert not any("PythonOp" in op or "scaled_dot_product" in op for op in ops)


def test_profile_fixed_proposals_and_timing(fpt_profile):
    result, _ = fpt_profile
    assert result["proposals"]["count"] == 20 and result["proposals"]["detections"] == 5
    assert result["proposals"]["parts"] == ["roi_heads"]
    for key in ("latency_ms", "neck_latency_ms"):
        lat = result[key]
        assert lat["runs"] == 2 and 0 < lat["median"] <= lat["p90"]
    assert result["neck_latency_ms"]["median"] < result["latency_ms"]["median"]
    assert result["peak_memory_mb"] >= 0 and result["peak_memory_source"].startswith("cpu: ")


def test_profile_leaves_the_model_as_it_was(fpt_profile):
    _, model = fpt_profile
    assert model.training and model.backbone.fpt.training
    assert model.transform.min_size == (128,) and model.transform.max_size == 128
    assert model.rpn.nms_thresh == 0.7 and model.roi_heads.score_thresh == 0.05
    assert type(model.backbone.body).__name__ == "IntermediateLayerGetter"


def test_format_profile(fpt_profile):
    result, _ = fpt_profile
    text = format_profile(result)
    st, gt = expected_attention(SIZE)
    assert f"{(st + gt) / 1e9:,.2f} GMACs" in text
    assert "uncounted ops: " in text and "torchvision::roi_align" in text
    assert "20 proposals, 5 detections" in text
    assert all(part in text for part in PARTS)


def test_bfp_profile_has_no_fpt():
    cfg = load_config("synth_r18_bfp", SMALL)
    result = profile_model(cfg, size=SIZE, runs=1, warmup=0)
    for part in ("fpt", "fpt.st", "fpt.gt", "fpt.rt", "fpt.fusion"):
        assert result["by_part"][part] == {"params": 0, "macs": 0, "flops": 0}
    assert result["attention"]["macs"] == 0
    assert sum(result["by_part"][p]["macs"] for p in TOP_PARTS) == result["macs"]


def test_roi_heads_macs_follow_the_proposal_count():
    # Faster R-CNN: 10 more proposals = 10 more runs of the box head (TwoMLPHead + predictor).
    results = []
    for proposals in (20, 30):
        cfg = load_config("synth_r18_bfp", [("model.head", "faster_rcnn"), ("model.rpn_post_nms_top_n_test", proposals)])
        results.append(profile_model(cfg, size=SIZE, runs=1, warmup=0))
    assert [r["proposals"]["count"] for r in results] == [20, 30]
    assert results[0]["proposals"]["detections"] is None
    d, fc = cfg["model"]["fpn_channels"], cfg["model"]["box_head_dim"]  # TwoMLPHead + predictor (8 classes)
    per_roi = d * 7 * 7 * fc + fc * fc + fc * 8 + fc * 8 * 4
    rpn = [r["by_part"]["rpn"]["macs"] for r in results]
    assert rpn[0] == rpn[1]
    assert results[1]["by_part"]["roi_heads"]["macs"] - results[0]["by_part"]["roi_heads"]["macs"] == 10 * per_roi


@pytest.mark.parametrize(
    "kwargs, message",
    [({"runs": 0}, "runs"), ({"warmup": -1}, "warmup"), ({"size": (64,)}, "size"), ({"device": "tpu"}, "device")],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(UsageError, match=message):
        profile_model(load_config("synth_r18_bfp"), **kwargs)


def test_cli_profile_writes_json(run_cli, tmp_path):
    out = tmp_path / "profile.json"
    done = run_cli("profile", "synth_r18_fpt", "--size", "64", "64", "--runs", "1", "--warmup", "0",
                   "--set", "model.rpn_post_nms_top_n_test", "20", "--set", "model.box_detections_per_img", "5",
                   "--json", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    st, gt = expected_attention(SIZE)
    assert result["attention"]["macs"] == st + gt
    assert "attention (QK + AV products" in done.stdout and "Warning" not in done.stderr


def test_the_profile_states_its_dtype_and_tf32_settings(fpt_profile):
    """A latency means little without the precision it was measured in: fp32 (the model's
    parameters, no autocast) and torch's TF32 flags, which on CUDA decide fp32's real precision."""
    result, _ = fpt_profile
    assert result["dtype"] == "float32"
    assert result["tf32"] == {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    assert "float32, TF32 matmul " in format_profile(result)


def test_the_tf32_record_follows_torchs_flags():
    cfg = load_config("synth_r18_bfp", SMALL)
    torch.manual_seed(0)
    model = build_model(cfg)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, False
        result = profile_model(cfg, size=SIZE, runs=1, warmup=0, model=model)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert result["tf32"] == {"matmul": True, "cudnn": False}
