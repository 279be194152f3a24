"""Report rows: run records and expected cells grouped into one row per setting, seeds pooled.

A sweep cell is identified by ``record["cell"]["axes"]`` (axis name -> label or value, in the
matrix's axis order). Every axis except ``seed`` says *what* was run; ``seed`` only repeats it.
So one report row = one combination of the non-seed axes; its records are the seeds, and the
expected cells with no complete record (failed, missing, running ...) are kept beside them so
that a table shows them as dashes with a footnote instead of dropping them.

What a row is, in the paper's words, comes from the config, never from the labels:

- ``neck``: fpt.st / fpt.gt / fpt.rt -> ``BFP``, ``+ST``, ``+GT``, ``+RT``, ``+ST+GT``,
  ``+ST+RT``, ``+GT+RT``, ``FPT`` (:func:`neck_name`);
- ``backbone``, ``head``: model.backbone, model.head (a segmentation config: seg.head);
- ``task``: model.task (``detection`` | ``segmentation``); a segmentation row's neck is named
  :func:`seg_neck_name` (``baseline``, ``+FPT (GT)``, ``+FPT (LGT)``: the global GT or the
  locality-constrained one, gt.window), and its baseline row is ``baseline``, not ``BFP``;
- ``dataset``: the evaluated split's dataset, data.test without its split (``cityscapes_val`` ->
  ``cityscapes``, :func:`dataset_key`), the key of the paper's per-dataset values.

A cell with no record and no config (the launcher may pass only run id, axes and state) borrows
these from a record that shares the values of the axes that set them; failing that, from a
config-key axis (``fpt.st`` ...), and last from a named axis label that spells a neck (``st+gt``
-> ``+ST+GT``) [ours].
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from fptbench.errors import UsageError

__all__ = ["NECKS", "SEG_NECKS", "SEG_BASELINE", "SEG_METRICS", "DELTA_COLUMNS", "Row", "Layout", "neck_name",
           "seg_neck_name", "dataset_key", "collect_rows", "values", "stats", "COLUMNS", "Column", "class_iou_column"]

NECKS = ("BFP", "+ST", "+GT", "+RT", "+ST+GT", "+ST+RT", "+GT+RT", "FPT")
"""Row order of the paper's ablation: the baseline, each transformer alone, in pairs, all three."""

SEG_BASELINE = "baseline"
"""The segmentation baseline's name: the pyramid (UFP or FPN) straight to the head, no FPT."""
SEG_NECKS = (SEG_BASELINE, "+ST", "+GT", "+LGT", "+RT", "+ST+GT", "+ST+LGT", "+ST+RT", "+GT+RT", "+LGT+RT",
             "+FPT (GT)", "+FPT (LGT)")
"""Row order of a segmentation table: the baseline, the parts, FPT with the global GT, with LGT."""

SEED_AXIS = "seed"


def neck_name(st: bool, gt: bool, rt: bool) -> str:
    """``BFP`` (no transformer), ``FPT`` (all three), else ``+`` and the parts on: ``+ST+GT``."""
    if st and gt and rt:
        return "FPT"
    parts = [name for name, on in (("ST", st), ("GT", gt), ("RT", rt)) if on]
    return "+" + "+".join(parts) if parts else "BFP"


def seg_neck_name(st: bool, gt: bool, rt: bool, window: int = 0) -> str:
    """A segmentation neck: ``baseline`` (no transformer), ``+FPT (GT)`` / ``+FPT (LGT)`` (all
    three, with the global or the locality-constrained GT, ``window`` > 0), else as
    :func:`neck_name` with ``LGT`` for a windowed GT: ``+ST+LGT``."""
    name = neck_name(st, gt, rt)
    if name == "BFP":
        return SEG_BASELINE
    if name == "FPT":
        return "+FPT (LGT)" if window else "+FPT (GT)"
    return name.replace("GT", "LGT") if window else name


def _task_of(cfg: Mapping[str, Any], record: Mapping | None) -> str | None:
    """model.task; for a config without it (records before issue 14), what the metrics hold."""
    model = cfg.get("model") if isinstance(cfg, Mapping) else None
    if isinstance(model, Mapping) and model.get("task"):
        return str(model["task"])
    metrics = (record or {}).get("metrics") or {}
    if "segmentation" in metrics:
        return "segmentation"
    if metrics or isinstance(model, Mapping):
        return "detection"
    return None


