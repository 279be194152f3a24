"""Attention MACs: fptbench's fvcore handles against the spec's minimal count.

For one mixture attention with q (B, Lq, D), k (B, Lk, D), v (B, Lk, Dv) and N parts, the count
is B * Lq * Lk * (D_sim + Dv), D_sim = D (dot) or D + N (Euclidean rewrite), whatever
``attention.impl`` computes it (fptbench/engine/flops.py). The expected numbers below are written
out by hand from the shapes, so a handle that counts the padded sdpa heads, the N-fold V product,
or drops the attention altogether fails.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fptbench.engine.flops import ATTENTION, FlopAnalysis, FlopCountAnalysis, attention_macs, attention_scopes
from fptbench.modeling import GroundingTransformer, SelfTransformer

IMPLS = ("blocks", "sdpa", "naive")
B, C = 2, 32  # batch, channels of the pyramid levels in these tests
FINE, COARSE = (8, 12), (4, 6)  # Lq = 96 fine positions, Lk = 24 coarse ones


def analyse(module: nn.Module, *inputs: torch.Tensor) -> FlopAnalysis:
    torch.manual_seed(0)
    return FlopAnalysis(module.eval(), inputs)


def test_attention_macs_formula():
    assert attention_macs(batch=2, queries=96, keys=24, qk_channels=20, v_channels=16) == 2 * 96 * 24 * 36


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "kwargs, keys, expected",
    [
        # N = 2 dot parts of 16: QK 96*96*32, AV 96*96*32 (V once, not once per part)
        ({"parts": 2}, 96, B * 96 * 96 * (32 + 32)),
        # the plain-softmax ablation, N = 1
        ({"normalizer": "softmax"}, 96, B * 96 * 96 * (32 + 32)),
        # keys and values pooled to 4 x 6
        ({"parts": 2, "pool_kv": True}, 24, B * 96 * 24 * (32 + 32)),
    ],
)
def test_self_transformer_attention(impl, kwargs, keys, expected):
    st = SelfTransformer(C, attention_impl=impl, **kwargs)
    x = torch.randn(B, C, *FINE)
    analysis = analyse(st, x)
    assert analysis.attention_macs() == expected
    # the rest of the module: q, k, v and out 1x1 convs, BN and the mixture Linear, by fvcore
    convs = B * 96 * C * C * 2 + B * keys * C * C * 2
    assert analysis.total_macs() - analysis.attention_macs() == convs + B * 96 * C * 2 + (
        B * C * 2 if kwargs.get("normalizer") != "softmax" else 0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "similarity, parts, expected",
    [
        # inner 16 channels, N = 4 parts of 4 (+1 each for the Euclidean rewrite), Dv = 16
        ("euclidean", 4, B * 96 * 24 * ((16 + 4) + 16)),
        ("dot", 4, B * 96 * 24 * (16 + 16)),
        ("euclidean", 1, B * 96 * 24 * ((16 + 1) + 16)),
    ],
)
def test_grounding_transformer_attention(impl, similarity, parts, expected):
    gt = GroundingTransformer(C, inner_channels=16, parts=parts, similarity=similarity, attention_impl=impl)
    analysis = analyse(gt, torch.randn(B, C, *FINE), torch.randn(B, C, *COARSE))
    assert analysis.attention_macs() == expected


def test_count_does_not_depend_on_impl():
    # Whole-module totals too: the sdpa and naive mixing einsums inside the module count 0.
    totals = set()
    for impl in IMPLS:
        gt = GroundingTransformer(C, inner_channels=16, parts=4, attention_impl=impl)
        totals.add(analyse(gt, torch.randn(B, C, *FINE), torch.randn(B, C, *COARSE)).total_macs())
    assert len(totals) == 1


def test_local_grounding_attention_counts_the_window_once():
    # LGT, window 3, stride 2: every fine query sees 9 coarse keys; fvcore's own matmul counts,
    # relabelled as attention (not counted twice).
    gt = GroundingTransformer(C, stride=2, inner_channels=16, parts=4, window=3)
    analysis = analyse(gt, torch.randn(B, C, *FINE), torch.randn(B, C, *COARSE))
    assert analysis.attention_macs() == B * 96 * 9 * ((16 + 4) + 16)
    assert "matmul" not in analysis.by_operator()


def test_plain_fvcore_misses_the_attention():
    # Why the handles exist: fvcore alone drops the blocks kernel and lists it as unsupported.
    st = SelfTransformer(C, parts=2, attention_impl="blocks").eval()
    x = torch.randn(B, C, *FINE)
    plain = FlopCountAnalysis(st, (x,)).unsupported_ops_warnings(False).tracer_warnings("none")
    plain.total()
    assert plain.unsupported_ops()["prim::PythonOp._MoSBlockAttention"] == 1
    ours = analyse(st, x)
    assert ours.total_macs() - plain.total() == B * 96 * 96 * 64
    assert not any("PythonOp" in op or "scaled_dot" in op or "profiler" in op for op in ours.uncounted_ops())


class _MultiHead(nn.Module):
    """Plain multi-head attention (own V per head, no mixing): sdpa counts every head."""

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_sdpa_handle_plain_multi_head():
    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 5)
    analysis = analyse(_MultiHead(), q, k, v)
    assert analysis.by_operator()[ATTENTION] == 2 * 3 * 10 * 7 * (8 + 5)


class _Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.st = SelfTransformer(C, parts=2, attention_impl="naive")

    def forward(self, x, y):
        return self.st(x), torch.matmul(y, y)


def test_matmul_outside_attention_stays_matmul():
    assert attention_scopes(_Wrapper()) == frozenset({"st"})
    analysis = analyse(_Wrapper(), torch.randn(B, C, *FINE), torch.randn(4, 4))
    assert analysis.by_operator()["matmul"] == 4 * 4 * 4
    assert analysis.attention_macs("st") == B * 96 * 96 * 64
