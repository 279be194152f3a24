"""The pixel-level tables: mIoU and per-class IoU per dataset, from segmentation run records.

Built by :func:`build_segmentation_tables` for a matrix of ``model.task: segmentation`` cells
(``record["metrics"]["segmentation"]``: mIoU, pixel_acc, mean_acc, per_class_iou, percent):

- ``miou_<dataset>``: one row per setting evaluated on that dataset (``baseline``, ``+FPT (GT)``,
  ``+FPT (LGT)``, and any other varying axis as a column); mIoU, pixel acc, mean acc, Params,
  GFLOPs, latency; Δ mIoU against the dataset's ``baseline`` row with Welch's p over seeds, as
  the detection tables do it (:mod:`.significance`), and the paper's stated gain beside the
  row whose records are the setting of a ``segmentation_gains`` entry (table, backbone, head,
  neck, split and schedule: :mod:`.reference`), if any.
- ``per_class_iou_<dataset>``: one row per class, one column per setting; IoU mean ± std over
  the seeds that score the class (a null IoU: the class neither in the ground truth nor
  predicted, left out, footnoted where it leaves fewer seeds than the setting has).
- ``complexity``: as for detection (:mod:`.tables`), the neck being the pyramid + FPT.

``<dataset>``: data.test without its split (:func:`~fptbench.report.rows.dataset_key`).
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from fptbench.report import significance
from fptbench.report.reference import Reference
from fptbench.report.rows import COLUMNS, SEG_METRICS, SEG_NECKS, Layout, Row, _key, class_iou_column, stats, values
from fptbench.report.tables import (
    DASH,
    NA,
    Table,
    _Builder,
    _common,
    _complexity,
    _dataset_words,
    _delta,
    _fmt_stat,
    _p_column,
    _profile_words,
    _reference_notes,
    _welch,
)

__all__ = ["build_segmentation_tables"]

_COST = ("params_m", "gflops", "latency_ms")


def _neck_rank(row: Row) -> int:
    return SEG_NECKS.index(row.neck) if row.neck in SEG_NECKS else len(SEG_NECKS)


def _by_dataset(layout: Layout) -> list[tuple[str | None, list[Row]]]:
    """The rows grouped by dataset, datasets in matrix order, each group in SEG_NECKS order
    within its other settings (the first seen first)."""
    groups: dict[str | None, list[Row]] = {}
    for row in sorted(layout.rows, key=lambda r: r.order):
        groups.setdefault(row.dataset, []).append(row)
    out = []
    for dataset, rows in groups.items():
        context = _varying(layout, rows)
        firsts = {a: {} for a in context}
        for row in rows:
            for a in context:
                firsts[a].setdefault(_key(row.axes.get(a)), row.order)
        rows = sorted(rows, key=lambda r: (tuple(firsts[a][_key(r.axes.get(a))] for a in context), _neck_rank(r), r.order))
        out.append((dataset, rows))
    return out


def _varying(layout: Layout, rows: list[Row]) -> list[str]:
    """The context axes (not the neck's) with more than one value among ``rows``."""
    return [a for a in layout.context_axes if len({_key(r.axes.get(a)) for r in rows}) > 1]


def _stem(dataset: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", dataset) if dataset else "unknown"


def _headers(rows: list[Row], context: list[str]) -> list[str]:
    """A unique column header per row: its name, with its other settings where names repeat."""
    names = [row.name for row in rows]
    out = []
    for row, name in zip(rows, names):
        extra = [str(row.axes.get(a)) for a in context if a in row.axes]
        out.append(f"{name} ({', '.join(extra)})" if names.count(name) > 1 and extra else name)
    return out


def _seg_notes(rows: list[Row]) -> str:
    return (f"mIoU: mean over classes of the IoU, TP / (TP + FP + FN) over every scored pixel of {_dataset_words(rows)}, "
            "classes neither in the ground truth nor predicted left out; pixel acc: share of the scored pixels "
            "predicted right; mean acc: mean over the classes in the ground truth of TP / (TP + FN); all in percent, "
            "as fptbench.evaluation.segmentation computes them. Mean ± sample standard deviation over seeds, "
            "n = seeds with a complete record (n = 1: the one run, no ±).")


def _miou_table(layout: Layout, dataset: str | None, rows: list[Row], reference: Reference) -> Table:
    """Descriptors, n, mIoU, pixel acc, mean acc, Params, GFLOPs, latency (each followed by a paper
    column where the reference knows a value), then Δ mIoU against the baseline row, the paper's
    stated gain and Welch's p."""
    context = _varying(layout, rows)
    title = f"Semantic segmentation on {dataset or 'an unnamed dataset'}: mIoU of the baseline and FPT"
    b = _Builder(f"miou_{_stem(dataset)}", title, rows)
    _common(b, [("neck", lambda r: r.name)] + [(a, (lambda a: lambda r: r.axes.get(a))(a)) for a in context])
    means: dict[str, list[float | None]] = {}
    for column in SEG_METRICS + _COST:
        means[column] = b.stat(column)
        b.reference(column, f"paper {COLUMNS[column].header}", reference.values("tables", "segmentation", rows, column),
                    COLUMNS[column].kind)
    refs = [layout.bfp_for(row) for row in rows]
    with_delta = any(r is not None for r in refs)
    shows_gain = False
    sizes: list[tuple[int, int]] = []
    if with_delta:
        ps = _welch(rows, refs, "seg.mIoU", sizes)
        _delta(b, rows, refs, means["seg.mIoU"], "seg.mIoU", ps, "Δ mIoU", "delta_seg.mIoU", percent=False)
        entries = reference.lookup("segmentation_gains", "segmentation", rows, "seg.mIoU")
        b.reference("gain_seg.mIoU", "paper Δ mIoU", [None if e is None else e.values["seg.mIoU"] for e in entries],
                    "delta")
        shows_gain = "paper_gain_seg.mIoU" in b.data
        for i, entry in enumerate(entries):
            if entry is not None:
                b.footnote(i, "paper Δ mIoU", f"the gain the paper states for {entry.describe()}"
                           + (f" ({entry.where})" if entry.where else "")
                           + ", in mIoU points (its FPT over its own baseline).")
        _p_column(b, rows, refs, ps, "p Δ mIoU", "p_delta_seg.mIoU")
    b.notes.append(_seg_notes(rows))
    if with_delta:
        ctx = ", ".join(layout.context_axes)
        b.notes.append("Δ mIoU: difference of the mean mIoU from the baseline row (no FPT)"
                       + (f" with the same {ctx}" if ctx else "") + ", in mIoU points; ref = the baseline row itself.")
        b.notes.append(significance.note(sizes, "the baseline row"))
    b.notes.append("Params (M): the whole model, millions; GFLOPs = 2 × GMACs (fvcore, with our attention handles), "
                   f"the whole model with its auxiliary head; GFLOPs and latency: {_profile_words(rows)}.")
    b.notes.append(f"{DASH}: no complete record (footnote). {NA}: no such value in the records (no pixel scored, "
                   "or no baseline row to compare with).")
    if shows_gain:
        setting = f", {reference.seg_gains_setting.rstrip('.')}" if reference.seg_gains_setting else ""
        b.notes.append(f"paper Δ mIoU: the gain the paper states{setting}. Shown only beside the row whose records "
                       "are the paper's setting (footnote); compare it with Δ mIoU, not with mIoU.")
    b.notes += _reference_notes(reference, "segmentation", rows, gains="segmentation_gains" if with_delta else None,
                                dataset=dataset)
    return b.table()


def _per_class_table(layout: Layout, dataset: str | None, rows: list[Row]) -> Table:
    """One row per class (the classes of the records' per_class_iou, in their order), one column
    per setting: IoU mean ± std over the seeds that score the class."""
    classes: list[str] = []
    for row in rows:
        for record in row.records:
            for name in ((record.get("metrics") or {}).get("segmentation") or {}).get("per_class_iou") or {}:
                if name not in classes:
                    classes.append(name)
    headers = _headers(rows, _varying(layout, rows))
    display: dict[str, list[str]] = {"class": list(classes)}
    data: dict[str, list[Any]] = {"class": list(classes)}
    footnotes: list[str] = []
    marks: dict[tuple[int, str], list[int]] = {}
    for row, header in zip(rows, headers):
        cells, means, stds, counts = [], [], [], []
        for i, name in enumerate(classes):
            mean, std, n = stats(values(row, class_iou_column(name)))
            means.append(mean)
            stds.append(std)
            counts.append(n)
            cells.append(DASH if row.n == 0 else _fmt_stat(mean, std, "ap"))
            if 0 < row.n and n < row.n:
                text = (f"{header}: scored in {n} of its {row.n} seeds; the others' IoU is null (the class neither "
                        "in the ground truth nor predicted), left out.")
                if text not in footnotes:
                    footnotes.append(text)
                marks[(i, header)] = [footnotes.index(text) + 1]
        display[header] = cells
        data[header] = means
        data[f"{header}_std"] = stds
        data[f"{header}_n"] = counts
    notes = [f"IoU per class, TP / (TP + FP + FN) in percent over every scored pixel of {_dataset_words(rows)}; "
             "mean ± sample standard deviation over the seeds that score the class (n = 1: the one run, no ±). "
             "mIoU (the miou table) is the mean of a seed's class IoUs, so the mean of this column is not it "
             "where seeds leave out different classes."]
    for row, header in zip(rows, headers):
        seeds = "; ".join(f"run {c['run_id']}: {c['state']}" + (f" ({c['error']})" if c.get("error") else "")
                          for c in row.incomplete)
        if row.n == 0:
            notes.append(f"{header}: {DASH}, no complete record ({seeds}).")
        elif row.incomplete:
            notes.append(f"{header}: {row.n} of {row.n + len(row.incomplete)} seeds ({seeds}).")
    notes.append(f"{NA}: no seed scores the class (null in every record).")
    title = f"Per-class IoU on {dataset or 'an unnamed dataset'}"
    return Table(f"per_class_iou_{_stem(dataset)}", title, pd.DataFrame(display), pd.DataFrame(data),
                 marks, footnotes, notes, rows)


def build_segmentation_tables(layout: Layout, reference: Reference) -> list[Table]:
    """For each dataset in matrix order its mIoU table and its per-class IoU table (where some
    record holds class IoUs), then the complexity table of every row."""
    tables = []
    for dataset, rows in _by_dataset(layout):
        tables.append(_miou_table(layout, dataset, rows, reference))
        per_class = _per_class_table(layout, dataset, rows)
        if len(per_class.display):  # no record of this dataset holds a class yet
            tables.append(per_class)
    tables.append(_complexity(layout, reference))
    return tables
