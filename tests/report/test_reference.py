"""results/paper_reference.yaml: cites its source; only the confirmed gains are known (relative box and
mask AP, mIoU points per dataset)."""

from __future__ import annotations

import pytest

from fptbench.errors import UsageError
from fptbench.report.reference import DEFAULT_REFERENCE, load_reference


def test_shipped_reference_knows_only_the_confirmed_gains():
    ref = load_reference()
    assert ref.path == DEFAULT_REFERENCE and DEFAULT_REFERENCE.name == "paper_reference.yaml"
    assert "Feature Pyramid Transformer" in ref.citation and "ECCV 2020" in ref.citation
    assert "2007.09451" in ref.url
    assert ref.gains == {"FPT": {"bbox.AP": 8.5, "segm.AP": 6.0}}
    assert "test-dev" in ref.gains_setting and "best" in ref.gains_setting
    known = [(t, r, c, v) for t, rows in ref.tables.items() for r, cols in rows.items() for c, v in cols.items() if v is not None]
    assert known == []
    assert {"ablation", "backbone_head", "design", "complexity"} <= set(ref.tables)
    assert ref.tables["ablation"]["FPT"]["bbox.AP"] is None and "not available" in ref.table_notes["ablation"]
    assert ref.value("ablation", "FPT", "bbox.AP") is None and ref.gain("FPT", "bbox.AP") == 8.5
    assert ref.gain("BFP", "bbox.AP") is None
    # the pixel-level gains of the spec, in mIoU points, each on its dataset's FPT (LGT) row
    assert ref.seg_gains == {"cityscapes/+FPT (LGT)": {"seg.mIoU": 1.6}, "voc2012/+FPT (LGT)": {"seg.mIoU": 1.2},
                             "ade20k/+FPT (LGT)": {"seg.mIoU": 1.7}, "lip/+FPT (LGT)": {"seg.mIoU": 2.0}}
    assert ref.seg_evaluated_on == {"cityscapes": "Cityscapes test", "voc2012": "PASCAL VOC 2012 test",
                                    "ade20k": "ADE20K val", "lip": "LIP val"}
    assert ref.seg_gain("lip", "+FPT (LGT)") == 2.0 and ref.seg_gain("lip", "+FPT (GT)") is None
    assert ref.seg_gain("synth_seg", "+FPT (LGT)") is None and ref.seg_split("voc2012") == "PASCAL VOC 2012 test"
    assert "own baseline" in ref.seg_gains_setting and "mIoU points" in ref.seg_gains_setting
    assert "segmentation" in ref.tables and "not available" in ref.table_notes["segmentation"]
    assert "no pixel-level task" not in ref.note and "semantic segmentation" in ref.note


@pytest.mark.parametrize("text, message", [
    ("source: {citation: X}\ntables: {ablation: {rows: {BFP: {bbox.AP: high}}}}\n", r"tables.ablation.rows.BFP.bbox.AP: expected a number or null"),
    ("tables: {}\n", "source.citation"),
    ("source: {citation: X}\nvalues: {}\n", "unknown key"),
    ("source: [\n", "not valid YAML"),
    ("source: {citation: X}\nsegmentation_gains: {evaluated_on: {lip: 'LIP val'}, rows: {'ade20k/+FPT (LGT)': {seg.mIoU: 1.7}}}\n",
     r"segmentation_gains.rows.ade20k/\+FPT \(LGT\): expected '<dataset>/<neck>' of a dataset in"),
    ("source: {citation: X}\nsegmentation_gains: {evaluated_on: {lip: 'LIP val'}, rows: {lip: {seg.mIoU: 2.0}}}\n",
     "segmentation_gains.rows.lip: expected '<dataset>/<neck>'"),
    ("source: {citation: X}\nsegmentation_gains: {evaluated_on: {lip: 'LIP val'}, rows: {'lip/+FPT (LGT)': {bbox.AP: 2.0}}}\n",
     "segmentation_gains.rows.lip/.*bbox.AP: not a segmentation score"),
    ("source: {citation: X}\nsegmentation_gains: {evaluated_on: {lip: 'LIP val'}, rows: {'lip/+FPT (LGT)': {seg.mIoU: '+2'}}}\n",
     "expected a number or null"),
    ("source: {citation: X}\nsegmentation_gains: {evaluated_on: {lip: 3}}\n",
     "segmentation_gains.evaluated_on.lip: expected the paper's split in words"),
])
def test_bad_reference_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "ref.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as err:
        load_reference(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
