"""Experiment configuration: one schema, YAML files with ``_base_`` inheritance, ``--set`` overrides.

A config is a nested plain dict, ``{section: {key: value}}`` plus top-level keys such as
``seed``; it is JSON-serialisable and hashed by :func:`config_hash`. Every key, its default,
type, allowed values and meaning are declared once, in :data:`SCHEMA`; adding a key is adding
one line there.

Loading ``load_config("maskrcnn_r50_fpt", [("fpt.st", "false")])``:

1. start from the schema defaults;
2. apply the file's ``_base_`` chain (bases first, each resolved relative to the file that
   names it), then the file itself: later values win;
3. apply the overrides in order, each value parsed with ``yaml.safe_load``;
4. check types, choices, ranges and the cross-key rules (:func:`check_config`).

Every problem raises :class:`ConfigError` with a one-line message that names the file, the
key or value, and what was expected.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from fptbench.errors import UsageError
from fptbench.paths import resolve_name_or_path
from fptbench.yamlio import YAMLFileError, compose_yaml, load_yaml

__all__ = [
    "BACKBONES",
    "CONFIG_DIR",
    "FPT_CHANNELS",
    "INT_MAX",
    "MAX_SIDE",
    "MIN_SIDE",
    "SCHEMA",
    "SOURCE_TAGS",
    "ConfigError",
    "Key",
    "Origin",
    "ProfileRequest",
    "apply_overrides",
    "available_configs",
    "check_config",
    "check_value",
    "config_hash",
    "config_origins",
    "default_config",
    "describe",
    "diff_configs",
    "format_diff",
    "dump_config",
    "flat_defaults",
    "load_config",
    "nest",
    "read_chain",
    "resolve_config",
    "sections",
    "source_of",
    "unknown_key",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""Where named configs live: ``load_config("NAME")`` reads ``CONFIG_DIR / "NAME.yaml"``."""

FPT_CHANNELS = 256
"""The paper's pyramid width (torchvision FPN ``out_channels``), the default of ``model.fpn_channels``."""


MIN_SIDE = 32
"""Smallest image side the model accepts, pixels: the trunk's output stride."""

MAX_SIDE = 8192
"""Largest image side a config or profile may ask for, pixels [ours]: 6x COCO's 1333, and
already ~50 GB of FPT activations at batch 1; beyond it memory, not the user, would say no."""

INT_MAX = 2**31 - 1
"""Largest integer any key accepts: seeds, sizes and counts end in 32-bit fields (NumPy's seed,
tensor sizes), where a larger one would be a traceback or a silent wrap."""


class ConfigError(UsageError):
    """A config file, override or value is invalid; ``str(err)`` is one line for the user."""


@dataclass(frozen=True)
class Key:
    """Declaration of one config key.

    ``type`` is one of ``int``, ``float``, ``bool``, ``str``, or ``list`` with ``item`` the type of
    its elements; an int is accepted (and stored as float) where a float is expected; ``None`` is
    accepted only when ``nullable``. ``choices`` restricts a value (each element of a list) to a
    fixed set; ``min``/``max`` bound a number (each element), inclusive. ``doc`` is the one-line
    meaning, with the unit. ``sources`` maps a value to where it comes from, ``"paper"``,
    ``"code"`` (the authors' repository) or ``"ours"``, for the keys where the paper and the
    authors' code differ (the doc's tags, as data: ``fptbench config A --diff B`` shows them).
    """

    default: Any
    type: type
    doc: str
    choices: tuple | None = None
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    item: type | None = None
    sources: Mapping[Any, str] | None = None


SOURCE_TAGS = ("paper", "code", "detectron2", "ours")
"""What a :attr:`Key.sources` value may say: the paper, the authors' code, the field's standard
where the paper is silent (detectron2's defaults, its Base-RCNN-FPN 1x), or fptbench's choice."""


# Mirrors fptbench.modeling.backbone.RESNETS (this module imports no torch); a test pins the two.
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
             "resnext101_32x8d", "resnext101_64x4d")

