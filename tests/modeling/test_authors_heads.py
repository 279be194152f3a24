"""The authors' box and mask heads (``model.box_head: xconv1fc_gn_fpt``, ``model.mask_head:
v1up4convs_gn_adp_ff``) against their files, rebuilt here independently.

The references below are written plainly from ZHANGDONG-NJUST/FPT at c7c76f9 (``lib/modeling/``),
with torch.nn.functional and torchvision.ops.roi_align, one function per piece, each saying
which lines it follows; no line of their code is copied. As in test_authors_code.py, each
comparison copies our modules' weights into its reference and compares outputs and the
gradients of the pyramid and of every weight, float32, to 1e-5 relative. GroupNorm has no
running statistics, so train and eval mode compute the same. A last group builds whole
detectors with these heads.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign, roi_align

from fptbench.config import SCHEMA, load_config
from fptbench.modeling.authors_heads import (
    AdaptivePoolingBoxHead,
    AdaptivePoolingMaskHead,
    AllLevelRoIAlign,
    FusedMaskPredictor,
    msra_fill,
    xavier_fill,
)
from fptbench.modeling.detector import BOX_HEADS, MASK_HEADS, build_model

C = 32  # pyramid width
BOX_DIM, FC_DIM, MASK_DIM, NUM_CLASSES = 32, 48, 64, 5  # MASK_DIM / 2 must take 32 groups
NAMES = ["0", "1", "2", "3"]
# Two resized images padded to 128 x 128, as torchvision batches them: the maps are the padded
# batch's (strides 4..32), the image shapes not multiples of 32, so the scales must be inferred
# as torchvision infers them to come out 1/4..1/32.
IMAGE_SHAPES = [(100, 120), (90, 128)]


def pyramid(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, C, 128 // s, 128 // s, generator=g) for s in (4, 8, 16, 32)]


def proposals(seed=1):
    """Per image 6 boxes (x1, y1, x2, y2) in pixels: random, one under a pixel wide, one on the
    image border, one reaching past it (their kernel's edge cases)."""
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for h, w in IMAGE_SHAPES:
        xy = torch.rand(3, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.rand(3, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4]) + 2
        random = torch.cat([xy, xy + wh], 1)
        edge = torch.tensor([[10.0, 20.0, 10.6, 20.3], [0.0, 0.0, w, h], [w - 30.0, h - 20.0, w + 6.0, h + 3.0]])
        boxes.append(torch.cat([random, edge]))
    return boxes


def gn_block(x, p, name):
    """Conv 3x3 (pad 1, dilation 1, no bias) + GroupNorm(32, eps 1e-5) + ReLU, their nn.Sequential
    of fast_rcnn_heads.py:256-259 / 270-275 and mask_rcnn_heads.py:506-508 / 516-535, with
    net.py:166-182 (get_group_gn: 32 groups) and config.py:913-917. ``name`` is the block's
    prefix in our module's state (``.0`` conv, ``.1`` GroupNorm)."""
    x = F.conv2d(x, p[f"{name}.0.weight"], padding=1)
    return F.relu(F.group_norm(x, 32, p[f"{name}.1.weight"], p[f"{name}.1.bias"], eps=1e-5))


# --- references --------------------------------------------------------------------------------

SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)  # FPT_s.py:486-491 (listed coarsest first), model_builder.py:99


def ref_rois(boxes):
    """Detectron's RoI blob (R, 5): batch index, x1, y1, x2, y2 (model_builder.py:279, 311-313)."""
    return torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])


def ref_panet_pool(maps, rois, resolution, scales=SCALES, aligned=False):
    """model_builder.py:252-308, roi_feature_transform(method='RoIAlign', panet=True): for lvl = 2..5
    (264-273, finest first), RoIAlign of ALL RoIs (276-277: blob_rois, not blob_rois_fpn<lvl>)
    at that level's scale with ROI_XFORM_SAMPLING_RATIO 2 (e2e_fptnet_R-50_mask.yaml), the list
    returned as it is (307-308). Their RoIAlignFunction is roi_align(aligned=False)
    (test_their_roialign_kernel_is_roi_align_unaligned)."""
    return [roi_align(x, rois, resolution, sc, 2, aligned=aligned) for x, sc in zip(maps, scales)]


