"""Segmentation models: dilated trunks, UFP / FPN pyramids, FPT on levels of one resolution, heads.

Tiny widths and odd input sizes (65 x 97) keep every test to about a second of CPU; float64 and
eval mode make the comparisons with hand-written references exact up to rounding.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet
from torchvision.models.segmentation import deeplabv3_resnet50
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from fptbench.config import default_config
from fptbench.engine.flops import FlopAnalysis, attention_macs
from fptbench.modeling.fpt import FeaturePyramidTransformer
from fptbench.modeling.grounding_transformer import GroundingTransformer
from fptbench.modeling.rendering_transformer import RenderingTransformer
from fptbench.modeling.segmentation import (
    ASPP_RATES,
    GlobalConvBlock,
    UnscathedFeaturePyramid,
    build_segmentation_model,
    dilated_resnet,
    pyramid_strides,
    segmentation_model,
)
from tests.modeling.test_transformers import explicit_pi, maps, randomize
from tests.ops.test_local_attention import own_position_windows

D = 16  # pyramid width of the small models
CLASSES = 3
H, W = 65, 97  # odd: the trunk's ceil halving and the final upsampling must both hold


def images(batch=1, seed=0):
    return torch.randn(batch, 3, H, W, generator=torch.Generator().manual_seed(seed))


def small_fpt(pyramid, output_stride, window=3):
    strides = pyramid_strides(pyramid=pyramid, output_stride=output_stride, num_levels=4)
    return FeaturePyramidTransformer(
        D, 4, level_strides=strides, norm="bn", gt_args=dict(inner_channels=8, window=window)
    )


@pytest.mark.parametrize("aux", [False, True], ids=["noaux", "aux"])
@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("head", ["deeplab", "fcn"])
@pytest.mark.parametrize("pyramid", ["ufp", "fpn"])
def test_output_shapes(pyramid, head, output_stride, aux):
    torch.manual_seed(0)
    model = segmentation_model(
        num_classes=CLASSES, backbone="resnet18", output_stride=output_stride, pyramid=pyramid, head=head,
        aux_head=aux, channels=D,
    ).eval()
    assert isinstance(model.classifier, {"deeplab": DeepLabHead, "fcn": FCNHead}[head])
    first_conv = next(m for m in model.classifier.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 4 * D  # the four levels, concatenated [ours]
    with torch.no_grad():
        out = model(images())
    assert sorted(out) == (["aux", "out"] if aux else ["out"])
    assert all(o.shape == (1, CLASSES, H, W) for o in out.values())


def test_resnet50_with_fpt_matches_torchvisions_deeplab_keys():
    # Trunk and auxiliary head keep the state_dict keys and shapes of torchvision's DeepLabV3, so
    # its checkpoints (and ImageNet trunks) load; the pyramid, FPT and the head's input are new.
    torch.manual_seed(0)
    model = segmentation_model(
        num_classes=CLASSES, backbone="resnet50", aux_head=True, channels=D, fpt=small_fpt("ufp", 8)
    ).eval()
    theirs = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=CLASSES, aux_loss=True)

    def shapes(module, prefixes):
        return {k: v.shape for k, v in module.state_dict().items() if k.startswith(prefixes)}

    assert shapes(model, ("backbone.", "aux_classifier.")) == shapes(theirs, ("backbone.", "aux_classifier."))
    assert {k.split(".")[0] for k in model.state_dict()} == {"backbone", "pyramid", "fpt", "classifier", "aux_classifier"}
    with torch.no_grad():
        out = model(images())
    assert out["out"].shape == out["aux"].shape == (1, CLASSES, H, W)


@pytest.mark.parametrize("window", [3, 0], ids=["lgt", "global_gt"])
def test_fpt_on_one_resolution_trains(window):
    # The UFP's levels share one resolution: every GT and RT pair has s = 1.
    torch.manual_seed(0)
    fpt = small_fpt("ufp", 8, window=window)
    assert {gt.stride for gt in fpt.gt.values()} == {1}
    assert all(m.stride == (1, 1) for rt in fpt.rt.values() for m in rt.downsample if isinstance(m, torch.nn.Conv2d))
    model = segmentation_model(num_classes=CLASSES, backbone="resnet18", channels=D, aux_head=True, fpt=fpt).train()
    out = model(images(batch=2))
    assert out["out"].shape == (2, CLASSES, H, W)
    (out["out"].square().mean() + out["aux"].square().mean()).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]


def test_local_grounding_at_stride_one():
    # LGT between two levels of one resolution: each query sees the window around its own position.
    gt = randomize(GroundingTransformer(D, inner_channels=8, parts=2, stride=1, window=3))
    fine, coarse = maps((2, D, 7, 9), (2, D, 7, 9))
    q, k, v = gt.query(fine), gt.key(coarse), gt.value(coarse)
    o = own_position_windows(q, k, v, explicit_pi(gt.mixture, k), window=3, similarity="euclidean")
    torch.testing.assert_close(gt(fine, coarse), gt.norm(gt.out(o)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_rendering_at_stride_one(variant):
    # V_dow at s = 1 is one stride-1 Conv3x3 + BN [ours] in both variants.
    rt = randomize(RenderingTransformer(D, stride=1, variant=variant))
    conv, bn = rt.downsample
    assert isinstance(bn, torch.nn.BatchNorm2d) and (conv.kernel_size, conv.stride) == ((3, 3), (1, 1))
    coarse, fine = maps((2, D, 7, 9), (2, D, 7, 9))
    w = fine.mean((2, 3), keepdim=True)
    q = rt.query(coarse * w) if variant == "paper" else rt.query(coarse) * rt.weight(w)
    torch.testing.assert_close(rt(coarse, fine), F.relu(q + bn(conv(fine))))


def test_fpt_checks_level_sizes_against_its_strides():
    same = [torch.randn(1, D, 9, 13) for _ in range(4)]
    strided = FeaturePyramidTransformer(D, 4, norm="bn", gt_args=dict(inner_channels=8))  # P2..P5, s = 2 per level
    with pytest.raises(ValueError, match=r"level_strides \(4, 8, 16, 32\) make p3 2x smaller"):
        strided(same)
    mixed = FeaturePyramidTransformer(D, 4, level_strides=(4, 8, 8, 8), norm="bn", gt_args=dict(inner_channels=8))
    assert [gt.stride for gt in mixed.gt.values()] == [2, 2, 2, 1, 1, 1]  # p2<-p3,p4,p5; p3<-p4,p5; p4<-p5
    sizes = [(17, 25), (9, 13), (9, 13), (9, 13)]  # ceil halving, then one resolution
    assert [o.shape[-2:] for o in mixed([torch.randn(1, D, *s) for s in sizes])] == sizes
    for bad in [(4, 8, 8), (8, 4, 8, 8), (4, 12, 12, 12), (0, 8, 8, 8)]:
        with pytest.raises(ValueError, match="level_strides must be"):
            FeaturePyramidTransformer(D, 4, level_strides=bad)


def test_gcn_block_is_the_sum_of_two_separable_branches():
    gcn = GlobalConvBlock(2, 3, 5).double()
    x = torch.randn(1, 2, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def conv(x, conv):
        """A 'same' convolution by explicit shifts of the zero-padded input."""
        kh, kw = conv.kernel_size
        xp = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2))
        out = conv.bias[None, :, None, None].expand(1, -1, x.shape[2], x.shape[3]).clone()
        for dy in range(kh):
            for dx in range(kw):
                patch = xp[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
                out = out + torch.einsum("oi,bihw->bohw", conv.weight[:, :, dy, dx], patch)
        return out

    assert [c.kernel_size for c in gcn.left] == [(5, 1), (1, 5)]
    assert [c.kernel_size for c in gcn.right] == [(1, 5), (5, 1)]
    expected = conv(conv(x, gcn.left[0]), gcn.left[1]) + conv(conv(x, gcn.right[0]), gcn.right[1])
    torch.testing.assert_close(gcn(x), expected)


def test_gcn_backward_on_the_maps_that_abort_torchs_cpu_conv():
    # torch 2.14.1 / oneDNN: the backward of Conv2d(C, C, (31, 1), padding=(15, 0)) on a 12-px map
    # corrupts the heap and aborts the process (measured for 64 and 256 channels, batch 1 and 8).
    # The block pads explicitly on the CPU; a child process, so that an abort fails this test only.
    code = (
        "import torch\n"
        "from fptbench.modeling.segmentation import GlobalConvBlock\n"
        "gcn = GlobalConvBlock(64, 64, 31)\n"
        "x = torch.randn(8, 64, 12, 12, requires_grad=True)\n"
        "for _ in range(3):\n"
        "    gcn(x).sum().backward()\n"
        "ref = torch.nn.Conv2d(64, 64, (31, 1), padding=(15, 0))\n"
        "ref.load_state_dict(gcn.left[0].state_dict())\n"
        "y = torch.randn(2, 64, 40, 9)\n"  # a size where torch's own padding is safe
        "torch.testing.assert_close(gcn.left[0](y), ref(y))\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_ufp_levels_share_c5s_resolution():
    ufp = UnscathedFeaturePyramid(512, D)
    assert [b.left[0].kernel_size[0] for b in ufp.levels] == [1, 7, 15, 31]  # [paper], finest first
    c5 = torch.randn(1, 512, 9, 13)
    levels = ufp({"0": None, "1": None, "2": None, "3": c5})  # only C5 feeds it [ours]
    assert [tuple(p.shape) for p in levels.values()] == [(1, D, 9, 13)] * 4
    with pytest.raises(ValueError, match="odd"):
        GlobalConvBlock(4, 4, 4)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_resnet18_is_the_a_trous_trunk(output_stride):
    # À trous exactness: with the same weights, the dilated trunk's C5 sampled every
    # (32 / output_stride) pixels is the undilated trunk's C5, borders included. This holds for
    # torchvision's dilated Bottlenecks; it fails if any 3x3 conv after a removed stride is not
    # dilated (mmseg's BasicBlock) or the formerly strided conv is.
    dilated = dilated_resnet(name="resnet18", output_stride=output_stride).double().eval()
    plain = resnet.resnet18().double().eval()
    assert {k: v.shape for k, v in dilated.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(dilated.state_dict())
    x = images().double()

    def c5(body):
        x1 = body.maxpool(body.relu(body.bn1(body.conv1(x))))
        return body.layer4(body.layer3(body.layer2(body.layer1(x1))))

    with torch.no_grad():
        ours, theirs = c5(dilated), c5(plain)
    assert ours.shape[-2:] == (math.ceil(H / output_stride), math.ceil(W / output_stride))
    step = 32 // output_stride
    torch.testing.assert_close(ours[..., ::step, ::step], theirs)


def test_dilated_resnet50_is_torchvisions():
    body = dilated_resnet(name="resnet50", output_stride=16)
    assert body.layer4[1].conv2.dilation == (2, 2) and body.layer4[0].conv2.stride == (1, 1)
    with pytest.raises(ValueError, match="output_stride"):
        dilated_resnet(name="resnet18", output_stride=32)


def test_flop_count_includes_stride_one_attention():
    torch.manual_seed(0)
    model = segmentation_model(
        num_classes=CLASSES, backbone="resnet18", channels=D, fpt=small_fpt("ufp", 8, window=3)
    ).eval()
    x = torch.randn(1, 3, 64, 96)
    flops = FlopAnalysis(model, (x,))
    L = (64 // 8) * (96 // 8)
    # LGT at s = 1: one query per cell against window^2 keys; euclidean similarity over 8 + 2 parts' channels
    lgt = attention_macs(batch=1, queries=L, keys=9, qk_channels=8 + 4, v_channels=8)
    assert flops.attention_macs("fpt.gt.p2_from_p3") == lgt
    st = attention_macs(batch=1, queries=L, keys=L, qk_channels=D, v_channels=D)
    assert flops.attention_macs() == 4 * st + 6 * lgt
    assert flops.total_macs() > flops.total_macs("backbone") > 0


def config(**overrides):
    """The default config with the segmentation keys, as ``fptbench.config`` will declare them."""
    cfg = default_config()
    cfg["seg"] = dict(output_stride=8, pyramid="ufp", ufp_kernels=[1, 7, 15, 31], head="deeplab", aux_head=True)
    cfg["model"].update(backbone="resnet18", num_classes=CLASSES, fpn_channels=D)
    cfg["gt"].update(window=3, channels=8)
    cfg["fpt"]["norm"] = "bn"  # GroupNorm's 32 groups need more than D channels
    for key, value in overrides.items():
        section, name = key.split(".")
        cfg[section][name] = value
    return cfg


def test_build_from_config():
    torch.manual_seed(0)
    model = build_segmentation_model(config(**{"seg.ufp_kernels": [1, 3, 5]})).eval()
    assert len(model.pyramid.levels) == 3 and model.fpt.level_strides == (8, 8, 8)
    assert model.fpt.gt["p2_from_p3"].window == 3  # LGT [paper]
    assert model.classifier[0].convs[1][0].dilation == (ASPP_RATES[8][0],) * 2
    with torch.no_grad():
        assert model(images())["out"].shape == (1, CLASSES, H, W)
    baseline = build_segmentation_model(config(**{"fpt.st": False, "fpt.gt": False, "fpt.rt": False, "seg.pyramid": "fpn"}))
    assert baseline.fpt is None and baseline.aux_classifier is not None


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("seg.pyramid", "bfp", "seg.pyramid: 'bfp' is not one of ufp, fpn"),
        ("seg.output_stride", 32, "seg.output_stride: 32 is not one of 8, 16"),
        ("seg.head", "psp", "seg.head: 'psp' is not one of deeplab, fcn"),
        ("model.stride_in_1x1", True, "needs a Bottleneck trunk"),
    ],
)
def test_bad_value_names_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        build_segmentation_model(config(**{key: value}))