# The one declaration of every key: dotted name -> Key(default, type, doc, ...).
# Tags as in the spec: [paper], [code] (the authors' repository), [ours].
SCHEMA: dict[str, Key] = {
    "seed": Key(0, int, "random seed: weight initialisation, data order, augmentation, synthetic inputs"),
    "DEBUG": Key(False, bool, "quick check as in the seed's --set DEBUG true: data.max_images = 8 unless set, train.max_iter <= 20"),
    "device": Key("auto", str, "where training and evaluation run: auto = cuda:LOCAL_RANK when CUDA is usable, else the CPU (an error where SLURM allocated GPUs); cuda = CUDA or an error; cpu = the CPU even where a GPU is visible", choices=("auto", "cuda", "cpu")),
    # model: the torchvision detector around the pyramid, or the segmentation model (model.task)
    "model.task": Key("detection", str, "what the model predicts: detection = torchvision's Faster/Mask R-CNN on the pyramid; segmentation = a class per pixel, dilated trunk + pyramid + head of the seg section [paper: the pixel-level setup]", choices=("detection", "segmentation")),
    "model.sync_bn": Key(None, bool, "BatchNorm -> torch's SyncBatchNorm under DDP on CUDA: null = for segmentation only [ours: the field's standard, mmsegmentation's SyncBN]; true = for either task; false = never", nullable=True),
    "model.backbone": Key("resnet50", str, "trunk whose C2..C5 feed the pyramid (torchvision name, randomly initialised)", choices=BACKBONES),
    "model.head": Key("mask_rcnn", str, "torchvision detector: mask_rcnn (boxes + masks) or faster_rcnn (boxes)", choices=("mask_rcnn", "faster_rcnn")),
    "model.num_classes": Key(91, int, "object classes including background (torchvision convention; COCO = 91)", min=2),
    "model.trainable_backbone_layers": Key(5, int, "trunk stages left trainable, counted from the top, 0..5 (torchvision: 5 without pretrained weights; the COCO configs: 3, stem and res2 frozen [detectron2: FREEZE_AT 2; code: RESNETS.FREEZE_AT 2])", min=0, max=5),
    "model.backbone_norm": Key("bn", str, "trunk normalisation: bn = nn.BatchNorm2d (torchvision without pretrained weights), frozen_bn = FrozenBatchNorm2d (the COCO configs: the trunk keeps its ImageNet statistics [detectron2: FrozenBN; code: AffineChannel2d])", choices=("bn", "frozen_bn")),
    "model.min_size": Key(800, int, "resized short image side, pixels (GeneralizedRCNNTransform)", min=1, max=MAX_SIDE),
    "model.max_size": Key(1333, int, "cap on the resized long image side, pixels (GeneralizedRCNNTransform)", min=1, max=MAX_SIDE),
    "model.pixel": Key("torchvision", str, "pixel convention: torchvision = RGB in [0, 1] normalised by ImageNet mean/std; caffe = BGR in [0, 255] minus the Detectron mean, no std (Detectron weights)", choices=("torchvision", "caffe")),
    "model.box_score_thresh": Key(0.05, float, "detections scoring below this are dropped at inference (torchvision: 0.05)", min=0.0, max=1.0),
    "model.box_detections_per_img": Key(100, int, "most detections kept per image (torchvision and COCO: 100)", min=1),
    "model.anchor_sizes": Key([32, 64, 128, 256, 512], list, "RPN anchor side per level P2..P6, pixels, aspect ratios 0.5/1/2 (torchvision's defaults)", item=int, min=1),
    "model.rpn_pre_nms_top_n_train": Key(2000, int, "RPN proposals kept per level before NMS in training (torchvision: 2000)", min=1),
    "model.rpn_post_nms_top_n_train": Key(2000, int, "RPN proposals kept after NMS in training (torchvision: 2000)", min=1),
    "model.rpn_pre_nms_top_n_test": Key(1000, int, "RPN proposals kept per level before NMS at inference (torchvision: 1000)", min=1),
    "model.rpn_post_nms_top_n_test": Key(1000, int, "RPN proposals kept after NMS at inference (torchvision: 1000)", min=1),
    "model.box_batch_size_per_image": Key(512, int, "RoIs sampled per image for the box (and mask) head losses (torchvision: 512)", min=1),
    "model.box_positive_fraction": Key(0.25, float, "largest share of positives among the sampled RoIs; the mask head trains on these positives (torchvision: 0.25)", min=0.0, max=1.0),
    "model.roi_sampling_ratio": Key(2, int, "RoIAlign sampling points per bin side in the box and mask poolers, the authors' every-level poolers too (torchvision: 2; 0 = adaptive; [code]: 2)", min=0),
    "model.fpn_channels": Key(FPT_CHANNELS, int, "pyramid width d: every FPN/FPT level and the heads' input, channels [paper: 256]", min=1),
    "model.box_head_dim": Key(1024, int, "width of the box head's fully connected layers: torchvision's TwoMLPHead has two (1024), the authors' xconv1fc_gn_fpt one (FAST_RCNN.MLP_HEAD_DIM 1024)", min=1),
    "model.mask_head_channels": Key(256, int, "width of the mask head's 3x3 convs and its deconv, either head (torchvision MaskRCNNHeads: 256; [code]: MRCNN.DIM_REDUCED 256; v1up4convs_gn_adp_ff: a multiple of 64, its fc branch halves it under GroupNorm of 32)", min=1),
    "model.box_head": Key("torchvision", str, "box head after RoIAlign: torchvision = TwoMLPHead on each RoI's own level (detectron2's default 2fc head) [detectron2]; xconv1fc_gn_fpt = the authors' roi_Xconv1fc_gn_head_fptnet: RoIAlign from every level, one 3x3 GN conv per level, element-wise max, 3x3 GN convs, one fc [code]", choices=("torchvision", "xconv1fc_gn_fpt"), sources={"torchvision": "detectron2", "xconv1fc_gn_fpt": "code"}),
    "model.box_head_conv_dim": Key(256, int, "width of the 3x3 convs of the box head xconv1fc_gn_fpt, channels [code: FAST_RCNN.CONV_HEAD_DIM 256]", min=1),
    "model.mask_head": Key("torchvision", str, "mask head of Mask R-CNN (ignored by faster_rcnn): torchvision = MaskRCNNHeads, four 3x3 convs on each RoI's own level (detectron2's default) [detectron2]; v1up4convs_gn_adp_ff = the authors' mask_rcnn_fcn_head_v1up4convs_gn_adp_ff: PANet's adaptive feature pooling from every level and fully-connected fusion, GroupNorm [code]", choices=("torchvision", "v1up4convs_gn_adp_ff"), sources={"torchvision": "detectron2", "v1up4convs_gn_adp_ff": "code"}),
    "model.box_nms_thresh": Key(0.5, float, "IoU threshold of the per-class NMS over the final detections (torchvision and detectron2: 0.5; [code]: TEST.NMS 0.5 in their configs)", min=0.0, max=1.0),
    "model.weights": Key("", str, "local detection checkpoint loaded before training, e.g. torchvision's COCO Mask R-CNN .pth ('' = none); FPT keys may be missing"),
    "model.backbone_weights": Key("", str, "the trunk's starting weights: imagenet = torchvision's ImageNet file of model.backbone [detectron2: ImageNet trunks; torchvision's references' file]; detectron = Detectron's caffe2 .pkl of model.backbone (R-50.pkl, ...) [code]; both looked up in model.weights_dir (`fptbench weights CONFIG` lists them); scratch = random init, asked for by name [ours]; a path = that file (.pth: torchvision keys, .pkl: Detectron blobs); '' = none given (random init; refused for a COCO detection run)", sources={"imagenet": "detectron2", "detectron": "code", "scratch": "ours"}),
    "model.weights_dir": Key("", str, "folder where the named trunk files of model.backbone_weights (imagenet, detectron) are looked up ('' = $FPTBENCH_WEIGHTS_DIR, else data/pretrained); relative paths are from the working directory"),
    "model.backbone_pretrain": Key("", str, "config (name or path) whose training run pre-trains the trunk, once: cached under data.root/pretrained/ by a digest of that config and the data, then loaded as model.backbone_weights would be ('' = none) [ours]"),
    "model.pretrain_heads": Key(False, bool, "with model.backbone_pretrain: also start the RPN and RoI heads from that run; the neck (FPN, transformers) starts fresh [ours: a CPU budget cannot re-learn the heads]"),
    "model.stride_in_1x1": Key(False, bool, "stride each stage's first Bottleneck in its 1x1 conv, as Detectron's MSRA trunks (the seed's .pkl weights) were trained [code]; false = torchvision (3x3) [ours]", sources={True: "code", False: "ours"}),
    # fpt: which transformers the neck has and how their outputs are fused
    "fpt.st": Key(True, bool, "Self-Transformer on every level (non-local interaction within a level)"),
    "fpt.gt": Key(True, bool, "Grounding Transformer, top-down (fine queries, coarse keys/values)"),
    "fpt.rt": Key(True, bool, "Rendering Transformer, bottom-up (coarse queries, fine keys/values); st = gt = rt = false is plain BFP"),
    "fpt.input": Key("fpn", str, "what FPT transforms: fpn = torchvision FPN outputs [ours], lateral = 1x1 laterals of C2..C5 [code]", choices=("fpn", "lateral"), sources={"fpn": "ours", "lateral": "code"}),
    "fpt.pairs": Key("all", str, "GT/RT level pairs: all = every finer/coarser level [code], adjacent = neighbouring levels only", choices=("all", "adjacent"), sources={"all": "code"}),
    "fpt.fuse_init": Key("default", str, "fusion conv start: default = torch's init; identity = X_l passes through, transformer inputs at zero (the neck starts as BFP) [ours]", choices=("default", "identity"), sources={"identity": "ours"}),
    "fpt.norm": Key("gn", str, "normalisation after each level's 3x3 fusion conv", choices=("none", "bn", "gn")),
    # st: Self-Transformer
    "st.normalizer": Key("mos", str, "mos = mixture of st.parts softmaxes [paper]; softmax = one softmax, st.parts then treated as 1", choices=("mos", "softmax"), sources={"mos": "paper"}),
    "st.parts": Key(2, int, "MoS channel parts N [paper: 2]; must divide model.fpn_channels (ignored with softmax)", min=1),
    "st.pool_kv": Key(False, bool, "keys/values from a 3x3 stride-2 average pool of the level: 4x fewer positions [code]; false = every position [paper]", sources={True: "code", False: "paper"}),
    "st.shared_qk": Key(False, bool, "one 1x1 conv computes both queries and keys [code]; false = one conv each [paper]", sources={True: "code", False: "paper"}),
    "st.mixture_input": Key("keys", str, "what the MoS weights pi are computed from: keys = mean of k [paper, wording unconfirmed], queries = mean of the full-resolution q [code]", choices=("keys", "queries"), sources={"keys": "paper", "queries": "code"}),
    "st.attn_dropout": Key(0.1, float, "dropout probability on the attention weights, training only [code]", min=0.0, max=1.0),
    "st.dropout_on": Key("softmax", str, "softmax = each part's softmax before mixing, independent masks [code]; mixture = the mixed weights, one mask [ours] (attention.impl blocks or naive)", choices=("softmax", "mixture"), sources={"softmax": "code", "mixture": "ours"}),
    # gt: Grounding Transformer
    "gt.normalizer": Key("mos", str, "mos = mixture of gt.parts softmaxes [paper]; softmax = one softmax; linear = (q k^T / Lk) v, no softmax, as the authors' FPT_a builds it [code]; gt.parts is 1 unless mos", choices=("mos", "softmax", "linear"), sources={"mos": "paper", "linear": "code"}),
    "gt.parts": Key(4, int, "MoS channel parts N [paper: 4]; must divide gt.channels (ignored with softmax)", min=1),
    "gt.similarity": Key("euclidean", str, "query-key score: euclidean = -||q - k||^2 [paper], dot = q . k [code]", choices=("euclidean", "dot"), sources={"euclidean": "paper", "dot": "code"}),
    "gt.channels": Key(128, int, "inner width of q, k and v, channels [code: 128]", min=1),
    "gt.window": Key(0, int, "0 = global GT; odd n >= 1 = locality-constrained GT over n x n coarse cells [paper]", min=0),
    "gt.out_bias": Key(False, bool, "the output 1x1 conv (before the zero-initialised BN) has a bias, as the authors' W_z [code]; false [ours]", sources={True: "code", False: "ours"}),
    # rt: Rendering Transformer
    "rt.variant": Key("paper", str, "paper = 3x3 conv after the GAP channel weighting [paper]; code = conv before it, 1x1 conv on the GAP vector [code]", choices=("paper", "code"), sources={"paper": "paper", "code": "code"}),
    # attention: how mixture attention is computed (results are equal up to rounding); the impl
    # choices mirror fptbench.ops.mos_attention.IMPLS (tests/test_config.py pins the two)
    "attention.impl": Key("auto", str, "sdpa = one fused attention call per part, blocks = query blocks with one V product, auto = pick per device and shape, naive = materialised scores (memory-quadratic baseline)", choices=("auto", "sdpa", "blocks", "naive")),
    "attention.block_size": Key(0, int, "queries per block for the blocks kernel, rows (0 = automatic)", min=0),
    # seg: the segmentation model, its training crops and loss, and test-time inference (model.task
    # segmentation; the choices mirror fptbench.modeling.segmentation and fptbench.evaluation.segmentation,
    # tests/test_config.py pins the two)
    "seg.output_stride": Key(8, int, "stride of the dilated trunk's C5 and of the head's input, px [paper: a dilated ResNet; 8 ours, DeepLab's and mmsegmentation's d8]", choices=(8, 16)),
    "seg.pyramid": Key("ufp", str, "ufp = unscathed feature pyramid, GCN blocks on C5, every level at one resolution [paper]; fpn = torchvision's FPN on C2..C5 [ours]", choices=("ufp", "fpn"), sources={"ufp": "paper", "fpn": "ours"}),
    "seg.ufp_kernels": Key([1, 7, 15, 31], list, "GCN kernel size of each UFP level, finest first, odd [paper: 1, 7, 15, 31]", item=int, min=1),
    "seg.head": Key("deeplab", str, "torchvision's DeepLabHead (ASPP) [paper: ASPP-style] or FCNHead", choices=("deeplab", "fcn")),
    "seg.aux_head": Key(True, bool, "an FCNHead on C4 adds seg.aux_weight x its loss in training [ours: the field's standard, mmsegmentation's auxiliary head]"),
    "seg.aux_weight": Key(0.4, float, "weight of the auxiliary head's cross-entropy [ours: 0.4, the field's standard (PSPNet, mmsegmentation)]", min=0.0),
    "seg.crop_size": Key([512, 512], list, "training crop [H, W], px; a smaller resized image is padded (mean colour, ignored labels) [ours: mmsegmentation's VOC / ADE20K crop]", item=int, min=1, max=MAX_SIDE),
    "seg.scale_range": Key([0.5, 2.0], list, "[low, high] of the random resize factor of each training image, relative to its own size [ours: mmsegmentation's 0.5..2.0]", item=float, min=0.0),
    "seg.photometric": Key(True, bool, "random brightness, contrast, saturation and hue in training [ours: mmsegmentation's PhotoMetricDistortion]"),
    "seg.test_mode": Key("whole", str, "inference of each test image (each scale and flip): whole = one pass, slide = overlapping seg.test_crop_size windows [ours: mmsegmentation's two modes]", choices=("whole", "slide")),
    "seg.test_crop_size": Key([], list, "slide window [H, W], px ([] = seg.crop_size)", item=int, min=1, max=MAX_SIDE),
    "seg.test_stride": Key([], list, "slide window stride [H, W], px ([] = two thirds of the window)", item=int, min=1, max=MAX_SIDE),
    "seg.test_flip": Key(False, bool, "add each scale's horizontally flipped pass at test (logits averaged)"),
    "seg.test_scales": Key([1.0], list, "image scale factors at test, logits averaged ([1.0] = single scale; the field's multi-scale test: 0.5, 0.75, 1.0, 1.25, 1.5, 1.75)", item=float, min=0.0),
    # data: where images and annotations come from (fptbench.data)
    "data.root": Key("data/coco", str, "dataset folder: annotations/instances_{split}.json with images/{split}/ (the seed's layout) or, for the named COCO splits, {split}/ beside annotations/ (COCO's own layout); relative paths are from the working directory"),
    "data.train": Key("coco2017_train", str, "training split: a named dataset (coco2017_train, coco2014_train, ...) or a split name under data.root"),
    "data.test": Key("coco2017_val", str, "evaluation split, as data.train (coco2017_val, coco2014_minival, ...); a split without annotations (coco2017_test-dev, cityscapes_test, voc2012_test) is run, not scored: its results files are written for the evaluation server"),
    "data.num_workers": Key(2, int, "data-loader worker processes per device (0 = load in the main process)", min=0),
    "data.max_images": Key(0, int, "use only the first N images of each split, by image id (0 = all)", min=0),
    "data.flip": Key(True, bool, "random horizontal flip in training (probability 0.5)"),
    # train: optimisation and schedule (fptbench.engine); iterations count optimizer steps
    "train.images_per_device": Key(2, int, "images per device per iteration [code: 2 per GPU]", min=1),
    "train.accumulate": Key(1, int, "micro-batches per optimizer step, gradients accumulated: the effective batch is world size x images_per_device x accumulate; 0 = as many as reach train.reference_batch [ours]", min=0),
    "train.reference_batch": Key(0, int, "effective batch (images per optimizer step) at which train.base_lr, max_iter, steps, warmup_iters and checkpoint_period are given; a run at another batch B scales them by the linear rule, LR x B/ref and iterations x ref/B, as the authors' train_net_step.py does [code]; 0 = use them as given (COCO configs: 16 [detectron2, code])", min=0),
    "train.aspect_grouping": Key(True, bool, "detection training batches hold images of one orientation (width >= height, or not), so that a batch pads little [detectron2; code: TRAIN.ASPECT_GROUPING]; segmentation crops are all one size", sources={True: "detectron2"}),
    "train.max_iter": Key(90000, int, "length of the run, iterations", min=1),
    "train.base_lr": Key(0.02, float, "SGD learning rate after warm-up, for the whole batch", min=0.0),
    "train.momentum": Key(0.9, float, "SGD momentum [code]", min=0.0, max=1.0),
    "train.weight_decay": Key(1.0e-4, float, "SGD weight decay [code]", min=0.0),
    "train.weight_decay_bias": Key(None, float, "weight decay of biases (null = train.weight_decay) [detectron2: null; code: 0, Detectron's BIAS_WEIGHT_DECAY false]", min=0.0, nullable=True),
    "train.weight_decay_norm": Key(None, float, "weight decay of normalisation layers' weights (those of train.norm_decay_layers; null = train.weight_decay, torch's SGD over every parameter) [detectron2: 0; code: 0, WEIGHT_DECAY_GN]", min=0.0, nullable=True),
    "train.norm_decay_layers": Key("all", str, "which layers' weights get train.weight_decay_norm: all = every normalisation layer (BatchNorm, GroupNorm, ...) [detectron2]; groupnorm = GroupNorm only, BatchNorm weights keep train.weight_decay [code: train_net_step.py's gn_params]", choices=("all", "groupnorm"), sources={"all": "detectron2", "groupnorm": "code"}),
    "train.bias_lr_factor": Key(1.0, float, "learning-rate factor of biases [detectron2: 1; code: 2, Detectron's BIAS_DOUBLE_LR]", min=0.0),
    "train.warmup_iters": Key(500, int, "linear warm-up length, iterations [code: 500]", min=0),
    "train.warmup_factor": Key(0.3333333333, float, "learning-rate factor at iteration 0 of the warm-up [code: 1/3]", min=0.0, max=1.0),
    "train.steps": Key([60000, 80000], list, "iterations at which the learning rate is multiplied by train.gamma (train.schedule step)", item=int, min=0),
    "train.schedule": Key("step", str, "learning-rate decay after the warm-up: step = x train.gamma at each of train.steps [code]; poly = (1 - iteration / train.max_iter) ^ train.poly_power [ours: the field's standard for segmentation]", choices=("step", "poly"), sources={"step": "code", "poly": "ours"}),
    "train.gamma": Key(0.1, float, "learning-rate factor at each of train.steps", min=0.0),
    "train.poly_power": Key(0.9, float, "exponent of the poly schedule [ours: 0.9, DeepLab's and mmsegmentation's]", min=0.0),
    "train.poly_min_lr": Key(0.0, float, "learning rate the poly schedule decays to at train.max_iter (mmsegmentation: 1e-4)", min=0.0),
    "train.min_sizes": Key([], list, "short sides drawn from per training image, pixels ([] = model.min_size; [code]: 400..1200)", item=int, min=1, max=MAX_SIDE),
    "train.max_size": Key(0, int, "cap on the long side in training, pixels (0 = model.max_size; [code]: 1400)", min=0, max=MAX_SIDE),
    "train.clip_grad_norm": Key(0.0, float, "clip the global gradient norm to this (0 = no clipping)", min=0.0),
    "train.amp": Key(True, bool, "mixed precision on CUDA: autocast in train.amp_dtype (fp16 adds grad scaling); ignored on the CPU"),
    "train.amp_dtype": Key("bf16", str, "autocast dtype of train.amp [ours: bf16, no grad scaler needed]; fp16 where the GPU lacks bf16 (then a logged warning)", choices=("bf16", "fp16")),
    "train.cpu_bf16": Key(False, bool, "bf16 autocast on the CPU (off: fp32, bitwise-reproducible)"),
    "train.checkpoint_period": Key(5000, int, "write a checkpoint every N iterations (and at the end)", min=1),
    "train.keep_checkpoints": Key([], list, "iterations whose periodic checkpoints are kept besides the last 2 (older ones are deleted) [ours]", item=int, min=1),
    "train.log_period": Key(20, int, "log scalars to TensorBoard every N iterations", min=1),
    "train.eval_at_end": Key(True, bool, "evaluate on data.test when training ends and write result.json"),
    "train.dist_timeout_min": Key(60.0, float, "minutes a rank waits in a collective before failing [ours]: NCCL's default 10 is shorter than rank 0's COCOeval of a full val set while the other ranks wait", min=0.01),
}


