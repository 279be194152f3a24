"""results/paper_reference.yaml: cites its source; only the confirmed relative gains are known."""

from __future__ import annotations

import pytest

from fptbench.errors import UsageError
from fptbench.report.reference import DEFAULT_REFERENCE, load_reference


def test_shipped_reference_knows_only_the_relative_gains():
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


@pytest.mark.parametrize("text, message", [
    ("source: {citation: X}\ntables: {ablation: {rows: {BFP: {bbox.AP: high}}}}\n", r"tables.ablation.rows.BFP.bbox.AP: expected a number or null"),
    ("tables: {}\n", "source.citation"),
    ("source: {citation: X}\nvalues: {}\n", "unknown key"),
    ("source: [\n", "not valid YAML"),
])
def test_bad_reference_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "ref.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as err:
        load_reference(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