def _neck_of_config(cfg: Mapping[str, Any], task: str | None = None) -> str | None:
    fpt = cfg.get("fpt") if isinstance(cfg, Mapping) else None
    if not isinstance(fpt, Mapping) or not all(k in fpt for k in ("st", "gt", "rt")):
        return None
    flags = bool(fpt["st"]), bool(fpt["gt"]), bool(fpt["rt"])
    if task == "segmentation":
        gt = cfg.get("gt") if isinstance(cfg.get("gt"), Mapping) else {}
        return seg_neck_name(*flags, window=int(gt.get("window") or 0))
    return neck_name(*flags)


_SPLIT = re.compile(r"_(train_aug|trainval|train|val|test|minival)$")


def dataset_key(name: Any) -> str | None:
    """A split's dataset: its name without the split suffix (``voc2012_val`` -> ``voc2012``)."""
    return _SPLIT.sub("", name) if isinstance(name, str) and name else None


def _dataset_of(cfg: Mapping[str, Any], record: Mapping | None) -> str | None:
    data = cfg.get("data") if isinstance(cfg, Mapping) else None
    name = data.get("test") if isinstance(data, Mapping) else None
    if not name:
        name = ((record or {}).get("dataset") or {}).get("name")
    return dataset_key(name)


def _neck_of_label(label: Any) -> str | None:
    """A named-axis label that spells a neck: ``bfp``, ``st``, ``st+gt``, ``gt_rt``, ``fpt`` [ours]."""
    if not isinstance(label, str):
        return None
    key = re.sub(r"[^a-z]", "", label.lower())
    for neck in NECKS:
        if key == re.sub(r"[^a-z]", "", neck.lower()):
            return neck
    return None


# ---------------------------------------------------------------------------------------------
# columns: what a table cell reads from one record

@dataclass(frozen=True)
class Column:
    """One quantity per record. ``get(record) -> float | None``; ``kind`` picks the number format
    (``ap``: 1 decimal; ``params``: 1 decimal; ``sig``: 3 significant digits)."""

    id: str
    header: str
    kind: str
    get: Any


def _metric(task: str, name: str):
    def get(record: Mapping) -> float | None:
        value = ((record.get("metrics") or {}).get(task) or {}).get(name)
        return None if value is None or value < 0 else float(value)  # COCOeval's -1 = no such objects
    return get


def _profile(*path: str, scale: float = 1.0):
    def get(record: Mapping) -> float | None:
        node: Any = record.get("profile")
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                return None
            node = node[key]
        return None if node is None else float(node) * scale
    return get


def _neck_flops(record: Mapping) -> float | None:
    parts = (record.get("profile") or {}).get("by_part") or {}
    # a detector's neck is bfp + fpt, a segmentation model's pyramid + fpt (no record has both)
    flops = [parts[p]["flops"] for p in ("bfp", "pyramid", "fpt")
             if isinstance(parts.get(p), Mapping) and "flops" in parts[p]]
    return sum(flops) / 1e9 if flops else None


AP_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
COLUMNS: dict[str, Column] = {}
for _task, _word in (("bbox", "box"), ("segm", "mask")):
    for _name in AP_NAMES:
        COLUMNS[f"{_task}.{_name}"] = Column(f"{_task}.{_name}", f"{_word} {_name}", "ap", _metric(_task, _name))
SEG_METRICS = ("seg.mIoU", "seg.pixel_acc", "seg.mean_acc")
"""Semantic segmentation's scores, ``record["metrics"]["segmentation"]`` (percent)."""
DELTA_COLUMNS = ("bbox.AP", "segm.AP")
"""The detection columns whose Δ against BFP (and the paper's relative gain) the AP tables show."""
for _column, _header in zip(SEG_METRICS, ("mIoU", "pixel acc", "mean acc")):
    COLUMNS[_column] = Column(_column, _header, "ap", _metric("segmentation", _column.split(".", 1)[1]))
