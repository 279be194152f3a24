"""The paper's reported numbers (``results/paper_reference.yaml``), each shown only beside the run
that was set up as the paper's.

Every value sits in an *entry* that names the setting the paper measured it in by six fields, and
the report prints it beside the one row of the one table whose records match all six:

- ``table``: the report table that shows it: ``ablation``, ``backbone_head``, ``design``,
  ``complexity`` or ``segmentation`` (the ``miou_<dataset>`` tables, and the cost columns of a
  segmentation report's complexity table). Implied in ``tables.<table>``; a gain entry names it.
- ``backbone``: the records' ``model.backbone`` (``resnet50``, ``resnet101``, ``resnext101_64x4d``).
- ``head``: ``model.head`` (``mask_rcnn``, ``faster_rcnn``); a segmentation row's ``seg.head``
  (``deeplab``, ``fcn``).
- ``neck``: the row's neck as the report names it (:func:`~fptbench.report.rows.neck_name`:
  ``BFP``, ``+ST`` ... ``FPT``; segmentation :func:`~fptbench.report.rows.seg_neck_name`:
  ``baseline``, ``+FPT (GT)``, ``+FPT (LGT)`` ...).
- ``split``: the records' ``data.test`` (``coco2017_val``, ``coco2017_test-dev``, ``cityscapes_test``).
- ``schedule``: the recipe's length at its reference batch (below).

An entry may add ``config: {dotted.key: value}``, settings the records must hold as well (a
``design`` entry names its design choice so: ``{gt.similarity: dot}``).

Unknown never matches. A field the paper does not confirm is null: the entry stays in the file
(the paper states the value) but is set beside no row, and the table's notes say what is not
confirmed. A row matches no entry on a field its records do not tell (a row with no complete
record, seeds whose configs disagree, a record without the key). An entry that matches more than
one row of a table (rows that differ in a setting it does not name) is set beside none of them,
and the notes name the rows: add the difference to the entry's ``config``.

Schedules: ``train.max_iter`` as the config gives it, at batch B = ``train.reference_batch`` (the
effective batch at which max_iter is given) if that is above 0, else (0 = max_iter as given) the
run's own effective batch, world size x ``train.images_per_device`` x ``train.accumulate``. A
record's config holds max_iter as given (at the reference batch); a trained record also holds the
trainer's batch plan, ``training.batch`` (``given.max_iter``, ``reference``, ``batch``), and one
without it (an ``fptbench eval`` record, a record from before the plan) the config and, where
known, ``training.world_size`` (no ``reference_batch`` or ``accumulate``: 0 and 1)
(:func:`record_schedule`). Named ``<N>x`` for N x 90k iterations at batch 16 (detectron2's ``1x`` = 90k@16, ``2x`` =
180k@16, ``3x`` = 270k@16), else ``<iterations>@<B>``, iterations in thousands where whole:
``120k@16``, ``80k@8`` (a poly segmentation recipe alike), ``2@1``. Unknown where the record
lacks one of these numbers. In the file any spelling of one schedule is that schedule: ``1x``,
``90k@16`` and ``90000@16`` are one.

File layout (YAML)::

    reference_version: 2
    source: {citation: str, arxiv: str, url: str, note: str}
    relative_gains:                 # percent of the BFP value: 100 * (FPT / BFP - 1)
      setting: str                  # where the paper measured them, in words
      entries:
        - {table: ablation | backbone_head | design | null, backbone: str | null, head: str | null,
           neck: str | null, split: str | null, schedule: str | null,
           values: {bbox.AP: number, segm.AP: number}, where: str | null}
    segmentation_gains:             # mIoU points: FPT's mIoU minus its baseline's
      setting: str
      entries:
        - {table: segmentation | null, <the five other fields>, values: {seg.mIoU: number}, where: ...}
    tables:                         # absolute values; null = unknown, shown as nothing
      <table>:                      # ablation | backbone_head | design | complexity | segmentation
        note: str
        entries:
          - {backbone: ..., head: ..., neck: ..., split: ..., schedule: ...,
             config: {dotted.key: value},          # optional
             values: {<column id>: number | null}, where: str | null}

Every field is written out, null where unknown. ``where``: the place in the paper (table or
section). Column ids: :data:`fptbench.report.rows.COLUMNS` (``bbox.AP`` ... ``segm.APl``,
``seg.mIoU``, ``params_m``, ``gflops``, ``latency_ms`` ...); a gain only the Δ columns
(:data:`~fptbench.report.rows.DELTA_COLUMNS`, ``seg.mIoU``).

Adding the paper's number for one cell is one edit of the YAML file: append an entry to its table
(or fill in the nulls of the entry that is there), e.g. for a box AP the paper gives in its
Table <n> for R-50 Mask R-CNN with FPT, 1x schedule, on COCO val::

    tables:
      backbone_head:
        entries:
          - {backbone: resnet50, head: mask_rcnn, neck: FPT, split: coco2017_val, schedule: 1x,
             values: {bbox.AP: <the paper's number>}, where: "Table <n>"}

The next ``fptbench report`` shows it beside the row whose records are that setting. A gain
whose setting gets confirmed: fill in the nulls of its entry (``table``, ``backbone``, ``head``,
``schedule`` of the relative gain), and ``where``.

``reference_version``: 2. A version-1 file (values keyed by neck, backbone/head/neck or
dataset/neck) is refused with one line saying what changed, not read: its keys hold no split
and no schedule, so read as version 2 every value in it would silently match nothing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from fptbench.errors import UsageError
from fptbench.paths import REPO_ROOT
from fptbench.report.rows import COLUMNS, DELTA_COLUMNS, NECKS, SEG_NECKS, Row, dataset_key
from fptbench.yamlio import compose_yaml, load_yaml, read_text

__all__ = ["DEFAULT_REFERENCE", "REFERENCE_VERSION", "FIELDS", "TABLES", "Entry", "Reference", "RowSetting",
           "load_reference", "schedule_name", "parse_schedule", "record_schedule"]

DEFAULT_REFERENCE = REPO_ROOT / "results" / "paper_reference.yaml"
"""The checkout's reference file: ``<repo>/results/paper_reference.yaml``."""