def sections() -> list[str]:
    """Top-level names in schema order: sections and top-level keys."""
    out: list[str] = []
    for key in SCHEMA:
        head = key.split(".", 1)[0]
        if head not in out:
            out.append(head)
    return out


# ---------------------------------------------------------------------------------------------
# values

def describe(value: Any) -> str:
    """How a value is named in an error message: its YAML type and spelling."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _type_name(spec: Key) -> str:
    return f"a list of {spec.item.__name__}" if spec.type is list else spec.type.__name__


def check_value(key: str, value: Any, spec: Key, where: str) -> Any:
    """Return ``value`` checked against ``spec`` (an int becomes float where a float is expected).

    Raises ConfigError naming ``where`` (the file, or the file and the --set argument).
    """
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"{where}: key '{key}' expects {_type_name(spec)}, got null")
    if spec.type is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: key '{key}' expects {_type_name(spec)}, got {describe(value)}")
        item = Key(None, spec.item, spec.doc, choices=spec.choices, min=spec.min, max=spec.max)
        return [check_value(f"{key}[{i}]", v, item, where) for i, v in enumerate(value)]
    if spec.type is bool:
        ok = isinstance(value, bool)
    elif spec.type is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec.type is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    else:
        ok = isinstance(value, spec.type)
    if not ok:
        hint = ""
        if spec.type is float and isinstance(value, str):
            try:
                float(value)
                hint = " (YAML reads 1e-4 as a string: write 1.0e-4)"
            except ValueError:
                pass
        elif spec.type is bool:
            hint = " (write true or false)"
        raise ConfigError(f"{where}: key '{key}' expects {_type_name(spec)}, got {describe(value)}{hint}")
    if spec.type is float and not math.isfinite(value):
        raise ConfigError(f"{where}: key '{key}' must be a finite number, got {value!r}")
    if spec.type is int and abs(value) > INT_MAX:
        raise ConfigError(f"{where}: key '{key}' must be at most {INT_MAX} in size, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{where}: key '{key}' must be one of {', '.join(map(str, spec.choices))}; "
                          f"got {value!r}")
    if spec.min is not None and value < spec.min:
        bound = f"in {spec.min}..{spec.max}" if spec.max is not None else f">= {spec.min}"
        raise ConfigError(f"{where}: key '{key}' must be {bound}, got {value!r}")
    if spec.max is not None and value > spec.max:
        bound = f"in {spec.min}..{spec.max}" if spec.min is not None else f"<= {spec.max}"
        raise ConfigError(f"{where}: key '{key}' must be {bound}, got {value!r}")
    return value


def unknown_key(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(SCHEMA), n=1)
    if close:
        return ConfigError(f"{where}: unknown key '{key}'; did you mean '{close[0]}'?")
    return ConfigError(f"{where}: unknown key '{key}'; valid top-level names: {', '.join(sections())}")


def _set(flat: dict, key: str, value: Any, where: str) -> None:
    spec = SCHEMA.get(key)
    if spec is None:
        raise unknown_key(key, where)
    flat[key] = check_value(key, value, spec, where)


def _flatten(mapping: Mapping, where: str, prefix: str = "") -> dict[str, Any]:
    """``{"fpt": {"st": True}}`` -> ``{"fpt.st": True}``, checking each key and value."""
    flat: dict[str, Any] = {}
    heads = set(sections())
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        if key in SCHEMA:
            _set(flat, key, value, where)
        elif isinstance(value, Mapping):
            flat.update(_flatten(value, where, prefix=f"{key}."))
        elif key in heads:
            raise ConfigError(f"{where}: section '{key}' must be a mapping of keys, got {describe(value)}")
        else:
            raise unknown_key(key, where)
    return flat


def nest(flat: Mapping[str, Any]) -> dict:
    """``{"fpt.st": True}`` -> ``{"fpt": {"st": True}}``, in schema order."""
    out: dict = {}
    for key in [k for k in SCHEMA if k in flat] + [k for k in flat if k not in SCHEMA]:
        *heads, leaf = key.split(".")
        node = out
        for head in heads:
            node = node.setdefault(head, {})
        node[leaf] = flat[key]
    return out


def flat_defaults() -> dict[str, Any]:
    """The schema defaults as a flat dict, dotted key -> value (a fresh copy each call)."""
    return {key: spec.default for key, spec in SCHEMA.items()}


def default_config() -> dict:
    """The schema defaults as a nested dict (a fresh copy each call)."""
    return nest(flat_defaults())


# ---------------------------------------------------------------------------------------------
# files

def _shown(path: Path) -> str:
    """Name of a file in messages: bare for shipped configs, the path otherwise."""
    return path.name if path.resolve().parent == CONFIG_DIR else str(path)


def available_configs() -> list[str]:
    """Names of the shipped configs (``_base_*`` files, meant only for inheritance, excluded)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def resolve_config(path_or_name: str | Path) -> Path:
    """A path that exists, or a shipped config's name (with or without ``.yaml``)."""
    return resolve_name_or_path(path_or_name, [CONFIG_DIR], kind="config", private=False, error=ConfigError)