COLUMNS.update({c.id: c for c in (
    Column("params_m", "Params (M)", "params", _profile("params", scale=1e-6)),
    Column("gflops", "GFLOPs", "sig", _profile("flops", scale=1e-9)),
    Column("neck_gflops", "neck GFLOPs", "sig", _neck_flops),
    Column("attn_gflops", "attention GFLOPs", "sig", _profile("attention", "flops", scale=1e-9)),
    Column("latency_ms", "latency (ms)", "sig", _profile("latency_ms", "median")),
    Column("latency_p90_ms", "latency p90 (ms)", "sig", _profile("latency_ms", "p90")),
    Column("neck_latency_ms", "neck latency (ms)", "sig", _profile("neck_latency_ms", "median")),
    Column("peak_memory_mb", "peak memory (MB)", "sig", _profile("peak_memory_mb")),
)})


def class_iou_column(name: str) -> Column:
    """The IoU (percent) of class ``name``, ``metrics.segmentation.per_class_iou[name]``; None
    where the record has no such class or null (neither in the ground truth nor predicted)."""
    def get(record: Mapping) -> float | None:
        ious = ((record.get("metrics") or {}).get("segmentation") or {}).get("per_class_iou") or {}
        value = ious.get(name)
        return None if value is None else float(value)
    return Column(f"iou.{name}", name, "ap", get)


# ---------------------------------------------------------------------------------------------
# rows

@dataclass
class Row:
    """One combination of the non-seed axes.

    Attributes:
        axes: non-seed axis -> label/value, in axis order.
        neck, backbone, head: what the row is (``None`` when nothing says).
        task: ``detection`` or ``segmentation`` (``None`` when nothing says).
        dataset: the evaluated dataset, :func:`dataset_key` of data.test (``None`` when nothing says).
        records: the complete records of its seeds, in seed order.
        seeds: the seed of each record.
        incomplete: its expected cells without a complete record, each ``{"run_id", "state",
            "seed", "error"}`` (error: one line or None).
        order: position of its first cell in matrix order.
        name: the neck, made unique within its context (``FPT [fpt_pooled]``).
        label: the name, made unique over all rows (figures).
    """

    axes: dict[str, Any]
    neck: str | None = None
    backbone: str | None = None
    head: str | None = None
    task: str | None = None
    dataset: str | None = None
    records: list[dict] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    incomplete: list[dict] = field(default_factory=list)
    order: int = 0
    name: str = ""
    label: str = ""

    @property
    def n(self) -> int:
        """Seeds with a complete record."""
        return len(self.records)


@dataclass
class Layout:
    """Rows plus what the axes do.

    Attributes:
        rows: in matrix order.
        axes: every non-seed axis, in axis order.
        varying: the non-seed axes with more than one value.
        variant_axes: axes whose change alone changes the neck (the ablation axes).
        design_axes: axes whose change alone leaves neck, backbone and head as they are.
        changes: axis -> which of "neck", "backbone", "head" (and "same") changing it alone changes.
        left_out: run ids of records that are not cells of the matrix (only when cells are given).
        compare_to: the matrix's ``reference`` setting, axis -> value ({} = none): the design
            table's rows are compared with the row that has these values.
    """

    rows: list[Row]
    axes: list[str]
    varying: list[str]
    variant_axes: list[str]
    design_axes: list[str]
    changes: dict[str, set] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    compare_to: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """``segmentation`` when the rows are segmentation runs, else ``detection``."""
        return "segmentation" if any(r.task == "segmentation" for r in self.rows) else "detection"

    @property
    def context_axes(self) -> list[str]:
        """Varying axes that are not ablation axes: a row's BFP reference shares their values."""
        return [a for a in self.varying if a not in self.variant_axes]

    def bfp_for(self, row: Row) -> Row | None:
        """The BFP row (a segmentation row: the ``baseline`` row) with the same context-axis
        values (the first in matrix order), if any."""
        if row.neck is None:
            return None
        baseline = SEG_BASELINE if row.task == "segmentation" else "BFP"
        context = self.context_axes

        def where(r: Row) -> tuple:
            return tuple(_key(r.axes.get(a)) for a in context)

        mine = where(row)
        return next((other for other in self.rows if other.neck == baseline and where(other) == mine), None)

    def compared_row(self, row: Row) -> Row | None:
        """The row with the ``compare_to`` values and, on every other varying axis, ``row``'s
        (the first in matrix order); ``None`` without ``compare_to`` or where no such row exists."""
        if not self.compare_to:
            return None
        others = [a for a in self.varying if a not in self.compare_to]
        want = {**{a: _key(row.axes.get(a)) for a in others},
                **{a: _key(v) for a, v in self.compare_to.items()}}
        return next((r for r in self.rows if all(_key(r.axes.get(a)) == k for a, k in want.items())), None)


