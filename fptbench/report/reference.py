"""The paper's reported numbers (``results/paper_reference.yaml``), looked up cell by cell.

File layout (YAML)::

    reference_version: 1
    source: {citation: str, arxiv: str, url: str, note: str}
    relative_gains:                 # percent of the BFP value: 100 * (X / BFP - 1)
      setting: str                  # where the paper measured them
      rows: {FPT: {bbox.AP: 8.5, segm.AP: 6.0}}
    segmentation_gains:             # absolute points of mIoU: X - baseline, per dataset
      setting: str                  # what was compared, and how it differs from our runs
      evaluated_on: {<dataset>: str}          # the paper's split, in words ("Cityscapes test")
      rows: {<dataset>/<neck>: {seg.mIoU: number | null}}
    tables:                         # absolute values; null = unknown, shown as nothing
      <table name>:                 # ablation | backbone_head | design | complexity | segmentation
        note: str
        rows: {<row key>: {<column id>: number | null}}

Row keys: the neck (``BFP``, ``+ST`` ... ``FPT``) for ``ablation``; ``backbone/head/neck``
(``resnet50/mask_rcnn/FPT``) for ``backbone_head`` and ``complexity``; ``axis=label, ...`` of the
design axes for ``design``; ``dataset/neck`` (``cityscapes/+FPT (LGT)``) for ``segmentation`` and
``segmentation_gains``, the dataset being data.test without its split
(:func:`fptbench.report.rows.dataset_key`) and the neck a segmentation row's name
(:func:`fptbench.report.rows.seg_neck_name`). Column ids: ``bbox.AP`` ... ``segm.APl``,
``seg.mIoU``, ``seg.pixel_acc``, ``seg.mean_acc``, ``params_m``, ``gflops``, ``latency_ms`` (see
:data:`fptbench.report.rows.COLUMNS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fptbench.errors import UsageError
from fptbench.paths import REPO_ROOT
from fptbench.report.rows import SEG_METRICS
from fptbench.yamlio import load_yaml

__all__ = ["DEFAULT_REFERENCE", "Reference", "load_reference"]

DEFAULT_REFERENCE = REPO_ROOT / "results" / "paper_reference.yaml"
"""The checkout's reference file: ``<repo>/results/paper_reference.yaml``."""

_TOP_KEYS = {"reference_version", "source", "relative_gains", "segmentation_gains", "tables"}


@dataclass(frozen=True)
class Reference:
    """Reference values by (table, row key, column id); ``None`` wherever the file says null."""

    path: Path | None = None
    citation: str = ""
    url: str = ""
    note: str = ""
    gains_setting: str = ""
    gains: dict[str, dict[str, float | None]] = field(default_factory=dict)
    seg_gains_setting: str = ""
    seg_gains: dict[str, dict[str, float | None]] = field(default_factory=dict)
    seg_evaluated_on: dict[str, str] = field(default_factory=dict)
    tables: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    table_notes: dict[str, str] = field(default_factory=dict)

    def value(self, table: str, row: str, column: str) -> float | None:
        """The paper's absolute value of ``column`` in ``row`` of ``table``, or None (unknown)."""
        return self.tables.get(table, {}).get(row, {}).get(column)

    def gain(self, neck: str | None, column: str) -> float | None:
        """The paper's relative gain (percent) of ``neck`` over BFP on ``column``, or None."""
        return self.gains.get(neck or "", {}).get(column)

    def seg_gain(self, dataset: str | None, neck: str | None, column: str = "seg.mIoU") -> float | None:
        """The paper's gain in ``column`` points (mIoU) of ``neck`` over its baseline on ``dataset``, or None."""
        return self.seg_gains.get(f"{dataset}/{neck}", {}).get(column)

    def seg_split(self, dataset: str | None) -> str:
        """Where the paper measured ``dataset``'s gain, in words (``Cityscapes test``); "" if not known."""
        return self.seg_evaluated_on.get(dataset or "", "")

    @property
    def known(self) -> bool:
        """Whether the file gives any value at all."""
        return any(v is not None for gains in (self.gains, self.seg_gains) for row in gains.values() for v in row.values()) \
            or any(v is not None for t in self.tables.values() for row in t.values() for v in row.values())

    def source_line(self) -> str:
        """``Zhang et al. ... (arXiv:2007.09451, URL)`` for a footnote."""
        return f"{self.citation.rstrip('.')} ({self.url})" if self.url else self.citation


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{where}: expected a number or null, got {value!r}")
    return float(value)


