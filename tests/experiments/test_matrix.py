"""fptbench.experiments: matrix files -> cells (order, excludes, run ids, errors, shipped matrices).

Error messages are asserted with their file and line: ``FILE:LINE: what`` is the interface a
user reads when a sweep refuses to start.
"""

from __future__ import annotations

import itertools
import re
import textwrap
from pathlib import Path

import pytest

from fptbench.config import config_hash, load_config
from fptbench.errors import UsageError
from fptbench.experiments import Cell, Matrix, MatrixError, find_matrix, load_matrix, value_label
from fptbench.paths import REPO_ROOT

SMALL = """\
    description: a small test matrix
    base: synth_r18_bfp
    set:
      train.max_iter: 30
    axes:
      ablation:
        bfp: {fpt.st: false, fpt.gt: false, fpt.rt: false}
        st:  {fpt.st: true}
      model.backbone: [resnet18, resnet34]
      seed: [0, 1, 2]
"""
RUN_ID = re.compile(r"^[A-Za-z0-9._+]+(-[A-Za-z0-9._+]+)*-[0-9a-f]{8}$")


def write(folder: Path, text: str, name: str = "m.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    """1-based number of the line holding the ``nth`` occurrence of ``needle``."""
    hits = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if needle in line]
    return hits[nth - 1]


def error_of(path: Path, overrides=()) -> str:
    with pytest.raises(MatrixError) as info:
        load_matrix(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- expansion -------------------------------------------------------------------------------

def test_cells_are_the_cross_product_first_axis_slowest(tmp_path):
    matrix = load_matrix(write(tmp_path, SMALL))
    expected = list(itertools.product(["bfp", "st"], ["resnet18", "resnet34"], [0, 1, 2]))
    assert [tuple(c.axes.values()) for c in matrix.cells] == expected
    assert all(list(c.axes) == ["ablation", "model.backbone", "seed"] for c in matrix.cells)
    assert matrix.axes == (("ablation", ("bfp", "st")), ("model.backbone", ("resnet18", "resnet34")),
                           ("seed", (0, 1, 2)))
    assert isinstance(matrix, Matrix) and all(isinstance(c, Cell) for c in matrix.cells)
    assert matrix.name == "m" and matrix.base == "synth_r18_bfp"
    assert matrix.description == "a small test matrix"


def test_cell_config_is_the_base_with_its_overrides(tmp_path):
    matrix = load_matrix(write(tmp_path, SMALL))
    cell = matrix.cells[10]  # st, resnet34, seed 1
    assert cell.axes == {"ablation": "st", "model.backbone": "resnet34", "seed": 1}
    assert cell.overrides == (("train.max_iter", 30), ("fpt.st", True), ("model.backbone", "resnet34"),
                              ("seed", 1))
    assert cell.config == load_config("synth_r18_bfp", cell.overrides)
    assert cell.config_hash == config_hash(cell.config)
    # the run id hashes the config and the effective batch: 1 process x 4 images (synth_r18_bfp's)
    assert cell.batch == 4
    assert cell.run_id == f"st-resnet34-s1-{config_hash({'config': cell.config_hash, 'batch': 4})[:8]}"
    # cells do not share mutable values: editing one config leaves the others alone
    cell.config["model"]["anchor_sizes"].append(1)
    assert matrix.cells[0].config["model"]["anchor_sizes"] == [8, 16, 32, 64, 128]


def test_nested_sections_equal_dotted_keys(tmp_path):
    dotted = load_matrix(write(tmp_path, SMALL, "a.yaml"))
    nested = load_matrix(write(tmp_path, SMALL.replace("st:  {fpt.st: true}", "st:  {fpt: {st: true}}")
                               .replace("train.max_iter: 30", "train: {max_iter: 30}"), "b.yaml"))
    assert [c.run_id for c in nested.cells] == [c.run_id for c in dotted.cells]


def test_excludes_drop_matching_cells(tmp_path):
    path = write(tmp_path, SMALL + """\
    exclude:
      - {ablation: st, seed: 2}          # a named axis label and a value
      - {model.backbone: resnet34, seed: s0}   # a value and a value's run-id label
      - {ablation: bfp, model.backbone: resnet34}
    """)
    kept = [tuple(c.axes.values()) for c in load_matrix(path).cells]
    expected = [cell for cell in itertools.product(["bfp", "st"], ["resnet18", "resnet34"], [0, 1, 2])
                if cell[0::2] != ("st", 2) and cell[1:] != ("resnet34", 0) and cell[:2] != ("bfp", "resnet34")]
    assert kept == expected and len(kept) == 6  # bfp-resnet34-s0 matches two entries


def test_no_axes_is_one_cell_with_defaults(tmp_path):
    matrix = load_matrix(write(tmp_path, "base: synth_r18_fpt\n"))
    assert len(matrix.cells) == 1 and matrix.axes == ()
    assert matrix.cells[0].config == load_config("synth_r18_fpt")
    assert re.fullmatch(r"[0-9a-f]{8}", matrix.cells[0].run_id)
    assert matrix.world_size == 1
    assert matrix.profile == {"size": [800, 1333], "runs": 10, "warmup": 2}
    assert matrix.description == ""


def test_world_size_and_profile_are_read(tmp_path):
    matrix = load_matrix(write(tmp_path, "base: synth_r18_bfp\nworld_size: 8\nprofile: {size: [128, 96], runs: 3}\n"))
    assert matrix.world_size == 8
    assert matrix.profile == {"size": [128, 96], "runs": 3, "warmup": 2}  # missing keys: defaults


def test_base_may_be_a_yaml_path_relative_to_the_matrix(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "mine.yaml").write_text("_base_: " + str(REPO_ROOT / "fptbench/configs/synth_r18_bfp.yaml")
                                               + "\ntrain: {max_iter: 7}\n")
    (tmp_path / "exp").mkdir()
    matrix = load_matrix(write(tmp_path / "exp", "base: ../cfg/mine.yaml\naxes: {seed: [0, 1]}\n"))
    assert [c.config for c in matrix.cells] == [load_config(tmp_path / "cfg" / "mine.yaml", [("seed", s)])
                                                for s in (0, 1)]


def test_overrides_argument_is_applied_to_every_cell_last(tmp_path):
    path = write(tmp_path, SMALL)
    plain = load_matrix(path)
    matrix = load_matrix(path, [("train.max_iter", "7"), ("data.num_workers", "1")])
    assert all(c.config["train"]["max_iter"] == 7 for c in matrix.cells)
    assert all(c.overrides[-2:] == (("train.max_iter", 7), ("data.num_workers", 1)) for c in matrix.cells)
    # fpt.st false after the axis collapses st onto bfp: refused as duplicate cells
    with pytest.raises(MatrixError, match="resolve to the same config"):
        load_matrix(path, [("fpt.st", False)])
    matrix = load_matrix(path, [("train.max_iter", 7)])
    assert {c.run_id for c in matrix.cells}.isdisjoint(c.run_id for c in plain.cells)


# --- run ids ---------------------------------------------------------------------------------

def test_run_ids_are_stable_and_readable(tmp_path):
    path = write(tmp_path, SMALL)
    first, second = load_matrix(path), load_matrix(path)
    ids = [c.run_id for c in first.cells]
    assert ids == [c.run_id for c in second.cells]
    assert len(set(ids)) == len(ids) and all(RUN_ID.match(i) for i in ids)
    assert ids[0].startswith("bfp-resnet18-s0-")


def test_changing_one_cell_changes_only_its_ids(tmp_path):
    before = {tuple(c.axes.values()): c.run_id for c in load_matrix(write(tmp_path, SMALL, "a.yaml")).cells}
    changed = SMALL.replace("st:  {fpt.st: true}", "st:  {fpt.st: true, st.parts: 4}")
    after = {tuple(c.axes.values()): c.run_id for c in load_matrix(write(tmp_path, changed, "b.yaml")).cells}
    differ = {key for key in before if before[key] != after[key]}
    assert differ == {key for key in before if key[0] == "st"}
    # a new axis value adds cells and leaves the others' ids as they were
    grown = SMALL.replace("seed: [0, 1, 2]", "seed: [0, 1, 2, 3]")
    grown_ids = {tuple(c.axes.values()): c.run_id for c in load_matrix(write(tmp_path, grown, "c.yaml")).cells}
    assert {k: v for k, v in grown_ids.items() if k[2] != 3} == before


@pytest.mark.parametrize("key, value, label", [
    ("seed", 0, "s0"),
    ("seed", 12, "s12"),
    ("train.max_iter", 30, "max_iter30"),
    ("train.base_lr", 0.02, "base_lr0.02"),
    ("fpt.st", True, "st"),
    ("fpt.st", False, "nost"),
    ("model.backbone", "resnext101_32x8d", "resnext101_32x8d"),
    ("fpt.pairs", "adjacent", "adjacent"),
    ("train.steps", [20, 27], "steps20_27"),
    ("train.min_sizes", [], "nomin_sizes"),
    ("model.weights", "", "noweights"),
    ("model.weights", "/w/coco 1.pth", "_w_coco_1.pth"),
])
def test_value_labels(key, value, label):
    assert value_label(key, value) == label


def test_named_labels_are_sanitised_in_run_ids(tmp_path):
    matrix = load_matrix(write(tmp_path, """\
        base: synth_r18_bfp
        axes:
          design:
            st+gt: {fpt.st: true, fpt.gt: true}
            "gt window 3": {fpt.gt: true, gt.window: 3}
        """))
    assert [c.axes["design"] for c in matrix.cells] == ["st+gt", "gt window 3"]
    assert [c.run_id[:-9] for c in matrix.cells] == ["st+gt", "gt_window_3"]


# --- errors ----------------------------------------------------------------------------------

def test_unknown_axis_key_suggests_the_config_key(tmp_path):
    path = write(tmp_path, SMALL.replace("model.backbone:", "model.backbon:"))
    assert error_of(path) == (f"{path}:{line_of(path, 'model.backbon')}: axes: unknown config key "
                              f"'model.backbon'; did you mean 'model.backbone'? (a named axis maps labels "
                              f"to overrides)")


def test_file_is_named_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    write(tmp_path / "experiments", SMALL.replace("seed: [0, 1, 2]", "seed: []"), "bad.yaml")
    message = error_of("bad")  # found as ./experiments/bad.yaml
    assert message == f"experiments/bad.yaml:{line_of(tmp_path / 'experiments/bad.yaml', 'seed: []')}: axis 'seed' is empty"


@pytest.mark.parametrize("old, new, needle, expected", [
    ("seed: [0, 1, 2]", "seed: []", "seed: []", "axis 'seed' is empty"),
    ("seed: [0, 1, 2]", "seed:", "seed:", "axis 'seed' is empty"),
    ("seed: [0, 1, 2]", "seed: {}", "seed: {}", "axis 'seed' is empty"),
    ("seed: [0, 1, 2]", "seed: 3", "seed: 3",
     "axis 'seed' must be a list of values (config key) or a mapping label -> overrides (named axis), got int 3"),
    ("seed: [0, 1, 2]", "seed: [0, 1, 0]", "seed: [0, 1, 0]",
     "axis 'seed': int 0 gives the run-id label 's0' already given at line"),
    ("seed: [0, 1, 2]", "seed: [0, one]", "seed: [0, one]", "axis 'seed': key 'seed' expects int, got str 'one'"),
    ("seed: [0, 1, 2]", "fpt.pairs: {a: {}}", "fpt.pairs",
     "axis 'fpt.pairs': a config key's axis is a list of values; a named axis (label -> overrides) needs a "
     "name that is not a config key"),
    ("st:  {fpt.st: true}", "st:  {fpt.s_t: true}", "fpt.s_t",
     "axis 'ablation', label 'st': unknown key 'fpt.s_t'; did you mean 'fpt.st'?"),
    ("st:  {fpt.st: true}", "st:  {fpt.st: yes please}", "yes please",
     "axis 'ablation', label 'st': key 'fpt.st' expects bool, got str 'yes please' (write true or false)"),
    ("st:  {fpt.st: true}", "st:  {fpt.st: false, fpt.gt: false, fpt.rt: false}", "st:  {",
     "cells 'bfp-resnet18-s0' and 'st-resnet18-s0' resolve to the same config"),
    ("st:  {fpt.st: true}", "st:  {fpt.st: true}\n        bfp: {}", "bfp: {}", "axis 'ablation': 'bfp' is given twice (first at line"),
    ("train.max_iter: 30", "train.max_itr: 30", "max_itr",
     "set: unknown key 'train.max_itr'; did you mean 'train.max_iter'?"),
    ("train.max_iter: 30", "train.max_iter: 1e3", "1e3", "set: key 'train.max_iter' expects int, got str '1e3'"),
    ("train.max_iter: 30", "train: 30", "train: 30", "set: section 'train' must be a mapping of keys"),
    ("set:", "sets:", "sets:", "unknown top-level key 'sets'; did you mean 'set'?"),
    ("base: synth_r18_bfp", "base: synth_r18_bpf", "base:",
     "base 'synth_r18_bpf': unknown config 'synth_r18_bpf'; did you mean 'synth_r18_bfp'?"),
    ("base: synth_r18_bfp", "base: ../nowhere.yaml", "base:", "base '../nowhere.yaml': file not found"),
    ("base: synth_r18_bfp", "world_size: 2", "description", "missing 'base'"),
    ("base: synth_r18_bfp", "base: synth_r18_bfp\n    world_size: two", "world_size",
     "world_size must be an integer >= 1, got str 'two'"),
    ("base: synth_r18_bfp", "base: synth_r18_bfp\n    profile: {size: [16, 128]}", "profile",
     "profile.size must be [H, W], integers in 32..8192 pixels, got [16, 128]"),
    ("base: synth_r18_bfp", "base: synth_r18_bfp\n    profile: {run: 3}", "profile",
     "profile: unknown key 'run'; did you mean 'runs'?"),
    ("base: synth_r18_bfp", "base: synth_r18_bfp\n    profile: {warmup: -1}", "profile",
     "profile.warmup must be an integer in 0..2147483647, got int -1"),
    ("seed: [0, 1, 2]", "seed: [0, 1, 2]\n      gt.window: [3, 4]", "[3, 4]",
     "cell 'bfp-resnet18-s0-window4': gt.window=4 must be 0 (global GT) or an odd window side >= 1"),
    ("train.max_iter: 30", "gt.window: 4", "set:",
     "base + set: gt.window=4 must be 0 (global GT) or an odd window side >= 1"),
    ("seed: [0, 1, 2]", "seed: [0, 1, 2\n", "axes", "YAML error:"),
])
def test_bad_matrices_name_file_and_line(tmp_path, old, new, needle, expected):
    path = write(tmp_path, SMALL.replace(old, new))
    message = error_of(path)
    prefix = f"{path}:{line_of(path, needle)}: "
    if expected == "YAML error:":  # the parser reports where it noticed, after the bracket
        assert message.startswith(f"{path}:") and expected in message
        return
    assert message.startswith(prefix), message
    assert message[len(prefix):].startswith(expected), message


@pytest.mark.parametrize("entry, needle, expected", [
    ("{seed: 3}", "seed: 3}", "exclude: axis 'seed' has no label or value 3; it has 0, 1, 2"),
    ("{ablation: fpt}", "fpt}", "exclude: axis 'ablation' has no label or value 'fpt'; it has bfp, st"),
    ("{sede: 1}", "sede", "exclude: unknown axis 'sede'; did you mean 'seed'?"),
    ("{}", "- {}", "exclude: an entry must name at least one axis (an empty one excludes every cell)"),
    ("{ablation: st}\n  - {ablation: st, seed: 1}", "seed: 1}",
     "exclude matches no cell (the entries above already drop every cell it names)"),
    ("{ablation: st}\n  - {ablation: bfp}", "ablation: bfp}", "exclude drops every cell"),
])
def test_bad_excludes_name_file_and_line(tmp_path, entry, needle, expected):
    path = write(tmp_path, textwrap.dedent(SMALL) + f"exclude:\n  - {entry}\n")
    assert error_of(path) == f"{path}:{line_of(path, needle)}: {expected}"


def test_bad_overrides_argument(tmp_path):
    path = write(tmp_path, SMALL)
    assert error_of(path, [("train.max_itr", "3")]) == (
        f"{path}: --set train.max_itr 3: unknown key 'train.max_itr'; did you mean 'train.max_iter'?")
    assert error_of(path, [("seed", "3")]) == (
        f"{path}: --set seed 3: 'seed' is an axis of this matrix (line {line_of(path, 'seed:')}); "
        f"edit or exclude its values instead")
    assert error_of(path, [("gt.window", "4")]) == (
        f"{path}: with --set: gt.window=4 must be 0 (global GT) or an odd window side >= 1")
    assert error_of(path, [("train.max_iter", "many")]) == (
        f"{path}: --set train.max_iter many: key 'train.max_iter' expects int, got str 'many'")


def test_find_matrix(tmp_path):
    assert find_matrix("demo").resolve() == (REPO_ROOT / "experiments" / "demo.yaml").resolve()
    path = write(tmp_path, SMALL)
    assert find_matrix(str(path)) == path
    with pytest.raises(MatrixError, match="unknown experiment 'dmeo'; did you mean 'demo'"):
        find_matrix("dmeo")
    with pytest.raises(MatrixError, match="matrix file not found"):
        find_matrix(str(tmp_path / "none.yaml"))
    assert issubclass(MatrixError, UsageError)


# --- shipped matrices ------------------------------------------------------------------------

SHIPPED = {  # name: (cells, world_size, profile size, axes)
    "demo": (10, 1, [128, 128], ("ablation", "seed")),
    "paper_ablation": (8, 8, [800, 1333], ("ablation", "seed")),
    "paper_backbones": (12, 8, [800, 1333], ("backbone", "head", "neck", "seed")),
    "paper_design": (9, 8, [800, 1333], ("design", "seed")),
    "paper_vs_code": (10, 8, [800, 1333], ("variant", "seed")),
    "paper_segmentation": (12, 8, [512, 512], ("dataset", "neck", "seed")),
    "demo_segmentation": (6, 1, [128, 128], ("neck", "seed")),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_matrices_load(name):
    count, world_size, size, axes = SHIPPED[name]
    matrix = load_matrix(name)
    assert len(matrix.cells) == count and matrix.world_size == world_size
    assert matrix.profile["size"] == size and tuple(a for a, _ in matrix.axes) == axes
    assert matrix.description and len({c.run_id for c in matrix.cells}) == count
    for cell in matrix.cells:  # the fast path resolves exactly what load_config would
        assert cell.config == load_config(matrix.base, cell.overrides)


def test_paper_ablation_has_the_eight_combinations():
    matrix = load_matrix("paper_ablation")
    flags = {c.axes["ablation"]: tuple(c.config["fpt"][k] for k in ("st", "gt", "rt")) for c in matrix.cells}
    assert flags == {"bfp": (False, False, False), "st": (True, False, False), "gt": (False, True, False),
                     "rt": (False, False, True), "st+gt": (True, True, False), "st+rt": (True, False, True),
                     "gt+rt": (False, True, True), "fpt": (True, True, True)}
    assert {c.config["model"]["backbone"] for c in matrix.cells} == {"resnet50"}
    # the shipped config's recipe, detectron2's 1x at 8 GPUs x 2 images = its reference batch
    assert {c.config["train"]["max_iter"] for c in matrix.cells} == {90000}
    assert {c.batch for c in matrix.cells} == {16} == {c.config["train"]["reference_batch"] for c in matrix.cells}


def test_paper_backbones_cells_are_the_shipped_configs():
    trunks = {"r50": "r50", "r101": "r101", "x101_64x4d": "x101_64x4d"}
    heads = {"faster_rcnn": "fasterrcnn", "mask_rcnn": "maskrcnn"}
    for cell in load_matrix("paper_backbones").cells:
        name = f"{heads[cell.axes['head']]}_{trunks[cell.axes['backbone']]}_{cell.axes['neck']}"
        schedule = [pair for pair in cell.overrides if pair[0].startswith(("train.", "model.m"))]
        assert cell.config == load_config(name, schedule), name


def test_paper_design_changes_one_factor_per_cell():
    cells = {c.axes["design"]: c.config for c in load_matrix("paper_design").cells}
    reference = load_config("maskrcnn_r50_fpt")
    flat = lambda cfg: {(s, k): v for s, sec in cfg.items() if isinstance(sec, dict) for k, v in sec.items()}
    ref = flat(cells["fpt"])
    assert {k: v for k, v in ref.items() if k[0] in ("fpt", "st", "gt", "rt")} == \
        {k: v for k, v in flat(reference).items() if k[0] in ("fpt", "st", "gt", "rt")}
    changed = {label: {k: v for k, v in flat(cfg).items() if ref[k] != v} for label, cfg in cells.items()}
    assert changed == {
        "fpt": {}, "st_softmax": {("st", "normalizer"): "softmax"}, "gt_softmax": {("gt", "normalizer"): "softmax"},
        "gt_dot": {("gt", "similarity"): "dot"}, "st_pool": {("st", "pool_kv"): True},
        "adjacent": {("fpt", "pairs"): "adjacent"}, "lgt3": {("gt", "window"): 3},
        "lgt5": {("gt", "window"): 5}, "lgt7": {("gt", "window"): 7},
    }


def test_paper_vs_code_code_cell_is_the_preset_and_others_change_one_difference():
    # The `code` cell's neck copies the preset's [code] settings: pinned here, key by key.
    matrix = load_matrix("paper_vs_code")
    cells = {c.axes["variant"]: c.config for c in matrix.cells}
    neck = ("fpt", "st", "gt", "rt", "attention")
    preset = load_config("maskrcnn_r50_fpt_code")
    assert {s: cells["code"][s] for s in neck} == {s: preset[s] for s in neck}
    assert {s: cells["paper"][s] for s in neck} == {s: load_config("maskrcnn_r50_fpt")[s] for s in neck}
    flat = lambda cfg: {(s, k): v for s, sec in cfg.items() if isinstance(sec, dict) for k, v in sec.items()}
    ref = flat(cells["paper"])
    code_diff = {k: v for k, v in flat(cells["code"]).items() if ref[k] != v}
    for label, cfg in cells.items():
        diff = {k: v for k, v in flat(cfg).items() if ref[k] != v}
        if label in ("paper", "code", "bfp"):
            continue
        assert diff and diff.items() <= code_diff.items(), label  # one [code] difference, alone
    singles = [k for label, cfg in cells.items() if label not in ("paper", "code", "bfp")
               for k, v in flat(cfg).items() if ref[k] != v]
    assert sorted(singles) == sorted(code_diff)  # and every difference has its cell


def test_demo_is_cpu_sized_and_fpt_cells_start_as_bfp():
    # Issue 13's protocol: every neck with 2 seeds, all fine-tuned from one pre-trained trunk.
    matrix = load_matrix("demo")
    assert [(c.axes["ablation"], c.axes["seed"]) for c in matrix.cells] == [
        (neck, seed) for neck in ("bfp", "st", "gt", "rt", "fpt") for seed in (0, 1)]
    for cell in matrix.cells:
        train = cell.config["train"]
        assert train["max_iter"] <= 100 and max(train["steps"]) < train["max_iter"]
        assert cell.config["model"]["backbone_pretrain"] == "synth_r18_pretrain"
        assert cell.config["model"]["backbone"] == "resnet18" and cell.config["data"]["root"] == "data/synth"
        assert (cell.config["fpt"]["fuse_init"], cell.config["fpt"]["norm"]) == ("identity", "none")
    assert matrix.profile == {"size": [128, 128], "runs": 3, "warmup": 1}


def test_paper_segmentation_cells_are_the_shipped_configs():
    # The dataset axis copies each seg_r101_<dataset>_base config's recipe and the neck axis the
    # _fpt / _lgt configs' switches: pinned here, cell by cell, so that the copies cannot drift.
    matrix = load_matrix("paper_segmentation")
    assert [(c.axes["dataset"], c.axes["neck"]) for c in matrix.cells] == [
        (d, n) for d in ("cityscapes", "voc2012", "ade20k", "lip") for n in ("base", "fpt", "lgt")]
    for cell in matrix.cells:
        name = f"seg_r101_{cell.axes['dataset']}_{cell.axes['neck']}"
        assert cell.config == load_config(name), name
        # the config's own hash, with its batch (8 GPUs x its images per device)
        batch = 8 * load_config(name)["train"]["images_per_device"]
        assert cell.run_id.endswith(config_hash({"config": config_hash(load_config(name)), "batch": batch})[:8])


def test_demo_segmentation_cells_are_the_synthetic_configs():
    matrix = load_matrix("demo_segmentation")
    assert [(c.axes["neck"], c.axes["seed"]) for c in matrix.cells] == [
        (n, s) for n in ("base", "fpt", "lgt") for s in (0, 1)]
    for cell in matrix.cells:
        assert cell.config == load_config(f"synth_seg_r18_{cell.axes['neck']}", [("seed", cell.axes["seed"])])
        assert cell.config["data"]["root"] == "data/synth" and cell.config["model"]["task"] == "segmentation"
        assert cell.config["model"]["backbone_pretrain"] == "synth_r18_pretrain"  # the detection cells' trunk


def test_paper_segmentation_dry_run_lists_its_12_cells(run_cli, tmp_path):
    # Without its ImageNet trunk the sweep stops before listing or submitting anything, naming the file.
    done = run_cli("sweep", "paper_segmentation", "--dry-run", "--results", "/nonexistent-results",
                   env={"FPTBENCH_WEIGHTS_DIR": str(tmp_path)})
    assert done.returncode == 2 and "dry run" not in done.stdout
    assert f"{tmp_path}/resnet101-63fe2227.pth" in done.stderr and "12 cell(s) lack their trunk weights" in done.stderr
    # With the trunk asked to start from scratch, by name, it lists the 12 cells.
    done = run_cli("sweep", "paper_segmentation", "--dry-run", "--results", "/nonexistent-results",
                   "--set", "model.backbone_weights", "scratch")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split()[0] for line in done.stdout.splitlines() if " missing " in line]
    cells = load_matrix("paper_segmentation", [("model.backbone_weights", "scratch")]).cells
    assert rows == [c.run_id for c in cells] and len(rows) == 12
    assert "dry run: would submit 12 of 12 cells" in done.stdout


# --- reference: the row a design table compares every other row with -------------------------

def test_reference_names_the_row_by_label_or_value(tmp_path):
    path = write(tmp_path, textwrap.dedent(SMALL) + "reference: {ablation: bfp, model.backbone: resnet18}\n")
    assert load_matrix(path).reference == {"ablation": "bfp", "model.backbone": "resnet18"}
    assert load_matrix(write(tmp_path, textwrap.dedent(SMALL), "plain.yaml")).reference == {}  # none unless given


def test_paper_vs_code_compares_every_difference_with_the_paper_row():
    matrix = load_matrix("paper_vs_code")
    assert matrix.reference == {"variant": "paper"}
    paper = [cell for cell in matrix.cells if cell.axes["variant"] == "paper"]
    assert len(paper) == 1 and paper[0].config == load_config("maskrcnn_r50_fpt", [pair for pair in paper[0].overrides])
    for name in ("demo", "paper_ablation", "paper_backbones", "paper_design", "paper_segmentation",
                 "demo_segmentation"):  # their reports stay as they were
        assert load_matrix(name).reference == {}


@pytest.mark.parametrize("entry, needle, expected", [
    ("{ablation: fpt}", "fpt}", "reference: axis 'ablation' has no label or value 'fpt'; it has bfp, st"),
    ("{ablaton: st}", "ablaton", "reference: unknown axis 'ablaton'; did you mean 'ablation'?"),
    ("{seed: 0}", "seed: 0}", "reference: unknown axis 'seed'; seeds are pooled in a row; name the axes of the setting"),
    ("bfp", "reference:", "reference must be a mapping axis -> label or value, e.g. {ablation: bfp}, got str 'bfp'"),
    ("{ablation: st}\nexclude:\n  - {ablation: st}", "reference:", "reference: the excludes drop every cell it names"),
])
def test_bad_references_name_file_and_line(tmp_path, entry, needle, expected):
    path = write(tmp_path, textwrap.dedent(SMALL) + f"reference: {entry}\n")
    assert error_of(path) == f"{path}:{line_of(path, needle)}: {expected}"