def _key(value: Any) -> str:
    """A hashable, order-stable key for an axis value (lists and dicts included)."""
    return json.dumps(value, sort_keys=True, default=str)


def _one_line(text: Any, limit: int = 120) -> str | None:
    if not text:
        return None
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def collect_rows(records: Sequence[Mapping], cells: Sequence[Mapping] | None = None,
                 compare_to: Mapping[str, Any] | None = None) -> Layout:
    """Group ``records`` (and the expected ``cells``) into rows, one per non-seed axes combination.

    Args:
        records: complete run records, each with ``cell: {"run_id", "axes"}``.
        cells: every cell the matrix expects, ``{"run_id", "axes", "state"}`` (optional
            ``config``, ``error``); ``None``: the records are all there is.
        compare_to: the matrix's ``reference`` setting, axis -> value (:attr:`Layout.compare_to`).

    Raises:
        UsageError: a record without ``cell.run_id``/``cell.axes``, two records of one run id,
            detection and segmentation cells in one matrix, or a ``compare_to`` that names an
            axis no row has or a value no row has.
    """
    units: list[dict] = []  # one per run: {"run_id", "axes", "record"|None, "state", "config", "error"}
    by_id: dict[str, dict] = {}
    for i, record in enumerate(records):
        cell = record.get("cell") if isinstance(record, Mapping) else None
        if not isinstance(cell, Mapping) or not isinstance(cell.get("axes"), Mapping) or not cell.get("run_id"):
            raise UsageError(f"records[{i}]: expected a sweep run record with cell.run_id and cell.axes")
        run_id = str(cell["run_id"])
        if run_id in by_id:
            raise UsageError(f"records[{i}]: run id {run_id!r} appears twice")
        by_id[run_id] = {"run_id": run_id, "axes": dict(cell["axes"]), "record": dict(record), "state": "done",
                         "config": record.get("config") or {}, "error": None}
    left_out: list[str] = []
    if cells is None:
        units = list(by_id.values())
    else:
        seen = set()
        for i, cell in enumerate(cells):
            if not isinstance(cell, Mapping) or not cell.get("run_id") or not isinstance(cell.get("axes"), Mapping):
                raise UsageError(f"cells[{i}]: expected {{'run_id', 'axes', 'state'}}")
            run_id = str(cell["run_id"])
            seen.add(run_id)
            if run_id in by_id:
                units.append(by_id[run_id])
            else:
                units.append({"run_id": run_id, "axes": dict(cell["axes"]), "record": None,
                              "state": str(cell.get("state") or "missing"), "config": cell.get("config") or {},
                              "error": _one_line(cell.get("error") or cell.get("reason"))})
        left_out = [run_id for run_id in by_id if run_id not in seen]

    axes: list[str] = []
    for unit in units:
        axes += [a for a in unit["axes"] if a != SEED_AXIS and a not in axes]
    for unit in units:
        cfg = unit["config"]
        model = cfg.get("model") if isinstance(cfg.get("model"), Mapping) else {}
        task = _task_of(cfg, unit["record"])
        head = model.get("head")
        if task == "segmentation":  # model.head is a detector's key; the segmentation head is seg.head
            head = (cfg.get("seg") or {}).get("head") if isinstance(cfg.get("seg"), Mapping) else None
        unit["task"], unit["dataset"] = task, _dataset_of(cfg, unit["record"])
        unit["attrs"] = {"neck": _neck_of_config(cfg, task), "backbone": model.get("backbone"), "head": head}
        for name in ("backbone", "head"):
            if unit["attrs"][name] is None and isinstance(unit["axes"].get(f"model.{name}"), str):
                unit["attrs"][name] = unit["axes"][f"model.{name}"]
    tasks = {u["task"] for u in units if u["task"]}
    if len(tasks) > 1:
        raise UsageError("the cells mix detection and segmentation runs; report each task as its own matrix")
    for unit in units:
        if unit["task"] is None and tasks:  # a cell without config or record: the matrix's one task
            unit["task"] = next(iter(tasks))
        if unit["attrs"]["neck"] is None:
            flags = [unit["axes"].get(f"fpt.{p}") for p in ("st", "gt", "rt")]
            if all(isinstance(f, bool) for f in flags):
                if unit["task"] == "segmentation":
                    window = unit["axes"].get("gt.window", 0)
                    unit["attrs"]["neck"] = seg_neck_name(*flags, window=window if isinstance(window, int) else 0)
                else:
                    unit["attrs"]["neck"] = neck_name(*flags)

    _borrow_dataset(units, axes)
    changes = _axis_changes(units, axes)
    variant_axes = [a for a in axes if "neck" in changes[a]]
    _borrow_attrs(units, axes, changes)
    for unit in units:  # last resort for the neck: a label that spells it (detection's names) [ours]
        if unit["attrs"]["neck"] is None and unit["task"] != "segmentation":
            for a in variant_axes or axes:
                neck = _neck_of_label(unit["axes"].get(a))
                if neck:
                    unit["attrs"]["neck"] = neck
                    break
    changes = _axis_changes(units, axes)
    variant_axes = [a for a in axes if "neck" in changes[a]]
    design_axes = [a for a in axes if "same" in changes[a]]

    rows: dict[tuple, Row] = {}
    for order, unit in enumerate(units):
        key = tuple(_key(unit["axes"].get(a)) for a in axes)
        row = rows.get(key)
        if row is None:
            row = rows[key] = Row(axes={a: unit["axes"][a] for a in axes if a in unit["axes"]}, order=order)
        for name in ("neck", "backbone", "head"):
            if getattr(row, name) is None:
                setattr(row, name, unit["attrs"][name])
        for name in ("task", "dataset"):
            if getattr(row, name) is None:
                setattr(row, name, unit[name])
        seed = unit["axes"].get(SEED_AXIS, (unit["config"] or {}).get("seed"))
        if unit["record"] is not None:
            row.records.append(unit["record"])
            row.seeds.append(seed)
        else:
            row.incomplete.append({"run_id": unit["run_id"], "state": unit["state"], "seed": seed, "error": unit["error"]})
    for row in rows.values():  # seed order
        pairs = sorted(zip(row.seeds, row.records), key=lambda p: _key(p[0]))
        row.seeds, row.records = [p[0] for p in pairs], [p[1] for p in pairs]
    varying = [a for a in axes if len({_key(r.axes.get(a)) for r in rows.values()}) > 1]
    layout = Layout(rows=list(rows.values()), axes=axes, varying=varying,
                    variant_axes=[a for a in variant_axes if a in varying],
                    design_axes=[a for a in design_axes if a in varying], changes=changes, left_out=left_out,
                    compare_to=_compare_to(compare_to, axes, list(rows.values())))
    _label(layout)
    return layout


