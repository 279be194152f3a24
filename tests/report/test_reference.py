"""results/paper_reference.yaml: cites its source; only the confirmed gains are known, each with the
part of its setting that is confirmed; schedule names; one-line errors for a bad file."""

from __future__ import annotations

import copy

import pytest

from fptbench.errors import UsageError
from fptbench.report.reference import (
    DEFAULT_REFERENCE,
    Reference,
    RowSetting,
    load_reference,
    parse_schedule,
    record_schedule,
    schedule_name,
)
from fptbench.report.rows import collect_rows

from . import fixed_records


def test_shipped_reference_knows_only_the_confirmed_gains():
    ref = load_reference()
    assert ref.path == DEFAULT_REFERENCE and DEFAULT_REFERENCE.name == "paper_reference.yaml"
    assert "Feature Pyramid Transformer" in ref.citation and "ECCV 2020" in ref.citation
    assert "2007.09451" in ref.url
    # the instance-level gains: split and neck confirmed; table, backbone, head, schedule not
    (gain,) = ref.gains
    assert gain.values == {"bbox.AP": 8.5, "segm.AP": 6.0}
    assert (gain.neck, gain.split) == ("FPT", "coco2017_test-dev")
    assert gain.unknown == ["table", "backbone", "head", "schedule"]
    assert "test-dev" in ref.gains_setting and "best" in ref.gains_setting
    # the pixel-level gains of the spec, in mIoU points, each on its split's FPT (LGT) row of a dilated R-101
    assert {e.split: e.values for e in ref.seg_gains} == {
        "cityscapes_test": {"seg.mIoU": 1.6}, "voc2012_test": {"seg.mIoU": 1.2},
        "ade20k_val": {"seg.mIoU": 1.7}, "lip_val": {"seg.mIoU": 2.0}}
    for e in ref.seg_gains:
        assert (e.table, e.backbone, e.neck) == ("segmentation", "resnet101", "+FPT (LGT)")
        assert e.unknown == ["head", "schedule"]
    assert "own baseline" in ref.seg_gains_setting and "mIoU points" in ref.seg_gains_setting
    # every absolute value unknown, and every table's cell setting at least partly unknown
    assert {"ablation", "backbone_head", "design", "complexity", "segmentation"} == set(ref.tables)
    entries = [e for t in ref.tables.values() for e in t]
    assert entries and all(v is None for e in entries for v in e.values.values())
    assert all(e.split is None and e.schedule is None for e in entries)
    assert "not available" in ref.table_notes["ablation"] and "not available" in ref.table_notes["segmentation"]
    # the design entries name their choice: no two alike
    design = ref.tables["design"]
    assert len({repr(sorted(e.config.items())) for e in design}) == len(design) == 9
    assert "semantic segmentation" in ref.note and ref.known


@pytest.mark.parametrize("iterations, batch, name", [
    (90000, 16, "1x"), (180000, 16, "2x"), (270000, 16, "3x"),   # detectron2's
    (120000, 16, "120k@16"), (180000, 8, "180k@8"), (80000, 8, "80k@8"), (45000, 16, "45k@16"),
    (2, 1, "2@1"), (1500, 16, "1500@16"),
])
def test_schedule_names(iterations, batch, name):
    assert schedule_name(iterations, batch) == name
    assert parse_schedule(name) == name                       # a name reads back as itself
    assert parse_schedule(f"{iterations}@{batch}") == name    # and every spelling of it is one schedule


@pytest.mark.parametrize("text", ["1X", "x1", "0x", "90k", "90k@", "@16", "90k@16.5", "1.5x", "", "90 k@16"])
def test_what_is_not_a_schedule(text):
    assert parse_schedule(text) is None


def _record(train: dict | None, world_size: int | None = None, plan: dict | None = None) -> dict:
    record = {"config": {"train": train} if train is not None else {}, "training": {"iterations": 1}}
    if world_size is not None:
        record["training"]["world_size"] = world_size
    if plan is not None:
        record["training"]["batch"] = plan
    return record


