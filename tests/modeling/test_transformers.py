"""ST, GT, RT and the FPT neck against the spec's equations, written out from each module's weights.

Each reference recomputes a module's output with explicit score matrices and the module's own
parameters, so a wiring mistake (wrong scale, split, residual, order of concatenation) fails.
Float64 and eval mode keep the comparison exact up to rounding.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from fptbench.config import load_config
from fptbench.modeling.backbone import OUT_CHANNELS
from fptbench.modeling.fpt import FeaturePyramidTransformer
from fptbench.modeling.grounding_transformer import GroundingTransformer
from fptbench.modeling.rendering_transformer import RenderingTransformer
from fptbench.modeling.self_transformer import SelfTransformer

C = 32  # narrow levels keep the explicit references cheap; every module takes the width


def randomize(module, seed=0):
    """Non-trivial BN statistics and affine terms (GT's BN starts at zero by design)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
            m.weight.data = torch.rand(m.weight.shape, generator=g, dtype=m.weight.dtype) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean = torch.randn(m.running_mean.shape, generator=g, dtype=m.running_mean.dtype)
            m.running_var = torch.rand(m.running_var.shape, generator=g, dtype=m.running_var.dtype) + 0.5
    return module.double().eval()


def maps(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]


def explicit_mos(q, k, v, pi, scale, similarity):
    """q (B, D, Lq), k (B, D, Lk), v (B, Dv, Lk) flattened maps -> (B, Dv, Lq)."""
    N = pi.shape[1]
    d = q.shape[1] // N
    W = 0
    for n in range(N):
        qn, kn = q[:, n * d : (n + 1) * d], k[:, n * d : (n + 1) * d]
        if similarity == "dot":
            s = qn.transpose(1, 2) @ kn
        else:
            s = -((qn.transpose(1, 2)[:, :, None] - kn.transpose(1, 2)[:, None]) ** 2).sum(-1)
        W = W + pi[:, n, None, None] * torch.softmax(s * scale, -1)
    return (W @ v.transpose(1, 2)).transpose(1, 2)


def explicit_pi(mixture, k):
    if mixture.proj is None:
        return torch.ones(k.shape[0], 1, dtype=k.dtype)
    return torch.softmax(k.mean((2, 3)) @ mixture.proj.weight.T, -1)


@pytest.mark.parametrize(
    "kwargs", [{}, dict(pool_kv=True), dict(shared_qk=True), dict(normalizer="softmax"), dict(parts=4, attention_impl="sdpa")]
)
def test_self_transformer_equation(kwargs):
    st = randomize(SelfTransformer(C, **kwargs))
    (x,) = maps((2, C, 7, 9))  # odd sizes
    # [code] padding excluded from each average: sum over the window / cells inside the map
    xkv = F.avg_pool2d(x, 3, 2, 1) / F.avg_pool2d(torch.ones_like(x), 3, 2, 1) if kwargs.get("pool_kv") else x
    q = st.query(x).flatten(2)
    k = (st.query if kwargs.get("shared_qk") else st.key)(xkv)
    v = st.value(xkv).flatten(2)
    pi = explicit_pi(st.mixture, k)
    assert pi.shape[1] == (1 if kwargs.get("normalizer") == "softmax" else kwargs.get("parts", 2))
    o = explicit_mos(q, k.flatten(2), v, pi, 1 / math.sqrt(C), "dot").reshape(x.shape)  # scale [code]
    expected = x + st.norm(st.out(o))
    torch.testing.assert_close(st(x), expected)


@pytest.mark.parametrize("similarity", ["euclidean", "dot"])
def test_grounding_transformer_equation(similarity):
    gt = randomize(GroundingTransformer(C, inner_channels=16, parts=4, similarity=similarity, stride=4))
    fine, coarse = maps((2, C, 9, 11), (2, C, 3, 3))
    q, k, v = gt.query(fine).flatten(2), gt.key(coarse), gt.value(coarse).flatten(2)
    pi = explicit_pi(gt.mixture, k)
    o = explicit_mos(q, k.flatten(2), v, pi, 1 / math.sqrt(16 / 4), similarity).reshape(2, 16, 9, 11)
    torch.testing.assert_close(gt(fine, coarse), gt.norm(gt.out(o)))


def test_grounding_transformer_adds_nothing_at_init():
    # BN weight and bias start at zero [code]: GT's output is exactly zero until trained.
    gt = GroundingTransformer(C, inner_channels=16).eval()
    fine, coarse = (t.float() for t in maps((1, C, 8, 8), (1, C, 4, 4)))
    assert gt(fine, coarse).abs().max().item() == 0.0


def test_local_grounding_uses_its_stride_and_window():
    from tests.ops.test_local_attention import reference as local_reference

    gt = randomize(GroundingTransformer(C, inner_channels=8, parts=2, stride=4, window=3))
    fine, coarse = maps((1, C, 13, 10), (1, C, 3, 3))
    q, k, v = gt.query(fine), gt.key(coarse), gt.value(coarse)
    pi = explicit_pi(gt.mixture, k)
    o = local_reference(q, k, v, pi, stride=4, window=3, similarity="euclidean")
    torch.testing.assert_close(gt(fine, coarse), gt.norm(gt.out(o)))


@pytest.mark.parametrize("stride", [2, 4, 8])
def test_rendering_transformer_paper_equation(stride):
    rt = randomize(RenderingTransformer(C, stride=stride))
    convs = [m for m in rt.downsample if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] * int(math.log2(stride))  # log2(s) stride-2 convs [paper]
    fine = maps((2, C, 25, 33))[0]  # odd sizes: ceil halving, as a ResNet pyramid does
    size = (math.ceil(25 / stride), math.ceil(33 / stride))
    coarse = maps((2, C) + size, seed=1)[0]
    w = fine.mean((2, 3), keepdim=True)
    expected = F.relu(rt.query(coarse * w) + rt.downsample(fine))
    torch.testing.assert_close(rt(coarse, fine), expected)


def test_rendering_transformer_code_variant_handles_every_stride():
    # The authors' single stride-2 conv crashes for s > 2; ours renders P5 from P2 (s = 8).
    rt = RenderingTransformer(C, stride=8, variant="code").train()
    fine, coarse = (t.float() for t in maps((2, C, 32, 40), (2, C, 4, 5)))
    out = rt(coarse, fine)
    assert out.shape == coarse.shape
    out.sum().backward()


def test_fpt_modules_per_pair():
    full = FeaturePyramidTransformer(C)
    assert sorted(full.st) == ["p2", "p3", "p4", "p5"]
    assert sorted(full.gt) == sorted(f"p{t}_from_p{s}" for t in range(2, 6) for s in range(t + 1, 6))
    assert sorted(full.rt) == sorted(f"p{t}_from_p{s}" for t in range(2, 6) for s in range(2, t))
    # Every level concatenates ST + (levels - 1) cross-level maps + itself.
    assert [full.fuse[n][0].in_channels for n in full.names] == [5 * C] * 4
    adj = FeaturePyramidTransformer(C, pairs="adjacent")
    assert (len(adj.st), len(adj.gt), len(adj.rt)) == (4, 3, 3)
    assert [adj.fuse[n][0].in_channels for n in adj.names] == [3 * C, 4 * C, 4 * C, 3 * C]
    only_gt = FeaturePyramidTransformer(C, st=False, rt=False)
    assert (len(only_gt.st), len(only_gt.gt), len(only_gt.rt)) == (0, 6, 0)
    assert only_gt.fuse["p5"][0].in_channels == C  # coarsest level: no GT, only itself
    with pytest.raises(ValueError, match="at least one"):
        FeaturePyramidTransformer(C, st=False, gt=False, rt=False)


def test_fpt_concatenation_order():
    # [code] FPT_a.py, FPT.forward (lines 87-94): P5 = [ST, RT<-P4, RT<-P3, RT<-P2, X];
    # P4 = [ST, RT<-P3, RT<-P2, GT<-P5, X]; P3 = [ST, RT<-P2, GT<-P4, GT<-P5, X];
    # P2 = [ST, GT<-P3, GT<-P4, GT<-P5, X]. Make a level's fusion conv an identity on one block
    # at a time and check which transformer comes out.
    fpt = randomize(FeaturePyramidTransformer(C, norm="none", gt_args=dict(inner_channels=16)))
    feats = maps((2, C, 16, 20), (2, C, 8, 10), (2, C, 4, 5), (2, C, 2, 3))
    order = {
        3: ["st", ("rt", 2), ("rt", 1), ("rt", 0), "x"],
        2: ["st", ("rt", 1), ("rt", 0), ("gt", 3), "x"],
        1: ["st", ("rt", 0), ("gt", 2), ("gt", 3), "x"],
        0: ["st", ("gt", 1), ("gt", 2), ("gt", 3), "x"],
    }
    for t, blocks in order.items():
        name = f"p{t + 2}"
        conv = fpt.fuse[name][0]
        for i, block in enumerate(blocks):
            if block == "st":
                want = fpt.st[name](feats[t])
            elif block == "x":
                want = feats[t]
            else:
                kind, s = block
                want = getattr(fpt, kind)[f"{name}_from_p{s + 2}"](feats[t], feats[s])
            conv.weight.data.zero_()
            conv.bias.data.zero_()
            conv.weight.data[:, i * C : (i + 1) * C, 1, 1] = torch.eye(C, dtype=torch.float64)
            torch.testing.assert_close(fpt(feats)[t], want, msg=f"{name} block {i}: {block}")


def test_identity_fusion_starts_as_the_input_pyramid():
    # fuse_init="identity" [ours]: with norm "none" the untrained neck returns BFP's maps exactly,
    # while every transformer still gets gradients through the fusion conv after one step.
    fpt = FeaturePyramidTransformer(C, norm="none", fuse_init="identity", gt_args=dict(inner_channels=16)).eval()
    feats = [t.float() for t in maps((1, C, 16, 20), (1, C, 8, 10), (1, C, 4, 5), (1, C, 2, 3))]
    assert all(torch.equal(a, b) for a, b in zip(fpt(feats), feats))
    # Two SGD steps: each fusion block of a transformer gets a gradient at the first step, each
    # transformer's own weights at the second; every parameter of the neck has moved. (GT's
    # zero-initialised BN [code] and a zero fusion block would hold each other at zero for good.)
    fpt.train()
    start = {n: p.detach().clone() for n, p in fpt.named_parameters()}
    opt = torch.optim.SGD(fpt.parameters(), lr=0.1)
    for step in range(2):
        opt.zero_grad()
        sum(o.square().mean() for o in fpt(feats)).backward()
        if step == 0:
            for t, name in enumerate(fpt.names):
                grad = fpt.fuse[name][0].weight.grad
                for i, (kind, s) in enumerate(fpt.inputs[t][:-1]):
                    assert grad[:, i * C : (i + 1) * C].abs().sum() > 0, f"{name}'s fusion block {i} ({kind} from {s})"
        opt.step()
    # (GT's value bias shifts every output channel by a constant, which its training-mode BN takes
    # out again: zero gradient, whatever the start.)
    frozen = [n for n, p in fpt.named_parameters() if torch.equal(p, start[n]) and not n.endswith("value.bias")]
    assert not frozen, frozen
    with pytest.raises(ValueError, match="fuse_init"):
        FeaturePyramidTransformer(C, fuse_init="zeros")


def test_fpt_trains_on_odd_sizes_with_every_pair():
    torch.manual_seed(0)
    fpt = FeaturePyramidTransformer(C, gt_args=dict(inner_channels=16), norm="gn").train()
    feats = [torch.randn(2, C, h, w) for h, w in [(25, 33), (13, 17), (7, 9), (4, 5)]]
    outs = fpt(feats)
    assert [o.shape for o in outs] == [f.shape for f in feats]
    sum(o.square().mean() for o in outs).backward()
    missing = [n for n, p in fpt.named_parameters() if p.grad is None]
    assert not missing


def test_from_config_passes_every_switch():
    cfg = load_config(
        "maskrcnn_r50_fpt",
        [
            ("fpt.pairs", "adjacent"),
            ("fpt.norm", "bn"),
            ("st.pool_kv", "true"),
            ("st.shared_qk", "true"),
            ("st.normalizer", "softmax"),
            ("gt.similarity", "dot"),
            ("gt.window", "5"),
            ("gt.channels", "64"),
            ("rt.variant", "code"),
            ("attention.impl", "blocks"),
            ("attention.block_size", "32"),
        ],
    )
    fpt = FeaturePyramidTransformer.from_config(cfg, OUT_CHANNELS)
    st, gt, rt = fpt.st["p2"], fpt.gt["p2_from_p3"], fpt.rt["p3_from_p2"]
    assert len(fpt.gt) == 3 and isinstance(fpt.fuse["p2"][1], torch.nn.BatchNorm2d)
    assert st.pool_kv and st.key is None and st.mixture.parts == 1
    assert (gt.similarity, gt.window, gt.query.out_channels) == ("dot", 5, 64)
    assert rt.variant == "code"
    assert (st.attention_impl, st.block_size) == ("blocks", 32)