def _compare_to(compare_to: Mapping[str, Any] | None, axes: list[str], rows: list[Row]) -> dict[str, Any]:
    if not compare_to:
        return {}
    for axis, value in compare_to.items():
        if axis not in axes:
            raise UsageError(f"reference: {axis!r} is not an axis of the rows ({', '.join(axes) or 'none'})")
        if not any(_key(r.axes.get(axis)) == _key(value) for r in rows):
            raise UsageError(f"reference: no row has {axis}={value!r}")
    return dict(compare_to)


def _axis_changes(units: list[dict], axes: list[str]) -> dict[str, set]:
    """For each axis: which of neck/backbone/head change when only that axis changes, plus
    ``"same"`` when two of its values leave all three as they are (a design axis)."""
    out: dict[str, set] = {}
    for a in axes:
        buckets: dict[tuple, dict[str, tuple]] = defaultdict(dict)
        for unit in units:
            attrs = unit["attrs"]
            if attrs["neck"] is None:
                continue
            others = tuple(_key(unit["axes"].get(b)) for b in axes if b != a)
            buckets[others][_key(unit["axes"].get(a))] = (attrs["neck"], attrs["backbone"], attrs["head"])
        found: set = set()
        for by_value in buckets.values():
            seen = list(by_value.values())
            if len(seen) < 2:
                continue
            for i, name in enumerate(("neck", "backbone", "head")):
                if len({s[i] for s in seen}) > 1:
                    found.add(name)
            if len(set(seen)) < len(seen):
                found.add("same")
        out[a] = found
    return out