@pytest.mark.parametrize("train, world_size, name", [
    # records before the batch plan: the config as given
    ({"max_iter": 90000, "reference_batch": 16, "images_per_device": 2, "accumulate": 1}, 8, "1x"),
    ({"max_iter": 40000, "reference_batch": 8, "images_per_device": 1}, 8, "40k@8"),
    ({"max_iter": 90000, "reference_batch": 16, "images_per_device": 2, "accumulate": 0}, 2, "1x"),  # 4 accumulated
    # 0 = as given: the run's own effective batch, world size x images per device x accumulation
    ({"max_iter": 180000, "reference_batch": 0, "images_per_device": 2, "accumulate": 1}, 8, "2x"),
    ({"max_iter": 90000, "reference_batch": 0, "images_per_device": 2, "accumulate": 4}, 2, "1x"),
    ({"max_iter": 80000, "images_per_device": 1}, 8, "80k@8"),          # a record from before both keys
    ({"max_iter": 2, "images_per_device": 1}, 1, "2@1"),
    # unknown: a number the record does not hold
    ({"max_iter": 90000, "reference_batch": 0, "images_per_device": 2}, None, None),  # no world size
    # the config gives max_iter at its reference batch: known without the run's world size
    ({"max_iter": 90000, "reference_batch": 16, "images_per_device": 2}, None, "1x"),
    ({"max_iter": 90000, "images_per_device": 2, "accumulate": 0}, 8, None),           # accumulate 0 and no reference
    ({"reference_batch": 16, "images_per_device": 2}, 8, None),                         # no max_iter
    ({"max_iter": 90000, "reference_batch": 0}, 8, None),                               # no images per device
    ({"max_iter": True, "reference_batch": 16, "images_per_device": 2}, 8, None),       # not a count
    (None, 8, None),                                                                    # no train section
    # a record's config holds max_iter as given, at the reference batch, whatever batch the run had
    # (an `fptbench eval` record has no batch plan)
    ({"max_iter": 90000, "reference_batch": 16, "images_per_device": 2}, 1, "1x"),
])
def test_record_schedule_from_the_config(train, world_size, name):
    assert record_schedule(_record(train, world_size)) == name


@pytest.mark.parametrize("plan, name", [
    # fptbench.batch.plan_summary: the schedule as given and the batch; the config holds it as run
    ({"world_size": 1, "images_per_device": 2, "accumulate": 1, "reference": 16, "batch": 2, "factor": 0.125,
      "given": {"max_iter": 90000}, "run": {"max_iter": 720000}}, "1x"),
    ({"reference": 8, "batch": 16, "given": {"max_iter": 80000}}, "80k@8"),
    ({"reference": 0, "batch": 8, "given": {"max_iter": 80000}}, "80k@8"),    # no reference: the run's batch
    ({"reference": 0, "batch": 1, "given": {"max_iter": 2}}, "2@1"),
    ({"reference": 0, "given": {"max_iter": 2}}, None),
    ({"reference": 16, "batch": 16, "given": {}}, None),
])
def test_record_schedule_from_the_batch_plan(plan, name):
    scaled = {"max_iter": 720000, "reference_batch": 16, "images_per_device": 2, "accumulate": 1}
    assert record_schedule(_record(scaled, 1, plan)) == name


def _rows(records):
    return collect_rows(records).rows


