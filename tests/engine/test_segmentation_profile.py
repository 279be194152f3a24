"""profile_model of a segmentation model: parts, the attention counted, latency, the model left alone.

Tiny: ResNet-18 at output stride 8 on a 64 x 64 input, so the UFP's two levels (GCN kernels 1
and 3) are 8 x 8 maps of 16 channels. The attention figure is checked against the spec's minimal
count written out from those shapes.
"""

from __future__ import annotations

import json

import pytest
import torch

from fptbench.config import load_config
from fptbench.engine.model import build_model
from fptbench.engine.profile import SEG_PARTS, SEG_TOP_PARTS, count_parameters, format_profile, profile_model

SIZE = (64, 64)
TINY = [("model.fpn_channels", 16), ("gt.channels", 8), ("fpt.norm", "bn"), ("seg.ufp_kernels", "[1, 3]")]
L = 8 * 8  # positions of a level: 64 px / output stride 8, squared


def expected_attention(window: int) -> tuple[int, int]:
    """ST on each of the 2 levels: Lq = Lk = L, D = Dv = 16. GT from level 1 to level 0 (stride
    ratio 1): 4 Euclidean parts of 2 channels (+1 each), Dv = 8; global: Lk = L, LGT: window^2
    keys per query (zero-padded ones included)."""
    st = 2 * L * L * (16 + 16)
    keys = window * window if window else L
    return st, L * keys * (8 + 4 + 8)


@pytest.fixture(scope="module")
def lgt_profile():
    cfg = load_config("synth_seg_r18_lgt", TINY)
    torch.manual_seed(0)
    model = build_model(cfg)  # training mode
    return profile_model(cfg, size=SIZE, runs=2, warmup=1, model=model), model


def test_segmentation_profile_counts_the_attention(lgt_profile):
    result, model = lgt_profile
    json.dumps(result, allow_nan=False)
    parts = result["by_part"]
    assert set(SEG_PARTS) <= set(parts) <= set(SEG_PARTS) | {"other"}
    assert sum(parts[p]["macs"] for p in (*SEG_TOP_PARTS, "other") if p in parts) == result["macs"]
    assert sum(parts[p]["params"] for p in SEG_TOP_PARTS) == result["params"] == count_parameters(model, SEG_PARTS)["total"]
    assert parts["fpt"]["macs"] == sum(parts[p]["macs"] for p in ("fpt.st", "fpt.gt", "fpt.rt", "fpt.fusion"))
    assert parts["fpt"]["params"] == sum(p.numel() for p in model.fpt.parameters())
    assert parts["head"]["params"] == sum(p.numel() for p in model.classifier.parameters())
    assert parts["aux_head"]["macs"] > 0 and parts["pyramid"]["macs"] > 0 and parts["backbone"]["macs"] > 0
    st, gt = expected_attention(window=5)
    assert result["attention"]["by_part"] == {"fpt.st": st, "fpt.gt": gt} and result["attention"]["macs"] == st + gt > 0
    assert parts["fpt.st"]["macs"] > st and parts["fpt.gt"]["macs"] > gt  # + their 1x1 convs
    assert result["padded_size"] == [64, 64] and "proposals" not in result  # nothing data-dependent
    for key in ("latency_ms", "neck_latency_ms"):
        assert result[key]["runs"] == 2 and 0 < result[key]["median"] <= result[key]["p90"]
    assert model.training and model.fpt.training  # left as it came


def test_global_gt_counts_every_key_and_the_baseline_none():
    st, gt = expected_attention(window=0)
    cfg = load_config("synth_seg_r18_fpt", TINY)
    result = profile_model(cfg, size=SIZE, runs=1, warmup=0)
    assert result["attention"]["by_part"] == {"fpt.st": st, "fpt.gt": gt}
    base = profile_model(load_config("synth_seg_r18_base", TINY), size=SIZE, runs=1, warmup=0)
    assert base["attention"]["macs"] == 0
    for part in ("fpt", "fpt.st", "fpt.gt", "fpt.rt", "fpt.fusion"):
        assert base["by_part"][part] == {"params": 0, "macs": 0, "flops": 0}
    assert base["by_part"]["backbone"] == result["by_part"]["backbone"]  # the same trunk


def test_format_profile_of_a_segmentation_model(lgt_profile):
    text = format_profile(lgt_profile[0])
    assert all(part in text for part in SEG_PARTS)
    assert "data-dependent" not in text and "attention (QK + AV products" in text