REFERENCE_VERSION = 2
"""The layout this module reads. 2: every entry names table, backbone, head, neck, split and
schedule. (1: rows keyed by neck, backbone/head/neck or dataset/neck only, gains without a setting.)"""

FIELDS = ("table", "backbone", "head", "neck", "split", "schedule")
"""The six fields of an entry's setting, all of which a row must match."""

TABLES = ("ablation", "backbone_head", "design", "complexity", "segmentation")
"""The report tables a value can belong to."""

_SECTIONS = {  # a gain section -> (the tables its entries may name: those with its Δ column, its columns)
    "relative_gains": (("ablation", "backbone_head", "design"), DELTA_COLUMNS),
    "segmentation_gains": (("segmentation",), ("seg.mIoU",)),
}
_TOP_KEYS = ("reference_version", "source", "relative_gains", "segmentation_gains", "tables")
_ENTRY_KEYS = FIELDS + ("config", "values", "where")
_UNKNOWN = object()  # a row's field or config value its records do not tell


# ---------------------------------------------------------------------------------------------
# schedules

_ONE_X = (90_000, 16)  # detectron2's 1x: 90k iterations at 16 images per iteration
_SCHEDULE = re.compile(r"^(?:(?P<x>[1-9][0-9]*)x|(?P<iters>[1-9][0-9]*)(?P<k>k?)@(?P<batch>[1-9][0-9]*))$")


def schedule_name(iterations: int, batch: int) -> str:
    """``iterations`` at ``batch`` images per iteration as a schedule's name: ``<N>x`` for N x 90k
    at 16 (``1x``, ``2x``, ``3x``), else ``120k@16`` (iterations in thousands where whole) or ``2@1``."""
    if batch == _ONE_X[1] and iterations % _ONE_X[0] == 0:
        return f"{iterations // _ONE_X[0]}x"
    its = f"{iterations // 1000}k" if iterations % 1000 == 0 else str(iterations)
    return f"{its}@{batch}"