def test_a_rows_setting_comes_from_its_records():
    records = [fixed_records.record("fpt", seed) for seed in range(3)]
    for r in records:
        r["config"]["train"] = {"max_iter": 90000, "reference_batch": 16, "images_per_device": 2}
        r["config"]["data"]["test"] = "coco2017_val"
        r["training"] = {"world_size": 8}
    (row,) = _rows(records)
    s = RowSetting.of(row, "ablation")
    assert (s.table, s.backbone, s.head, s.neck, s.split, s.schedule) == (
        "ablation", "resnet50", "mask_rcnn", "FPT", "coco2017_val", "1x")
    assert s.config("fpt.st") is True and s.config("gt.window") == 0
    # seeds whose configs disagree: that field is not known, the others are
    changed = copy.deepcopy(records)
    changed[2]["config"]["train"]["max_iter"] = 180000
    changed[1]["config"]["gt"]["window"] = 5
    s = RowSetting.of(_rows(changed)[0], "ablation")
    assert s.schedule is None and s.backbone == "resnet50"
    assert s.config("gt.window") != 0 and s.config("gt.window") != 5
    # a key no record holds, and a row with no record
    assert s.config("train.no_such_key") != None  # noqa: E711 (the sentinel equals nothing, not even None)
    cells = [{"run_id": "x", "axes": {"ablation": "fpt", "seed": 0}, "state": "missing"}]
    (empty,) = collect_rows([], cells).rows
    s = RowSetting.of(empty, "ablation")
    assert (s.backbone, s.head, s.neck, s.split, s.schedule) == (None,) * 5


# ---------------------------------------------------------------------------------------------
# a bad file: one line naming the file, the line and the key

HEAD = "reference_version: 2\nsource: {citation: X}\n"
GAIN = "{table: ablation, backbone: resnet50, head: mask_rcnn, neck: FPT, split: coco2017_val, schedule: 1x, values: {bbox.AP: 8.5}}"
CELL = "{backbone: resnet50, head: mask_rcnn, neck: FPT, split: coco2017_val, schedule: 1x, values: {bbox.AP: 40.0}}"