def _read_yaml(path: Path) -> dict:
    shown = _shown(path)
    try:
        data = load_yaml(path, shown)
    except FileNotFoundError as err:
        raise ConfigError(f"{shown}: cannot read: {err.strerror or err}") from None
    except YAMLFileError as err:
        at = f" at line {err.line}, column {err.column}" if err.line else ""
        raise ConfigError(f"{shown}: YAML {'syntax ' if err.line else ''}error{at}: {err.problem}") from None
    except UsageError as err:
        raise ConfigError(str(err)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: the top level must be a mapping of sections, got {describe(data)}")
    return data


def read_chain(path: Path, stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Flat values set by ``path`` and its ``_base_`` files, bases first, the file itself last."""
    shown = _shown(path)
    real = path.resolve()
    if real in stack:
        cycle = " -> ".join(_shown(p) for p in (*stack, real))
        raise ConfigError(f"{shown}: _base_ cycle: {cycle}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{shown}: _base_ must be a file name or a list of file names, got {describe(bases)}")
    flat: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"{shown}: _base_ '{base}' not found (looked for {base_path})")
        flat.update(read_chain(base_path, (*stack, real)))
    flat.update(_flatten(data, shown))
    return flat


@dataclass(frozen=True)
class Origin:
    """Where a config file sets a key: ``file`` (as messages name it), ``line`` (from 1) and the
    comment written beside the value (with its continuation lines), which says where the value
    comes from in the shipped configs (``SOLVER.BASE_LR 0.05 (e2e_fptnet_R-50_mask.yaml:10)``)."""

    file: str
    line: int
    comment: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" + (f": {self.comment}" if self.comment else "")


def _comment_at(lines: list[str], index: int) -> str:
    """The ``# ...`` comment ending line ``index`` (0-based), joined with the comment-only lines
    right below it that start in the same column (a comment continued)."""
    line = lines[index]
    column = -1
    quote = None
    for i, char in enumerate(line):  # the first '#' outside quotes that starts a comment
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or line[i - 1] in " \t"):
            column = i
            break
    if column < 0:
        return ""
    parts = [line[column + 1:].strip()]
    for below in lines[index + 1:]:
        if below.strip().startswith("#") and len(below) - len(below.lstrip()) == column:
            parts.append(below.strip()[1:].strip())
        else:
            break
    return " ".join(part for part in parts if part)


def _file_origins(path: Path) -> dict[str, Origin]:
    """dotted key -> :class:`Origin` of every leaf key that ``path`` itself sets."""
    shown = _shown(path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    _, root = compose_yaml(text, shown)
    out: dict[str, Origin] = {}

    def walk(node: Any, prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            if key in SCHEMA:
                line = key_node.start_mark.line
                out[key] = Origin(shown, line + 1, _comment_at(lines, line))
            else:
                walk(value_node, f"{key}.")

    walk(root, "")
    return out


def config_origins(path_or_name: str | Path, stack: tuple[Path, ...] = ()) -> dict[str, Origin]:
    """dotted key -> where the config file (or its ``_base_`` chain) sets it, the file itself last
    as :func:`read_chain` applies them; keys at their schema default are absent. The file must
    have loaded (:func:`load_config`): errors are not repeated here."""
    path = resolve_config(path_or_name)
    data = _read_yaml(path)
    bases = data.get("_base_", [])
    out: dict[str, Origin] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        out.update(config_origins(path.parent / base, (*stack, path.resolve())))
    out.update(_file_origins(path))
    return out


def _parse_override(text: Any, where: str) -> Any:
    if not isinstance(text, str):
        return text  # already a Python value (API callers)
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        raise ConfigError(f"{where}: cannot parse the value as YAML") from None


def apply_overrides(flat: dict[str, Any],
                    overrides: Iterable[tuple[str, Any]] | Mapping[str, Any] | None,
                    shown: str, *, refuse: Callable[[str, str], None] | None = None) -> list[tuple[str, Any]]:
    """Check ``--set KEY VALUE`` overrides and apply them, in order, to a flat config.

    Args:
        flat: dotted key -> value; updated in place.
        overrides: ``(dotted_key, value)`` pairs (or a mapping); a string value is parsed with
            ``yaml.safe_load`` (``"false"`` -> False, ``"2"`` -> 2, ``"null"`` -> None).
        shown: the file the overrides apply to, as messages name it.
        refuse: called as ``refuse(key, where)`` for each known key before its value is read; it
            raises to refuse the key (the experiment matrix refuses its own axes).

    Returns:
        The ``(key, typed checked value)`` pairs, in order.

    Raises:
        ConfigError: ``SHOWN: --set KEY VALUE: what is wrong``.
    """
    pairs = list(overrides.items()) if isinstance(overrides, Mapping) else list(overrides or ())
    out: list[tuple[str, Any]] = []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ConfigError(f"{shown}: an override must be a (key, value) pair, got {pair!r}")
        key, text = pair
        where = f"{shown}: --set {key} {text}"
        if key not in SCHEMA:
            raise unknown_key(str(key), where)
        if refuse is not None:
            refuse(key, where)
        _set(flat, key, _parse_override(text, where), where)
        out.append((key, flat[key]))
    return out


def load_config(path_or_name: str | Path,
                overrides: Iterable[tuple[str, Any]] | Mapping[str, Any] | None = None) -> dict:
    """Load a config as a nested plain dict.

    Args:
        path_or_name: a shipped config's name (``"maskrcnn_r50_fpt"``, see
            :func:`available_configs`) or the path of a YAML file.
        overrides: ``(dotted_key, value)`` pairs applied in order after the file, as given by
            ``--set KEY VALUE``; a string value is parsed with ``yaml.safe_load``
            (``"false"`` -> False, ``"2"`` -> 2, ``"null"`` -> None).

    Returns:
        ``{"seed": int, "model": {...}, "fpt": {...}, ...}`` with every key of :data:`SCHEMA`.

    Raises:
        ConfigError: one-line message naming the file, key/value and what was expected.
    """
    path = resolve_config(path_or_name)
    shown = _shown(path)
    flat = flat_defaults()
    flat.update(read_chain(path))
    pairs = apply_overrides(flat, overrides, shown)
    where = f"{shown} (with --set)" if pairs else shown
    return check_config(nest(flat), where=where)


def check_config(cfg: Mapping, where: str = "config") -> dict:
    """Check a complete nested config (every schema key, nothing else) and return a clean copy.

    Types, choices and ranges per :data:`SCHEMA`, then the rules that involve two keys:
    ``st.parts`` divides ``model.fpn_channels`` and ``gt.parts`` divides ``gt.channels``
    (both unchecked with the ``softmax`` normalizer, which uses a single part), GroupNorm's 32
    groups divide ``model.fpn_channels`` where the neck has one, ``gt.window`` is 0 or odd, ``model.min_size <= model.max_size``, the poly schedule's floor is
    below its start, and with ``model.task: segmentation`` the seg section's sizes, scales and
    kernels, and no detector-only neck input, heads or LGT without a GT (:func:`_check_segmentation`).
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where}: a config must be a mapping, got {describe(cfg)}")
    flat = _flatten(cfg, where)
    missing = [key for key in SCHEMA if key not in flat]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(repr(k) for k in missing)}")

    def fail(message: str) -> ConfigError:
        return ConfigError(f"{where}: {message}")

    if flat["st.normalizer"] == "mos" and flat["model.fpn_channels"] % flat["st.parts"]:
        raise fail(f"st.parts={flat['st.parts']} must divide model.fpn_channels={flat['model.fpn_channels']} "
                   f"(st.normalizer=mos)")
    if flat["gt.normalizer"] == "mos" and flat["gt.channels"] % flat["gt.parts"]:
        raise fail(f"gt.parts={flat['gt.parts']} must divide gt.channels={flat['gt.channels']} "
                   f"(gt.normalizer=mos)")
    if flat["gt.normalizer"] == "linear" and (flat["gt.similarity"] != "dot" or flat["gt.window"] != 0):
        raise fail(f"gt.normalizer=linear [code] is the authors' global dot-product GT: it needs gt.similarity=dot "
                   f"and gt.window=0, got gt.similarity={flat['gt.similarity']}, gt.window={flat['gt.window']}")
    if (flat["fpt.norm"] == "gn" and (flat["fpt.st"] or flat["fpt.gt"] or flat["fpt.rt"])
            and flat["model.fpn_channels"] % 32):
        raise fail(f"fpt.norm=gn (GroupNorm of 32 groups [code]) needs model.fpn_channels divisible by 32, got "
                   f"{flat['model.fpn_channels']}; or set fpt.norm bn or none")
    if flat["gt.window"] != 0 and flat["gt.window"] % 2 == 0:
        raise fail(f"gt.window={flat['gt.window']} must be 0 (global GT) or an odd window side >= 1")
    if flat["model.box_head"] == "xconv1fc_gn_fpt" and flat["model.box_head_conv_dim"] % 32:
        raise fail(f"model.box_head=xconv1fc_gn_fpt (GroupNorm of 32 groups [code]) needs model.box_head_conv_dim "
                   f"divisible by 32, got {flat['model.box_head_conv_dim']}")
    if (flat["model.head"] == "mask_rcnn" and flat["model.mask_head"] == "v1up4convs_gn_adp_ff"
            and flat["model.mask_head_channels"] % 64):
        raise fail(f"model.mask_head=v1up4convs_gn_adp_ff (GroupNorm of 32 groups [code], its fc branch at half the "
                   f"width) needs model.mask_head_channels divisible by 64, got {flat['model.mask_head_channels']}")
    if flat["train.accumulate"] == 0 and not flat["train.reference_batch"]:
        raise fail("train.accumulate=0 accumulates up to train.reference_batch, which is 0 (none): set "
                   "train.reference_batch, or train.accumulate N")
    if len(flat["model.anchor_sizes"]) != 5:
        raise fail(f"model.anchor_sizes={flat['model.anchor_sizes']} needs one size per level P2..P6 (5 values)")
    if flat["train.steps"] != sorted(flat["train.steps"]):
        raise fail(f"train.steps={flat['train.steps']} must be in increasing order")
    if flat["model.backbone_pretrain"] and flat["model.backbone_weights"]:
        raise fail(f"model.backbone_pretrain={flat['model.backbone_pretrain']} and model.backbone_weights="
                   f"{flat['model.backbone_weights']} both give the trunk's starting weights: set one")
    if flat["model.min_size"] > flat["model.max_size"]:
        raise fail(f"model.min_size={flat['model.min_size']} must be <= model.max_size={flat['model.max_size']}")
    if flat["train.schedule"] == "poly" and flat["train.poly_min_lr"] > flat["train.base_lr"]:
        raise fail(f"train.poly_min_lr={flat['train.poly_min_lr']} must be <= train.base_lr={flat['train.base_lr']} "
                   f"(the poly schedule decays from one to the other)")
    if flat["model.task"] == "segmentation":
        _check_segmentation(flat, fail)
    return nest(flat)