def parse_schedule(text: str) -> str | None:
    """A schedule as written in the file (``1x``, ``90k@16``, ``90000@16``) -> its name
    (:func:`schedule_name`: ``1x``); None if ``text`` is not one."""
    m = _SCHEDULE.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        return None
    if m["x"]:
        return schedule_name(int(m["x"]) * _ONE_X[0], _ONE_X[1])
    return schedule_name(int(m["iters"]) * (1000 if m["k"] else 1), int(m["batch"]))


def _count(value: Any, low: int = 1) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= low else None


def record_schedule(record: Mapping) -> str | None:
    """The schedule's name (:func:`schedule_name`) of a run record: ``train.max_iter`` as the config
    gives it, at ``train.reference_batch``, or where that is 0 at the run's effective batch.

    Read from the trainer's batch plan where the record has one (``training.batch``:
    ``given.max_iter``, ``reference``, ``batch``; :func:`fptbench.batch.plan_summary`). Without it
    (an ``fptbench eval`` record, a record from before the plan): the config's ``train.max_iter``
    (as given) at ``train.reference_batch`` if above 0, else (0, or absent: before the key) at the
    run's batch, ``training.world_size`` x ``train.images_per_device`` x ``train.accumulate``
    (absent: 1). None where a number is missing.
    """
    training = record.get("training") if isinstance(record, Mapping) else None
    training = training if isinstance(training, Mapping) else {}
    plan = training.get("batch")
    if isinstance(plan, Mapping) and isinstance(plan.get("given"), Mapping):
        iterations, reference = _count(plan["given"].get("max_iter")), _count(plan.get("reference"), low=0)
        batch = reference or _count(plan.get("batch"))
        return schedule_name(iterations, batch) if iterations and batch else None
    cfg = record.get("config") if isinstance(record, Mapping) else None
    train = cfg.get("train") if isinstance(cfg, Mapping) else None
    if not isinstance(train, Mapping):
        return None
    iterations = _count(train.get("max_iter"))
    reference = _count(train.get("reference_batch", 0), low=0)
    if iterations and reference:  # the config gives max_iter at its reference batch, whatever the run's
        return schedule_name(iterations, reference)
    world, per_device = _count(training.get("world_size")), _count(train.get("images_per_device"))
    accumulate = _count(train.get("accumulate", 1), low=0)
    if accumulate == 0:  # as many micro-batches as reach the reference batch
        accumulate = reference // (world * per_device) if reference and world and per_device else None
    batch = world * per_device * accumulate if world and per_device and accumulate else None
    if iterations is None or batch is None:
        return None
    return schedule_name(iterations, batch)


# ---------------------------------------------------------------------------------------------
# a row's setting

def _agreed(values: list[Any]) -> Any:
    """The one value every record gives, else :data:`_UNKNOWN` (no record, one without it, or
    records that disagree)."""
    if not values or any(v is _UNKNOWN for v in values):
        return _UNKNOWN
    first = values[0]
    return first if all(v == first for v in values[1:]) else _UNKNOWN


