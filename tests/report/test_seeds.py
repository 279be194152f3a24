"""Seeds in the report: mean ± std and n per row, Welch's p of each delta against BFP, error bars.

The expected numbers are computed here by hand (mean, sample variance, Welch's t and its
Welch-Satterthwaite degrees of freedom, p from Student's t survival function), not by the
report's helpers, on the seeded ablation of conftest (3, 2 and 3 seeds of known APs).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from scipy.stats import t as student_t

from fptbench.report import build_report
from fptbench.report.figures import draw_bars, draw_scatter
from fptbench.report.reference import load_reference
from fptbench.report.rows import collect_rows
from fptbench.report.significance import welch_p
from fptbench.report.tables import build_tables

from .conftest import SEEDED_AP, set_ap, with_cell

TASK = {"bbox": 0, "segm": 1}


def _mean(xs):
    return sum(xs) / len(xs)


def _var(xs):
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def _welch(a, b):
    """Two-sided p of Welch's t-test, written out."""
    va, vb = _var(a) / len(a), _var(b) / len(b)
    t = (_mean(a) - _mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * student_t.sf(abs(t), df)


def _aps(label, task):
    return [ap[TASK[task]] for ap in SEEDED_AP[label]]


def _ablation(records, cells=None):
    return {t.name: t for t in build_tables(collect_rows(records, cells), load_reference())}["ablation"]


def _at(table, neck):
    (i,) = table.display.index[table.display["neck"] == neck]
    return i


NECK = {"bfp": "BFP", "st": "+ST", "fpt": "FPT"}


def test_mean_std_and_n_over_seeds(seeded):
    table = _ablation(seeded["records"], seeded["cells"])
    for label, neck in NECK.items():
        i = _at(table, neck)
        for task, header in (("bbox", "box AP"), ("segm", "mask AP")):
            xs = _aps(label, task)
            mean, std = _mean(xs), math.sqrt(_var(xs))
            assert table.data.loc[i, f"{task}.AP"] == pytest.approx(mean)
            assert table.data.loc[i, f"{task}.AP_std"] == pytest.approx(std)
            assert table.data.loc[i, f"{task}.AP_n"] == len(xs)
            assert table.display.loc[i, header] == f"{mean:.1f} ± {std:.1f}"
        assert table.display.loc[i, "n"] == str(len(SEEDED_AP[label]))   # st: 2, its failed seed 2 not counted
    assert table.display.loc[_at(table, "BFP"), "box AP"] == "30.1 ± 0.3"  # pinned: 30.0, 30.4, 29.8
    # copies of one profile: the seeds agree exactly, so no '± 0.0' from a rounding residue of the mean
    assert table.data.loc[_at(table, "BFP"), "gflops_std"] == 0.0 and "±" not in table.display.loc[_at(table, "BFP"), "GFLOPs"]


@pytest.mark.parametrize("task, header", [("bbox", "box AP"), ("segm", "mask AP")])
def test_welch_p_of_each_delta_against_bfp(seeded, task, header):
    table = _ablation(seeded["records"], seeded["cells"])
    bfp = _aps("bfp", task)
    marked = {}
    for label in ("st", "fpt"):
        i = _at(table, NECK[label])
        p = _welch(_aps(label, task), bfp)
        assert table.data.loc[i, f"p_delta_{task}.AP"] == pytest.approx(p, rel=1e-9)
        assert table.display.loc[i, f"p Δ {header}"] == ("<0.001" if p < 0.001 else f"{p:.3g}")
        delta = table.display.loc[i, f"Δ {header}"]
        assert delta.rstrip("*") == f"{_mean(_aps(label, task)) - _mean(bfp):+.1f}"
        marked[label] = delta.endswith("*")
        assert marked[label] == (p < 0.05)
    assert marked == {"st": False, "fpt": True}                     # the data were chosen so: one of each
    assert table.display.loc[_at(table, "BFP"), f"p Δ {header}"] == "ref"


def test_footnote_states_test_level_groups_and_power(seeded):
    table = _ablation(seeded["records"], seeded["cells"])
    (note,) = [n for n in table.notes if n.startswith("p: ")]
    assert "Welch's t-test" in note and "equal_var=False" in note and "two-sided" in note
    assert "α = 0.05" in note and "* after a Δ: p < 0.05" in note
    assert "n per group (row vs compared row): 3 vs 3; 2 vs 3." in note   # fpt and st against bfp
    assert "n = 2" in note and "little power" in note
    assert "n/a: no test" in note


def test_single_seed_matrix_shows_no_spread_and_no_test(tiny_runs):
    records = [with_cell(set_ap(tiny_runs[f"{label}-s0"], 30.0 + i, 27.0 + i), f"{label}-s0", {"ablation": label, "seed": 0})
               for i, label in enumerate(("bfp", "st", "fpt"))]
    table = _ablation(records)
    ap_cells = [c for c in table.display.columns if c.startswith(("box ", "mask "))]
    assert not any("±" in str(v) for c in ap_cells for v in table.display[c])
    assert list(table.display["box AP"]) == ["30.0", "31.0", "32.0"]
    assert list(table.display["p Δ box AP"]) == ["ref", "n/a", "n/a"]
    assert list(table.display["p Δ mask AP"]) == ["ref", "n/a", "n/a"]
    assert list(table.display["Δ box AP"]) == ["ref", "+1.0", "+2.0"]       # no mark without a test
    assert table.data["p_delta_bbox.AP"].isna().all()
    assert any("n per group (row vs compared row): 1 vs 1." in n for n in table.notes)


def test_welch_p_is_none_without_two_seeds_or_any_spread():
    assert welch_p([31.0], [30.0, 30.4]) is None
    assert welch_p([31.0, 31.2], [30.0]) is None
    assert welch_p([31.0, 31.0], [30.0, 30.0]) is None          # 0/0 or x/0: no noise to compare with
    assert welch_p([1.0, 1.0], [2.0, 3.0]) == pytest.approx(_welch([1.0, 1.0], [2.0, 3.0]))  # one spread is enough


def test_markdown_latex_and_csv_carry_the_same_numbers(seeded, tmp_path):
    result = build_report(seeded["records"], experiment="seeded", out_dir=tmp_path / "r", cells=seeded["cells"])
    tables = tmp_path / "r" / "tables"
    csv = pd.read_csv(tables / "ablation.csv").set_index("neck")
    fpt, bfp = _aps("fpt", "bbox"), _aps("bfp", "bbox")
    assert csv.loc["FPT", "bbox.AP"] == pytest.approx(_mean(fpt))
    assert csv.loc["FPT", "bbox.AP_std"] == pytest.approx(math.sqrt(_var(fpt)))
    assert csv.loc["FPT", "bbox.AP_n"] == 3 and csv.loc["+ST", "bbox.AP_n"] == 2
    assert csv.loc["FPT", "p_delta_bbox.AP"] == pytest.approx(_welch(fpt, bfp), rel=1e-6)
    assert csv.loc["+ST", "p_delta_segm.AP"] == pytest.approx(_welch(_aps("st", "segm"), _aps("bfp", "segm")), rel=1e-6)
    assert pd.isna(csv.loc["BFP", "p_delta_bbox.AP"])
    markdown = (tables / "ablation.md").read_text()
    assert markdown == result["tables"]["ablation"]
    (line,) = [l for l in markdown.splitlines() if l.startswith("| FPT |")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:3] == ["FPT", "3", "33.2 ± 0.3"]
    assert "+3.1*" in cells and "<0.001" in cells
    assert "- p: two-sided Welch's t-test" in markdown
    latex = (tables / "ablation.tex").read_text()
    assert r"33.2 $\pm$ 0.3" in latex and "+3.1*" in latex and r"$<$0.001" in latex
    assert r"$\alpha$ = 0.05" in latex and "little power" in latex
    assert "α" not in latex and "<0.001" not in latex                   # pdflatex: no raw α, < is ¡ in OT1


def _error_segments(ax):
    """Vertical error bars drawn on ``ax``: [(x, low, high)]."""
    out = []
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            for collection in container.lines[2]:
                for (x0, y0), (x1, y1) in collection.get_segments():
                    if x0 == x1 and y0 != y1:
                        out.append((float(x0), min(y0, y1), max(y0, y1)))
    return out


def test_scatter_has_std_error_bars_per_row(seeded):
    rows = collect_rows(seeded["records"], seeded["cells"]).rows
    fig = draw_scatter(rows, "gflops", "GFLOPs", title="t")
    box, mask = fig.axes[:2]
    for ax, task in ((box, "bbox"), (mask, "segm")):
        bars = sorted((low, high) for _, low, high in _error_segments(ax))
        want = sorted((_mean(xs) - math.sqrt(_var(xs)), _mean(xs) + math.sqrt(_var(xs)))
                      for xs in (_aps(label, task) for label in SEEDED_AP))
        assert bars == [pytest.approx(w) for w in want]
    assert "sample std" in fig.legends[0].get_title().get_text()


def test_bars_have_std_whiskers_and_none_for_one_seed(seeded):
    rows = collect_rows(seeded["records"], seeded["cells"]).rows
    fig = draw_bars(rows, title="t")
    box = fig.axes[0]
    whiskers = {round(x, 6): (low, high) for x, low, high in _error_segments(box)}
    for label in SEEDED_AP:                                          # the box AP bar of each row
        xs = _aps(label, "bbox")
        (bar,) = [p for p in box.patches if p.get_height() == pytest.approx(_mean(xs))]
        x = round(bar.get_x() + bar.get_width() / 2, 6)
        assert whiskers[x] == pytest.approx((_mean(xs) - math.sqrt(_var(xs)), _mean(xs) + math.sqrt(_var(xs))))
    assert "sample std" in fig.legends[0].get_title().get_text()
    one_seed = [r for r in seeded["records"] if r["cell"]["axes"]["seed"] == 0]
    fig = draw_bars(collect_rows(one_seed).rows, title="t")
    assert not any(isinstance(c, ErrorbarContainer) for ax in fig.axes for c in ax.containers)
    assert len(fig.axes[0].patches) > 0