def _mapping(value: Any, where: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _rows(value: Any, where: str) -> dict[str, dict[str, float | None]]:
    return {str(row): {str(col): _number(v, f"{where}.{row}.{col}") for col, v in _mapping(cols, f"{where}.{row}").items()}
            for row, cols in _mapping(value, where).items()}


def _seg_gains(value: Any, where: str) -> tuple[str, dict[str, str], dict[str, dict[str, float | None]]]:
    """``segmentation_gains``: (setting, evaluated_on, rows), each row key ``dataset/neck`` of a
    dataset that ``evaluated_on`` names, each column a segmentation score."""
    section = _mapping(value, where)
    evaluated_on = {}
    for dataset, text in _mapping(section.get("evaluated_on"), f"{where}.evaluated_on").items():
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"{where}.evaluated_on.{dataset}: expected the paper's split in words, got {text!r}")
        evaluated_on[str(dataset)] = " ".join(text.split())
    rows = _rows(section.get("rows"), f"{where}.rows")
    for key, cols in rows.items():
        dataset, _, neck = key.partition("/")
        if not neck or dataset not in evaluated_on:
            raise UsageError(f"{where}.rows.{key}: expected '<dataset>/<neck>' of a dataset in {where}.evaluated_on "
                             f"({', '.join(evaluated_on) or 'none'})")
        bad = [c for c in cols if c not in SEG_METRICS]
        if bad:
            raise UsageError(f"{where}.rows.{key}.{bad[0]}: not a segmentation score; expected one of {', '.join(SEG_METRICS)}")
    return " ".join(str(section.get("setting") or "").split()), evaluated_on, rows


def load_reference(path: str | Path | None = None) -> Reference:
    """Read a reference file (default :data:`DEFAULT_REFERENCE`).

    Returns an empty :class:`Reference` when ``path`` is None and the default file does not exist.

    Raises:
        UsageError: the file named does not exist, is not YAML, or breaks the layout above
            (the message names the file and the key).
    """
    if path is None:
        if not DEFAULT_REFERENCE.exists():
            return Reference()
        path = DEFAULT_REFERENCE
    path = Path(path)
    data = _mapping(load_yaml(path, missing="reference file not found", label="not valid YAML"), str(path))
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; expected {', '.join(sorted(_TOP_KEYS))}")
    source = _mapping(data.get("source"), f"{path}: source")
    if not source.get("citation"):
        raise UsageError(f"{path}: source.citation: expected the paper the values come from")
    gains = _mapping(data.get("relative_gains"), f"{path}: relative_gains")
    tables = _mapping(data.get("tables"), f"{path}: tables")
    seg_setting, seg_evaluated_on, seg_gains = _seg_gains(data.get("segmentation_gains"), f"{path}: segmentation_gains")
    url = str(source.get("url") or (f"arXiv:{source['arxiv']}" if source.get("arxiv") else ""))
    return Reference(
        path=path,
        citation=" ".join(str(source["citation"]).split()),
        url=url,
        note=" ".join(str(source.get("note") or "").split()),
        gains_setting=" ".join(str(gains.get("setting") or "").split()),
        gains=_rows(gains.get("rows"), f"{path}: relative_gains.rows"),
        seg_gains_setting=seg_setting,
        seg_gains=seg_gains,
        seg_evaluated_on=seg_evaluated_on,
        tables={str(name): _rows(_mapping(t, f"{path}: tables.{name}").get("rows"), f"{path}: tables.{name}.rows")
                for name, t in tables.items()},
        table_notes={str(name): " ".join(str(_mapping(t, f"{path}: tables.{name}").get("note") or "").split())
                     for name, t in tables.items()},
    )