def _get(mapping: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(mapping, Mapping) or part not in mapping:
            return _UNKNOWN
        mapping = mapping[part]
    return mapping


@dataclass(frozen=True)
class RowSetting:
    """What a report row's complete records say of the six fields (``None``: not told).

    ``neck`` is the row's own (:attr:`Row.neck`); the others come from each record's config
    (``head``: ``seg.head`` for a segmentation row) and must be the same in all of them."""

    table: str
    backbone: str | None
    head: str | None
    neck: str | None
    split: str | None
    schedule: str | None
    configs: tuple = ()

    @classmethod
    def of(cls, row: Row, table: str) -> "RowSetting":
        """The setting of ``row`` shown in ``table``; every field None for a row with no record."""
        configs = tuple(r.get("config") if isinstance(r.get("config"), Mapping) else {} for r in row.records)
        head = "seg.head" if row.task == "segmentation" else "model.head"

        def field_of(values: list[Any]) -> str | None:
            value = _agreed(values)
            return value if isinstance(value, str) and value else None

        return cls(table=table,
                   backbone=field_of([_get(c, "model.backbone") for c in configs]),
                   head=field_of([_get(c, head) for c in configs]),
                   neck=row.neck if row.records else None,
                   split=field_of([_get(c, "data.test") for c in configs]),
                   schedule=field_of([record_schedule(r) or _UNKNOWN for r in row.records]),
                   configs=configs)

    def config(self, key: str) -> Any:
        """The value of the dotted config ``key`` that every record holds, else a sentinel that
        equals nothing."""
        return _agreed([_get(c, key) for c in self.configs])


# ---------------------------------------------------------------------------------------------
# entries

@dataclass(frozen=True)
class Entry:
    """One cell of the paper: its setting (the six :data:`FIELDS`, None = not confirmed, and
    ``config``), its ``values`` by column id (None = unknown) and ``where`` the paper states them."""

    table: str | None
    backbone: str | None
    head: str | None
    neck: str | None
    split: str | None
    schedule: str | None
    values: dict[str, float | None] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    where: str | None = None

    @property
    def unknown(self) -> list[str]:
        """The fields the paper does not confirm (null): any one keeps the entry off every row."""
        return [f for f in FIELDS if getattr(self, f) is None]

    def matches(self, setting: RowSetting) -> bool:
        """Whether a row of ``setting`` is this entry's: every field and config key known on both
        sides and equal."""
        if self.unknown or any(getattr(setting, f) != getattr(self, f) for f in FIELDS):
            return False
        return all(setting.config(k) == v for k, v in self.config.items())

    def describe(self) -> str:
        """The known fields and config, ``neck FPT, split coco2017_test-dev``."""
        parts = [f"{f} {getattr(self, f)}" for f in FIELDS if getattr(self, f) is not None]
        parts += [f"{k}={v}" for k, v in self.config.items()]
        return ", ".join(parts) or "no known field"


def _key_of(entry: Entry) -> tuple:
    return tuple(getattr(entry, f) for f in FIELDS) + (repr(sorted(entry.config.items())),)


@dataclass(frozen=True)
class Reference:
    """The file's entries: ``tables`` (absolute values, by table), ``gains`` (relative, percent of
    BFP) and ``seg_gains`` (mIoU points), with the words that say what they are."""

    path: Path | None = None
    citation: str = ""
    url: str = ""
    note: str = ""
    gains_setting: str = ""
    gains: tuple[Entry, ...] = ()
    seg_gains_setting: str = ""
    seg_gains: tuple[Entry, ...] = ()
    tables: dict[str, tuple[Entry, ...]] = field(default_factory=dict)
    table_notes: dict[str, str] = field(default_factory=dict)

    def entries(self, section: str, table: str) -> tuple[Entry, ...]:
        """``section``'s entries (``tables``, ``relative_gains``, ``segmentation_gains``) that may
        belong to ``table``: a gain's table is its own field, so an unknown one is included."""
        if section == "tables":
            return self.tables.get(table, ())
        found = {"relative_gains": self.gains, "segmentation_gains": self.seg_gains}[section]
        return tuple(e for e in found if e.table in (table, None))

    def lookup(self, section: str, table: str, rows: Sequence[Row], column: str) -> list[Entry | None]:
        """Per row of ``table``: the entry of ``section`` whose ``column`` value it shows, or None.

        A row shows an entry's value where the entry gives one (not null), matches that row
        (:meth:`Entry.matches`) and no other of ``rows``, and no other such entry matches it.
        """
        settings = [RowSetting.of(row, table) for row in rows]
        out: list[Entry | None] = [None] * len(rows)
        taken: set[int] = set()
        for entry in self.entries(section, table):
            if entry.values.get(column) is None:
                continue
            hits = [i for i, s in enumerate(settings) if entry.matches(s)]
            if len(hits) != 1:
                continue
            (i,) = hits
            if out[i] is not None or i in taken:  # two entries claim the row: neither
                out[i] = None
                taken.add(i)
            else:
                out[i] = entry
        return out

    def values(self, section: str, table: str, rows: Sequence[Row], column: str) -> list[float | None]:
        """:meth:`lookup`'s entries as their ``column`` values (None where none is shown)."""
        return [None if e is None else e.values[column] for e in self.lookup(section, table, rows, column)]

    def unshown(self, section: str, table: str, rows: Sequence[Row], *, dataset: str | None = None) -> list[str]:
        """Notes on the entries of ``section`` for ``table`` that give a value but are set beside no
        row: those with a field the paper does not confirm, and those that match several rows.
        ``dataset``: only the entries whose split is of it, or unknown (a per-dataset table)."""
        settings = [RowSetting.of(row, table) for row in rows]
        notes = []
        for entry in self.entries(section, table):
            given = {c: v for c, v in entry.values.items() if v is not None}
            if not given or (dataset is not None and entry.split is not None and dataset_key(entry.split) != dataset):
                continue
            label, noun = _NOTE_LABELS[section]
            what = f"{label}: the paper states {_values_text(section, given)} for {entry.describe()}" + (
                f" ({entry.where})" if entry.where else "")
            if entry.unknown:
                fields = entry.unknown[0] if len(entry.unknown) == 1 else \
                    ", ".join(entry.unknown[:-1]) + " and " + entry.unknown[-1]
                verb = "is" if len(entry.unknown) == 1 else "are"
                notes.append(f"{what}; its {fields} {verb} not confirmed here, so the {noun} is set beside no run.")
                continue
            hits = [rows[i].label or rows[i].name for i, s in enumerate(settings) if entry.matches(s)]
            if len(hits) > 1:
                notes.append(f"{what}; that setting matches {len(hits)} rows ({', '.join(hits)}), which differ in a "
                             f"setting the entry does not name, so the {noun} is set beside none of them (name it in "
                             "the entry's config).")
        return notes

    @property
    def known(self) -> bool:
        """Whether the file gives any value at all."""
        every = [*self.gains, *self.seg_gains, *(e for t in self.tables.values() for e in t)]
        return any(v is not None for e in every for v in e.values.values())

    def source_line(self) -> str:
        """``Zhang et al. ... (arXiv:2007.09451, URL)`` for a footnote."""
        return f"{self.citation.rstrip('.')} ({self.url})" if self.url else self.citation


_NOTE_LABELS = {"relative_gains": ("paper Δ (%)", "gain"), "segmentation_gains": ("paper Δ mIoU", "gain"),
                "tables": ("paper", "value")}


def _values_text(section: str, values: Mapping[str, float]) -> str:
    """``+8.5% box AP and +6.0% mask AP`` (relative gains), ``+1.6 mIoU points``, ``box AP 38.0``."""
    if section == "relative_gains":
        parts = [f"{v:+.1f}% {COLUMNS[c].header}" for c, v in values.items()]
    elif section == "segmentation_gains":
        parts = [f"{v:+.1f} {COLUMNS[c].header} points" for c, v in values.items()]
    else:
        parts = [f"{COLUMNS[c].header} {v:g}" for c, v in values.items()]
    return " and ".join(parts)


# ---------------------------------------------------------------------------------------------
# reading the file

class _File:
    """Errors at ``FILE:LINE: key: problem``; the lines come from the composed YAML, read on the
    first error only."""

    def __init__(self, path: Path):
        self.path = path
        self._lines: dict[tuple, int] | None = None

    def line(self, keys: tuple) -> int | None:
        if self._lines is None:
            self._lines = {}
            try:
                _, root = compose_yaml(read_text(self.path), str(self.path))
            except (OSError, UsageError):
                root = None
            if root is not None:
                _walk(root, (), self._lines, 0)
        for n in range(len(keys), -1, -1):
            if keys[:n] in self._lines:
                return self._lines[keys[:n]]
        return None

    def error(self, keys: tuple, problem: str) -> UsageError:
        line = self.line(keys)
        name = "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else str(k)) for i, k in enumerate(keys))
        at = f"{self.path}:{line}" if line else str(self.path)
        return UsageError(f"{at}: {name}: {problem}" if name else f"{at}: {problem}")


def _walk(node: yaml.Node, keys: tuple, out: dict[tuple, int], depth: int) -> None:
    """Each key path's line (a mapping key's own line, a list item's first line)."""
    out.setdefault(keys, node.start_mark.line + 1)
    if depth > 20:  # an alias loop
        return
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                out[keys + (key_node.value,)] = key_node.start_mark.line + 1
                _walk(value_node, keys + (key_node.value,), out, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, keys + (i,), out, depth + 1)


def _text(value: Any) -> str:
    return " ".join(str(value or "").split())


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (str, type(None))) else repr(value)


