"""Every [code] setting against the authors' modules, rebuilt here independently [issue #12].

The references below are written plainly from the authors' files (ZHANGDONG-NJUST/FPT at
c7c76f9, ``lib/modeling/``), one function per module, each saying which lines it follows; no
line of their code is copied. Each test copies our module's weights into its reference and
compares outputs and the gradients of inputs and weights, in eval mode and in train mode with
dropout 0, in float32 to 1e-5 relative.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fptbench.modeling.backbone import FPTBackbone, resnet_body, stage_channels
from fptbench.modeling.fpt import FeaturePyramidTransformer
from fptbench.modeling.grounding_transformer import GroundingTransformer
from fptbench.modeling.rendering_transformer import RenderingTransformer
from fptbench.modeling.self_transformer import SelfTransformer

C = 32


def bn(x, m: nn.BatchNorm2d, p, name, train):
    """BatchNorm with the reference's own copy of the weights and of the running statistics."""
    return F.batch_norm(x, m.running_mean.clone(), m.running_var.clone(), p[f"{name}.weight"], p[f"{name}.bias"],
                        training=train, momentum=0.0, eps=m.eps)


def conv(x, p, name, **kw):
    return F.conv2d(x, p[f"{name}.weight"], p.get(f"{name}.bias"), **kw)


# --- references --------------------------------------------------------------------------------


