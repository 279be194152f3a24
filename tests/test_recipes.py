"""The two COCO recipes, each named and each value tagged [issue 18, point 3].

- The paper-faithful configs on the field's standard 1x (detectron2's Base-RCNN-FPN 1x), where the
  paper states no schedule.
- The authors' recipe in the *_code presets: their configs/e2e_fptnet_R-50_{mask,det}.yaml with the
  Detectron defaults of their lib/core/config.py. Each value below was read in their files (the
  comment gives file:line); `fptbench config` must print, beside each, where it was set and the
  comment there, which cites the same place.
"""

from __future__ import annotations

import pytest

from fptbench.config import config_origins, load_config

COCO_1X = {  # detectron2's Base-RCNN-FPN.yaml + mask_rcnn_R_50_FPN_1x.yaml
    "model.backbone_weights": "imagenet", "model.backbone_norm": "frozen_bn", "model.trainable_backbone_layers": 3,
    "model.min_size": 800, "model.max_size": 1333, "train.min_sizes": [640, 672, 704, 736, 768, 800],
    "train.max_size": 1333, "model.rpn_post_nms_top_n_train": 1000,
    "train.reference_batch": 16, "train.images_per_device": 2, "train.base_lr": 0.02, "train.max_iter": 90000,
    "train.steps": [60000, 80000], "train.warmup_iters": 1000, "train.warmup_factor": 0.001,
    "train.momentum": 0.9, "train.weight_decay": 1e-4, "train.weight_decay_norm": 0.0,
    "train.bias_lr_factor": 1.0, "train.aspect_grouping": True, "data.train": "coco2017_train",
    "data.test": "coco2017_val",
}

AUTHORS = {  # key: (value, where in their files it is written)
    "train.base_lr": (0.05, "e2e_fptnet_R-50_mask.yaml:10"),
    "train.max_iter": (180000, "(:12)"),
    "train.steps": ([120000, 160000], "(:13)"),
    "train.reference_batch": (16, "train_net_step.py:165-200"),  # NUM_GPUS 8 x IMS_PER_BATCH 2
    "train.images_per_device": (2, "config.py:52"),
    "train.min_sizes": ([1200, 1200, 1000, 800, 600, 400], ":37"),
    "train.max_size": (1400, ":38"),
    "model.min_size": (1000, "e2e_fptnet_R-50_mask.yaml:42"),
    "model.max_size": (1400, ":43"),
    "model.box_nms_thresh": (0.5, ":44"),
    "model.rpn_pre_nms_top_n_train": (2000, ":40"),
    "model.rpn_pre_nms_top_n_test": (1000, ":45"),
    "model.rpn_post_nms_top_n_test": (1000, ":46"),
    "model.box_head": ("xconv1fc_gn_fpt", ":24"),
    "model.mask_head": ("v1up4convs_gn_adp_ff", ":29"),
    "model.box_batch_size_per_image": (512, ":39"),
    "model.roi_sampling_ratio": (2, ":27, :33"),
    "fpt.norm": ("gn", "FPN.USE_GN"),  # GroupNorm in the FPN (their laterals and fusion convs) and heads
    "train.warmup_iters": (500, "config.py:593"),
    "train.warmup_factor": (0.3333333333, "config.py:596"),
    "train.momentum": (0.9, "config.py:579"),
    "train.weight_decay": (1e-4, ":8"),
    "train.weight_decay_bias": (0.0, "config.py:590"),
    "train.weight_decay_norm": (0.0, "config.py:584"),
    "train.norm_decay_layers": ("groupnorm", "train_net_step.py:261-299"),
    "train.bias_lr_factor": (2.0, "config.py:587"),
    "train.aspect_grouping": (True, "config.py:104"),
    "train.checkpoint_period": (2500, "train_net_step.py:361"),
    "model.backbone_weights": ("detectron", "e2e_fptnet_R-50_mask.yaml:20"),
    "model.pixel": ("caffe", "config.py:943"),
    "model.stride_in_1x1": (True, "config.py:882"),
    "model.backbone_norm": ("frozen_bn", "AffineChannel2d"),
    "model.trainable_backbone_layers": (3, "config.py:897"),
    "model.box_score_thresh": (0.05, "config.py:227"),
    "model.box_detections_per_img": (100, "config.py:222"),
}

FASTER = {"model.head": ("faster_rcnn", "e2e_fptnet_R-50_det.yaml:4"),
          "train.max_iter": (120000, "e2e_fptnet_R-50_det.yaml:15"), "train.steps": ([80000, 100000], "(:16)")}


def _flat(cfg: dict) -> dict:
    return {f"{s}.{k}": v for s, section in cfg.items() if isinstance(section, dict) for k, v in section.items()}


@pytest.mark.parametrize("name", ["maskrcnn_r50_bfp", "maskrcnn_r50_fpt", "fasterrcnn_r50_bfp", "fasterrcnn_r50_fpt",
                                  "maskrcnn_r101_fpt", "maskrcnn_x101_64x4d_fpt", "fasterrcnn_x101_64x4d_bfp"])
def test_the_paper_configs_train_on_detectron2s_1x(name):
    cfg = _flat(load_config(name))
    assert {k: cfg[k] for k in COCO_1X} == COCO_1X
    # the paper's model: torchvision's heads and FPN; only the recipe is detectron2's
    assert (cfg["model.box_head"], cfg["model.mask_head"], cfg["model.pixel"]) == ("torchvision", "torchvision",
                                                                                   "torchvision")
    origins = config_origins(name)
    for key in ("train.base_lr", "train.max_iter", "train.warmup_factor", "model.backbone_norm"):
        assert origins[key].file == "_base_coco_1x.yaml" and "[detectron2" in origins[key].comment, key


@pytest.mark.parametrize("name, extra", [("maskrcnn_r50_fpt_code", {}), ("fasterrcnn_r50_fpt_code", FASTER)])
def test_the_code_presets_resolve_to_the_authors_values_each_saying_where(name, extra):
    cfg = _flat(load_config(name))
    origins = config_origins(name)
    for key, (value, where) in {**AUTHORS, **extra}.items():
        assert cfg[key] == value, (key, cfg[key], value)
        assert key in origins, f"{key}: set by no file of {name}"
        assert where in origins[key].comment, (key, str(origins[key]))


def test_fptbench_config_prints_where_each_value_was_set(run_cli):
    done = run_cli("config", "fasterrcnn_r50_fpt_code")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("  base_lr: 0.05 ")))
    from fptbench.config import CONFIG_DIR

    written = (CONFIG_DIR / "maskrcnn_r50_fpt_code.yaml").read_text().splitlines()
    number = 1 + next(i for i, line in enumerate(written) if line.startswith("  base_lr: 0.05"))
    assert lines[at + 1].strip() == (f"#   <- maskrcnn_r50_fpt_code.yaml:{number}: SOLVER.BASE_LR 0.05 "
                                     "(e2e_fptnet_R-50_mask.yaml:10)")
    at = lines.index(next(line for line in lines if line.startswith("  max_iter: 120000 ")))
    assert "fasterrcnn_r50_fpt_code.yaml" in lines[at + 1] and "SOLVER.MAX_ITER 120000" in lines[at + 1]
    assert lines[1].startswith("# trunk weights: detectron: data/pretrained/R-50.pkl")