def _mapping(f: _File, value: Any, keys: tuple) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise f.error(keys, f"expected a mapping, got {_describe(value)}")
    return value


def _known_keys(f: _File, section: Mapping, keys: tuple, allowed: Sequence[str]) -> None:
    for key in section:
        if key not in allowed:
            raise f.error(keys + (key,), f"unknown key; expected {', '.join(allowed)}")


def _number(f: _File, value: Any, keys: tuple) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise f.error(keys, f"expected a number or null, got {_describe(value)}")
    return float(value)


def _entry(f: _File, raw: Any, keys: tuple, *, table: str | None, tables: Sequence[str],
           columns: Sequence[str], necks: Sequence[str]) -> Entry:
    """One entry; ``table`` given: the section's own table (the entry may not name one)."""
    entry = _mapping(f, raw, keys)
    allowed = [k for k in _ENTRY_KEYS if not (table is not None and k == "table")]
    for key in entry:
        if key not in allowed:
            hint = " (the table is the section's name)" if key == "table" else ""
            raise f.error(keys + (key,), f"unknown field{hint}; expected {', '.join(allowed)}")
    setting: dict[str, Any] = {"table": table}
    for name in FIELDS:
        if name == "table" and table is not None:
            continue
        if name not in entry:
            raise f.error(keys, f"missing field '{name}' (write null where the paper does not confirm it)")
        value = entry[name]
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise f.error(keys + (name,), f"expected a name or null, got {_describe(value)}")
        if value is not None:
            value = value.strip()
            if name == "table" and value not in tables:
                raise f.error(keys + (name,), f"unknown table {value!r}; expected one of {', '.join(tables)} or null")
            if name == "neck" and value not in necks:
                raise f.error(keys + (name,), f"unknown neck {value!r}; expected one of {', '.join(necks)} or null")
            if name == "schedule":
                named = parse_schedule(value)
                if named is None:
                    raise f.error(keys + (name,), f"expected a schedule such as 1x, 2x, 3x or 120k@16 "
                                                  f"(iterations@batch), or null; got {value!r}")
                value = named
        setting[name] = value
    config = {}
    for key, value in _mapping(f, entry.get("config"), keys + ("config",)).items():
        if not isinstance(key, str) or "." not in key:
            raise f.error(keys + ("config", key), "expected a dotted config key (section.key)")
        if isinstance(value, Mapping):
            raise f.error(keys + ("config", key), f"expected a value, got a mapping (write {key}.<key>: value)")
        config[key] = value
    if "values" not in entry:
        raise f.error(keys, "missing field 'values' ({column id: number or null})")
    values = {}
    for column, value in _mapping(f, entry["values"], keys + ("values",)).items():
        if column not in columns:
            shown = ", ".join(columns) if len(columns) < 6 else "an id of fptbench.report.rows.COLUMNS"
            raise f.error(keys + ("values", column), f"unknown column; expected {shown}")
        values[str(column)] = _number(f, value, keys + ("values", column))
    where = entry.get("where")
    if where is not None and not isinstance(where, str):
        raise f.error(keys + ("where",), f"expected the place in the paper (text) or null, got {_describe(where)}")
    return Entry(**setting, values=values, config=config, where=_text(where) or None)


