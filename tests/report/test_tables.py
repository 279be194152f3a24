"""The report's tables from real run records: rows, columns, seeds, deltas, dashes, paper values."""

from __future__ import annotations

import copy
import json
import math
import statistics

import pandas as pd
import pytest

from fptbench.errors import UsageError
from fptbench.report.reference import Reference, load_reference
from fptbench.report.rows import collect_rows
from fptbench.report.tables import build_tables

from . import fixed_records
from .conftest import cell_of, set_ap, with_cell

AP_COLUMNS = [f"{w} {m}" for w in ("box", "mask") for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")]


def _tables(records, cells=None, reference=None):
    ref = load_reference() if reference is None else reference
    return {t.name: t for t in build_tables(collect_rows(records, cells), ref)}


def _row(table, neck):
    rows = table.display.index[table.display["neck"] == neck]
    assert len(rows) == 1, f"{neck}: {list(table.display['neck'])}"
    return rows[0]


def test_ablation_rows_columns_in_paper_order(ablation):
    tables = _tables(ablation["records"], ablation["cells"])
    assert list(tables) == ["ablation", "complexity"]  # one axis of necks: no backbone or design table
    table = tables["ablation"]
    # matrix order is bfp, st, gt, fpt: the table sorts by the paper's order, names from the config
    assert list(table.display["neck"]) == ["BFP", "+ST", "+GT", "FPT"]
    columns = list(table.display.columns)
    assert columns[:2] == ["neck", "n"]
    assert columns[2:14] == AP_COLUMNS
    for name in ("Params (M)", "GFLOPs", "latency (ms)", "Δ box AP", "Δ box AP (%)", "Δ mask AP", "Δ mask AP (%)"):
        assert name in columns
    assert list(table.display["n"]) == ["2", "1", "0", "1"]


def test_neck_comes_from_the_config_not_the_label(ablation):
    records = [with_cell(r, r["cell"]["run_id"], {"ablation": f"x{i}", "seed": r["cell"]["axes"]["seed"]})
               for i, r in enumerate(ablation["records"])]
    records[1]["cell"]["axes"]["ablation"] = "x0"  # bfp seed 1 joins bfp seed 0
    table = _tables(records)["ablation"]
    assert list(table.display["neck"]) == ["BFP", "+ST", "FPT"]


def test_mean_std_over_seeds_and_n(ablation):
    records = copy.deepcopy(ablation["records"])
    records[0] = set_ap(records[0], 30.0, 27.0)   # bfp seed 0
    records[1] = set_ap(records[1], 32.0, 28.0)   # bfp seed 1
    records[3] = set_ap(records[3], 33.0, 30.0)   # fpt seed 0
    table = _tables(records, ablation["cells"])["ablation"]
    bfp, fpt = _row(table, "BFP"), _row(table, "FPT")
    assert table.display.loc[bfp, "box AP"] == "31.0 ± 1.4"      # sample std of 30, 32: sqrt(2)
    assert table.display.loc[bfp, "mask AP"] == "27.5 ± 0.7"
    assert table.data.loc[bfp, "bbox.AP"] == pytest.approx(31.0)
    assert table.data.loc[bfp, "bbox.AP_std"] == pytest.approx(math.sqrt(2))
    assert table.display.loc[fpt, "box AP"] == "33.0"             # one seed: no fake ± 0
    assert table.display.loc[fpt, "n"] == "1"
    assert table.data.loc[fpt, "bbox.AP_std"] is None or math.isnan(table.data.loc[fpt, "bbox.AP_std"])


def test_delta_against_the_bfp_row(ablation):
    records = copy.deepcopy(ablation["records"])
    records[0] = set_ap(records[0], 30.0, 27.0)
    records[1] = set_ap(records[1], 32.0, 28.0)
    records[2] = set_ap(records[2], 31.5, 27.5)   # st
    records[3] = set_ap(records[3], 33.0, 30.0)
    table = _tables(records, ablation["cells"])["ablation"]
    d = table.display
    assert d.loc[_row(table, "BFP"), "Δ box AP"] == "ref"
    assert d.loc[_row(table, "+ST"), "Δ box AP"] == "+0.5"
    assert d.loc[_row(table, "FPT"), "Δ box AP"] == "+2.0"
    assert d.loc[_row(table, "FPT"), "Δ box AP (%)"] == "+6.5"    # 100 * 2 / 31
    assert d.loc[_row(table, "FPT"), "Δ mask AP"] == "+2.5"
    assert d.loc[_row(table, "FPT"), "Δ mask AP (%)"] == "+9.1"   # 100 * 2.5 / 27.5
    assert table.data.loc[_row(table, "FPT"), "delta_pct_bbox.AP"] == pytest.approx(100 * 2 / 31)
    assert d.loc[_row(table, "+GT"), "Δ box AP"] == "–"


def test_real_runs_numbers_reach_the_tables(ablation):
    """2-iteration runs: AP 0.0 (APm/APl None: no such objects in the 2 val images); the profile's
    params, GFLOPs and latency are the runs' own."""
    tables = _tables(ablation["records"], ablation["cells"])
    ab, cx = tables["ablation"], tables["complexity"]
    bfp_records = [r for r in ablation["records"] if r["cell"]["axes"]["ablation"] == "bfp"]
    i = _row(ab, "BFP")
    assert ab.data.loc[i, "bbox.AP"] == pytest.approx(statistics.mean(r["metrics"]["bbox"]["AP"] for r in bfp_records))
    assert ab.display.loc[i, "box APl"] == "n/a"
    latencies = [r["profile"]["latency_ms"]["median"] for r in bfp_records]
    j = _row(cx, "BFP")
    assert cx.data.loc[j, "latency_ms"] == pytest.approx(statistics.mean(latencies))
    assert cx.data.loc[j, "latency_ms_std"] == pytest.approx(statistics.stdev(latencies))
    assert cx.data.loc[j, "params_m"] == pytest.approx(bfp_records[0]["profile"]["params"] / 1e6)
    assert cx.data.loc[j, "gflops"] == pytest.approx(bfp_records[0]["profile"]["flops"] / 1e9)
    fpt = next(r for r in ablation["records"] if r["cell"]["axes"]["ablation"] == "fpt")
    k = _row(cx, "FPT")
    assert cx.data.loc[k, "attn_gflops"] == pytest.approx(fpt["profile"]["attention"]["flops"] / 1e9)
    assert cx.data.loc[k, "attn_gflops"] > 0 and cx.data.loc[j, "attn_gflops"] == 0
    assert cx.data.loc[k, "params_m"] > cx.data.loc[j, "params_m"]
    assert cx.display.loc[k, "input (px)"] == "64x64"
    assert "2 × GMACs" in " ".join(ab.notes)


def test_failed_and_missing_cells_are_dashes_with_footnotes(ablation):
    table = _tables(ablation["records"], ablation["cells"])["ablation"]
    gt = _row(table, "+GT")                          # failed, no record: named from its label
    assert all(table.display.loc[gt, c] == "–" for c in AP_COLUMNS + ["Params (M)", "GFLOPs"])
    (mark,) = table.marks[(gt, "neck")]
    assert "gt-s0-0badc0de" in table.footnotes[mark - 1] and "failed" in table.footnotes[mark - 1]
    assert "CUDA out of memory" in table.footnotes[mark - 1]
    fpt = _row(table, "FPT")                         # one seed done, one missing
    (mark,) = table.marks[(fpt, "neck")]
    assert table.footnotes[mark - 1] == "1 of 2 seeds: run fpt-s1-0000abcd: missing"
    assert (_row(table, "BFP"), "neck") not in table.marks
    assert table.data.loc[gt, "state"] == "failed" and table.data.loc[fpt, "state"] == "partial"
    assert "fpt-s1-0000abcd" in table.data.loc[fpt, "run_ids"]
    # the same rows in the complexity table
    cx = _tables(ablation["records"], ablation["cells"])["complexity"]
    assert cx.display.loc[_row(cx, "+GT"), "GFLOPs"] == "–"


def test_reference_values_only_where_known(ablation, tmp_path):
    table = _tables(ablation["records"], ablation["cells"])["ablation"]
    # The shipped file states the paper's relative gain (+8.5% box AP), but not the backbone, head
    # and schedule it was measured with: it stands beside no row, where it once stood beside every
    # FPT row (those of these 2-iteration synthetic runs included). The notes say it exists.
    assert not [c for c in table.display.columns if c.startswith("paper ")]
    assert not [c for c in table.data.columns if c.startswith("paper_")]
    assert any(n.startswith("paper Δ (%): the paper states +8.5% box AP and +6.0% mask AP for neck FPT, split "
                            "coco2017_test-dev") and "backbone, head and schedule are not confirmed" in n
               for n in table.notes)
    assert any("arXiv" in n or "2007.09451" in n for n in table.notes)
    # a file with one absolute value known for the +ST row's own setting: its column appears, filled in that row only
    st = next(r for r in ablation["records"] if r["cell"]["axes"]["ablation"] == "st")
    train = st["config"]["train"]
    batch = train.get("reference_batch", 0) or (
        st["training"]["world_size"] * train["images_per_device"] * train.get("accumulate", 1))
    schedule = f"{train['max_iter']}@{batch}"                     # 2 iterations: 2@1
    path = tmp_path / "ref.yaml"
    path.write_text("reference_version: 2\nsource: {citation: 'Test.', url: 'https://example.org'}\n"
                    "tables: {ablation: {entries: [{backbone: resnet18, head: mask_rcnn, neck: +ST, "
                    f"split: {st['config']['data']['test']}, schedule: '{schedule}', where: Table 1, "
                    "values: {bbox.AP: 37.2, bbox.AP50: null}}]}}\n")
    table = _tables(ablation["records"], ablation["cells"], load_reference(path))["ablation"]
    assert list(table.display["paper box AP"]) == ["", "37.2", "", ""]
    assert "paper box AP50" not in table.display.columns and "paper Δ box AP (%)" not in table.display.columns
    assert list(table.display.columns).index("paper box AP") == list(table.display.columns).index("box AP") + 1
    # no reference at all
    table = _tables(ablation["records"], ablation["cells"], Reference())["ablation"]
    assert not [c for c in table.display.columns if c.startswith("paper")]


def test_backbone_head_table_from_real_faster_and_mask_runs(tiny_runs):
    records, cells = [], []
    for head, neck, name in (("mask_rcnn", "bfp", "bfp-s0"), ("mask_rcnn", "fpt", "fpt-s0"),
                             ("faster_rcnn", "bfp", "faster-bfp-s0")):
        records.append(with_cell(tiny_runs[name], f"{head}-{neck}-s0", {"head": head, "neck": neck, "seed": 0}))
        cells.append(cell_of(records[-1]))
    cells.append({"run_id": "faster_rcnn-fpt-s0", "axes": {"head": "faster_rcnn", "neck": "fpt", "seed": 0},
                  "state": "running"})
    tables = _tables(records, cells)
    assert list(tables) == ["backbone_head", "complexity"]  # BFP vs FPT only: the ablation table would repeat it
    t = tables["backbone_head"]
    assert list(zip(t.display["head"], t.display["neck"])) == [
        ("mask_rcnn", "BFP"), ("mask_rcnn", "FPT"), ("faster_rcnn", "BFP"), ("faster_rcnn", "FPT")]
    assert set(t.display["backbone"]) == {"resnet18"}
    assert t.display.loc[2, "mask AP"] == "n/a"                   # Faster R-CNN has no masks
    assert t.display.loc[3, "box AP"] == "–" and "running" in t.footnotes[0]
    # The paper's gain, once beside both FPT rows, is beside none: its head is not confirmed (nor
    # its backbone, split or schedule those of these runs).
    assert not [c for c in t.display.columns if c.startswith("paper")]
    assert any("same head" in n for n in t.notes)                 # Δ within the same head


def test_design_table_one_row_per_setting(tiny_runs):
    records = []
    for label, change in (("fpt", {}), ("gt_dot", {"gt": {"similarity": "dot"}})):
        record = copy.deepcopy(tiny_runs["fpt-s0"])
        for section, values in change.items():
            record["config"][section].update(values)
        records.append(with_cell(record, f"{label}-s0", {"design": label, "seed": 0}))
    cells = [cell_of(r) for r in records] + [{"run_id": "lgt5-s0", "axes": {"design": "lgt5", "seed": 0}, "state": "pending"}]
    tables = _tables(records, cells)
    assert list(tables) == ["design", "complexity"]
    t = tables["design"]
    assert list(t.display["design"]) == ["fpt", "gt_dot", "lgt5"]
    assert list(t.display["neck"])[:2] == ["FPT", "FPT"]
    assert "Δ box AP" not in t.display.columns                    # no BFP to compare with
    assert t.display.loc[2, "box AP"] == "–" and "lgt5-s0: pending" in t.footnotes[0]


def test_records_outside_the_matrix_are_left_out_and_bad_records_refused(ablation):
    cells = [c for c in ablation["cells"] if not c["run_id"].startswith("st-")]
    layout = collect_rows(ablation["records"], cells)
    assert [r.neck for r in layout.rows] == ["BFP", "+GT", "FPT"]
    assert len(layout.left_out) == 1 and layout.left_out[0].startswith("st-s0-")
    with pytest.raises(UsageError, match=r"records\[0\]: expected a sweep run record"):
        collect_rows([{"config": {}, "metrics": {}}])
    with pytest.raises(UsageError, match="appears twice"):
        collect_rows([ablation["records"][0], ablation["records"][0]])


def _paper_vs_code(tiny_runs):
    """Records shaped as experiments/paper_vs_code.yaml's cells: variant paper, code, st_pool (FPT
    necks that differ in design) and bfp, with known APs; cells add gt_linear (pending)."""
    aps = {"paper": (33.0, 30.0), "code": (34.5, 29.0), "st_pool": (32.0, 30.0), "bfp": (31.0, 27.5)}
    records = []
    for label, (box, mask) in aps.items():
        record = copy.deepcopy(tiny_runs["bfp-s0" if label == "bfp" else "fpt-s0"])
        if label == "code":
            record["config"]["fpt"]["input"] = "lateral"
        if label == "st_pool":
            record["config"]["st"]["pool_kv"] = True
        records.append(with_cell(set_ap(record, box, mask), f"{label}-s0", {"variant": label, "seed": 0}))
    cells = [cell_of(r) for r in records] + [{"run_id": "gt_linear-s0", "axes": {"variant": "gt_linear", "seed": 0},
                                              "state": "pending"}]
    return records, cells


def test_design_table_delta_against_the_matrix_reference_row(tiny_runs):
    records, cells = _paper_vs_code(tiny_runs)
    layout = collect_rows(records, cells, compare_to={"variant": "paper"})
    tables = {t.name: t for t in build_tables(layout, load_reference())}
    t = tables["design"]
    d = t.display.set_index("variant")
    assert list(d["Δ box AP vs ref"]) == ["ref", "+1.5", "-1.0", "-2.0", "–"]   # paper, code, st_pool, bfp, gt_linear
    assert list(d["Δ mask AP vs ref"]) == ["ref", "-1.0", "+0.0", "-2.5", "–"]
    assert t.data["delta_ref_bbox.AP"].tolist()[:4] == pytest.approx([0.0, 1.5, -1.0, -2.0])
    assert d.loc["code", "Δ box AP"] == "+3.5"                     # the BFP delta is still there
    assert list(d["p Δ box AP vs ref"]) == ["ref", "n/a", "n/a", "n/a", "–"]  # one seed each: no test
    assert any("the BFP row (Δ) and the reference row (Δ … vs ref)" in n and "1 vs 1" in n for n in t.notes)
    assert any("reference row (variant=paper)" in n for n in t.notes)
    # the ablation table (necks vs BFP) does not take it
    assert not any("vs ref" in c for c in tables["ablation"].display.columns)


def test_without_a_reference_the_design_table_is_as_before(tiny_runs):
    records, cells = _paper_vs_code(tiny_runs)
    before = {t.name: t for t in build_tables(collect_rows(records, cells), load_reference())}["design"]
    assert not any("vs ref" in c for c in before.display.columns)
    assert not any(c.startswith("delta_ref_") for c in before.data.columns)
    assert not any("reference row" in n for n in before.notes)


@pytest.mark.parametrize("compare_to, message", [
    ({"varient": "paper"}, "'varient' is not an axis of the rows (variant)"),
    ({"variant": "papr"}, "no row has variant='papr'"),
])
def test_a_reference_no_row_has_is_refused(tiny_runs, compare_to, message):
    records, cells = _paper_vs_code(tiny_runs)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        collect_rows(records, cells, compare_to=compare_to)


# ---------------------------------------------------------------------------------------------
# the paper's values beside the row of their setting only (fixed records: no run needed)

SETTING = {"table": "ablation", "backbone": "resnet50", "head": "mask_rcnn", "neck": "FPT",
           "split": "coco2017_val", "schedule": "1x"}
"""The FPT row of :func:`_records`, field by field."""
FIELDS = tuple(SETTING)


def _records(split: str = "coco2017_val", train: dict | None = None) -> tuple[list[dict], list[dict]]:
    """The fixed ablation (BFP, +ST, +GT missing, FPT) as runs on 8 processes of ``train`` (default:
    90k iterations given at batch 16 = 8 x 2, detectron2's 1x) evaluated on ``split``; records
    without the trainer's batch plan (its config is the schedule)."""
    data = fixed_records.ablation()
    for r in data["records"]:
        r["config"]["data"]["test"] = split
        r["config"]["train"] = dict(train or {"max_iter": 90000, "reference_batch": 16, "images_per_device": 2})
        r["training"] = {"world_size": 8}
    return data["records"], data["cells"]


def _yaml(value) -> str:
    return "null" if value is None else json.dumps(value)


def _reference(tmp_path, **change):
    """A file whose relative gain (+8.5% box, +6.0% mask AP) and absolute box AP (40.0) are of
    :data:`SETTING` with ``change``; the absolute value sits under ``tables.<its table>``."""
    s = {**SETTING, **change}
    gain = ", ".join(f"{f}: {_yaml(s[f])}" for f in FIELDS)
    cell = ", ".join(f"{f}: {_yaml(s[f])}" for f in FIELDS[1:])
    text = ("reference_version: 2\nsource: {citation: Test.}\n"
            f"relative_gains: {{entries: [{{{gain}, values: {{bbox.AP: 8.5, segm.AP: 6.0}}, where: Table 9}}]}}\n")
    if s["table"] is not None:
        text += f"tables: {{{s['table']}: {{entries: [{{{cell}, values: {{bbox.AP: 40.0}}, where: Table 9}}]}}}}\n"
    path = tmp_path / "ref.yaml"
    path.write_text(text)
    return load_reference(path)


def _paper_columns(table) -> dict[str, list[str]]:
    return {c: list(table.display[c]) for c in table.display.columns if c.startswith("paper")}


def test_a_paper_value_stands_beside_the_row_of_its_setting(tmp_path):
    records, cells = _records()
    t = _tables(records, cells, _reference(tmp_path))["ablation"]
    assert list(t.display["neck"]) == ["BFP", "+ST", "+GT", "FPT"]
    assert _paper_columns(t) == {"paper box AP": ["", "", "", "40.0"], "paper Δ box AP (%)": ["", "", "", "8.5"],
                                 "paper Δ mask AP (%)": ["", "", "", "6.0"]}
    assert t.data["paper_gain_pct_bbox.AP"].tolist()[3] == 8.5 and pd.isna(t.data["paper_gain_pct_bbox.AP"][:3]).all()
    assert not any("not confirmed" in n for n in t.notes)
    # the same setting spelled 90k@16 (or 90000@16) is the 1x schedule; and a run of 180k iterations at
    # its own batch (8 processes x 2 images, no reference batch) is 2x, at 16 per step
    assert _paper_columns(_tables(records, cells, _reference(tmp_path, schedule="90k@16"))["ablation"])
    records2x, _ = _records(train={"max_iter": 180000, "reference_batch": 0, "images_per_device": 2})
    assert _paper_columns(_tables(records2x, cells, _reference(tmp_path, schedule="2x"))["ablation"])
    # the 1x recipe run on one process of 2 images: the trainer scaled the config to 720k iterations
    # and says so in its batch plan; the schedule is still the recipe's, 1x
    scaled, _ = _records(train={"max_iter": 720000, "reference_batch": 16, "images_per_device": 2})
    for r in scaled:
        r["training"] = {"world_size": 1, "batch": {"reference": 16, "batch": 2, "given": {"max_iter": 90000}}}
    assert _paper_columns(_tables(scaled, cells, _reference(tmp_path))["ablation"])["paper box AP"][3] == "40.0"


@pytest.mark.parametrize("field, other", [
    ("table", "backbone_head"), ("backbone", "resnet101"), ("head", "faster_rcnn"), ("neck", "+ST+GT"),
    ("split", "coco2017_test-dev"), ("schedule", "2x"),
])
def test_a_setting_that_differs_in_one_field_stands_beside_no_row(tmp_path, field, other):
    records, cells = _records()
    t = _tables(records, cells, _reference(tmp_path, **{field: other}))["ablation"]
    assert _paper_columns(t) == {}
    assert not any("not confirmed" in n for n in t.notes)         # it is confirmed, just not these runs'


@pytest.mark.parametrize("field", FIELDS)
def test_an_unknown_field_matches_no_row(tmp_path, field):
    records, cells = _records()
    t = _tables(records, cells, _reference(tmp_path, **{field: None}))["ablation"]
    assert _paper_columns(t) == {}
    # the notes say what the file holds and what it lacks (an absolute value's table is never unknown)
    notes = [n for n in t.notes if "not confirmed" in n]
    assert [n.split(":")[0] for n in notes] == ["paper Δ (%)"] + (["paper"] if field != "table" else [])
    assert "paper Δ (%): the relative gain over BFP that the paper states. Shown only beside the row whose " \
           "records are the paper's setting." in t.notes              # the test file gives no setting in words
    assert all(f"its {field} is not confirmed here" in n for n in notes)
    assert notes[0].startswith("paper Δ (%): the paper states +8.5% box AP and +6.0% mask AP for ")
    assert "(Table 9)" in notes[0] and notes[0].endswith("so the gain is set beside no run.")


def test_a_row_whose_records_do_not_tell_a_field_matches_no_entry(tmp_path):
    ref = _reference(tmp_path)
    # records without a train section (fixed_records as written): no schedule
    data = fixed_records.ablation()
    for r in data["records"]:
        r["config"]["data"]["test"] = "coco2017_val"
    assert _paper_columns(_tables(data["records"], data["cells"], ref)["ablation"]) == {}
    # unknown on both sides is no match either: an entry whose schedule is null, rows without one
    unknown_both = _reference(tmp_path, schedule=None)
    assert _paper_columns(_tables(data["records"], data["cells"], unknown_both)["ablation"]) == {}
    # seeds that ran different schedules: the row's schedule is unknown
    records, cells = _records()
    records[-1]["config"]["train"]["max_iter"] = 180000           # fpt seed 2
    assert _paper_columns(_tables(records, cells, ref)["ablation"]) == {}
    # a reference batch of 0 and no world size in the records: unknown
    records, cells = _records(train={"max_iter": 90000, "reference_batch": 0, "images_per_device": 2})
    for r in records:
        del r["training"]["world_size"]
    assert _paper_columns(_tables(records, cells, ref)["ablation"]) == {}
    # a row with no record (+GT: missing) matches nothing, even an entry naming its every field
    records, cells = _records()
    t = _tables(records, cells, _reference(tmp_path, neck="+GT"))["ablation"]
    assert list(t.display["neck"])[2] == "+GT" and _paper_columns(t) == {}


def test_a_setting_that_matches_two_rows_stands_beside_neither(tmp_path):
    """Two FPT rows that differ in a setting the entry does not name (the learning rate): which
    of them the paper's value is of, the file does not say; its ``config`` can."""
    records, cells = _records()
    lr = {}
    for r in records:
        copy_ = copy.deepcopy(r)
        for base_lr, record in ((0.02, r), (0.01, copy_)):
            record["config"]["train"]["base_lr"] = base_lr
            record["cell"]["axes"]["lr"] = base_lr
            record["cell"]["run_id"] += f"-lr{base_lr}"
            lr.setdefault(base_lr, []).append(record)
    both = lr[0.02] + lr[0.01]
    t = _tables(both, None, _reference(tmp_path))["ablation"]
    assert [(n, a) for n, a in zip(t.display["neck"], t.display["lr"])] == [
        ("BFP", "0.02"), ("+ST", "0.02"), ("FPT", "0.02"), ("BFP", "0.01"), ("+ST", "0.01"), ("FPT", "0.01")]
    assert _paper_columns(t) == {}
    (note, _) = [n for n in t.notes if "matches 2 rows" in n]
    assert note.startswith("paper Δ (%): the paper states +8.5% box AP") and "FPT (0.02), FPT (0.01)" in note
    # the entry's config names the learning rate: beside that row only
    path = tmp_path / "ref.yaml"
    path.write_text(path.read_text().replace("where: Table 9}", "where: Table 9, config: {train.base_lr: 0.01}}"))
    t = _tables(both, None, load_reference(path))["ablation"]
    assert _paper_columns(t) == {"paper box AP": ["", "", "", "", "", "40.0"],
                                 "paper Δ box AP (%)": ["", "", "", "", "", "8.5"],
                                 "paper Δ mask AP (%)": ["", "", "", "", "", "6.0"]}


@pytest.mark.parametrize("split", ["coco_2017_val", "coco2017_test-dev"])
def test_the_shipped_file_sets_no_gain_beside_the_fixed_fpt_rows(split):
    """The shipped gain is of COCO test-dev with a backbone, head and schedule not confirmed: it
    stands beside no FPT row, neither of the fixed records as written (no schedule, val split)
    nor of the same runs on test-dev with detectron2's 1x."""
    data = fixed_records.ablation()
    records, cells = (data["records"], data["cells"]) if split == "coco_2017_val" else _records(split=split)
    tables = _tables(records, cells)
    for t in tables.values():
        assert _paper_columns(t) == {}, t.name
    notes = [n for n in tables["ablation"].notes if n.startswith("paper Δ (%)")]
    assert notes == ["paper Δ (%): the relative gain over BFP that the paper states: COCO test-dev, the paper's best "
                     "instance-level setting, relative to its own BFP baseline. Shown only beside the row whose "
                     "records are the paper's setting.",
                     "paper Δ (%): the paper states +8.5% box AP and +6.0% mask AP for neck FPT, split "
                     "coco2017_test-dev; its table, backbone, head and schedule are not confirmed here, so the gain "
                     "is set beside no run."]


def test_two_entries_that_claim_one_row_stand_beside_it_neither(tmp_path):
    """One entry with a config, one without, both of the FPT row's setting: which number is the
    paper's for that row, the file does not say."""
    records, cells = _records()
    cell = "backbone: resnet50, head: mask_rcnn, neck: FPT, split: coco2017_val, schedule: 1x"
    path = tmp_path / "ref.yaml"
    for second, shown in (("neck: +ST", ["", "41.0", "", "40.0"]), ("config: {fpt.st: true}", None)):
        path.write_text("reference_version: 2\nsource: {citation: Test.}\ntables: {ablation: {entries: [\n"
                        f"  {{{cell}, values: {{bbox.AP: 40.0}}}},\n"
                        f"  {{{cell.replace('neck: FPT', second) if 'neck' in second else cell + ', ' + second}, "
                        "values: {bbox.AP: 41.0}}]}}\n")
        t = _tables(records, cells, load_reference(path))["ablation"]
        assert _paper_columns(t).get("paper box AP") == shown, second