def _check_segmentation(flat: Mapping[str, Any], fail: Callable[[str], ConfigError]) -> None:
    """The cross-key rules of ``model.task: segmentation`` (``fail(message)`` makes the error)."""
    def pair(key: str, low: float, what: str, empty: bool = False) -> None:
        value = flat[key]
        if not (empty and value == []) and (len(value) != 2 or min(value) < low):
            raise fail(f"{key}={value} must be {'[] or ' if empty else ''}[H, W], {what}")

    pair("seg.crop_size", MIN_SIDE, f"each side >= {MIN_SIDE} px (the trunk's output stride)")
    pair("seg.test_crop_size", MIN_SIDE, f"each side >= {MIN_SIDE} px", empty=True)
    pair("seg.test_stride", 1, "each >= 1 px", empty=True)
    scales = flat["seg.scale_range"]
    if len(scales) != 2 or not 0 < scales[0] <= scales[1]:
        raise fail(f"seg.scale_range={scales} must be [low, high] with 0 < low <= high")
    if not flat["seg.test_scales"] or min(flat["seg.test_scales"]) <= 0:
        raise fail(f"seg.test_scales={flat['seg.test_scales']} must be one or more factors > 0")
    kernels = flat["seg.ufp_kernels"]
    if flat["seg.pyramid"] == "ufp" and (not kernels or any(k % 2 == 0 for k in kernels)):
        raise fail(f"seg.ufp_kernels={kernels} must be one or more odd kernel sizes, one UFP level each")
    if flat["fpt.input"] != "fpn":
        raise fail(f"fpt.input={flat['fpt.input']} is the detectors' choice: with model.task=segmentation FPT "
                   f"transforms the seg.pyramid levels (leave fpt.input fpn)")
    if flat["model.pretrain_heads"]:
        raise fail("model.pretrain_heads=true starts a detector's RPN and RoI heads from the pre-training run; "
                   "a segmentation model has none (set it false)")
    if flat["gt.window"] and not flat["fpt.gt"]:
        raise fail(f"gt.window={flat['gt.window']} (LGT) needs fpt.gt=true: without a grounding transformer "
                   f"there is nothing to constrain")


