"""Report figures from real run records: PNG and PDF, non-trivial images."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from fptbench.report.figures import bars_figure, scatter_figure
from fptbench.report.rows import collect_rows

FIGURES = ("ap_vs_gflops", "ap_vs_latency", "ablation_bars")


@pytest.mark.parametrize("name", FIGURES)
def test_figures_are_png_and_pdf(ablation_report, name):
    folder = ablation_report["index"].parent / "figures"
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    assert png.stat().st_size > 20_000, "a PNG of a few KB is an empty canvas"
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    gray = image[..., :3].mean(axis=2)
    assert gray.std() > 0.05                                   # drawn, not blank
    assert (gray < 0.5).mean() > 0.005                         # dark ink: text, axes, markers
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 5_000


def test_scatter_has_one_point_per_row_and_skips_rows_without_records(ablation, tmp_path):
    layout = collect_rows(ablation["records"], ablation["cells"])
    files = scatter_figure(layout.rows, "gflops", "GFLOPs", tmp_path / "s", title="t")
    assert [p.name for p in files] == ["s.png", "s.pdf"]
    # without any complete row there is nothing to draw, and nothing is written
    empty = [r for r in layout.rows if r.n == 0]
    assert scatter_figure(empty, "gflops", "GFLOPs", tmp_path / "e", title="t") == []
    assert bars_figure(empty, tmp_path / "b", title="t") == []
    assert not (tmp_path / "e.png").exists() and not (tmp_path / "b.png").exists()


def test_bars_differ_with_the_numbers(ablation, tmp_path):
    """The bar heights come from the records: changing one AP changes the picture."""
    import copy

    layout = collect_rows(ablation["records"])
    a = mpimg.imread(bars_figure(layout.rows, tmp_path / "a", title="t")[0])
    records = copy.deepcopy(ablation["records"])
    records[3]["metrics"]["bbox"]["AP"] = 40.0
    b = mpimg.imread(bars_figure(collect_rows(records).rows, tmp_path / "b", title="t")[0])
    assert a.shape != b.shape or not np.array_equal(a, b)
