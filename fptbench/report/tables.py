"""The paper's tables, built from report rows with pandas: numbers for CSV, strings for Markdown/LaTeX.

Four detection tables, each built only where it applies (:func:`build_tables`; a segmentation
matrix gets :mod:`.segmentation`'s mIoU and per-class tables and this complexity table):

- ``ablation``: BFP, +ST, +GT, +RT, the pairs, FPT (the neck, from fpt.st/gt/rt); box and mask
  AP, AP50, AP75, APs, APm, APl; Params, GFLOPs, latency; delta against the BFP row. Built when
  the necks vary and a BFP row exists (a record or an expected cell), unless the backbone x
  head table already says all of it (only BFP and FPT).
- ``backbone_head``: model.backbone x model.head x neck, same columns. Built when either varies.
- ``design``: one row per combination of the varying axes. Built when some axis changes the
  model without changing neck, backbone or head (gt.similarity, st.normalizer ...), or when no
  other AP table applies.
- ``complexity``: Params (M), GFLOPs, neck and attention GFLOPs, latency median / p90, neck
  latency, peak memory, input size, device (``record["profile"]``). Always.

A cell holds ``mean ± std`` over seeds (sample std, ddof 1) with ``n`` in its own column; one
seed: the mean alone. Each Δ (against BFP, or the matrix's reference row) has a ``p Δ ...``
column, Welch's t-test of the two rows' seeds (:mod:`.significance`), and a ``*`` where
p < 0.05, with a note under the table saying the test, the level and n per group; n/a where
either row has fewer than 2 seeds. A row whose cells have no complete record is kept: dashes,
and a numbered footnote with each run id and its state. ``n/a``: the records hold no such value.
A ``paper ...`` column holds the reference file's value (:mod:`.reference`) beside the one row
whose records match the table, backbone, head, neck, split and schedule of its entry; the notes
name the values the file gives but sets beside no row (a setting not confirmed, or ambiguous).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from fptbench.report import significance
from fptbench.report.reference import Reference
from fptbench.report.rows import AP_NAMES, COLUMNS, DELTA_COLUMNS, NECKS, Layout, Row, stats, values

__all__ = ["Table", "build_tables", "fmt_number", "DASH", "NA"]

DASH = "–"
"""A cell of a row with no complete record (footnoted)."""
NA = "n/a"
"""A value the records do not hold (no mask head, COCOeval's -1, no BFP row to compare with)."""

_COST = ("params_m", "gflops", "latency_ms")
_COMPLEXITY = ("params_m", "gflops", "neck_gflops", "attn_gflops", "latency_ms", "latency_p90_ms",
               "neck_latency_ms", "peak_memory_mb")


@dataclass
class Table:
    """One report table.

    Attributes:
        name: file stem (``ablation``, ``backbone_head``, ``design``, ``complexity``).
        title: one line.
        display: strings, one row per report row (Markdown / LaTeX).
        data: numbers, one row per report row (CSV): ``<column>`` mean, ``<column>_std``,
            ``<column>_n`` (seeds with the value), ``paper_<column>``, ``delta_<column>``,
            ``delta_pct_<column>``, ``p_delta_<column>`` (Welch's p, empty without a test),
            ``delta_ref_<column>``, ``p_delta_ref_<column>``, ``n``, ``seeds``, ``state``,
            ``run_ids``, ``footnotes``.
        marks: ``(row position, display column) -> footnote numbers`` (1-based).
        footnotes: numbered footnotes, in order.
        notes: unnumbered notes (what the numbers are).
        rows: the report rows, in table order.
    """

    name: str
    title: str
    display: pd.DataFrame
    data: pd.DataFrame
    marks: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    footnotes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# numbers as text

def _decimals(value: float, kind: str) -> int:
    if kind in ("ap", "params", "delta"):
        return 1
    if value == 0 or not math.isfinite(value):
        return 1
    return max(0, min(4, 2 - math.floor(math.log10(abs(value)))))  # 3 significant digits


def fmt_number(value: float | None, kind: str, *, decimals: int | None = None) -> str:
    """``value`` as the table prints it: AP and Params 1 decimal, others 3 significant digits."""
    if value is None or not math.isfinite(value):
        return NA
    d = _decimals(value, kind) if decimals is None else decimals
    return f"{value:.{d}f}"


def _fmt_stat(mean: float | None, std: float | None, kind: str) -> str:
    """``mean ± std`` (std with the mean's decimals); the mean alone for one seed, and for a count
    (params, FLOPs) that every seed shares exactly."""
    if mean is None:
        return NA
    d = _decimals(mean, kind)
    if std is None or (std == 0 and kind != "ap"):
        return fmt_number(mean, kind, decimals=d)
    return f"{fmt_number(mean, kind, decimals=d)} ± {std:.{d}f}"


# ---------------------------------------------------------------------------------------------
# one table

class _Builder:
    """Accumulates display strings, numbers and footnotes column by column."""

    def __init__(self, name: str, title: str, rows: list[Row]):
        self.name, self.title, self.rows = name, title, rows
        self.display: dict[str, list[str]] = {}
        self.data: dict[str, list[Any]] = {}
        self.footnotes: list[str] = []
        self.marks: dict[tuple[int, str], list[int]] = defaultdict(list)
        self.row_notes: list[list[str]] = [[] for _ in rows]
        self.notes: list[str] = []

    def footnote(self, i: int, column: str, text: str) -> None:
        if text not in self.footnotes:
            self.footnotes.append(text)
        number = self.footnotes.index(text) + 1
        if number not in self.marks[(i, column)]:
            self.marks[(i, column)].append(number)
        self.row_notes[i].append(text)

    def text(self, header: str, cells: list[str], data: list[Any] | None = None, data_name: str | None = None) -> None:
        self.display[header] = cells
        self.data[data_name or header] = cells if data is None else data

    def stat(self, column: str, header: str | None = None) -> list[float | None]:
        """Mean ± std of ``column`` per row (CSV: mean, std and n, the seeds that hold a value); returns the means."""
        col = COLUMNS[column]
        means, stds, counts, cells = [], [], [], []
        for row in self.rows:
            mean, std, n = stats(values(row, column))
            means.append(mean)
            stds.append(std)
            counts.append(n)
            cells.append(DASH if row.n == 0 else _fmt_stat(mean, std, col.kind))
        self.display[header or col.header] = cells
        self.data[column] = means
        self.data[f"{column}_std"] = stds
        self.data[f"{column}_n"] = counts
        return means

    def reference(self, column: str, header: str, known: list[float | None], kind: str) -> None:
        """A ``paper ...`` column beside the last one, only when the paper gives a value somewhere."""
        if all(v is None for v in known):
            return
        self.display[header] = ["" if v is None else fmt_number(v, kind) for v in known]
        self.data[f"paper_{column}"] = known

    def table(self) -> Table:
        self.data["footnotes"] = ["; ".join(notes) for notes in self.row_notes]
        return Table(self.name, self.title, pd.DataFrame(self.display), pd.DataFrame(self.data),
                     dict(self.marks), self.footnotes, self.notes, self.rows)


def _text(value: Any) -> str:
    if value is None:
        return "?"
    return value if isinstance(value, str) else str(value)


def _row_state(b: _Builder, i: int, row: Row, column: str) -> str:
    """Footnote the row's cells that have no complete record; its state for the CSV."""
    if not row.incomplete:
        return "done"
    runs = "; ".join(f"run {c['run_id']}: {c['state']}" + (f" ({c['error']})" if c.get("error") else "")
                     for c in row.incomplete)
    if row.n == 0:
        b.footnote(i, column, f"no complete record: {runs}")
        states = sorted({c["state"] for c in row.incomplete})
        return "/".join(states)
    total = row.n + len(row.incomplete)
    b.footnote(i, column, f"{row.n} of {total} seeds: {runs}")
    return "partial"


def _common(b: _Builder, descriptors: list[tuple[str, Callable[[Row], Any]]]) -> None:
    """Descriptor columns, ``n``; seeds, state and run ids (CSV only); the rows' footnotes."""
    first = descriptors[0][0]
    for header, get in descriptors:
        raw = [get(row) for row in b.rows]
        b.text(header, [_text(v) for v in raw], raw)
    b.text("n", [str(row.n) for row in b.rows], [row.n for row in b.rows])
    states = [_row_state(b, i, row, first) for i, row in enumerate(b.rows)]
    b.data["seeds"] = [";".join(_text(s) for s in row.seeds) for row in b.rows]
    b.data["state"] = states
    b.data["run_ids"] = [";".join([r["cell"]["run_id"] for r in row.records] + [c["run_id"] for c in row.incomplete])
                         for row in b.rows]


def _has_masks(rows: list[Row]) -> bool:
    return any((r.get("metrics") or {}).get("segm") for row in rows for r in row.records) or any(
        row.head == "mask_rcnn" for row in rows)


def _ap_table(name: str, title: str, layout: Layout, rows: list[Row],
              descriptors: list[tuple[str, Callable[[Row], Any]]], reference: Reference) -> Table:
    """Descriptors, n, box (and mask) AP..APl, Params, GFLOPs, latency, then Δ box/mask AP against
    the BFP row of the same context (when there is one) with Welch's p, each metric followed by its
    paper column (and each Δ by the paper's relative gain) where the reference file has an entry
    of table ``name`` whose setting is that row's (:meth:`Reference.lookup`)."""
    b = _Builder(name, title, rows)
    _common(b, descriptors)
    metrics = [f"bbox.{m}" for m in AP_NAMES] + ([f"segm.{m}" for m in AP_NAMES] if _has_masks(rows) else [])
    means: dict[str, list[float | None]] = {}
    for column in metrics + list(_COST):
        means[column] = b.stat(column)
        b.reference(column, f"paper {COLUMNS[column].header}", reference.values("tables", name, rows, column),
                    COLUMNS[column].kind)
    bfp = [layout.bfp_for(row) for row in rows]
    with_delta = any(r is not None for r in bfp)
    sizes: list[tuple[int, int]] = []
    if with_delta:
        for column in DELTA_COLUMNS:
            if column not in means:
                continue
            word = COLUMNS[column].header
            ps = _welch(rows, bfp, column, sizes)
            _delta(b, rows, bfp, means[column], column, ps, f"Δ {word}", f"delta_{column}", percent=True)
            gains = reference.values("relative_gains", name, rows, column)
            b.reference(f"gain_pct_{column}", f"paper Δ {word} (%)",
                        [None if column.startswith("segm") and row.head == "faster_rcnn" else gain
                         for row, gain in zip(rows, gains)], "delta")
            _p_column(b, rows, bfp, ps, f"p Δ {word}", f"p_delta_{column}")
    versus = [layout.compared_row(row) for row in rows] if name == "design" else []
    with_versus = any(r is not None for r in versus)
    if with_versus:
        for column in DELTA_COLUMNS:
            if column in means:
                header = f"Δ {COLUMNS[column].header} vs ref"
                ps = _welch(rows, versus, column, sizes)
                _delta(b, rows, versus, means[column], column, ps, header, f"delta_ref_{column}", percent=False)
                _p_column(b, rows, versus, ps, f"p {header}", f"p_delta_ref_{column}")
    delta_notes = []
    if with_delta:
        delta_notes.append(_bfp_note(layout))
    if with_versus:
        setting = ", ".join(f"{a}={_text(v)}" for a, v in layout.compare_to.items())
        delta_notes.append(f"Δ … vs ref: difference of the mean from the matrix's reference row ({setting}"
                           + (" with the same other settings" if len(layout.varying) > len(layout.compare_to) else "")
                           + "); ref = that row itself.")
    if with_delta or with_versus:
        against = " and ".join(w for w, on in (("the BFP row (Δ)", with_delta), ("the reference row (Δ … vs ref)", with_versus)) if on)
        delta_notes.append(significance.note(sizes, against))
    shows_gain = any(f"paper_gain_pct_{c}" in b.data for c in DELTA_COLUMNS)
    b.notes += _ap_notes(layout, rows, delta_notes)
    b.notes += _reference_notes(reference, name, rows, gains="relative_gains" if with_delta else None,
                                shows_gain=shows_gain)
    return b.table()


def _welch(rows: list[Row], refs: list[Row | None], column: str, sizes: list[tuple[int, int]]) -> list[float | None]:
    """Welch's p of each row's seeds against its ``refs`` row's seeds on ``column`` (None: no test, or
    the reference row itself); appends ``(n row, n ref)`` to ``sizes`` for every delta that is shown."""
    ps = []
    for row, ref in zip(rows, refs):
        mine, theirs = values(row, column), (values(ref, column) if ref is not None and ref is not row else [])
        if mine and theirs:
            sizes.append((len(mine), len(theirs)))
        ps.append(significance.welch_p(mine, theirs) if mine and theirs else None)
    return ps


def _delta(b: _Builder, rows: list[Row], refs: list[Row | None], mine: list[float | None], column: str,
           ps: list[float | None], header: str, data_name: str, *, percent: bool) -> None:
    """A Δ column (and with ``percent`` a Δ (%) one): each row's mean minus its ``refs`` row's mean,
    marked where its Welch ``ps`` is below the level; ``ref`` in the reference row itself, n/a
    where either mean is unknown."""
    diffs, pcts, cells, pct_cells = [], [], [], []
    for i, row in enumerate(rows):
        ref = refs[i]
        base = stats(values(ref, column))[0] if ref is not None else None
        diff = None if mine[i] is None or base is None else mine[i] - base
        pct = None if diff is None or not base else 100.0 * diff / base
        diffs.append(diff)
        pcts.append(pct)
        if row.n == 0:
            cell = pct_cell = DASH
        elif ref is row:
            cell = pct_cell = "ref" if mine[i] is not None else NA
        else:
            mark = significance.MARK if ps[i] is not None and ps[i] < significance.ALPHA else ""
            cell = NA if diff is None else f"{diff:+.1f}{mark}"
            pct_cell = NA if pct is None else f"{pct:+.1f}"
        cells.append(cell)
        pct_cells.append(pct_cell)
    b.text(header, cells, diffs, data_name)
    if percent:
        b.text(f"{header} (%)", pct_cells, pcts, data_name.replace("delta_", "delta_pct_", 1))


def _p_column(b: _Builder, rows: list[Row], refs: list[Row | None], ps: list[float | None],
              header: str, data_name: str) -> None:
    """The Welch p of each delta: ``ref`` in the reference row, n/a where no test applies."""
    cells = [DASH if row.n == 0 else "ref" if ref is row else NA if p is None else significance.fmt_p(p)
             for row, ref, p in zip(rows, refs, ps)]
    b.text(header, cells, ps, data_name)


def _context_words(layout: Layout) -> str:
    return ", ".join(layout.context_axes)


def _dataset_words(rows: list[Row]) -> str:
    seen = []
    for row in rows:
        for r in row.records:
            d = r.get("dataset") or {}
            text = f"{d.get('name')} ({d.get('images')} images)" if d.get("images") is not None else str(d.get("name"))
            if text not in seen:
                seen.append(text)
    return ", ".join(seen) or "the evaluation set"


def _profile_words(rows: list[Row]) -> str:
    sizes, devices, runs = [], [], []
    for row in rows:
        for r in row.records:
            p = r.get("profile") or {}
            size = p.get("input_size")
            if size and f"{size[0]}x{size[1]}" not in sizes:
                sizes.append(f"{size[0]}x{size[1]}")
            trained_on = r.get("device") or {}
            same = str(p.get("device", "")).split(":")[0] == trained_on.get("type")  # the cell's own machine
            dev = f"{p.get('device')}" + (f" ({trained_on['name']})" if same and trained_on.get("name") else "")
            if p.get("device") and dev not in devices:
                devices.append(dev)
            n = (p.get("latency_ms") or {}).get("runs")
            if n is not None and n not in runs:
                runs.append(n)
    return (f"input {', '.join(sizes) or '?'} px, batch 1, median (p90) of "
            f"{', '.join(map(str, runs)) or '?'} timed forward pass(es) on {', '.join(devices) or '?'}")


def _bfp_note(layout: Layout) -> str:
    ctx = _context_words(layout)
    return ("Δ: difference of the mean from the BFP row" + (f" with the same {ctx}" if ctx else "")
            + "; Δ (%) = 100 · Δ / BFP; ref = the BFP row itself.")


def _ap_notes(layout: Layout, rows: list[Row], delta_notes: list[str]) -> list[str]:
    notes = [f"AP: COCO AP in percent on {_dataset_words(rows)}; mean ± sample standard deviation "
             f"over seeds, n = seeds with a complete record (n = 1: the one run, no ±)."]
    notes += delta_notes
    notes.append(f"GFLOPs = 2 × GMACs (fvcore, with our attention handles); GFLOPs and latency: {_profile_words(rows)}.")
    notes.append(f"{DASH}: no complete record (footnote). {NA}: no such value in the records (no mask head, "
                 "COCOeval's -1 for a size with no objects, or no BFP row to compare with).")
    return notes


def _reference_notes(reference: Reference, table: str, rows: list[Row], *, gains: str | None = None,
                     shows_gain: bool = False, dataset: str | None = None) -> list[str]:
    """The notes on the paper's values in ``table``: the gain shown (``shows_gain``), the values of
    ``tables.<table>`` and of the ``gains`` section that are set beside no row and why
    (:meth:`Reference.unshown`; ``dataset``: of a per-dataset table only), and the source."""
    if reference.path is None:
        return ["paper: no reference file was read, so no paper values are shown."]
    out = []
    unshown = reference.unshown(gains, table, rows, dataset=dataset) if gains is not None else []
    if gains == "relative_gains" and (shows_gain or unshown):
        out.append("paper Δ (%): the relative gain over BFP that the paper states"
                   + (f": {reference.gains_setting.rstrip('.')}" if reference.gains_setting else "")
                   + ". Shown only beside the row whose records are the paper's setting.")
    out += unshown
    out += reference.unshown("tables", table, rows, dataset=dataset)
    text = reference.table_notes.get(table)
    out.append(f"paper values: {reference.source_line()}; shown only beside the row whose records match the "
               "table, backbone, head, neck, split and schedule of the paper's setting. "
               + (text or reference.note or "Every other value is unknown."))
    return out


# ---------------------------------------------------------------------------------------------
# the four tables

def _neck_rank(row: Row) -> int:
    return NECKS.index(row.neck) if row.neck in NECKS else len(NECKS)


def _first_seen(layout: Layout, axis: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in layout.rows:
        out.setdefault(repr(row.axes.get(axis)), row.order)
    return out


def _ablation(layout: Layout, reference: Reference) -> Table:
    context = layout.context_axes
    firsts = {a: _first_seen(layout, a) for a in context}
    rows = sorted(layout.rows, key=lambda r: (tuple(firsts[a][repr(r.axes.get(a))] for a in context), _neck_rank(r), r.order))
    descriptors = [("neck", lambda r: r.name)] + [(a, (lambda a: lambda r: r.axes.get(a))(a)) for a in context]
    return _ap_table("ablation", "Ablation of the Self-, Grounding- and Rendering-Transformers (ST, GT, RT)",
                     layout, rows, descriptors, reference)


def _backbone_head(layout: Layout, reference: Reference) -> Table:
    setting_axes = [a for a in layout.context_axes
                    if not ({"backbone", "head"} & layout.changes.get(a, set()))]
    order = {"backbone": {}, "head": {}}
    for row in layout.rows:
        order["backbone"].setdefault(row.backbone, row.order)
        order["head"].setdefault(row.head, row.order)
    firsts = {a: _first_seen(layout, a) for a in setting_axes}
    rows = sorted(layout.rows, key=lambda r: (order["backbone"][r.backbone], order["head"][r.head],
                                              tuple(firsts[a][repr(r.axes.get(a))] for a in setting_axes),
                                              _neck_rank(r), r.order))
    descriptors = [("backbone", lambda r: r.backbone), ("head", lambda r: r.head), ("neck", lambda r: r.name)]
    descriptors += [(a, (lambda a: lambda r: r.axes.get(a))(a)) for a in setting_axes]
    return _ap_table("backbone_head", "BFP vs FPT across backbones and detection heads", layout, rows,
                     descriptors, reference)


def _design(layout: Layout, reference: Reference) -> Table:
    descriptors = [(a, (lambda a: lambda r: r.axes.get(a))(a)) for a in layout.varying] + [("neck", lambda r: r.neck)]
    rows = sorted(layout.rows, key=lambda r: r.order)
    return _ap_table("design", "Design choices, one row per setting", layout, rows, descriptors, reference)


def _complexity(layout: Layout, reference: Reference) -> Table:
    rows = sorted(layout.rows, key=lambda r: r.order)
    b = _Builder("complexity", "Parameters, FLOPs, latency and memory", rows)
    descriptors = [(a, (lambda a: lambda r: r.axes.get(a))(a)) for a in layout.varying] + [("neck", lambda r: r.neck)]
    if not layout.varying:
        descriptors = [("neck", lambda r: r.name)]
    _common(b, descriptors)
    seg = layout.task == "segmentation"
    table = "segmentation" if seg else "complexity"  # a segmentation run's cost is in the paper's segmentation table
    for column in _COMPLEXITY:
        b.stat(column)
        b.reference(column, f"paper {COLUMNS[column].header}", reference.values("tables", table, rows, column),
                    COLUMNS[column].kind)
    sizes, devices = [], []
    for row in rows:
        s = sorted({"x".join(map(str, (r.get("profile") or {}).get("input_size") or ["?"])) for r in row.records})
        d = sorted({str((r.get("profile") or {}).get("device", "?")) for r in row.records})
        sizes.append(", ".join(s) if s else DASH)
        devices.append(", ".join(d) if d else DASH)
    b.text("input (px)", sizes, data_name="input_size")
    b.text("device", devices, data_name="device")
    neck = "pyramid (UFP or FPN) + FPT" if seg else "BFP + FPT"
    neck_latency = ("the pyramid and FPT on fixed trunk features; the whole model includes the auxiliary head, "
                    "which runs in evaluation" if seg else "the pyramid alone")
    b.notes += [
        f"Params in millions; GFLOPs = 2 × GMACs (fvcore, with our attention handles); neck = {neck} "
        "parts; attention = the QK and AV products of the transformers.",
        f"Latency: {_profile_words(rows)}; neck latency: {neck_latency}. Peak memory: CUDA max "
        "allocated, or on the CPU the resident-set increase, MB. Mean ± sample std over seeds.",
        f"{DASH}: no complete record (footnote). {NA}: no such value in the record's profile.",
    ]
    b.notes += _reference_notes(reference, table, rows)
    return b.table()


def build_tables(layout: Layout, reference: Reference) -> list[Table]:
    """The detection tables that apply to ``layout``, in the order ablation, backbone_head, design,
    complexity (a segmentation layout's: :func:`fptbench.report.segmentation.build_segmentation_tables`)."""
    necks = {row.neck for row in layout.rows if row.neck}
    settings = {(row.backbone, row.head) for row in layout.rows if row.backbone or row.head}
    tables = []
    by_backbone = len(settings) > 1
    if len(necks) > 1 and "BFP" in necks and not (by_backbone and necks <= {"BFP", "FPT"}):
        tables.append(_ablation(layout, reference))
    if by_backbone:
        tables.append(_backbone_head(layout, reference))
    if layout.design_axes or not tables:
        tables.append(_design(layout, reference))
    tables.append(_complexity(layout, reference))
    return tables
