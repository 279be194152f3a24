"""Report figures (seaborn on matplotlib's Agg canvas), each written as PNG and PDF.

- ``ap_vs_gflops``, ``ap_vs_latency``: one point per report row (seeds pooled: the mean, with
  ± sample-std error bars when n > 1), labelled with the row's name; box AP and, with a mask
  head, mask AP side by side. Segmentation rows: mIoU, one panel per dataset (``miou_vs_...``).
- ``<table>_bars``: the ablation (and the design table) as grouped bars, AP .. APl per row,
  bars = seed means, whiskers = sample std over seeds (n > 1).

The numbers are those of the tables (:func:`~fptbench.report.rows.stats`); :func:`draw_scatter`
and :func:`draw_bars` return the figure, :func:`scatter_figure` and :func:`bars_figure` write it.

No pyplot: each figure is a :class:`matplotlib.figure.Figure` rendered by the Agg canvas, so
nothing global (backend, open figures) changes in the caller's process.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fptbench.fileio import write_bytes_atomic
from fptbench.report.rows import AP_NAMES, NECKS, SEG_NECKS, Row, stats, values

__all__ = ["draw_scatter", "scatter_figure", "draw_bars", "bars_figure", "ERROR_BARS", "FORMATS"]

FORMATS = ("png", "pdf")
ERROR_BARS = "± 1 sample std (ddof 1) over seeds; none where n = 1"
"""What every error bar in the report's figures is (legends and captions say it)."""
_DPI = 150


def _save(fig: Figure, stem: Path) -> list[Path]:
    FigureCanvasAgg(fig)
    out = []
    for fmt in FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=_DPI, bbox_inches="tight")
        out.append(write_bytes_atomic(stem.with_suffix(f".{fmt}"), buf.getvalue()))
    return out


def _tasks(rows: Sequence[Row]) -> list[tuple[str, str]]:
    tasks = [("bbox", "box AP")]
    if any(values(row, "segm.AP") for row in rows):
        tasks.append(("segm", "mask AP"))
    return tasks


def _scatter_panels(rows: Sequence[Row]) -> list[tuple[str, str, str, set[int]]]:
    """(y column, y word, panel title word, ids of the rows it shows) per panel: box AP (and mask
    AP) of detection rows; mIoU of segmentation rows, one panel per dataset."""
    if any(row.task == "segmentation" for row in rows):
        datasets: list[str | None] = []
        for row in rows:
            if row.dataset not in datasets:
                datasets.append(row.dataset)
        return [("seg.mIoU", "mIoU", f"{d}: mIoU" if len(datasets) > 1 else "mIoU",
                 {id(r) for r in rows if r.dataset == d}) for d in datasets]
    return [(f"{task}.AP", word, word, {id(r) for r in rows}) for task, word in _tasks(rows)]


_SEG_ONLY = set(SEG_NECKS) - set(NECKS)


def _palette(labels: Sequence[str], necks: Sequence[str | None] | None = None) -> dict[str, tuple]:
    """A colour per label; a detection neck keeps its colour across figures when it names one
    label only (segmentation necks: colours in their order)."""
    colours = sns.color_palette("colorblind", n_colors=max(len(NECKS) + 1, len(labels)))
    if necks is not None and len(set(necks)) == len(labels) and not _SEG_ONLY & set(necks):
        return {label: colours[NECKS.index(n) if n in NECKS else len(NECKS)] for label, n in zip(labels, necks)}
    return {label: colours[i] for i, label in enumerate(labels)}


def _ap_limits(ax, top: float) -> None:
    """AP axes from 0 (a little below, so points on 0 show whole) to the top value plus 15%."""
    high = max(1.0, top * 1.15)
    ax.set_ylim(-0.02 * high, high)


def _legend(fig: Figure, axes, title: str | None) -> None:
    """One legend for the figure, under the panels, instead of one over each panel's data."""
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, title=title, loc="upper center", bbox_to_anchor=(0.5, 0.02),
                   ncols=min(len(labels), 6), fontsize=8, title_fontsize=8, frameon=False)


def _hue_order(rows: Sequence[Row]) -> list[str]:
    necks = {row.neck or "?" for row in rows}
    known = list(NECKS) + [n for n in SEG_NECKS if n not in NECKS]
    return [n for n in known if n in necks] + sorted(necks - set(known))


def _place_labels(ax, xs: list[float], ys: list[float], labels: list[str]) -> None:
    """Annotate each point right of it; a label that would overlap a point or an earlier label
    moves up until it is clear, with a thin leader line back to its point. Sizes in points,
    estimated for 8-pt text [ours]."""
    ax.get_xlim(), ax.get_ylim()  # settle autoscaling before reading the transform
    to_pt = 72.0 / ax.figure.dpi
    pts = [tuple(p * to_pt) for p in ax.transData.transform(np.column_stack([xs, ys]))]
    boxes = [(px - 4, px + 4, py - 4, py + 4) for px, py in pts]  # the markers
    for (px, py), x, y, label in sorted(zip(pts, xs, ys, labels), key=lambda p: (p[0][1], p[0][0])):
        width, height, dx, dy = 5.0 * len(label) + 2, 10.0, 6.0, 4.0
        while True:
            x0, y0 = px + dx, py + dy
            clash = [b for b in boxes if x0 < b[1] and x0 + width > b[0] and y0 < b[3] and y0 + height > b[2]]
            if not clash:
                break
            dy = max(b[3] for b in clash) - py + 1
        boxes.append((x0, x0 + width, y0, y0 + height))
        ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8, ha="left", va="bottom",
                    arrowprops=dict(arrowstyle="-", color="0.6", lw=0.6, shrinkA=0, shrinkB=4) if dy > 8 else None)


