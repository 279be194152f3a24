"""build_report's files: Markdown, CSV and LaTeX tables that parse, and an index that links them all."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from fptbench.errors import UsageError
from fptbench.report import build_report

from .conftest import EXPERIMENT


def test_returns_paths_and_markdown(ablation_report):
    out = ablation_report["index"].parent
    assert ablation_report["index"].name == "index.md"
    assert set(ablation_report["tables"]) == {"ablation", "complexity"}
    names = sorted(p.relative_to(out).as_posix() for p in ablation_report["files"])
    assert names == sorted([
        "index.md",
        *(f"tables/{t}.{s}" for t in ("ablation", "complexity") for s in ("md", "csv", "tex")),
        *(f"figures/{f}.{s}" for f in ("ap_vs_gflops", "ap_vs_latency", "ablation_bars") for s in ("png", "pdf")),
    ])
    assert all(p.is_file() and p.stat().st_size > 0 for p in ablation_report["files"])
    assert ablation_report["figures"] == [p for p in ablation_report["files"] if p.parent.name == "figures"]


def test_markdown_table_is_well_formed(ablation_report):
    text = (ablation_report["index"].parent / "tables" / "ablation.md").read_text()
    assert text == ablation_report["tables"]["ablation"]
    rows = [line for line in text.splitlines() if line.startswith("|")]
    widths = {len(re.findall(r"(?<!\\)\|", line)) for line in rows}
    assert len(widths) == 1                                   # every line has the same number of cells
    assert len(rows) == 2 + 4                                 # header, rule, BFP +ST +GT FPT
    assert rows[2].startswith("| BFP | 2 |") and rows[4].startswith("| +GT¹ | 0 | – |")
    assert "¹ no complete record: run gt-s0-0badc0de: failed" in text


def test_csv_parses_back_to_the_numbers(ablation_report, ablation):
    df = pd.read_csv(ablation_report["index"].parent / "tables" / "ablation.csv")
    assert list(df["neck"]) == ["BFP", "+ST", "+GT", "FPT"]
    assert list(df["n"]) == [2, 1, 0, 1]
    assert list(df["state"]) == ["done", "done", "failed", "partial"]
    bfp = [r for r in ablation["records"] if r["cell"]["axes"]["ablation"] == "bfp"]
    assert df.loc[0, "params_m"] == pytest.approx(bfp[0]["profile"]["params"] / 1e6)
    assert df.loc[0, "latency_ms"] == pytest.approx(sum(r["profile"]["latency_ms"]["median"] for r in bfp) / 2)
    assert pd.isna(df.loc[2, "bbox.AP"]) and "gt-s0-0badc0de" in df.loc[2, "footnotes"]
    # no paper column: the shipped gain's backbone, head and schedule are not confirmed, so it is of
    # no row (it once stood in the FPT row of these synthetic runs)
    assert not [c for c in df.columns if c.startswith("paper_")]
    cx = pd.read_csv(ablation_report["index"].parent / "tables" / "complexity.csv")
    assert {"params_m", "gflops", "attn_gflops", "latency_ms", "latency_p90_ms", "peak_memory_mb", "input_size"} <= set(cx.columns)


def test_latex_table_is_well_formed(ablation_report):
    text = (ablation_report["index"].parent / "tables" / "ablation.tex").read_text()
    for env in ("table", "tabular", "minipage"):
        assert text.count(rf"\begin{{{env}}}") == text.count(rf"\end{{{env}}}") == 1
    body = text.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 4
    header = text.split(r"\toprule")[1].split(r"\midrule")[0]
    cells = len(re.findall(r"(?<!\\)&", header))
    assert all(len(re.findall(r"(?<!\\)&", line)) == cells for line in body)
    assert body[2].startswith(r"+GT\textsuperscript{1} & 0 & --")
    assert r"$\pm$" in text and r"$\Delta$ box AP (\%)" in text
    assert "±" not in text and "Δ" not in text and "–" not in text   # no raw non-ASCII for pdflatex
    assert text.count("{") == text.count("}")


def test_index_links_every_table_file_and_figure(ablation_report):
    out = ablation_report["index"].parent
    index = ablation_report["index"].read_text()
    links = set(re.findall(r"\]\(([^)]+)\)", index))
    for path in ablation_report["files"]:
        if path.name != "index.md":
            assert path.relative_to(out).as_posix() in links, path
    for png in out.glob("figures/*.png"):
        assert f"![" in index and f"]({png.relative_to(out).as_posix()})" in index
    assert "| BFP | 2 |" in index                             # tables embedded, not only linked
    assert index.startswith(f"# Report: {EXPERIMENT}")
    assert "4 complete run record(s) of 6 expected cell(s)" in index


def test_formats_subset_left_out_records_and_errors(ablation, tmp_path):
    cells = [c for c in ablation["cells"] if not c["run_id"].startswith("st-")]
    result = build_report(ablation["records"], experiment="x", out_dir=tmp_path, cells=cells, formats=["csv"])
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["ablation.csv", "complexity.csv"]
    index = result["index"].read_text()
    assert "## Left out" in index and ablation["records"][2]["cell"]["run_id"] in index
    assert "| +ST |" not in index
    with pytest.raises(UsageError, match="--format: .*'html'"):
        build_report(ablation["records"], experiment="x", out_dir=tmp_path, formats="md,html")
    with pytest.raises(UsageError, match="reference file not found"):
        build_report(ablation["records"], experiment="x", out_dir=tmp_path, reference=tmp_path / "none.yaml")
    with pytest.raises(UsageError, match="no records and no cells"):
        build_report([], experiment="x", out_dir=tmp_path)


BUILD = """
import json, sys
from fptbench.report import build_report
data = json.load(open(sys.argv[1]))
build_report(data["records"], experiment="tiny", out_dir=sys.argv[2], cells=data["cells"])
"""


def test_a_killed_report_leaves_the_old_one_whole_and_the_next_one_replaces_it(tmp_path, ablation):
    """SIGKILL while the new report draws its figures (its tables are written): the old report is
    untouched, file for file; the next report replaces it whole and removes the killed one's folder."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "tiny"
    build_report(ablation["records"][:1], experiment="tiny", out_dir=out, cells=ablation["cells"][:1])
    old = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    data = tmp_path / "records.json"
    data.write_text(json.dumps(ablation))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", BUILD, str(data), str(out)], env=env)
    building = tmp_path / f".tiny.building-{proc.pid}"
    deadline = time.monotonic() + 120
    while not (building / "figures").is_dir():  # tables written, figures being drawn
        assert proc.poll() is None and time.monotonic() < deadline, "the report ended before its figures"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == old
    assert (building / "tables" / "ablation.md").is_file()  # the killed one had written new tables there
    again = build_report(ablation["records"], experiment="tiny", out_dir=out, cells=ablation["cells"])
    assert not building.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["records.json", "tiny"]
    assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted(again["files"])
    assert "from 4 complete run record(s)" in (out / "index.md").read_text()


def test_the_report_replaces_only_a_report_folder(tmp_path, ablation):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    with pytest.raises(UsageError, match="not a report"):
        build_report(ablation["records"], experiment="tiny", out_dir=tmp_path / "notes", cells=ablation["cells"])
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"