@pytest.mark.parametrize("text, line, message", [
    # unknown names
    (HEAD + "tables:\n  ablations:\n    entries: []\n", 4, "tables.ablations: unknown table; expected one of ablation,"),
    (HEAD + "relative_gains:\n  entries:\n    - " + GAIN.replace("table: ablation", "table: miou") + "\n", 5,
     r"relative_gains.entries\[0\].table: unknown table 'miou'; expected one of ablation, backbone_head, design or null"),
    (HEAD + "segmentation_gains:\n  entries:\n    - " + GAIN.replace("bbox.AP: 8.5", "seg.mIoU: 1.0") + "\n", 5,
     r"segmentation_gains.entries\[0\].table: unknown table 'ablation'; expected one of segmentation or null"),
    (HEAD + "tables:\n  ablation:\n    entries:\n      - " + CELL.replace("head:", "heads:") + "\n", 6,
     r"tables.ablation.entries\[0\].heads: unknown field; expected backbone, head,"),
    (HEAD + "tables:\n  ablation:\n    entries:\n      - " + CELL.replace("{", "{table: ablation, ", 1) + "\n", 6,
     r"tables.ablation.entries\[0\].table: unknown field \(the table is the section's name\)"),
    (HEAD + "tables:\n  ablation:\n    entries:\n      - " + CELL.replace("neck: FPT", "neck: fpt") + "\n", 6,
     r"tables.ablation.entries\[0\].neck: unknown neck 'fpt'; expected one of BFP,"),
    (HEAD + "tables:\n  segmentation:\n    entries:\n      - " + CELL.replace("bbox.AP", "seg.mIoU") + "\n", 6,
     r"tables.segmentation.entries\[0\].neck: unknown neck 'FPT'; expected one of baseline,"),
    (HEAD + "tables:\n  ablation:\n    entries:\n      - " + CELL.replace("bbox.AP:", "box.AP:") + "\n", 6,
     r"tables.ablation.entries\[0\].values.box.AP: unknown column"),
    (HEAD + "relative_gains:\n  entries:\n    - " + GAIN.replace("bbox.AP: 8.5", "bbox.AP50: 8.5") + "\n", 5,
     r"relative_gains.entries\[0\].values.bbox.AP50: unknown column; expected bbox.AP, segm.AP"),
    (HEAD + "relative_gains:\n  setting: x\n  rows: {}\n", 5, "relative_gains.rows: unknown key; expected setting, entries"),
    (HEAD + "values: {}\n", 3, "values: unknown key; expected reference_version, source,"),
    # values of the wrong type
    (HEAD + "tables:\n  ablation:\n    entries:\n      - " + CELL.replace("40.0", "high") + "\n", 6,
     r"tables.ablation.entries\[0\].values.bbox.AP: expected a number or null, got 'high'"),
    (HEAD + "tables:\n  ablation:\n    entries:\n      - " + CELL.replace("resnet50", "[resnet50]") + "\n", 6,
     r"tables.ablation.entries\[0\].backbone: expected a name or null, got list \['resnet50'\]"),
    (HEAD + "tables:\n  ablation:\n    entries:\n      - " + CELL.replace("schedule: 1x", "schedule: 90000") + "\n", 6,
     r"tables.ablation.entries\[0\].schedule: expected a name or null, got int 90000"),
    (HEAD + "tables:\n  ablation:\n    entries:\n      - " + CELL.replace("schedule: 1x", "schedule: 90k") + "\n", 6,
     r"tables.ablation.entries\[0\].schedule: expected a schedule such as 1x, 2x, 3x or 120k@16"),
    (HEAD + "tables:\n  ablation:\n    entries:\n      - " + CELL.replace("}}", "}, config: {window: 5}}") + "\n", 6,
     r"tables.ablation.entries\[0\].config.window: expected a dotted config key"),
    (HEAD + "tables:\n  ablation:\n    entries:\n      - " + CELL.replace("}}", "}, where: 3}") + "\n", 6,
     r"tables.ablation.entries\[0\].where: expected the place in the paper"),
    (HEAD + "tables:\n  ablation:\n    entries: {FPT: {bbox.AP: 1.0}}\n", 5,
     "tables.ablation.entries: expected a list of entries, got dict"),
    (HEAD + "tables:\n  ablation:\n    entries:\n      - " + CELL.replace("split: coco2017_val, ", "") + "\n", 6,
     r"tables.ablation.entries\[0\]: missing field 'split' \(write null where the paper does not confirm it\)"),
    (HEAD + "tables:\n  ablation:\n    entries:\n      - " + CELL + "\n      - " + CELL.replace("40.0", "41.0") + "\n", 7,
     r"tables.ablation.entries\[1\]: the same setting as tables.ablation.entries\[0\] \(line 6\)"),
    # the file as a whole
    ("reference_version: 2\ntables: {}\n", None, "source.citation: expected the paper the values come from"),
    ("source: {citation: X}\n", None, "reference_version: expected 2, got None"),
    ("reference_version: 1\nsource: {citation: X}\n", 1, "reference_version: version 1 keyed values by neck"),
    ("source: [\n", 2, "not valid YAML"),
])
def test_bad_reference_files_are_one_line_errors(tmp_path, text, line, message):
    path = tmp_path / "ref.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as err:
        load_reference(path)
    shown = str(err.value)
    assert "\n" not in shown
    assert shown.startswith(f"{path}:{line}: " if line else f"{path}")


def test_the_version_1_file_is_refused_with_what_changed(tmp_path):
    """The layout before the six-field setting (HEAD~ of this file): refused, not read half-way,
    since its keys lack the split and schedule that every match needs."""
    path = tmp_path / "ref.yaml"
    path.write_text("reference_version: 1\nsource: {citation: X}\nrelative_gains:\n  rows:\n    FPT: {bbox.AP: 8.5}\n")
    with pytest.raises(UsageError) as err:
        load_reference(path)
    assert "table, backbone, head, neck, split and schedule" in str(err.value)


def test_a_missing_default_is_an_empty_reference(monkeypatch, tmp_path):
    from fptbench.report import reference

    monkeypatch.setattr(reference, "DEFAULT_REFERENCE", tmp_path / "none.yaml")
    assert load_reference() == Reference()
    with pytest.raises(UsageError, match="reference file not found"):
        load_reference(tmp_path / "none.yaml")
