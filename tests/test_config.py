"""fptbench.config: schema defaults, _base_ inheritance, --set overrides, messages, hash, dump.

Error messages are asserted word for word where a user reads them: they are the interface.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from fptbench.config import (
    BACKBONES,
    CONFIG_DIR,
    SCHEMA,
    ConfigError,
    Key,
    check_value,
    available_configs,
    check_config,
    config_hash,
    default_config,
    dump_config,
    load_config,
)

PAPER = sorted(
    [f"{head}_{trunk}_{neck}" for head in ("maskrcnn", "fasterrcnn") for trunk in ("r50", "r101", "x101_64x4d")
     for neck in ("bfp", "fpt")]
    + [f"maskrcnn_x101_32x8d_{neck}" for neck in ("bfp", "fpt")]
)
SYNTH = ["synth_r18_bfp", "synth_r18_fpt", "synth_r18_pretrain"]  # the embedded dataset's configs (fptbench.data.synth)
CODE = ["fasterrcnn_r50_fpt_code", "maskrcnn_r50_fpt_code"]  # the authors' FPT_a [code]
SEG_DATASETS = ("cityscapes", "voc2012", "ade20k", "lip")
SEG_NECKS = ("base", "fpt", "lgt")  # no FPT; FPT with the global GT; FPT with the LGT
SEG = sorted([f"seg_r101_{d}_{n}" for d in SEG_DATASETS for n in SEG_NECKS]
             + [f"synth_seg_r18_{n}" for n in SEG_NECKS])  # model.task: segmentation
SHIPPED = sorted(PAPER + SYNTH + CODE + SEG)
TRUNKS = {"r50": "resnet50", "r101": "resnet101", "x101_32x8d": "resnext101_32x8d",
          "x101_64x4d": "resnext101_64x4d", "r18": "resnet18"}
# Top-level names in schema order: scalars (seed, DEBUG) and sections.
TOP = ["seed", "DEBUG", "device", "model", "fpt", "st", "gt", "rt", "attention", "seg", "data", "train"]
SCALARS = [name for name in TOP if name in SCHEMA]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def error_of(*args, **kwargs) -> str:
    """The message of the ConfigError that load_config(*args, **kwargs) raises; it is one line."""
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- schema and defaults ---------------------------------------------------------------------

def test_defaults_are_the_interface_values():
    cfg = default_config()
    assert cfg["seed"] == 0
    assert cfg["DEBUG"] is False
    assert cfg["model"] == {"task": "detection", "sync_bn": None,
                            "backbone": "resnet50", "head": "mask_rcnn", "num_classes": 91,
                            "trainable_backbone_layers": 5, "backbone_norm": "bn",
                            "min_size": 800, "max_size": 1333, "pixel": "torchvision",
                            "box_score_thresh": 0.05, "box_detections_per_img": 100,
                            # torchvision's RPN / RoI defaults, so that BFP stays torchvision's model
                            "anchor_sizes": [32, 64, 128, 256, 512],
                            "rpn_pre_nms_top_n_train": 2000, "rpn_post_nms_top_n_train": 2000,
                            "rpn_pre_nms_top_n_test": 1000, "rpn_post_nms_top_n_test": 1000,
                            "box_batch_size_per_image": 512, "box_positive_fraction": 0.25,
                            "roi_sampling_ratio": 2, "fpn_channels": 256, "box_head_dim": 1024,
                            "mask_head_channels": 256,
                            # torchvision's heads and NMS [detectron2's defaults too]; the authors' are switches
                            "box_head": "torchvision", "box_head_conv_dim": 256, "mask_head": "torchvision",
                            "box_nms_thresh": 0.5,
                            "weights": "", "backbone_weights": "", "weights_dir": "", "backbone_pretrain": "",
                            "pretrain_heads": False, "stride_in_1x1": False}
    assert cfg["fpt"] == {"st": True, "gt": True, "rt": True, "input": "fpn", "pairs": "all",
                          "fuse_init": "default", "norm": "gn"}
    assert cfg["st"] == {"normalizer": "mos", "parts": 2, "pool_kv": False, "shared_qk": False,
                         "mixture_input": "keys", "attn_dropout": 0.1, "dropout_on": "softmax"}
    assert cfg["gt"] == {"normalizer": "mos", "parts": 4, "similarity": "euclidean", "channels": 128,
                         "window": 0, "out_bias": False}
    assert cfg["rt"] == {"variant": "paper"}
    assert cfg["attention"] == {"impl": "auto", "block_size": 0}
    # the paper's pixel-level model [paper] and the field's standard recipe around it [ours]
    assert cfg["seg"] == {"output_stride": 8, "pyramid": "ufp", "ufp_kernels": [1, 7, 15, 31], "head": "deeplab",
                          "aux_head": True, "aux_weight": 0.4, "crop_size": [512, 512], "scale_range": [0.5, 2.0],
                          "photometric": True, "test_mode": "whole", "test_crop_size": [], "test_stride": [],
                          "test_flip": False, "test_scales": [1.0]}
    assert (cfg["train"]["schedule"], cfg["train"]["poly_power"], cfg["train"]["poly_min_lr"]) == ("step", 0.9, 0.0)
    # the authors' optimiser and schedule shape [code]: SGD 0.9 / 1e-4, warm-up from 1/3
    assert (cfg["train"]["momentum"], cfg["train"]["weight_decay"], cfg["train"]["warmup_iters"]) == (0.9, 1e-4, 500)
    assert cfg["train"]["warmup_factor"] == pytest.approx(1 / 3)
    # as given, one micro-batch, torch's plain SGD over every parameter: what a config written for one
    # batch gets unless it names its reference batch (the COCO configs do: 16)
    assert (cfg["train"]["accumulate"], cfg["train"]["reference_batch"], cfg["train"]["aspect_grouping"]) == (1, 0, True)
    assert (cfg["train"]["weight_decay_bias"], cfg["train"]["weight_decay_norm"], cfg["train"]["bias_lr_factor"]) == (
        None, None, 1.0)
    assert cfg["data"]["root"] == "data/coco" and cfg["data"]["train"] == "coco2017_train"
    assert list(cfg) == TOP


def test_every_key_is_documented_and_its_default_is_valid():
    for key, spec in SCHEMA.items():
        assert spec.doc.strip() and "\n" not in spec.doc, key
        assert check_value(key, spec.default, spec, "schema") == spec.default
        if spec.choices is not None:
            assert spec.default in spec.choices, key
    assert check_config(default_config()) == default_config()


def test_choice_lists_mirrored_from_the_model_are_the_models():
    # config.py imports no torch, so it keeps copies of two lists the model code owns; a change
    # to one side without the other must fail here, not in a run.
    from fptbench.modeling.backbone import RESNETS
    from fptbench.ops.mos_attention import IMPLS

    assert SCHEMA["model.backbone"].choices == BACKBONES == tuple(RESNETS)
    assert SCHEMA["attention.impl"].choices == tuple(IMPLS)
    from fptbench.modeling.grounding_transformer import NORMALIZERS
    from fptbench.ops.mos_attention import DROPOUT_ON

    assert SCHEMA["gt.normalizer"].choices == NORMALIZERS
    assert SCHEMA["st.dropout_on"].choices == DROPOUT_ON
    from fptbench.modeling.fpt import NORMS
    from fptbench.modeling.self_transformer import MIXTURE_INPUTS

    assert SCHEMA["fpt.norm"].choices == NORMS
    assert SCHEMA["st.mixture_input"].choices == MIXTURE_INPUTS
    from fptbench.evaluation.segmentation import TEST_MODES
    from fptbench.modeling.segmentation import DILATE_STAGES, HEADS, PYRAMIDS, UFP_KERNELS

    assert SCHEMA["seg.output_stride"].choices == tuple(DILATE_STAGES)
    assert SCHEMA["seg.pyramid"].choices == PYRAMIDS and SCHEMA["seg.head"].choices == HEADS
    assert SCHEMA["seg.ufp_kernels"].default == list(UFP_KERNELS)
    assert SCHEMA["seg.test_mode"].choices == TEST_MODES


def test_config_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, fptbench.config, fptbench.experiments; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_config_is_plain_json():
    cfg = load_config("maskrcnn_r50_fpt")
    assert json.loads(json.dumps(cfg)) == cfg
    assert type(cfg) is dict and all(type(v) is dict for k, v in cfg.items() if k not in SCALARS)
    assert isinstance(cfg["st"]["attn_dropout"], float)


# --- shipped configs -------------------------------------------------------------------------

def test_shipped_config_names():
    assert available_configs() == SHIPPED


@pytest.mark.parametrize("name", sorted(PAPER + SYNTH + CODE))
def test_every_shipped_config_loads(name):
    cfg = load_config(name)
    head, rest = name.removesuffix("_code").split("_", 1)
    trunk, neck = rest.rsplit("_", 1)
    assert cfg["model"]["head"] == {"maskrcnn": "mask_rcnn", "fasterrcnn": "faster_rcnn", "synth": "mask_rcnn"}[head]
    assert cfg["model"]["backbone"] == TRUNKS[trunk]
    on = neck == "fpt"
    assert (cfg["fpt"]["st"], cfg["fpt"]["gt"], cfg["fpt"]["rt"]) == (on, on, on)
    text = (CONFIG_DIR / f"{name}.yaml").read_text()
    assert text.startswith("# "), "each config starts with a comment saying what it is"
    assert load_config(CONFIG_DIR / f"{name}.yaml") == cfg == load_config(f"{name}.yaml")


@pytest.mark.parametrize("name", SEG)
def test_every_segmentation_config_loads(name):
    cfg = load_config(name)
    prefix, neck = name.rsplit("_", 1)
    assert cfg["model"]["task"] == "segmentation" and cfg["model"]["head"] == "mask_rcnn"  # the detector key, unread
    assert cfg["model"]["backbone"] == ("resnet18" if prefix == "synth_seg_r18" else "resnet101")
    on = neck != "base"
    assert (cfg["fpt"]["st"], cfg["fpt"]["gt"], cfg["fpt"]["rt"]) == (on, on, on)
    assert cfg["gt"]["window"] == (5 if neck == "lgt" else 0)
    assert cfg["train"]["schedule"] == "poly"
    text = (CONFIG_DIR / f"{name}.yaml").read_text()
    assert text.startswith("# "), "each config starts with a comment saying what it is"


@pytest.mark.parametrize("dataset, classes, crop, images, iters", [
    ("cityscapes", 19, [512, 1024], 1, 80000), ("voc2012", 21, [512, 512], 2, 40000),
    ("ade20k", 150, [512, 512], 2, 160000), ("lip", 20, [473, 473], 2, 160000),
])
def test_paper_segmentation_configs_are_the_papers_model_with_each_datasets_recipe(dataset, classes, crop, images, iters):
    # [paper] dilated ResNet-101 at output stride 8, UFP of GCN 1/7/15/31, DeepLab head; [ours]
    # mmsegmentation's DeepLabV3 recipe per dataset (8 GPUs: images_per_device x 8 = its batch)
    cfg = load_config(f"seg_r101_{dataset}_base")
    assert (cfg["seg"]["output_stride"], cfg["seg"]["pyramid"], cfg["seg"]["ufp_kernels"], cfg["seg"]["head"]) == \
        (8, "ufp", [1, 7, 15, 31], "deeplab")
    assert (cfg["model"]["num_classes"], cfg["seg"]["crop_size"], cfg["train"]["images_per_device"],
            cfg["train"]["max_iter"]) == (classes, crop, images, iters)
    train = cfg["train"]
    assert (train["base_lr"], train["weight_decay"], train["poly_power"], train["poly_min_lr"], train["warmup_iters"]) == \
        (0.01, 5e-4, 0.9, 1e-4, 0)
    assert cfg["seg"]["aux_head"] and cfg["seg"]["aux_weight"] == 0.4 and cfg["model"]["sync_bn"] is None
    assert cfg["data"]["train"].startswith(dataset) and cfg["data"]["test"] == f"{dataset}_val"
    base, fpt, lgt = (load_config(f"seg_r101_{dataset}_{neck}") for neck in SEG_NECKS)
    strip = lambda c: {k: v for k, v in c.items() if k not in ("fpt", "gt")}
    assert strip(base) == strip(fpt) == strip(lgt)  # the necks differ in the neck alone
    assert {**lgt["gt"], "window": 0} == fpt["gt"] == base["gt"] and lgt["gt"]["window"] == 5


def test_bfp_and_fpt_differ_only_in_the_switches():
    bfp, fpt = load_config("maskrcnn_r101_bfp"), load_config("maskrcnn_r101_fpt")
    assert {k: v for k, v in bfp.items() if k != "fpt"} == {k: v for k, v in fpt.items() if k != "fpt"}
    assert [k for k in bfp["fpt"] if bfp["fpt"][k] != fpt["fpt"][k]] == ["st", "gt", "rt"]


# --- inheritance -----------------------------------------------------------------------------

def test_base_values_are_inherited_and_overridden(tmp_path):
    write(tmp_path / "base.yaml", """
        model: {backbone: resnet18, num_classes: 3}
        st: {parts: 4}
    """)
    child = write(tmp_path / "child.yaml", """
        _base_: base.yaml
        model: {num_classes: 5}
    """)
    cfg = load_config(child)
    assert cfg["model"]["backbone"] == "resnet18"   # from the base
    assert cfg["model"]["num_classes"] == 5         # the child wins
    assert cfg["st"]["parts"] == 4
    assert cfg["gt"]["parts"] == 4                  # schema default
    assert cfg["model"]["head"] == "mask_rcnn"


def test_base_list_applies_in_order_relative_to_each_file(tmp_path):
    write(tmp_path / "common" / "a.yaml", "seed: 1\nst: {parts: 8}\n")
    write(tmp_path / "common" / "b.yaml", "_base_: a.yaml\nseed: 2\n")  # relative to common/
    write(tmp_path / "c.yaml", "seed: 3\ngt: {window: 3}\n")
    child = write(tmp_path / "runs" / "child.yaml", "_base_: [../common/b.yaml, ../c.yaml]\n")
    cfg = load_config(child)
    assert cfg["seed"] == 3             # the later base wins
    assert cfg["st"]["parts"] == 8      # from a.yaml through b.yaml
    assert cfg["gt"]["window"] == 3


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    message = error_of(tmp_path / "a.yaml")
    assert "_base_ cycle" in message
    assert "a.yaml -> " in message and "b.yaml -> " in message


def test_base_self_reference_is_a_cycle(tmp_path):
    write(tmp_path / "a.yaml", "_base_: a.yaml\n")
    assert "_base_ cycle" in error_of(tmp_path / "a.yaml")


def test_missing_base_names_the_file(tmp_path):
    child = write(tmp_path / "child.yaml", "_base_: nothere.yaml\n")
    message = error_of(child)
    assert message.startswith(f"{child}: _base_ 'nothere.yaml' not found")


def test_base_must_be_names(tmp_path):
    child = write(tmp_path / "child.yaml", "_base_: 3\n")
    assert "_base_ must be a file name or a list of file names, got int 3" in error_of(child)


# --- overrides -------------------------------------------------------------------------------

def test_overrides_are_yaml_and_applied_in_order():
    cfg = load_config("maskrcnn_r50_fpt", [("fpt.gt", "false"), ("st.parts", "4"), ("st.parts", "8"),
                                           ("model.backbone", "resnet18"), ("st.attn_dropout", "0.25")])
    assert cfg["fpt"]["gt"] is False
    assert cfg["st"]["parts"] == 8
    assert cfg["model"]["backbone"] == "resnet18"
    assert cfg["st"]["attn_dropout"] == 0.25


def test_override_mapping_and_python_values():
    cfg = load_config("maskrcnn_r50_bfp", {"seed": 7, "fpt.st": True})
    assert cfg["seed"] == 7 and cfg["fpt"]["st"] is True


def test_int_is_accepted_where_float_is_expected_and_stored_as_float():
    cfg = load_config("maskrcnn_r50_fpt", [("st.attn_dropout", "0")])
    assert cfg["st"]["attn_dropout"] == 0.0 and isinstance(cfg["st"]["attn_dropout"], float)
    assert config_hash(cfg) == config_hash(load_config("maskrcnn_r50_fpt", [("st.attn_dropout", "0.0")]))


def test_bool_must_be_a_real_bool():
    message = error_of("maskrcnn_r50_fpt", [("fpt.st", "1")])
    assert message == ("maskrcnn_r50_fpt.yaml: --set fpt.st 1: key 'fpt.st' expects bool, got int 1 "
                       "(write true or false)")
    assert "expects int, got bool true" in error_of("maskrcnn_r50_fpt", [("st.parts", "true")])


def test_null_only_where_the_schema_allows_it():
    assert error_of("maskrcnn_r50_fpt", [("gt.window", "null")]) == (
        "maskrcnn_r50_fpt.yaml: --set gt.window null: key 'gt.window' expects int, got null")
    nullable = Key(None, int, "a nullable int", nullable=True)
    assert check_value("x.y", None, nullable, "here") is None
    assert check_value("x.y", 3, nullable, "here") == 3


def test_unparsable_override_value():
    assert error_of("maskrcnn_r50_fpt", [("model.backbone", "[resnet")]) == (
        "maskrcnn_r50_fpt.yaml: --set model.backbone [resnet: cannot parse the value as YAML")


# --- error messages --------------------------------------------------------------------------

def test_unknown_override_key_suggests_the_closest():
    assert error_of("maskrcnn_r50_fpt", [("fpt.s_t", "true")]) == (
        "maskrcnn_r50_fpt.yaml: --set fpt.s_t true: unknown key 'fpt.s_t'; did you mean 'fpt.st'?")


def test_unknown_file_key_suggests_the_closest(tmp_path):
    path = write(tmp_path / "maskrcnn_r50_fpt.yaml", "fpt:\n  s_t: true\n")
    assert error_of(path) == f"{path}: unknown key 'fpt.s_t'; did you mean 'fpt.st'?"
    path = write(tmp_path / "sec.yaml", "attenton:\n  impl: sdpa\n")
    assert error_of(path) == f"{path}: unknown key 'attenton.impl'; did you mean 'attention.impl'?"


def test_unknown_key_without_a_close_match_lists_the_sections(tmp_path):
    path = write(tmp_path / "x.yaml", "zzzz: 1\n")
    assert error_of(path) == (
        f"{path}: unknown key 'zzzz'; valid top-level names: {', '.join(TOP)}")


def test_wrong_type_names_the_expected_type(tmp_path):
    path = write(tmp_path / "x.yaml", "st:\n  parts: two\n")
    assert error_of(path) == f"{path}: key 'st.parts' expects int, got str 'two'"
    assert error_of("maskrcnn_r50_fpt", [("st.attn_dropout", "1e-4")]).endswith(
        "key 'st.attn_dropout' expects float, got str '1e-4' (YAML reads 1e-4 as a string: write 1.0e-4)")


def test_bad_choice_lists_the_choices():
    assert error_of("fasterrcnn_r50_fpt", [("fpt.norm", "ln")]) == (
        "fasterrcnn_r50_fpt.yaml: --set fpt.norm ln: key 'fpt.norm' must be one of none, bn, gn; got 'ln'")
    message = error_of("maskrcnn_r50_fpt", [("model.backbone", "resnet5")])
    assert "must be one of resnet18, resnet34, resnet50, resnet101, resnet152, resnext101_32x8d, " \
           "resnext101_64x4d; got 'resnet5'" in message


def test_out_of_range():
    assert error_of("maskrcnn_r50_fpt", [("model.trainable_backbone_layers", "6")]).endswith(
        "key 'model.trainable_backbone_layers' must be in 0..5, got 6")
    assert error_of("maskrcnn_r50_fpt", [("st.attn_dropout", "1.5")]).endswith(
        "key 'st.attn_dropout' must be in 0.0..1.0, got 1.5")
    assert error_of("maskrcnn_r50_fpt", [("gt.window", "-1")]).endswith("key 'gt.window' must be >= 0, got -1")


def test_missing_config_name_lists_the_available_names():
    message = error_of("maskrcnn_r50_fptt")
    assert message.startswith("unknown config 'maskrcnn_r50_fptt'; did you mean 'maskrcnn_r50_fpt'? available: ")
    assert message.endswith(", ".join(SHIPPED))
    assert "_base_" not in message


def test_missing_config_path():
    assert error_of("no/such/file.yaml") == "config file not found: no/such/file.yaml"


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = write(tmp_path / "bad.yaml", "model:\n  backbone: resnet50\n  head: [mask_rcnn\n")
    message = error_of(path)
    assert message.startswith(f"{path}: YAML syntax error at line ")
    line = int(message.split(" at line ")[1].split(",")[0])
    assert line in (3, 4)  # the unclosed bracket opens on line 3; the parser notices at the end


def test_yaml_syntax_error_line_is_exact(tmp_path):
    path = write(tmp_path / "bad.yaml", "seed: 1\nmodel:\n  backbone: resnet50\n   head: x\n")
    assert error_of(path).startswith(f"{path}: YAML syntax error at line 4, column ")


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path / "dup.yaml", "st:\n  parts: 2\n  parts: 4\n")
    assert error_of(path) == f"{path}: YAML syntax error at line 3, column 3: duplicate key 'parts'"


def test_file_structure_errors(tmp_path):
    path = write(tmp_path / "list.yaml", "- a\n- b\n")
    assert error_of(path) == f"{path}: the top level must be a mapping of sections, got a list"
    path = write(tmp_path / "sec.yaml", "fpt: 3\n")
    assert error_of(path) == f"{path}: section 'fpt' must be a mapping of keys, got int 3"
    assert load_config(write(tmp_path / "empty.yaml", "")) == default_config()


# --- cross-key rules -------------------------------------------------------------------------

def test_st_parts_must_divide_the_pyramid_channels():
    assert error_of("maskrcnn_r50_fpt", [("st.parts", "3")]) == (
        "maskrcnn_r50_fpt.yaml (with --set): st.parts=3 must divide model.fpn_channels=256 (st.normalizer=mos)")
    assert "must divide model.fpn_channels=96" in error_of("maskrcnn_r50_fpt", [("model.fpn_channels", "96"), ("st.parts", "5")])
    assert load_config("maskrcnn_r50_fpt", [("st.parts", "8")])["st"]["parts"] == 8


def test_softmax_normalizer_ignores_parts():
    cfg = load_config("maskrcnn_r50_fpt", [("st.normalizer", "softmax"), ("st.parts", "3"),
                                           ("gt.normalizer", "softmax"), ("gt.parts", "3")])
    assert cfg["st"]["parts"] == 3 and cfg["gt"]["parts"] == 3


def test_gt_parts_must_divide_gt_channels(tmp_path):
    path = write(tmp_path / "x.yaml", "gt: {parts: 3}\n")
    assert error_of(path) == f"{path}: gt.parts=3 must divide gt.channels=128 (gt.normalizer=mos)"
    assert load_config(path, [("gt.channels", "96")])["gt"]["channels"] == 96


def test_group_norm_needs_channels_divisible_by_its_32_groups():
    assert error_of("maskrcnn_r50_fpt", [("model.fpn_channels", "48")]).endswith(
        "fpt.norm=gn (GroupNorm of 32 groups [code]) needs model.fpn_channels divisible by 32, got 48; "
        "or set fpt.norm bn or none")
    assert load_config("maskrcnn_r50_bfp", [("model.fpn_channels", "48")])  # BFP has no fusion conv
    assert load_config("maskrcnn_r50_fpt", [("model.fpn_channels", "48"), ("fpt.norm", "bn")])


def test_gt_window_is_zero_or_odd():
    assert error_of("maskrcnn_r50_fpt", [("gt.window", "4")]).endswith(
        "gt.window=4 must be 0 (global GT) or an odd window side >= 1")
    for window in (0, 1, 5, 7):
        assert load_config("maskrcnn_r50_fpt", [("gt.window", str(window))])["gt"]["window"] == window


def test_min_size_at_most_max_size():
    assert error_of("maskrcnn_r50_fpt", [("model.min_size", "900"), ("model.max_size", "800")]).endswith(
        "model.min_size=900 must be <= model.max_size=800")


def test_check_config_reports_missing_keys():
    cfg = default_config()
    del cfg["gt"]["window"]
    with pytest.raises(ConfigError, match=r"^config: missing key\(s\) 'gt.window'$"):
        check_config(cfg)


# --- hash and dump ---------------------------------------------------------------------------

def test_hash_algorithm_is_pinned():
    # sha256 of the canonical JSON '{"a":1,"b":{"c":[1.5,"x",null,true]}}', first 12 hex digits;
    # changing the algorithm would orphan every stored result record.
    assert config_hash({"b": {"c": [1.5, "x", None, True]}, "a": 1}) == "3b8112e13d57"


def test_hash_is_stable_and_changes_with_any_value():
    cfg = load_config("maskrcnn_r50_fpt")
    digest = config_hash(cfg)
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert config_hash(load_config("maskrcnn_r50_fpt")) == digest
    reordered = {name: dict(reversed(list(value.items()))) if isinstance(value, dict) else value
                 for name, value in reversed(list(cfg.items()))}
    assert config_hash(reordered) == digest
    assert config_hash(load_config("maskrcnn_r50_fpt", [("gt.window", "3")])) != digest
    assert config_hash(load_config("maskrcnn_r50_fpt", [("st.attn_dropout", "0.2")])) != digest
    assert config_hash(load_config("maskrcnn_r50_bfp")) != digest


def test_dump_is_yaml_in_schema_order_with_a_comment_per_key(tmp_path):
    cfg = load_config("fasterrcnn_x101_64x4d_fpt", [("st.attn_dropout", "1.0e-4"), ("seed", "3")])
    text = dump_config(cfg)
    assert yaml.safe_load(text) == cfg
    tops = [line.split(":")[0] for line in text.splitlines() if not line.startswith(" ")]
    assert tops == TOP
    keys = [line for line in text.splitlines() if line.startswith("  ") or line.split(":")[0] in SCALARS]
    assert len(keys) == len(SCHEMA) and all("  # " in line for line in keys)
    # the dump is itself a config file that loads to the same config
    path = write(tmp_path / "dumped.yaml", text)
    assert load_config(path) == cfg and config_hash(load_config(path)) == config_hash(cfg)


# --- list-valued keys ------------------------------------------------------------------------

def test_list_keys_are_checked_element_by_element():
    cfg = load_config("maskrcnn_r50_fpt", [("train.steps", "[5, 10]"), ("train.min_sizes", "[400, 600]")])
    assert cfg["train"]["steps"] == [5, 10] and cfg["train"]["min_sizes"] == [400, 600]
    assert error_of("maskrcnn_r50_fpt", [("train.steps", "5")]).endswith(
        "key 'train.steps' expects a list of int, got int 5")
    assert error_of("maskrcnn_r50_fpt", [("train.steps", "[a]")]).endswith(
        "key 'train.steps[0]' expects int, got str 'a'")
    assert error_of("maskrcnn_r50_fpt", [("model.anchor_sizes", "[8, 0, 32, 64, 128]")]).endswith(
        "key 'model.anchor_sizes[1]' must be >= 1, got 0")


def test_list_cross_key_rules():
    assert "must be in increasing order" in error_of("maskrcnn_r50_fpt", [("train.steps", "[10, 5]")])
    assert "one size per level P2..P6 (5 values)" in error_of("maskrcnn_r50_fpt", [("model.anchor_sizes", "[8, 16]")])


def test_linear_gt_needs_the_global_dot_product():
    # gt.normalizer=linear is the authors' GroundTrans(mode='dot') [code]: no Euclidean, no window.
    message = error_of("maskrcnn_r50_fpt", [("gt.normalizer", "linear")])
    assert "gt.normalizer=linear [code]" in message and "gt.similarity=euclidean" in message
    message = error_of("maskrcnn_r50_fpt", [("gt.normalizer", "linear"), ("gt.similarity", "dot"), ("gt.window", "5")])
    assert "gt.window=5" in message
    assert load_config("maskrcnn_r50_fpt", [("gt.normalizer", "linear"), ("gt.similarity", "dot")])["gt"]["normalizer"] == "linear"


def test_code_presets_are_the_authors_fpt_a():
    # Every [code] switch of issue #12 on, on top of the paper-exact neck; the Faster R-CNN
    # preset is the same neck under the box head. (Their recipe around it: tests/test_recipes.py.)
    paper, code = load_config("maskrcnn_r50_fpt"), load_config("maskrcnn_r50_fpt_code")
    changed = {f"{s}.{k}": v for s in ("fpt", "st", "gt", "rt") for k, v in code[s].items() if paper[s][k] != v}
    assert changed == {
        "fpt.input": "lateral", "st.pool_kv": True, "st.shared_qk": True, "st.mixture_input": "queries",
        "gt.normalizer": "linear", "gt.similarity": "dot", "gt.out_bias": True, "rt.variant": "code",
    }
    faster = load_config("fasterrcnn_r50_fpt_code")
    assert faster["model"]["head"] == "faster_rcnn"
    assert {s: faster[s] for s in ("fpt", "st", "gt", "rt")} == {s: code[s] for s in ("fpt", "st", "gt", "rt")}


# --- sources: where a value comes from, declared once on its Key -------------------------------

# The keys where the paper and the authors' code (ZHANGDONG-NJUST/FPT) disagree (issue #12).
PAPER_VS_CODE_KEYS = ("fpt.input", "st.pool_kv", "st.shared_qk", "st.mixture_input", "st.dropout_on", "gt.normalizer",
                      "gt.similarity", "gt.out_bias", "rt.variant", "model.stride_in_1x1")


def _tags(doc: str) -> set[str]:
    """The source tags a doc string writes: ``[code]``, ``[paper, ...]``, ``[ours: bf16 ...]``."""
    import re

    from fptbench.config import SOURCE_TAGS

    return set(re.findall(rf"\[({'|'.join(SOURCE_TAGS)})\b", doc))


def test_sources_pin_the_doc_tags_of_every_key():
    from fptbench.config import SOURCE_TAGS

    for key, spec in SCHEMA.items():
        tags = _tags(spec.doc)
        choice_tagged = spec.type is bool or (spec.choices is not None and not any(
            f"[{t}: " in spec.doc for t in SOURCE_TAGS))  # "[code: 128]" tags a number, not a choice
        if key in PAPER_VS_CODE_KEYS or ({"code"} <= tags and tags & {"paper", "ours"} and choice_tagged):
            assert spec.sources, f"{key}: the doc tags [paper]/[ours] and [code], but the Key has no sources"
            values = (True, False) if spec.type is bool else spec.choices
            assert set(spec.sources.values()) & {"code"}, key
            assert len({spec.sources.get(v) for v in values} - {None}) == 2, f"{key}: both sides need a tag"
        if spec.sources:
            valid = (True, False) if spec.type is bool else spec.choices
            for value, tag in spec.sources.items():
                assert tag in SOURCE_TAGS, (key, tag)
                # a free string (model.backbone_weights) tags its named values: imagenet, detectron, scratch
                assert (valid is None or value in valid) and type(value) is type(spec.default), (key, value)
                assert tag in tags, f"{key}: sources say {value!r} is [{tag}], the doc does not: {spec.doc}"


def test_source_of_reads_the_declaration():
    from fptbench.config import source_of

    assert source_of("gt.normalizer", "linear") == "code" and source_of("gt.normalizer", "mos") == "paper"
    assert source_of("gt.normalizer", "softmax") is None      # neither the paper's nor the code's
    assert source_of("st.pool_kv", True) == "code" and source_of("st.pool_kv", False) == "paper"
    assert source_of("train.max_iter", 90000) is None         # a key without sources


def test_diff_of_the_code_preset_and_the_paper_model_is_the_neck():
    from fptbench.config import diff_configs, format_diff

    neck = ("fpt.", "st.", "gt.", "rt.")  # the recipe around it differs too: tests/test_recipes.py
    rows = [r for r in diff_configs(load_config("maskrcnn_r50_fpt_code"), load_config("maskrcnn_r50_fpt"))
            if r["key"].startswith(neck)]
    assert [(r["key"], *r["sources"]) for r in rows] == [
        ("fpt.input", "code", "ours"), ("st.pool_kv", "code", "paper"), ("st.shared_qk", "code", "paper"),
        ("st.mixture_input", "code", "paper"), ("gt.normalizer", "code", "paper"), ("gt.similarity", "code", "paper"),
        ("gt.out_bias", "code", "ours"), ("rt.variant", "code", "paper")]
    faster = diff_configs(load_config("fasterrcnn_r50_fpt_code"), load_config("fasterrcnn_r50_fpt"))
    assert [r["key"] for r in faster if r["key"].startswith(neck)] == [r["key"] for r in rows]  # the same eight
    text = format_diff(rows[:1], "a", "b").splitlines()
    assert text == ["key        a               b", "fpt.input  lateral [code]  fpn [ours]"]


@pytest.mark.parametrize("key, value, message", [
    ("train.base_lr", ".inf", "key 'train.base_lr' must be a finite number, got inf"),
    ("train.gamma", ".nan", "key 'train.gamma' must be a finite number, got nan"),
    ("train.steps", "[.inf]", "key 'train.steps[0]' expects int, got float inf"),
    ("seed", "99999999999999999999", "key 'seed' must be at most 2147483647 in size, got 99999999999999999999"),
    ("train.max_iter", str(2**40), f"key 'train.max_iter' must be at most 2147483647 in size, got {2**40}"),
    ("model.max_size", "100000", "key 'model.max_size' must be in 1..8192, got 100000"),
    ("train.min_sizes", "[800, 90000]", "key 'train.min_sizes[1]' must be in 1..8192, got 90000"),
])
def test_non_finite_and_out_of_range_numbers_are_one_line(key, value, message):
    # each would otherwise train on NaN, wrap in a 32-bit field, or allocate without bound
    assert error_of("synth_r18_fpt", [(key, value)]).endswith(message)


def test_profile_sizes_and_counts_are_bounded():
    from fptbench.config import ProfileRequest

    assert "integers in 32..8192 pixels" in ProfileRequest.problem("size", [100000, 100000])
    assert "integer in 1..2147483647" in ProfileRequest.problem("runs", 2**40)
    assert ProfileRequest.problem("size", [8192, 32]) is None


# --- model.task: segmentation ----------------------------------------------------------------

@pytest.mark.parametrize("key, value, message", [
    ("seg.crop_size", "[96]", "seg.crop_size=[96] must be [H, W], each side >= 32 px (the trunk's output stride)"),
    ("seg.crop_size", "[16, 96]", "seg.crop_size=[16, 96] must be [H, W], each side >= 32 px (the trunk's output stride)"),
    ("seg.test_crop_size", "[64, 64, 64]", "seg.test_crop_size=[64, 64, 64] must be [] or [H, W], each side >= 32 px"),
    ("seg.test_stride", "[8]", "seg.test_stride=[8] must be [] or [H, W], each >= 1 px"),
    ("seg.scale_range", "[2.0, 0.5]", "seg.scale_range=[2.0, 0.5] must be [low, high] with 0 < low <= high"),
    ("seg.scale_range", "[0.0, 1.0]", "seg.scale_range=[0.0, 1.0] must be [low, high] with 0 < low <= high"),
    ("seg.test_scales", "[]", "seg.test_scales=[] must be one or more factors > 0"),
    ("seg.test_scales", "[1.0, 0.0]", "seg.test_scales=[1.0, 0.0] must be one or more factors > 0"),
    ("seg.ufp_kernels", "[1, 4]", "seg.ufp_kernels=[1, 4] must be one or more odd kernel sizes, one UFP level each"),
    ("seg.ufp_kernels", "[]", "seg.ufp_kernels=[] must be one or more odd kernel sizes, one UFP level each"),
    ("fpt.input", "lateral", "fpt.input=lateral is the detectors' choice: with model.task=segmentation FPT transforms "
                             "the seg.pyramid levels (leave fpt.input fpn)"),
    ("model.pretrain_heads", "true", "model.pretrain_heads=true starts a detector's RPN and RoI heads from the "
                                     "pre-training run; a segmentation model has none (set it false)"),
    ("seg.output_stride", "32", "key 'seg.output_stride' must be one of 8, 16; got 32"),
    ("model.task", "panoptic", "key 'model.task' must be one of detection, segmentation; got 'panoptic'"),
])
def test_segmentation_cross_key_errors_are_one_line(key, value, message):
    assert error_of("synth_seg_r18_fpt", [(key, value)]).endswith(message)


def test_lgt_needs_a_grounding_transformer_in_segmentation():
    assert error_of("synth_seg_r18_base", [("gt.window", "5")]).endswith(
        "gt.window=5 (LGT) needs fpt.gt=true: without a grounding transformer there is nothing to constrain")
    assert load_config("synth_seg_r18_base", [("gt.window", "5"), ("fpt.gt", "true")])["gt"]["window"] == 5


def test_segmentation_rules_leave_detection_configs_alone():
    # the seg section is unread by a detector: its sizes are not checked there, nor its neck rules
    cfg = load_config("synth_r18_bfp", [("seg.crop_size", "[16]"), ("gt.window", "5"), ("fpt.input", "lateral")])
    assert cfg["model"]["task"] == "detection" and cfg["seg"]["crop_size"] == [16]
    assert load_config("synth_seg_r18_fpt", [("seg.pyramid", "fpn"), ("seg.ufp_kernels", "[]")])["seg"]["ufp_kernels"] == []


def test_poly_floor_is_below_the_base_learning_rate():
    assert error_of("synth_seg_r18_base", [("train.poly_min_lr", "0.5")]).endswith(
        "train.poly_min_lr=0.5 must be <= train.base_lr=0.01 (the poly schedule decays from one to the other)")
    assert load_config("synth_seg_r18_base", [("train.schedule", "step"), ("train.poly_min_lr", "0.5")])


def test_sync_bn_is_null_true_or_false():
    assert load_config("synth_seg_r18_base")["model"]["sync_bn"] is None
    assert load_config("synth_seg_r18_base", [("model.sync_bn", "true")])["model"]["sync_bn"] is True
    assert error_of("synth_seg_r18_base", [("model.sync_bn", "auto")]).endswith(
        "key 'model.sync_bn' expects bool, got str 'auto' (write true or false)")