def draw_scatter(rows: Sequence[Row], x_column: str, x_label: str, *, title: str) -> Figure | None:
    """AP (segmentation rows: mIoU, a panel per dataset) against ``x_column`` (e.g. ``gflops``,
    ``latency_ms``), one labelled point per row (seed means) with :data:`ERROR_BARS` on both axes
    where n > 1.

    Rows without a value on either axis are left out (the caller lists them). ``None`` when no
    row has a point.
    """
    panels = _scatter_panels(rows)
    points = []
    for row in rows:
        x, x_std, _ = stats(values(row, x_column))
        for k, (column, _, _, shown) in enumerate(panels):
            y, y_std, n = stats(values(row, column))
            # a panel of one dataset: the row's name, unless two of its rows share it
            label = row.name if len(shown) < len(rows) and [r.name for r in rows if id(r) in shown].count(row.name) == 1 \
                else row.label
            if id(row) in shown and x is not None and y is not None:
                points.append({"task": k, "label": label, "neck": row.neck or "?", "x": x,
                               "x_std": x_std, "y": y, "y_std": y_std, "n": n})
    if not points:
        return None
    df = pd.DataFrame(points)
    hue_order = _hue_order(rows)
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(5.2 * len(panels), 4.2))
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for k, (ax, (_, word, heading, _)) in enumerate(zip(axes, panels)):
            part = df[df["task"] == k]
            if part.empty:
                ax.set_visible(False)
                continue
            spread = part[part["n"] > 1]  # one seed has no spread: no bar rather than a bar of 0
            if not spread.empty:
                ax.errorbar(spread["x"], spread["y"], xerr=spread["x_std"].fillna(0), yerr=spread["y_std"],
                            fmt="none", ecolor="0.6", elinewidth=1, capsize=2, zorder=1)
            sns.scatterplot(data=part, x="x", y="y", hue="neck", hue_order=[h for h in hue_order if h in set(part["neck"])],
                            palette=_palette(hue_order, hue_order), s=55, ax=ax, zorder=2)
            ax.margins(x=0.25)
            low = float((part["y"] - part["y_std"].fillna(0)).min())
            high = float((part["y"] + part["y_std"].fillna(0)).max())
            pad = max(0.25 * (high - low), 0.5)  # [ours] zoom on the points; AP differences are small
            ax.set_ylim(max(low - pad, -0.05 * pad), high + 1.5 * pad)
            ax.set_xlabel(x_label)
            ax.set_ylabel(f"{word} (%)")
            ax.set_title(f"{heading} vs {x_label}", fontsize=10)
            _place_labels(ax, list(part["x"]), list(part["y"]), list(part["label"]))
        _legend(fig, axes, f"neck; error bars: {ERROR_BARS}")
        fig.suptitle(title, fontsize=11)
    return fig


def scatter_figure(rows: Sequence[Row], x_column: str, x_label: str, stem: Path, *, title: str) -> list[Path]:
    """:func:`draw_scatter` written to ``stem``.png and .pdf; returns the paths, ``[]`` when nothing is drawn."""
    fig = draw_scatter(rows, x_column, x_label, title=title)
    return [] if fig is None else _save(fig, stem)


def draw_bars(rows: Sequence[Row], *, title: str) -> Figure | None:
    """Grouped bars: AP, AP50, AP75, APs, APm, APl on the x axis, one bar per row, box and mask
    panels. Bar = mean over seeds, whisker = :data:`ERROR_BARS` (n > 1). ``None`` when no values."""
    tasks = _tasks(rows)
    drawn = [row for row in rows if any(values(row, f"{task}.{name}") for task, _ in tasks for name in AP_NAMES)]
    if not drawn:
        return None
    palette = _palette([row.label for row in drawn], [row.neck for row in drawn])
    width = 0.8 / len(drawn)
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(max(6.0, 0.5 * len(drawn) * len(AP_NAMES) / 2 + 3) * len(tasks) * 0.8, 4.2))
        axes = fig.subplots(1, len(tasks), squeeze=False)[0]
        for ax, (task, word) in zip(axes, tasks):
            top = 0.0
            for k, row in enumerate(drawn):
                points = [(i - 0.4 + width * (k + 0.5), *stats(values(row, f"{task}.{name}"))[:2])
                          for i, name in enumerate(AP_NAMES)]  # (x, mean, std)
                points = [p for p in points if p[1] is not None]
                ax.bar([p[0] for p in points], [p[1] for p in points], width, color=palette[row.label], label=row.label)
                spread = [p for p in points if p[2] is not None]
                if spread:
                    ax.errorbar([p[0] for p in spread], [p[1] for p in spread], yerr=[p[2] for p in spread],
                                fmt="none", ecolor="0.2", elinewidth=1, capsize=3)
                top = max([top] + [p[1] + (p[2] or 0.0) for p in points])
            ax.set_xticks(range(len(AP_NAMES)), AP_NAMES)
            ax.set_ylabel(f"{word.split()[0]} AP (%)")
            ax.set_title(word.split()[0], fontsize=10)
            _ap_limits(ax, top)
        _legend(fig, axes, f"bars: mean over seeds; whiskers: {ERROR_BARS}")
        fig.suptitle(title, fontsize=11)
    return fig


def bars_figure(rows: Sequence[Row], stem: Path, *, title: str) -> list[Path]:
    """:func:`draw_bars` written to ``stem``.png and .pdf; returns the paths, ``[]`` when nothing is drawn."""
    fig = draw_bars(rows, title=title)
    return [] if fig is None else _save(fig, stem)