def _entries(f: _File, raw: Any, keys: tuple, **kwargs) -> tuple[Entry, ...]:
    """A list of entries; two confirmed entries of one setting are an error (which would it be?)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise f.error(keys, f"expected a list of entries, got {_describe(raw)}")
    out = tuple(_entry(f, item, keys + (i,), **kwargs) for i, item in enumerate(raw))
    seen: dict[tuple, int] = {}
    for i, entry in enumerate(out):
        if entry.unknown:
            continue
        if _key_of(entry) in seen:
            first = seen[_key_of(entry)]
            raise f.error(keys + (i,), f"the same setting as {'.'.join(map(str, keys))}[{first}] "
                                       f"(line {f.line(keys + (first,)) or '?'}): one entry per setting")
        seen[_key_of(entry)] = i
    return out


def load_reference(path: str | Path | None = None) -> Reference:
    """Read a reference file (default :data:`DEFAULT_REFERENCE`) of the layout above.

    Returns an empty :class:`Reference` when ``path`` is None and the default file does not exist.

    Raises:
        UsageError: the file named does not exist, is not YAML, is of another
            ``reference_version``, or breaks the layout (one line: ``FILE:LINE: key: problem``).
    """
    if path is None:
        if not DEFAULT_REFERENCE.exists():
            return Reference()
        path = DEFAULT_REFERENCE
    path = Path(path)
    f = _File(path)
    data = _mapping(f, load_yaml(path, missing="reference file not found", label="not valid YAML"), ())
    _known_keys(f, data, (), _TOP_KEYS)
    version = data.get("reference_version")
    if version != REFERENCE_VERSION:
        if version == 1:
            raise f.error(("reference_version",), "version 1 keyed values by neck or backbone/head/neck only; "
                          f"version {REFERENCE_VERSION} names table, backbone, head, neck, split and schedule of "
                          "each entry (fptbench/report/reference.py): rewrite the file in that layout")
        raise f.error(("reference_version",), f"expected {REFERENCE_VERSION}, got {_describe(version)}")
    source = _mapping(f, data.get("source"), ("source",))
    _known_keys(f, source, ("source",), ("citation", "arxiv", "url", "note"))
    if not source.get("citation"):
        raise f.error(("source", "citation"), "expected the paper the values come from")
    sections = {}
    for name, (tables, columns) in _SECTIONS.items():
        section = _mapping(f, data.get(name), (name,))
        _known_keys(f, section, (name,), ("setting", "entries"))
        necks = SEG_NECKS if name == "segmentation_gains" else NECKS
        sections[name] = (_text(section.get("setting")),
                          _entries(f, section.get("entries"), (name, "entries"), table=None, tables=tables,
                                   columns=columns, necks=necks))
    tables, notes = {}, {}
    for name, raw in _mapping(f, data.get("tables"), ("tables",)).items():
        if name not in TABLES:
            raise f.error(("tables", name), f"unknown table; expected one of {', '.join(TABLES)}")
        section = _mapping(f, raw, ("tables", name))
        _known_keys(f, section, ("tables", name), ("note", "entries"))
        tables[name] = _entries(f, section.get("entries"), ("tables", name, "entries"), table=name, tables=TABLES,
                                columns=tuple(COLUMNS), necks=SEG_NECKS if name == "segmentation" else NECKS)
        notes[name] = _text(section.get("note"))
    url = str(source.get("url") or (f"arXiv:{source['arxiv']}" if source.get("arxiv") else ""))
    return Reference(
        path=path,
        citation=_text(source["citation"]),
        url=url,
        note=_text(source.get("note")),
        gains_setting=sections["relative_gains"][0],
        gains=sections["relative_gains"][1],
        seg_gains_setting=sections["segmentation_gains"][0],
        seg_gains=sections["segmentation_gains"][1],
        tables=tables,
        table_notes=notes,
    )