def ref_self_trans(x, p, st, train):
    """self_trans.py: SelfTrans.forward (lines 58-80) with pooling=True, kq_transform='conv'
    (conv_ks = conv_qs, line 45), and MixtureOfSoftMax.forward (lines 98-118), n_head = 1,
    d_k = d_v = C, dropout 0: temperature sqrt(d_k) (line 86); pi from the mean of the
    full-resolution queries (line 104-105); each softmax mixed by pi, summed, times V (115-117);
    output conv (no bias), norm, plus the residual (75-79)."""
    B, _, H, W = x.shape
    pooled = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)  # line 22
    qt = conv(x, p, "query").view(B, C, H * W)
    kt = conv(pooled, p, "query").view(B, C, -1)
    vt = conv(pooled, p, "value").view(B, C, -1)
    m = 2
    bar_qt = qt.mean(2, keepdim=True)  # (B, d_k, 1)
    pi = torch.softmax(p["mixture.proj.weight"] @ bar_qt, dim=1).view(B * m, 1, 1)
    q = qt.view(B * m, C // m, H * W).transpose(1, 2)
    attn = torch.softmax(torch.bmm(q, kt.view(B * m, C // m, -1)) / C**0.5, dim=2)
    attn = (attn * pi).view(B, m, H * W, -1).sum(1)
    out = torch.bmm(attn, vt.transpose(1, 2)).transpose(1, 2).reshape(B, C, H, W)
    return bn(conv(out, p, "out"), st.norm, p, "norm", train) + x


def ref_ground_trans(x_low, x_high, p, gt, train):
    """grounding_trans.py: GroundTrans.forward (lines 60-105), mode='dot', inter_channels =
    in_channels // 2 (line 18), bn_layer=True: theta on the finer x_low, phi and g on the coarser
    x_high (lines 66, 76-77), f = theta^T phi (79), f / N with N the coarse positions (97-98),
    y = f g (99), W_z = conv with bias + BN (38-41)."""
    B = x_low.shape[0]
    Ci = C // 2
    g_x = conv(x_high, p, "value").view(B, Ci, -1).permute(0, 2, 1)
    theta_x = conv(x_low, p, "query").view(B, Ci, -1).permute(0, 2, 1)
    phi_x = conv(x_high, p, "key").view(B, Ci, -1)
    f = torch.matmul(theta_x, phi_x)
    y = torch.matmul(f / f.size(-1), g_x).permute(0, 2, 1).reshape(B, Ci, *x_low.shape[2:])
    return bn(conv(y, p, "out"), gt.norm, p, "norm", train)


def ref_render_trans(x_high, x_low, p, rt, train):
    """rendering_trans.py: RenderTrans.forward (lines 27-46), upsample=False: GAP of the finer
    x_low -> conv1x1 -> bn_low -> ReLU (29-32); conv3x3 -> bn_high on the coarser x_high (34-35);
    their product (37); ReLU(bn_reduction(str_conv3x3(x_low)) + product) (43-44)."""
    gp = x_low.mean((2, 3), keepdim=True)
    gp = F.relu(bn(conv(gp, p, "weight.0"), rt.weight[1], p, "weight.1", train))
    mask = bn(conv(x_high, p, "query.0", padding=1), rt.query[1], p, "query.1", train)
    down = bn(conv(x_low, p, "downsample.0", stride=2, padding=1), rt.downsample[1], p, "downsample.1", train)
    return F.relu(down + mask * gp)


# --- the comparison ------------------------------------------------------------------------------


def randomized(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.named_parameters():
            t.copy_(torch.randn(t.shape, generator=g) * (0.5 if "norm" not in name else 0.2) + (1.0 if name.endswith("norm.weight") else 0.0))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module


def compare(module, reference, inputs, train):
    """Our module vs its reference, outputs and gradients (inputs and every weight), float32."""
    module.train(train)
    params = {n: t.detach().clone().requires_grad_() for n, t in module.named_parameters()}
    ours_in = [x.clone().requires_grad_() for x in inputs]
    ref_in = [x.clone().requires_grad_() for x in inputs]
    g = torch.Generator().manual_seed(1)
    out = module(*ours_in)
    ref = reference(*ref_in, params, module, train)
    grad_out = torch.randn(out.shape, generator=g)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    names = list(params)
    ours = torch.autograd.grad((out * grad_out).sum(), ours_in + [dict(module.named_parameters())[n] for n in names])
    theirs = torch.autograd.grad((ref * grad_out).sum(), ref_in + [params[n] for n in names], allow_unused=True)
    assert all(b is not None for b in theirs)
    # Relative to the largest gradient: some are ~0 by construction (a bias before a training-mode
    # BN), where elementwise relative error is rounding noise.
    scale = max(b.abs().max().item() for b in theirs)
    for name, a, b in zip([f"input{i}" for i in range(len(inputs))] + names, ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_self_transformer_code_settings_are_the_authors_selftrans(train):
    st = randomized(SelfTransformer(C, pool_kv=True, shared_qk=True, mixture_input="queries", attn_dropout=0.0))
    (x,) = [torch.randn(2, C, 8, 12, generator=torch.Generator().manual_seed(2))]  # even: their reshape needs it
    compare(st, ref_self_trans, [x], train)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_grounding_transformer_linear_is_the_authors_groundtrans_dot(train):
    gt = randomized(GroundingTransformer(C, inner_channels=C // 2, normalizer="linear", similarity="dot", out_bias=True))
    g = torch.Generator().manual_seed(3)
    fine, coarse = torch.randn(2, C, 8, 12, generator=g), torch.randn(2, C, 4, 6, generator=g)
    compare(gt, ref_ground_trans, [fine, coarse], train)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_rendering_transformer_code_variant_is_the_authors_rendertrans(train):
    rt = randomized(RenderingTransformer(C, stride=2, variant="code"))
    g = torch.Generator().manual_seed(4)
    coarse, fine = torch.randn(2, C, 4, 6, generator=g), torch.randn(2, C, 8, 12, generator=g)
    compare(rt, ref_render_trans, [coarse, fine], train)


def test_paper_defaults_differ_from_the_authors_where_the_spec_says():
    # The [code] references above must not pass for the paper-exact modules: pooling that counts
    # the padding, pi from the keys, a softmax GT, no output bias. (Guards the references' teeth.)
    x = torch.randn(2, C, 8, 12, generator=torch.Generator().manual_seed(2))
    st = randomized(SelfTransformer(C, pool_kv=True, shared_qk=True, attn_dropout=0.0)).eval()
    params = dict(st.named_parameters())
    assert not torch.allclose(st(x), ref_self_trans(x, params, st, False), rtol=1e-3)
    gt = randomized(GroundingTransformer(C, inner_channels=C // 2, similarity="dot")).eval()
    fine, coarse = torch.randn(2, C, 8, 12), torch.randn(2, C, 4, 6)
    params = dict(gt.named_parameters()) | {"out.bias": torch.zeros(C)}
    assert not torch.allclose(gt(fine, coarse), ref_ground_trans(fine, coarse, params, gt, False), rtol=1e-3)


def ref_fpt_a(c_maps, p, backbone, train):
    """FPT_a.py: FPT.__init__ with with_norm='group_norm' (lines 52-61: laterals Conv1x1 without
    bias + GroupNorm(32); fusion Conv3x3 without bias + GroupNorm(32)) and FPT.forward (lines
    82-98): laterals, then per level the concatenation [ST, RT from each finer level nearest
    first, GT from each coarser level nearest first, X], fused. RT between non-adjacent levels
    crashes in their code (a stride-2 conv for any s); there our module's output stands in
    [ours]; every other block is the reference above."""
    fpt = backbone.fpt
    lat = [F.group_norm(conv(c, p, f"laterals.{i}.0"), 32, p[f"laterals.{i}.1.weight"], p[f"laterals.{i}.1.bias"])
           for i, c in enumerate(c_maps)]

    def sub(prefix):
        return {k[len(prefix) + 1 :]: v for k, v in p.items() if k.startswith(prefix + ".")}

    outs = []
    for t in range(4):
        name = f"p{t + 2}"
        blocks = [ref_self_trans(lat[t], sub(f"fpt.st.{name}"), fpt.st[name], train)]
        for s in reversed(range(t)):
            key = f"{name}_from_p{s + 2}"
            if t - s == 1:
                blocks.append(ref_render_trans(lat[t], lat[s], sub(f"fpt.rt.{key}"), fpt.rt[key], train))
            else:
                blocks.append(torch.func.functional_call(fpt.rt[key], sub(f"fpt.rt.{key}"), (lat[t], lat[s])))
        for s in range(t + 1, 4):
            key = f"{name}_from_p{s + 2}"
            blocks.append(ref_ground_trans(lat[t], lat[s], sub(f"fpt.gt.{key}"), fpt.gt[key], train))
        blocks.append(lat[t])
        fused = conv(torch.cat(blocks, 1), p, f"fpt.fuse.{name}.0", padding=1)
        outs.append(F.group_norm(fused, 32, p[f"fpt.fuse.{name}.1.weight"], p[f"fpt.fuse.{name}.1.bias"]))
    return outs


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_code_neck_is_the_authors_fpt_a(train):
    """Laterals with GroupNorm, the concatenation order and every [code] module, together."""
    global C
    width = 256  # GroupNorm(32) needs the real width
    body = resnet_body(name="resnet18")
    neck = FeaturePyramidTransformer(
        width, norm="gn",
        st_args=dict(pool_kv=True, shared_qk=True, mixture_input="queries", attn_dropout=0.0),
        gt_args=dict(normalizer="linear", similarity="dot", out_bias=True),
        rt_args=dict(variant="code"),
    )
    backbone = FPTBackbone(body, stage_channels(body), neck, width, fpt_input="lateral", lateral_norm="gn")
    randomized(backbone.laterals)
    randomized(neck)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    c_maps = [c.detach() for c in backbone.body(x).values()]
    old, C = C, width
    try:
        class Neck(nn.Module):  # laterals + FPT, as FPT_a.forward takes res2..res5
            def __init__(self):
                super().__init__()
                self.laterals, self.fpt = backbone.laterals, backbone.fpt

            def forward(self, *cs):
                return torch.cat([o.flatten() for o in self.fpt([lat(c) for lat, c in zip(self.laterals, cs)])])

        def reference(*args):
            *cs, p, _, train_ = args
            return torch.cat([o.flatten() for o in ref_fpt_a(cs, p, backbone, train_)])

        compare(Neck(), reference, c_maps, train)
    finally:
        C = old