def ref_fuse(levels, p, prefix, fuse):
    """x[i] = conv1_head[i](x[i]); x[0] = torch.max(x[0], x[i]) for i >= 1 (fast_rcnn_heads.py:312-316,
    mask_rcnn_heads.py:587-591)."""
    x = [gn_block(level, p, f"{prefix}.{i}") for i, level in enumerate(levels)]
    out = x[0]
    for i in range(1, len(x)):
        out = torch.max(out, x[i]) if fuse == "max" else out + x[i]
    return out


def ref_box_head(levels, p, fuse="max"):
    """fast_rcnn_heads.py:244-321, roi_Xconv1fc_gn_head_fptnet: per-level GN conv and max (312-316),
    NUM_STACKED_CONVS - 1 = 3 GN convs (254-262, 319; config.py:630), fc + ReLU (264-266, 320)."""
    x = ref_fuse(levels, p, "level_convs", fuse)
    for j in range(3):
        x = gn_block(x, p, f"convs_fc.{j}")
    return F.relu(F.linear(x.flatten(1), p["convs_fc.4.weight"], p["convs_fc.4.bias"]))


def ref_mask_head_and_outputs(levels, p, fuse="max", fc_fusion=True):
    """mask_rcnn_heads.py:490-597, mask_rcnn_fcn_head_v1upXconvs_gn_adp_ff with num_convs 4
    (129-133): per-level GN conv and max (587-591), conv_fcn's two GN convs (503-511, 592);
    x_fcn = ReLU(upconv(mask_conv4(x))) (522-525, 544, 594: ConvTranspose2d(D, D, 2, 2, 0));
    x_ff = mask_fc(mask_conv5_fc(mask_conv4_fc(x))) with mask_fc = Linear + ReLU (527-539, 595).
    Then mask_rcnn_outputs (20-74): classify = Conv2d(D, NUM_CLASSES, 1) on x_fcn (32, 66),
    x_ff viewed (-1, 1, 28, 28) and repeated over the classes, added (67-69); UPSAMPLE_RATIO 1
    (config.py:761), logits in training (the sigmoid of 72-73 is torchvision's inference)."""
    h, q = {k[5:]: v for k, v in p.items() if k.startswith("head.")}, "predictor."
    x = ref_fuse(levels, h, "level_convs", fuse)
    x = gn_block(gn_block(x, h, "convs.0"), h, "convs.1")
    x_fcn = F.relu(F.conv_transpose2d(gn_block(x, h, "fcn_conv"), p[q + "conv5_mask.weight"],
                                      p[q + "conv5_mask.bias"], stride=2))
    x_ff = gn_block(gn_block(x, h, "fc_branch.0"), h, "fc_branch.1")
    x_ff = F.relu(F.linear(x_ff.flatten(1), h["fc_branch.3.weight"], h["fc_branch.3.bias"]))
    logits = F.conv2d(x_fcn, p[q + "mask_fcn_logits.weight"], p[q + "mask_fcn_logits.bias"])
    if fc_fusion:
        logits = logits + x_ff.view(-1, 1, 28, 28).repeat(1, NUM_CLASSES, 1, 1)
    return logits


# --- our modules, and the comparison -------------------------------------------------------------


class BoxChain(nn.Module):
    """Our pooler + box head on P2..P5, as torchvision's RoIHeads chains them."""

    def __init__(self):
        super().__init__()
        self.pool = AllLevelRoIAlign(NAMES, 7, 2)
        self.head = AdaptivePoolingBoxHead(C, conv_dim=BOX_DIM, fc_dim=FC_DIM)

    def forward(self, *maps):
        return self.head(self.pool(dict(zip(NAMES, maps)), proposals(), IMAGE_SHAPES))