def _borrow_attrs(units: list[dict], axes: list[str], changes: dict[str, set]) -> None:
    """Fill a config-less cell's neck/backbone/head from the records.

    Where some axes are seen to change the attribute, from a record with the same values on
    those axes. Where none is, the attribute is the same in every record; a cell takes it only
    if each of its axis values occurs in some record (a value never run might change it) [ours].
    """
    for name in ("neck", "backbone", "head"):
        known_units = [u for u in units if u["attrs"][name] is not None]
        setting = [a for a in axes if name in changes[a]]
        if setting:
            known: dict[tuple, Any] = {}
            for unit in known_units:
                known.setdefault(tuple(_key(unit["axes"].get(a)) for a in setting), unit["attrs"][name])
            for unit in units:
                if unit["attrs"][name] is None:
                    unit["attrs"][name] = known.get(tuple(_key(unit["axes"].get(a)) for a in setting))
            continue
        found = {u["attrs"][name] for u in known_units}
        if len(found) != 1:
            continue
        seen = {a: {_key(u["axes"].get(a)) for u in known_units} for a in axes}
        for unit in units:
            if unit["attrs"][name] is None and all(_key(unit["axes"].get(a)) in seen[a] for a in axes):
                unit["attrs"][name] = next(iter(found))


def _borrow_dataset(units: list[dict], axes: list[str]) -> None:
    """Fill a config-less cell's dataset: from the axes whose every value, in the cells that say,
    goes with one dataset (the ``dataset`` axis of a segmentation matrix); where no axis does
    and every such cell has the same dataset, that one [ours]."""
    known = [u for u in units if u["dataset"] is not None]
    if len(known) == len(units) or not known:
        return
    by_axis: dict[str, dict[str, set]] = {}
    for a in axes:
        seen: dict[str, set] = defaultdict(set)
        for unit in known:
            seen[_key(unit["axes"].get(a))].add(unit["dataset"])
        if all(len(d) == 1 for d in seen.values()):
            by_axis[a] = seen
    everywhere = {u["dataset"] for u in known}
    for unit in units:
        if unit["dataset"] is not None:
            continue
        found = {d for a, seen in by_axis.items() for d in seen.get(_key(unit["axes"].get(a)), ())}
        if not by_axis:
            found = everywhere
        if len(found) == 1:
            unit["dataset"] = next(iter(found))


def _label(layout: Layout) -> None:
    """``row.name``: the neck, plus the ablation-axis labels in brackets where two rows of the same
    context share a neck (``FPT [fpt_pooled]``); ``row.label``: the name, plus the context-axis
    labels in parentheses where the name alone is not unique (``BFP (r50, mask_rcnn)``)."""
    def text(v: Any) -> str:
        return v if isinstance(v, str) else json.dumps(v)

    context = layout.context_axes
    for row in layout.rows:
        row.name = row.neck or ", ".join(f"{a}={text(row.axes.get(a))}" for a in layout.variant_axes or layout.varying) or "?"
    counts = defaultdict(int)
    for row in layout.rows:
        counts[(row.name, tuple(_key(row.axes.get(a)) for a in context))] += 1
    for row in layout.rows:
        extra = [text(row.axes[a]) for a in layout.variant_axes if a in row.axes]
        if counts[(row.name, tuple(_key(row.axes.get(a)) for a in context))] > 1 and extra:
            row.name = f"{row.name} [{', '.join(extra)}]"
    names = defaultdict(int)
    for row in layout.rows:
        names[row.name] += 1
    for row in layout.rows:
        extra = [text(row.axes[a]) for a in context if a in row.axes]
        row.label = f"{row.name} ({', '.join(extra)})" if names[row.name] > 1 and extra else row.name


# ---------------------------------------------------------------------------------------------
# numbers

def values(row: Row, column: str | Column) -> list[float]:
    """The column's value (a :data:`COLUMNS` id, or a :class:`Column` such as
    :func:`class_iou_column`) in each of the row's records, ``None``s (no such value) left out."""
    get = column.get if isinstance(column, Column) else COLUMNS[column].get
    out = []
    for record in row.records:
        v = get(record)
        if v is not None and math.isfinite(v):
            out.append(v)
    return out


def stats(xs: Sequence[float]) -> tuple[float | None, float | None, int]:
    """``(mean, sample std (ddof 1), n)``; std is ``None`` below two values, mean below one."""
    n = len(xs)
    if n == 0:
        return None, None, 0
    # statistics' exact sums: seeds that agree (params, FLOPs) get std 0.0, not a rounding residue
    return statistics.fmean(xs), (statistics.stdev(xs) if n > 1 else None), n