# ---------------------------------------------------------------------------------------------
# output

def config_hash(cfg: Mapping) -> str:
    """First 12 hex digits of the sha256 of the canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(cfg, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text[:-3].strip() if text.endswith("\n...") or text.endswith("...") else text


def dump_config(cfg: Mapping, origins: Mapping[str, Any] | None = None) -> str:
    """YAML of a config, sections and keys in schema order, each key with its one-line doc, and,
    for a key in ``origins`` (dotted key -> :class:`Origin` or text), a comment line below it
    saying where its value was set (``<- maskrcnn_r50_fpt_code.yaml:61: SOLVER.BASE_LR 0.05 ...``).

    ``yaml.safe_load(dump_config(cfg)) == cfg``, and the text is itself a loadable config file.
    """
    origins = origins or {}
    lines: list[str] = []
    order = sections() + [name for name in cfg if name not in sections()]
    for name in order:
        if name not in cfg:
            continue
        value = cfg[name]
        if not isinstance(value, Mapping):
            doc = SCHEMA[name].doc if name in SCHEMA else ""
            lines.append(_with_doc(f"{name}: {_scalar(value)}", doc))
            if name in origins:
                lines.append(_with_doc("", f"  <- {origins[name]}"))
            continue
        lines.append(f"{name}:")
        keys = [k for k in SCHEMA if k.startswith(f"{name}.")]
        leaves = [k.split(".", 1)[1] for k in keys if k.split(".", 1)[1] in value]
        leaves += [leaf for leaf in value if leaf not in leaves]
        for leaf in leaves:
            spec = SCHEMA.get(f"{name}.{leaf}")
            lines.append(_with_doc(f"  {leaf}: {_scalar(value[leaf])}", spec.doc if spec else ""))
            if f"{name}.{leaf}" in origins:
                lines.append(_with_doc("", f"  <- {origins[f'{name}.{leaf}']}"))
    return "\n".join(lines) + "\n"


def _with_doc(line: str, doc: str) -> str:
    return f"{line:<36}  # {doc}" if doc else line


# ---------------------------------------------------------------------------------------------
# comparing two configs

def source_of(key: str, value: Any) -> str | None:
    """Where ``value`` of ``key`` comes from, ``"paper"``, ``"code"`` or ``"ours"``
    (:attr:`Key.sources`); ``None`` where the schema does not say."""
    spec = SCHEMA.get(key)
    if spec is None or not spec.sources:
        return None
    for known, tag in spec.sources.items():
        if type(known) is type(value) and known == value:  # True is not 1
            return tag
    return None


def diff_configs(a: Mapping, b: Mapping) -> list[dict[str, Any]]:
    """The keys where two resolved configs differ, in schema order.

    Returns:
        ``[{"key": "fpt.input", "values": [a's, b's], "sources": [tag or None, tag or None]}, ...]``,
        each tag from :func:`source_of`.
    """
    flat_a, flat_b = _flatten(a, "config"), _flatten(b, "config")
    out = []
    for key in [k for k in SCHEMA if k in flat_a or k in flat_b]:
        va, vb = flat_a.get(key), flat_b.get(key)
        if va != vb or type(va) is not type(vb):
            out.append({"key": key, "values": [va, vb], "sources": [source_of(key, va), source_of(key, vb)]})
    return out


# ---------------------------------------------------------------------------------------------
# profiling request

@dataclass(frozen=True)
class ProfileRequest:
    """What profiling measures: the model on one random H x W image, at batch 1 [ours].

    Read from an experiment matrix's ``profile:`` section and from ``fptbench profile``'s
    arguments; :func:`fptbench.engine.profile.profile_model` takes the same defaults.
    """

    size: tuple[int, int] = (800, 1333)  # [H, W] of the input image, pixels (each side >= MIN_SIDE)
    runs: int = 10  # timed runs, after the warm-up (>= 1)
    warmup: int = 2  # untimed warm-up runs (>= 0)

    def __post_init__(self) -> None:
        for name in ("size", "runs", "warmup"):
            problem = self.problem(name, getattr(self, name))
            if problem:
                raise ConfigError(f"profile {name} {problem}")
        object.__setattr__(self, "size", tuple(self.size))

    @staticmethod
    def problem(name: str, value: Any) -> str | None:
        """``"must be ..., got ..."`` when ``value`` is not a valid ``name`` field, else None."""
        if name == "size":
            if (isinstance(value, (list, tuple)) and len(value) == 2
                    and all(not isinstance(s, bool) and isinstance(s, int) and MIN_SIDE <= s <= MAX_SIDE for s in value)):
                return None
            return f"must be [H, W], integers in {MIN_SIDE}..{MAX_SIDE} pixels, got {value!r}"
        low = {"runs": 1, "warmup": 0}[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= INT_MAX:
            return f"must be an integer in {low}..{INT_MAX}, got {describe(value)}"
        return None

    def as_dict(self) -> dict[str, Any]:
        """``{"size": [H, W], "runs": int, "warmup": int}``: the plain data a matrix and a record hold."""
        return {"size": list(self.size), "runs": self.runs, "warmup": self.warmup}


def format_diff(rows: list[dict[str, Any]], name_a: str, name_b: str) -> str:
    """:func:`diff_configs` rows as an aligned text table: key, then each config's value (as YAML
    writes it) followed by its source tag, ``lateral [code]``; one header line."""
    def cell(value: Any, tag: str | None) -> str:
        return _scalar(value) + (f" [{tag}]" if tag else "")

    table = [("key", name_a, name_b)] + [(row["key"], cell(row["values"][0], row["sources"][0]),
                                          cell(row["values"][1], row["sources"][1])) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    return "".join("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() + "\n"
                   for line in table)