class MaskChain(nn.Module):
    """Our pooler + mask head + predictor on P2..P5: mask logits."""

    def __init__(self):
        super().__init__()
        self.pool = AllLevelRoIAlign(NAMES, 14, 2)
        self.head = AdaptivePoolingMaskHead(C, channels=MASK_DIM)
        self.predictor = FusedMaskPredictor(MASK_DIM, NUM_CLASSES)

    def forward(self, *maps):
        return self.predictor(self.head(self.pool(dict(zip(NAMES, maps)), proposals(), IMAGE_SHAPES)))


def ref_box_chain(*maps, p, **mutation):
    pool = {k: mutation.pop(k) for k in ("scales", "aligned") if k in mutation}
    levels = ref_panet_pool(maps, ref_rois(proposals()), 7, **pool)
    return ref_box_head(levels, {k[5:]: v for k, v in p.items() if k.startswith("head.")}, **mutation)


def ref_mask_chain(*maps, p, **mutation):
    pool = {k: mutation.pop(k) for k in ("scales", "aligned") if k in mutation}
    return ref_mask_head_and_outputs(ref_panet_pool(maps, ref_rois(proposals()), 14, **pool), p, **mutation)


def randomized(module, seed=0):
    """The module's own init (MSRAFill, XavierFill...), plus GroupNorm affines away from 1 / 0 and
    random biases, so that a swapped or dropped one shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            elif getattr(m, "bias", None) is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return module


def compare(module, reference, inputs):
    """Our module vs its reference: outputs, and gradients of the inputs and of every weight."""
    params = {n: t.detach().clone().requires_grad_() for n, t in module.named_parameters()}
    ours_in = [x.clone().requires_grad_() for x in inputs]
    ref_in = [x.clone().requires_grad_() for x in inputs]
    out = module(*ours_in)
    ref = reference(*ref_in, p=params)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    names = list(params)
    ours = torch.autograd.grad((out * grad_out).sum(), ours_in + [dict(module.named_parameters())[n] for n in names])
    theirs = torch.autograd.grad((ref * grad_out).sum(), ref_in + [params[n] for n in names])
    scale = max(b.abs().max().item() for b in theirs)
    for name, a, b in zip([f"P{i + 2}" for i in range(len(inputs))] + names, ours, theirs):
        assert b.abs().max() > 0, f"{name}: no gradient reaches it in the reference"
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * scale, msg=name)


def test_box_head_is_the_authors_roi_xconv1fc_gn_head_fptnet():
    compare(randomized(BoxChain()), ref_box_chain, pyramid())


def test_mask_head_and_predictor_are_the_authors_v1up4convs_gn_adp_ff():
    compare(randomized(MaskChain()), ref_mask_chain, pyramid())


@pytest.mark.parametrize("chain, reference, mutation", [
    (BoxChain, ref_box_chain, dict(fuse="sum")),
    (BoxChain, ref_box_chain, dict(aligned=True)),
    (BoxChain, ref_box_chain, dict(scales=(1 / 8, 1 / 16, 1 / 32, 1 / 64))),
    (MaskChain, ref_mask_chain, dict(fuse="sum")),
    (MaskChain, ref_mask_chain, dict(fc_fusion=False)),
], ids=["box-sum", "box-aligned", "box-scales", "mask-sum", "mask-no-fc-fusion"])
def test_the_comparisons_have_teeth(chain, reference, mutation):
    # A head that summed the levels, dropped the fc fusion, pooled half-pixel-aligned or one
    # octave off would fail the comparisons above: each such reference differs from ours.
    module = randomized(chain()).eval()
    maps = pyramid()
    with torch.no_grad():
        out = module(*maps)
        mutated = reference(*maps, p=dict(module.named_parameters()), **mutation)
    assert not torch.allclose(out, mutated, rtol=1e-3, atol=1e-3 * mutated.abs().max().item())


def ref_kernel_roi_align(feature, roi, scale, resolution, sampling_ratio):
    """roi_align_kernel.cu:65-120 (ROIAlignForward) with bilinear_interpolate (16-63), for one
    image's (C, H, W) map and one box, plainly: no rounding of the scaled box, the box at least
    1 x 1, sampling_ratio^2 points per bin at (i + .5) / sampling_ratio of it, averaged; a point
    beyond one pixel outside the map reads 0, otherwise it is clamped to the map."""
    _, height, width = feature.shape
    x1, y1, x2, y2 = (float(v) * scale for v in roi)
    roi_w, roi_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    bin_h, bin_w = roi_h / resolution, roi_w / resolution
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / resolution)
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / resolution)

    def bilinear(y, x):
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return torch.zeros(feature.shape[0])
        y, x = max(y, 0.0), max(x, 0.0)
        y_low, x_low = int(y), int(x)
        if y_low >= height - 1:
            y_high = y_low = height - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= width - 1:
            x_high = x_low = width - 1
            x = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, x - x_low
        hy, hx = 1 - ly, 1 - lx
        return (hy * hx * feature[:, y_low, x_low] + hy * lx * feature[:, y_low, x_high]
                + ly * hx * feature[:, y_high, x_low] + ly * lx * feature[:, y_high, x_high])

    out = torch.zeros(feature.shape[0], resolution, resolution)
    for ph in range(resolution):
        for pw in range(resolution):
            for iy in range(grid_h):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                    out[:, ph, pw] += bilinear(y, x)
    return out / (grid_h * grid_w)


@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_their_roialign_kernel_is_roi_align_unaligned(sampling_ratio):
    # The references pool with torchvision's roi_align(aligned=False): that is their CUDA kernel
    # (lib/modeling/roi_xfrom/roi_align), checked here on the edge-case boxes at every level.
    maps = [m[:, :4] for m in pyramid()]
    boxes = proposals()
    pooled = AllLevelRoIAlign(NAMES, 7, sampling_ratio)(dict(zip(NAMES, maps)), boxes, IMAGE_SHAPES)
    for n, roi in enumerate(ref_rois(boxes)):
        for level, (x, scale) in enumerate(zip(maps, SCALES)):
            expected = ref_kernel_roi_align(x[int(roi[0])], roi[1:], scale, 7, sampling_ratio)
            # the kernel's coordinates are float32, the reference's Python floats (double)
            torch.testing.assert_close(pooled[n, level], expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item(),
                                       msg=f"roi {n} P{level + 2}")


# --- init and widths ---------------------------------------------------------------------------------


def caffe2_msra_fill(t):
    """lib/nn/init.py:18-23."""
    return nn.init.normal_(t, 0, math.sqrt(2 / (t.numel() / t.shape[1])))


def caffe2_xavier_fill(t):
    """lib/nn/init.py:10-15."""
    scale = math.sqrt(3 / (t.numel() / t.shape[0]))
    return nn.init.uniform_(t, -scale, scale)


@pytest.mark.parametrize("shape", [(64, 32, 3, 3), (32, 64, 2, 2), (5, 64, 1, 1), (48, 1568)])
def test_inits_are_caffe2s_fills(shape):
    # msra_fill / xavier_fill draw what Caffe2's MSRAFill / XavierFill draw, seed for seed
    # (conv, deconv (in, out, k, k) and fc weights).
    fills = [(msra_fill, caffe2_msra_fill)] + ([(xavier_fill, caffe2_xavier_fill)] if len(shape) == 2 else [])
    for ours, theirs in fills:
        a, b = torch.empty(shape), torch.empty(shape)
        torch.manual_seed(0)
        ours(a)
        torch.manual_seed(0)
        theirs(b)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


def test_heads_are_initialised_as_theirs():
    # [code] fast_rcnn_heads.py:279-286 (convs MSRAFill, fc XavierFill, bias 0),
    # mask_rcnn_heads.py:548-560 (convs and deconv MSRAFill, fc N(0, 0.01), bias 0), 38-47
    # (classify MSRAFill, bias 0); GroupNorm 1 / 0. Checked by the spread of each weight.
    torch.manual_seed(0)
    box = AdaptivePoolingBoxHead(C, conv_dim=BOX_DIM, fc_dim=FC_DIM)
    mask = AdaptivePoolingMaskHead(C, channels=MASK_DIM)
    predictor = FusedMaskPredictor(MASK_DIM, NUM_CLASSES)
    for m in [*box.modules(), *mask.modules(), *predictor.modules()]:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            w = m.weight
            assert w.std().item() == pytest.approx(math.sqrt(2 / (w.numel() / w.shape[1])), rel=0.1), m
        elif isinstance(m, nn.Linear):
            w = m.weight
            if m in set(box.modules()):
                bound = math.sqrt(3 / w.shape[1])
                assert w.abs().max() <= bound and w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
            else:
                assert w.std().item() == pytest.approx(0.01, rel=0.05)
        elif isinstance(m, nn.GroupNorm):
            assert (m.num_groups, m.eps) == (32, 1e-5) and bool((m.weight == 1).all()) and not m.bias.any()
        if getattr(m, "bias", None) is not None:
            assert not m.bias.any(), m
    assert [c[0].bias for c in box.level_convs] == [None] * 4


def test_widths_gn_cannot_split_are_refused():
    # GroupNorm(32) [code: get_group_gn asserts it]: the box convs need multiples of 32, the mask
    # head multiples of 64 (its fc branch halves the width, mask_rcnn_heads.py:532-535).
    with pytest.raises(ValueError, match="divisible by 32, got 48"):
        AdaptivePoolingBoxHead(C, conv_dim=48)
    with pytest.raises(ValueError, match="divisible by 64"):
        AdaptivePoolingMaskHead(C, channels=96)


def test_head_choices_match_the_config():
    # fptbench.config mirrors the builder's choices (the config module imports no torch).
    assert SCHEMA["model.box_head"].choices == BOX_HEADS
    assert SCHEMA["model.mask_head"].choices == MASK_HEADS


# --- whole detectors -----------------------------------------------------------------------------------


SMALL = {"model.backbone": "resnet18", "model.fpn_channels": 64, "model.min_size": 128, "model.max_size": 128,
         "model.box_head_dim": 128, "model.box_head_conv_dim": 64, "model.mask_head_channels": 64,
         "model.rpn_post_nms_top_n_train": 200, "model.box_batch_size_per_image": 64}
CODE_HEADS = {"model.box_head": "xconv1fc_gn_fpt", "model.mask_head": "v1up4convs_gn_adp_ff"}


def image_and_target():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 100, 120, generator=g)
    mask = torch.zeros(1, 100, 120, dtype=torch.uint8)
    mask[0, 30:80, 20:90] = 1
    return image, {"boxes": torch.tensor([[20.0, 30.0, 90.0, 80.0]]), "labels": torch.tensor([3]), "masks": mask}


def test_maskrcnn_with_the_authors_heads_trains_and_detects():
    torch.manual_seed(0)
    model = build_model(load_config("maskrcnn_r50_bfp", {**SMALL, **CODE_HEADS}))
    rh = model.roi_heads
    assert isinstance(rh.box_roi_pool, AllLevelRoIAlign) and isinstance(rh.mask_roi_pool, AllLevelRoIAlign)
    assert (rh.box_roi_pool.output_size, rh.mask_roi_pool.output_size) == (7, 14)
    assert isinstance(rh.box_head, AdaptivePoolingBoxHead) and isinstance(rh.mask_head, AdaptivePoolingMaskHead)
    assert isinstance(rh.mask_predictor, FusedMaskPredictor)
    assert rh.box_head.level_convs[0][0].in_channels == 64 and rh.box_head.convs_fc[4].out_features == 128
    assert rh.box_predictor.cls_score.weight.shape == (91, 128)
    assert rh.mask_predictor.mask_fcn_logits.weight.shape == (91, 64, 1, 1)

    image, target = image_and_target()
    model.train()
    losses = model([image], [target])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    # every weight of the heads learns, the fc-fusion branch and each level's conv included
    idle = [n for n, p in rh.named_parameters() if not p.grad.any()]
    assert idle == [], idle

    model.eval()
    rh.score_thresh, rh.detections_per_img = 0.0, 5
    with torch.no_grad():
        (detections,) = model([image])
    assert detections["boxes"].shape == (5, 4)
    assert detections["masks"].shape == (5, 1, 100, 120)
    assert ((detections["masks"] >= 0) & (detections["masks"] <= 1)).all()
    rh.score_thresh = 1.1  # no detection: the heads must take an empty batch of RoIs
    with torch.no_grad():
        (none,) = model([image])
    assert none["boxes"].shape == (0, 4) and none["masks"].shape == (0, 1, 100, 120)


def test_faster_rcnn_takes_the_authors_box_head_and_ignores_mask_head():
    torch.manual_seed(0)
    model = build_model(load_config("fasterrcnn_r50_bfp", {**SMALL, **CODE_HEADS}))
    assert not model.roi_heads.has_mask()
    assert isinstance(model.roi_heads.box_head, AdaptivePoolingBoxHead)
    assert not any(isinstance(m, (AdaptivePoolingMaskHead, FusedMaskPredictor)) for m in model.modules())
    image, target = image_and_target()
    model.train()
    del target["masks"]
    losses = model([image], [target])
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        (detections,) = model([image])
    assert set(detections) == {"boxes", "labels", "scores"} and len(detections["boxes"]) > 0


@pytest.mark.parametrize("overrides", [{"model.box_head": "xconv1fc_gn_fpt"},
                                       {"model.mask_head": "v1up4convs_gn_adp_ff"}], ids=["box", "mask"])
def test_one_authors_head_leaves_the_other_torchvisions(overrides):
    with torch.device("meta"):
        rh = build_model(load_config("maskrcnn_r50_bfp", overrides)).roi_heads
    box = "model.box_head" in overrides
    assert isinstance(rh.box_roi_pool, AllLevelRoIAlign if box else MultiScaleRoIAlign)
    assert isinstance(rh.box_head, AdaptivePoolingBoxHead if box else TwoMLPHead)
    assert isinstance(rh.mask_roi_pool, MultiScaleRoIAlign if box else AllLevelRoIAlign)
    assert type(rh.mask_head) is (MaskRCNNHeads if box else AdaptivePoolingMaskHead)
    assert type(rh.mask_predictor) is (MaskRCNNPredictor if box else FusedMaskPredictor)
    assert type(rh.box_predictor) is FastRCNNPredictor


def test_default_heads_are_torchvisions_and_nms_is_a_key():
    # The defaults build torchvision's heads (test_detector.py pins the weights draw for draw);
    # model.box_nms_thresh reaches torchvision's RoIHeads.
    with torch.device("meta"):
        ours = build_model(load_config("maskrcnn_r50_bfp"))
        theirs = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
        tuned = build_model(load_config("maskrcnn_r50_bfp", {"model.box_nms_thresh": 0.6}))
    for name in ("box_roi_pool", "box_head", "box_predictor", "mask_roi_pool", "mask_head", "mask_predictor"):
        assert type(getattr(ours.roi_heads, name)) is type(getattr(theirs.roi_heads, name)), name
    assert {k: v.shape for k, v in ours.roi_heads.state_dict().items()} == {
        k: v.shape for k, v in theirs.roi_heads.state_dict().items()}
    assert ours.roi_heads.nms_thresh == theirs.roi_heads.nms_thresh == 0.5
    assert tuned.roi_heads.nms_thresh == 0.6
