"""Detector builder: BFP must be torchvision's Mask R-CNN exactly; FPT must only add ``backbone.fpt.*``.

Real torchvision models at small sizes (160 px); shape-only checks of the big backbones are
built on the meta device, which allocates nothing.
"""

from typing import Any, Optional

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from fptbench.config import load_config
from fptbench.modeling.backbone import RESNETS, FPTBackbone, build_backbone
from fptbench.modeling.detector import build_model

MIN_SIZE, MAX_SIZE = 160, 224  # small images keep the file to seconds of CPU

SMALL = {"model.min_size": MIN_SIZE, "model.max_size": MAX_SIZE}

# torchvision's trunk settings without pre-trained weights (BatchNorm, every stage trains): the
# COCO configs freeze as detectron2 does, so the comparisons with torchvision's builders set these.
TORCHVISION = {"model.backbone_norm": "bn", "model.trainable_backbone_layers": 5}


def make_cfg(name: str, overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """A shipped config with dotted-key ``overrides`` (Python values) applied and checked."""
    return load_config(name, overrides=overrides or {})


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def image_and_target(seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A random (3, 160, 200) image with one box and its filled-rectangle mask."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 160, 200, generator=g)
    mask = torch.zeros(1, 160, 200, dtype=torch.uint8)
    mask[0, 40:120, 50:150] = 1
    target = {
        "boxes": torch.tensor([[50.0, 40.0, 150.0, 120.0]]),
        "labels": torch.tensor([3]),
        "masks": mask,
    }
    return image, target


def test_bfp_equals_torchvision_maskrcnn():
    # The spec's baseline: with every transformer off the model *is* torchvision's
    # maskrcnn_resnet50_fpn, so its checkpoints load strictly and give bit-identical outputs.
    torch.manual_seed(0)
    ours = build_model(make_cfg("maskrcnn_r50_bfp", {**SMALL, **TORCHVISION}))
    theirs = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91, min_size=MIN_SIZE, max_size=MAX_SIZE
    )
    assert type(ours) is type(theirs)
    assert isinstance(ours.backbone, BackboneWithFPN)
    assert shapes(ours) == shapes(theirs)
    assert {n: p.requires_grad for n, p in ours.named_parameters()} == {
        n: p.requires_grad for n, p in theirs.named_parameters()
    }
    ours.load_state_dict(theirs.state_dict(), strict=True)

    image, _ = image_and_target()
    outputs = []
    for model in (ours, theirs):
        model.eval()
        model.roi_heads.score_thresh = 0.0  # random weights: keep every detection
        model.roi_heads.detections_per_img = 10  # fewer masks to compute, same on both
        with torch.no_grad():
            outputs.append(model([image])[0])
    assert set(outputs[0]) == {"boxes", "labels", "scores", "masks"}
    assert len(outputs[0]["boxes"]) > 0
    for key in outputs[1]:
        assert torch.equal(outputs[0][key], outputs[1][key]), key


@pytest.mark.parametrize("norm, trainable", [("bn", 5), ("frozen_bn", 3), ("frozen_bn", 0)])
def test_norm_and_freezing_match_torchvision(norm, trainable):
    # model.backbone_norm and model.trainable_backbone_layers must mean what they mean in
    # torchvision (norm class, which parameters train), for BFP and for the FPT backbone alike.
    norm_layer = FrozenBatchNorm2d if norm == "frozen_bn" else nn.BatchNorm2d
    overrides = {"model.backbone_norm": norm, "model.trainable_backbone_layers": trainable}
    with torch.device("meta"):
        theirs = resnet_fpn_backbone(
            backbone_name="resnet50", weights=None, norm_layer=norm_layer, trainable_layers=trainable
        )
        bfp = build_backbone(make_cfg("maskrcnn_r50_bfp", overrides))
        fpt = build_backbone(make_cfg("maskrcnn_r50_fpt", overrides))
    trainable_theirs = {n for n, p in theirs.named_parameters() if p.requires_grad}
    assert {n for n, p in bfp.named_parameters() if p.requires_grad} == trainable_theirs
    assert shapes(bfp) == shapes(theirs)
    assert isinstance(fpt, FPTBackbone)
    fpt_trainable = {n for n, p in fpt.named_parameters() if p.requires_grad and not n.startswith("fpt.")}
    assert fpt_trainable == trainable_theirs
    assert all(p.requires_grad for p in fpt.fpt.parameters())
    assert any(isinstance(m, norm_layer) for m in fpt.body.modules())


def test_fpt_loads_torchvision_checkpoint_and_trains():
    # FPT must only add parameters under backbone.fpt (so a torchvision checkpoint is a
    # partial init of it), return torchvision's pyramid keys, and train end to end.
    torch.manual_seed(0)
    model = build_model(make_cfg("maskrcnn_r50_fpt", SMALL))
    assert isinstance(model.backbone, FPTBackbone)
    theirs = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    result = model.load_state_dict(theirs.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys, "the FPT has no parameters"
    assert all(k.startswith("backbone.fpt.") for k in result.missing_keys), result.missing_keys

    image, target = image_and_target()
    model.eval()
    model.roi_heads.score_thresh = 0.0
    model.roi_heads.detections_per_img = 5
    with torch.no_grad():
        features = model.backbone(image[None])
        (detections,) = model([image])
    assert list(features) == ["0", "1", "2", "3", "pool"]
    # P6 is the stride-2 subsampling of the *transformed* P5 [spec]
    assert torch.equal(features["pool"], features["3"][..., ::2, ::2])
    assert detections["masks"].shape[1:] == (1, 160, 200)

    model.train()
    losses = model([image], [target])
    assert set(losses) == {
        "loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"
    }
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == [], no_grad  # a module that gets no gradient is not wired in
    assert any(p.grad.abs().sum() > 0 for p in model.backbone.fpt.parameters())


def test_faster_rcnn_has_no_mask_branch():
    # model.head: faster_rcnn is torchvision's fasterrcnn_resnet50_fpn (same keys and shapes),
    # and its detections carry no masks.
    with torch.device("meta"):
        ours = build_model(make_cfg("fasterrcnn_r50_bfp", TORCHVISION))
        theirs = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    assert type(ours) is type(theirs)
    assert shapes(ours) == shapes(theirs)
    assert not ours.roi_heads.has_mask()

    torch.manual_seed(0)
    model = build_model(make_cfg("fasterrcnn_r50_fpt", {**SMALL, "model.backbone": "resnet18"}))
    model.eval()
    model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        (detections,) = model([image_and_target()[0]])
    assert set(detections) == {"boxes", "labels", "scores"}
    assert len(detections["boxes"]) > 0


def test_bfp_at_default_widths_draws_torchvisions_initial_weights():
    # The [ours] head widths of the synthetic configs are keys whose defaults are torchvision's;
    # at those defaults the heads are torchvision's own, built in its order: same seed, same
    # initial weights (a model that built its heads itself would draw them in another order).
    torch.manual_seed(0)
    ours = build_model(make_cfg("maskrcnn_r50_bfp", {**SMALL, **TORCHVISION}))
    torch.manual_seed(0)
    theirs = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91,
                                   min_size=MIN_SIZE, max_size=MAX_SIZE)
    mine = ours.state_dict()
    for key, value in theirs.state_dict().items():
        assert torch.equal(mine[key], value), key


@pytest.mark.parametrize("head", ["mask_rcnn", "faster_rcnn"])
def test_pyramid_and_head_widths_and_roi_sampling_are_keys(head):
    # model.fpn_channels, box_head_dim, mask_head_channels, roi_sampling_ratio and
    # box_positive_fraction reach torchvision's modules, and the narrower model trains.
    cfg = make_cfg("synth_r18_fpt", {"model.head": head, "model.fpn_channels": 32, "model.box_head_dim": 48,
                                     "model.mask_head_channels": 16, "model.roi_sampling_ratio": 1,
                                     "model.box_positive_fraction": 0.5, "gt.channels": 16})
    torch.manual_seed(0)
    model = build_model(cfg)
    rh = model.roi_heads
    assert model.backbone.out_channels == 32
    assert all(f.shape[1] == 32 for f in model.backbone(torch.rand(1, 3, 64, 64)).values())
    assert rh.box_head.fc6.in_features == 32 * 7 * 7 and rh.box_head.fc7.out_features == 48
    assert rh.box_predictor.cls_score.weight.shape == (8, 48)
    assert rh.box_roi_pool.sampling_ratio == 1
    assert rh.fg_bg_sampler.positive_fraction == 0.5
    if head == "mask_rcnn":
        assert rh.mask_roi_pool.sampling_ratio == 1
        assert [m[0].out_channels for m in rh.mask_head] == [16] * 4
        assert rh.mask_predictor.mask_fcn_logits.weight.shape == (8, 16, 1, 1)
    else:
        assert not rh.has_mask()
    model.train()
    image, target = image_and_target()
    if head == "faster_rcnn":
        target = {k: v for k, v in target.items() if k != "masks"}
    losses = model([image], [target])
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", list(RESNETS))
def test_every_backbone_is_torchvisions(name):
    # Each model.backbone name must be torchvision's classification network of that name
    # without avgpool/fc (same keys, shapes and parameter count) under torchvision's FPN.
    with torch.device("meta"):
        ours = build_backbone(make_cfg("maskrcnn_r50_bfp", {"model.backbone": name, **TORCHVISION}))
        classifier = getattr(torchvision.models, name)(weights=None)
        theirs = resnet_fpn_backbone(
            backbone_name=name, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
        )
    body = {k: v for k, v in shapes(classifier).items() if not k.startswith("fc.")}
    assert shapes(ours.body) == body
    n_params = sum(p.numel() for n, p in classifier.named_parameters() if not n.startswith("fc."))
    assert sum(p.numel() for p in ours.body.parameters()) == n_params
    assert shapes(ours) == shapes(theirs)


def test_lateral_input_resnet18():
    # fpt.input: lateral [code] replaces the FPN by 1x1 laterals of C2..C5, which for
    # ResNet-18 have 64..512 channels; the model must build and detect. With fpt.norm gn
    # (the config's) each lateral is Conv1x1 without bias + GroupNorm(32), with none a plain
    # conv with bias [code: FPT_a.py, FPT.__init__, lines 52-66].
    plain = build_model(make_cfg("maskrcnn_r50_fpt", {**SMALL, "model.backbone": "resnet18", "fpt.input": "lateral",
                                                      "fpt.norm": "none"})).backbone
    assert [(c.in_channels, c.out_channels, c.bias is not None) for c in plain.laterals] == [
        (64, 256, True),
        (128, 256, True),
        (256, 256, True),
        (512, 256, True),
    ]
    torch.manual_seed(0)
    cfg = make_cfg("maskrcnn_r50_fpt", {**SMALL, "model.backbone": "resnet18", "fpt.input": "lateral"})
    model = build_model(cfg)
    backbone = model.backbone
    assert isinstance(backbone, FPTBackbone) and backbone.fpn is None
    assert [(c[0].in_channels, c[0].bias is None, type(c[1]).__name__, c[1].num_groups) for c in backbone.laterals] == [
        (64, True, "GroupNorm", 32),
        (128, True, "GroupNorm", 32),
        (256, True, "GroupNorm", 32),
        (512, True, "GroupNorm", 32),
    ]
    assert not any(k.startswith("fpn.") for k in backbone.state_dict())

    image, _ = image_and_target()
    model.eval()
    model.roi_heads.score_thresh = 0.0
    model.roi_heads.detections_per_img = 5
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, 64, 96))
        (detections,) = model([image])
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "0": (1, 256, 16, 24),
        "1": (1, 256, 8, 12),
        "2": (1, 256, 4, 6),
        "3": (1, 256, 2, 3),
        "pool": (1, 256, 1, 2),
    }
    assert len(detections["boxes"]) > 0


def bad_cfg(key: str, value: Any) -> dict[str, Any]:
    """A valid config with one value replaced behind load_config's back (build_model must not
    rely on the config having been checked)."""
    cfg = make_cfg("maskrcnn_r50_fpt")
    section, name = key.split(".")
    cfg[section][name] = value
    return cfg


@pytest.mark.parametrize(
    "key, value",
    [
        ("model.backbone", "resnet5"),
        ("model.head", "retinanet"),
        ("model.backbone_norm", "gn"),
        ("model.trainable_backbone_layers", 6),
        ("model.num_classes", 0),
        ("fpt.input", "c5"),
    ],
)
def test_bad_value_names_the_key(key, value):
    # A wrong value must fail before anything is built, saying which key and value.
    with pytest.raises(ValueError, match=rf"^{key}: {value!r}"):
        build_model(bad_cfg(key, value))


def test_bad_backbone_lists_choices():
    # The message for model.backbone lists the valid names, so the fix is in the error.
    with pytest.raises(ValueError) as info:
        build_model(bad_cfg("model.backbone", "resnet5"))
    message = str(info.value)
    assert "\n" not in message
    assert all(name in message for name in RESNETS)
