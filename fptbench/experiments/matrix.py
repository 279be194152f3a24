"""Experiment matrices: one YAML file -> the cells (runs) of a sweep, each a resolved config.

A matrix file (``experiments/NAME.yaml``) names a base config, fixed overrides, ordered axes and
excludes; its cells are the cross product of the axes (first axis slowest) minus the excluded
ones::

    description: one line
    base: synth_r18_bfp            # config name, or a YAML path relative to this file
    set: {train.max_iter: 30}      # fixed overrides for every cell (dotted keys or sections)
    world_size: 1                  # processes (GPUs) per cell; default 1
    profile: {size: [128, 128], runs: 3, warmup: 1}   # default: fptbench.config.ProfileRequest
    axes:
      ablation:                    # named axis: label -> overrides
        bfp: {fpt.st: false, fpt.gt: false, fpt.rt: false}
        st:  {fpt.st: true}
      model.backbone: [resnet18, resnet50]   # config-key axis: a list of values
      seed: [0, 1, 2]
    exclude:                       # an entry drops the cells that match all its axes
      - {ablation: st, seed: 2}
    reference: {ablation: bfp}     # the report's design table: each row's delta against this one

Overrides are applied in this order: ``set``, each axis value's overrides in axis order, then the
caller's ``overrides`` (``--set``). Run ids are the cells' labels joined by ``-`` plus the first 8
hex digits of a hash of the resolved config and the cell's effective batch (``world_size`` x
``train.images_per_device`` x ``train.accumulate``, :mod:`fptbench.batch`: the batch changes the
learning rate and the schedule a cell runs), e.g. ``st-resnet50-s0-1a2b3c4d``: the same file gives
the same ids, and a change to one cell's config or batch changes only that cell's id [ours].

Speed: the base's ``_base_`` chain is read once; each cell is a dict copy, its overrides (typed
and checked once, when the file is read), :func:`~fptbench.config.check_config` and the hash.

Every mistake raises :class:`MatrixError`, one line naming the file and line:
``experiments/x.yaml:12: axes: unknown config key 'model.backbon'; did you mean 'model.backbone'?``.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import yaml

from fptbench.config import (
    SCHEMA,
    ConfigError,
    ProfileRequest,
    apply_overrides,
    check_config,
    check_value,
    config_hash,
    describe,
    flat_defaults,
    nest,
    read_chain,
    resolve_config,
    sections,
    unknown_key,
)
from fptbench.batch import batch_plan
from fptbench.errors import UsageError
from fptbench.paths import REPO_ROOT, resolve_name_or_path
from fptbench.yamlio import compose_yaml, construct, read_text

__all__ = ["Cell", "Matrix", "MatrixError", "find_matrix", "load_matrix", "value_label"]

TOP_KEYS = ("description", "base", "set", "world_size", "profile", "axes", "exclude", "reference")
PROFILE_KEYS = tuple(f.name for f in fields(ProfileRequest))
RUN_ID_HASH = 8
"""Hex digits of the config hash that end a run id."""
SEED_AXIS = "seed"
"""The axis that only repeats a setting: the report pools it (a ``reference`` cannot name it)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._+]")


class MatrixError(UsageError):
    """A matrix file is invalid; ``str(err)`` is one line, ``FILE:LINE: what``."""


@dataclass(frozen=True)
class Cell:
    """One run of a matrix.

    ``axes``: axis name -> label (named axis) or value (config-key axis), in axis order.
    ``overrides``: ``(dotted key, typed value)`` pairs in the order applied to the base:
    ``set``, the axis values' overrides, the caller's overrides. ``config``: the resolved,
    checked nested config (as :func:`~fptbench.config.load_config` returns), ``config_hash`` its
    :func:`~fptbench.config.config_hash` (what the run's record carries); ``batch`` its effective
    batch, which enters the run id with the config.
    """

    run_id: str
    axes: dict[str, Any]
    overrides: tuple[tuple[str, Any], ...]
    config: dict = field(repr=False)
    config_hash: str
    batch: int = 0  # images per optimizer step at the matrix's world_size (fptbench.batch)


@dataclass(frozen=True)
class Matrix:
    """A loaded matrix: ``profile`` is ``{"size": [H, W], "runs": int, "warmup": int}``;
    ``axes`` is ``((axis name, (label or value, ...)), ...)``; ``cells`` in expansion order."""

    name: str
    path: Path
    description: str
    base: str
    world_size: int
    profile: dict
    axes: tuple[tuple[str, tuple], ...]
    cells: tuple[Cell, ...]
    reference: dict = field(default_factory=dict)  # axis -> value of the row others are compared with


@dataclass(frozen=True)
class _Entry:
    """One value of an axis: what the cell records, its run-id label, its overrides, its line."""

    value: Any
    label: str
    overrides: tuple[tuple[str, Any], ...]
    line: int


@dataclass(frozen=True)
class _Axis:
    name: str
    entries: tuple[_Entry, ...]
    line: int


# ---------------------------------------------------------------------------------------------
# labels

def _sanitise(text: str) -> str:
    return _UNSAFE.sub("_", text)


def _number(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def value_label(key: str, value: Any) -> str:
    """The run-id label of a config-key axis value.

    Strings as they are; numbers as ``<last key part><value>`` (``seed`` 0 -> ``s0``,
    ``train.max_iter`` 30 -> ``max_iter30``); bools as ``<last>`` / ``no<last>``; lists as
    ``<last><items joined by _>``; empty strings, lists and null as ``no<last>``. Characters
    outside ``[A-Za-z0-9._+]`` become ``_``.
    """
    last = key.rsplit(".", 1)[-1]
    if isinstance(value, bool):
        text = last if value else f"no{last}"
    elif isinstance(value, (int, float)):
        text = f"s{value}" if key == "seed" else f"{last}{_number(value)}"
    elif isinstance(value, (list, tuple)):
        text = f"{last}{'_'.join(_number(v) for v in value)}" if value else f"no{last}"
    elif value is None or value == "":
        text = f"no{last}"
    else:
        text = str(value)
    return _sanitise(text)


def _same(a: Any, b: Any) -> bool:
    """Equal as YAML values: true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


# ---------------------------------------------------------------------------------------------
# files

def _shown(path: Path) -> str:
    """A matrix file's name in messages: relative to the working directory when inside it."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:  # another drive (Windows)
        return str(path)


def find_matrix(name_or_path: str | os.PathLike) -> Path:
    """``"demo"`` -> ``./experiments/demo.yaml`` if it exists, else ``<repo>/experiments/demo.yaml``;
    an existing path as is. Raises MatrixError (with the close name) when there is none."""
    return resolve_name_or_path(name_or_path, [Path("experiments"), REPO_ROOT / "experiments"], kind="matrix",
                                noun="experiment", suffixes=(".yaml", ".yml"), error=MatrixError)


class _Reader:
    """A composed YAML document with line numbers: values of nodes, errors at nodes."""

    def __init__(self, path: Path):
        self.path = path
        self.shown = _shown(path)
        try:
            text = read_text(path, self.shown)
        except OSError as err:
            raise MatrixError(f"{self.shown}: cannot read: {err.strerror or err}") from None
        self.loader, self.root = _as_matrix_error(compose_yaml, text, self.shown)

    def error(self, node: yaml.Node | None, message: str) -> MatrixError:
        return self.error_at(self.line(node), message)

    def error_at(self, line: int, message: str) -> MatrixError:
        return MatrixError(f"{self.shown}:{line}: {message}")

    @staticmethod
    def line(node: yaml.Node | None) -> int:
        return node.start_mark.line + 1 if node is not None else 1

    def value(self, node: yaml.Node) -> Any:
        return _as_matrix_error(construct, self.loader, node, self.shown)

    def items(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """``(key, key node, value node)`` of a mapping node, keys strings and unique."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping, got {describe(self.value(node))}")
        self.loader.flatten_mapping(node)  # YAML merge keys (<<: *anchor)
        out: list[tuple[str, yaml.Node, yaml.Node]] = []
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key, str):
                raise self.error(key_node, f"{what}: names must be strings, got {describe(key)} (quote it)")
            if key in first:
                raise self.error(key_node, f"{what}: '{key}' is given twice (first at line {first[key]})")
            first[key] = self.line(key_node)
            out.append((key, key_node, value_node))
        return out

    def is_null(self, node: yaml.Node | None) -> bool:
        return node is None or (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null")

    def overrides(self, node: yaml.Node | None, what: str, prefix: str = "") -> list[tuple[str, Any]]:
        """A mapping of config keys (dotted, or nested by section) -> typed, checked values."""
        if self.is_null(node):
            return []
        out: list[tuple[str, Any]] = []
        for name, key_node, value_node in self.items(node, what):
            key = f"{prefix}{name}"
            spec = SCHEMA.get(key)
            if spec is not None:
                where = f"{self.shown}:{self.line(value_node)}: {what}"
                out.append((key, _as_matrix_error(check_value, key, self.value(value_node), spec, where)))
            elif isinstance(value_node, yaml.MappingNode):
                out.extend(self.overrides(value_node, what, prefix=f"{key}."))
            elif key in sections():
                raise self.error(value_node, f"{what}: section '{key}' must be a mapping of keys")
            else:
                raise MatrixError(str(unknown_key(key, f"{self.shown}:{self.line(key_node)}: {what}")))
        seen: set[str] = set()
        for key, _ in out:
            if key in seen:
                raise self.error(node, f"{what}: key '{key}' is given twice")
            seen.add(key)
        return out


def _as_matrix_error(fn, *args, **kwargs):
    """Call ``fn``; any other usage error (its message already names the file) becomes a MatrixError."""
    try:
        return fn(*args, **kwargs)
    except MatrixError:
        raise
    except UsageError as err:
        raise MatrixError(str(err)) from None


# ---------------------------------------------------------------------------------------------
# sections of the file

def _int(reader: _Reader, node: yaml.Node, what: str, low: int) -> int:
    value = reader.value(node)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise reader.error(node, f"{what} must be an integer >= {low}, got {describe(value)}")
    return value


def _profile(reader: _Reader, node: yaml.Node) -> ProfileRequest:
    values: dict[str, Any] = {}
    for key, key_node, value_node in reader.items(node, "profile"):
        if key not in PROFILE_KEYS:
            close = difflib.get_close_matches(key, PROFILE_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"expected {', '.join(PROFILE_KEYS)}"
            raise reader.error(key_node, f"profile: unknown key '{key}'; {hint}")
        value = reader.value(value_node)
        problem = ProfileRequest.problem(key, value)
        if problem:
            raise reader.error(value_node, f"profile.{key} {problem}")
        values[key] = value
    return ProfileRequest(**values)


def _base(reader: _Reader, node: yaml.Node) -> tuple[str, dict[str, Any]]:
    """The base's name as written and its flat values (schema defaults + its _base_ chain)."""
    base = reader.value(node)
    if not isinstance(base, str) or not base:
        raise reader.error(node, f"base must be a config name or a YAML path, got {describe(base)}")
    near = reader.path.parent / base
    try:
        if near.is_file():
            path = near
        elif "/" in base or "\\" in base:
            raise ConfigError(f"file not found (looked for {near})")
        else:
            path = resolve_config(base)
        flat = flat_defaults()
        flat.update(read_chain(path))
    except ConfigError as err:
        raise reader.error(node, f"base '{base}': {err}") from None
    return base, flat


def _axis(reader: _Reader, name: str, key_node: yaml.Node, node: yaml.Node) -> _Axis:
    what = f"axis '{name}'"
    if reader.is_null(node) or (isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.value):
        raise reader.error(node if not reader.is_null(node) else key_node, f"{what} is empty")
    entries: list[_Entry] = []
    if isinstance(node, yaml.SequenceNode):
        spec = SCHEMA.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(SCHEMA), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise reader.error(key_node, f"axes: unknown config key '{name}'{hint} (a named axis maps "
                                         f"labels to overrides)")
        for item in node.value:
            where = f"{reader.shown}:{reader.line(item)}: {what}"
            value = _as_matrix_error(check_value, name, reader.value(item), spec, where)
            entries.append(_Entry(value, value_label(name, value), ((name, value),), reader.line(item)))
    elif isinstance(node, yaml.MappingNode):
        if name in SCHEMA:
            raise reader.error(key_node, f"{what}: a config key's axis is a list of values; a named axis "
                                         f"(label -> overrides) needs a name that is not a config key")
        for label, label_node, value_node in reader.items(node, what):
            if not label:
                raise reader.error(label_node, f"{what}: a label must not be empty")
            overrides = reader.overrides(value_node, f"{what}, label '{label}'")
            entries.append(_Entry(label, _sanitise(label), tuple(overrides), reader.line(label_node)))
    else:
        raise reader.error(node, f"{what} must be a list of values (config key) or a mapping label -> "
                                 f"overrides (named axis), got {describe(reader.value(node))}")
    first: dict[str, int] = {}
    for entry in entries:
        if entry.label in first:
            raise reader.error_at(entry.line, f"{what}: {describe(entry.value)} gives the run-id label "
                                              f"'{entry.label}' already given at line {first[entry.label]}")
        first[entry.label] = entry.line
    return _Axis(name, tuple(entries), reader.line(key_node))


def _excludes(reader: _Reader, node: yaml.Node, axes: list[_Axis]) -> list[tuple[int, list[set[int] | None]]]:
    """Each exclude entry as (line, per axis: the matching entry indices, None = any)."""
    if reader.is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise reader.error(node, f"exclude must be a list of mappings axis -> label or value, "
                                 f"got {describe(reader.value(node))}")
    names = [axis.name for axis in axes]
    out = []
    for item in node.value:
        match: list[set[int] | None] = [None] * len(axes)
        pairs = reader.items(item, "exclude")
        if not pairs:
            raise reader.error(item, "exclude: an entry must name at least one axis (an empty one excludes "
                                     "every cell)")
        for name, key_node, value_node in pairs:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"axes: {', '.join(names) or 'none'}"
                raise reader.error(key_node, f"exclude: unknown axis '{name}'; {hint}")
            axis = axes[names.index(name)]
            want = reader.value(value_node)
            hits = {i for i, e in enumerate(axis.entries)
                    if _same(want, e.value) or (isinstance(want, str) and want == e.label)}
            if not hits:
                known = ", ".join(str(e.value) for e in axis.entries)
                raise reader.error(value_node, f"exclude: axis '{name}' has no label or value {want!r}; "
                                               f"it has {known}")
            match[names.index(name)] = hits
        out.append((reader.line(item), match))
    return out


def _reference(reader: _Reader, node: yaml.Node, axes: list[_Axis]) -> tuple[int, dict[str, Any]]:
    """``reference: {axis: label or value}``: (its line, axis -> the entry's value)."""
    names = [axis.name for axis in axes if axis.name != SEED_AXIS]
    if not isinstance(node, yaml.MappingNode) or not node.value:
        first = next((a for a in axes if a.name != SEED_AXIS), None)
        example = f"{first.name}: {first.entries[0].label}" if first else "variant: paper"
        raise reader.error(node, f"reference must be a mapping axis -> label or value, e.g. "
                                 f"{{{example}}}, got {describe(reader.value(node))}")
    out: dict[str, Any] = {}
    for name, key_node, value_node in reader.items(node, "reference"):
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = (f"did you mean '{close[0]}'?" if close else f"axes: {', '.join(names) or 'none'}"
                    ) if name != SEED_AXIS else "seeds are pooled in a row; name the axes of the setting"
            raise reader.error(key_node, f"reference: unknown axis '{name}'; {hint}")
        axis = axes[[a.name for a in axes].index(name)]
        want = reader.value(value_node)
        entry = next((e for e in axis.entries if _same(want, e.value) or (isinstance(want, str) and want == e.label)),
                     None)
        if entry is None:
            known = ", ".join(str(e.value) for e in axis.entries)
            raise reader.error(value_node, f"reference: axis '{name}' has no label or value {want!r}; it has {known}")
        out[name] = entry.value
    return reader.line(node), out


# ---------------------------------------------------------------------------------------------
# expansion

def _expand(reader: _Reader, base_flat: dict[str, Any], fixed: list[tuple[str, Any]], fixed_line: int,
            axes: list[_Axis], excludes: list, extra: list[tuple[str, Any]], world_size: int) -> tuple[Cell, ...]:
    """The cells: cross product of the axes (first slowest), excludes dropped, each checked."""
    excluded: list[int] = [0] * len(excludes)
    cells: list[Cell] = []
    seen: dict[str, tuple[int, ...]] = {}
    for combo in itertools.product(*[range(len(axis.entries)) for axis in axes]):
        dropped = False
        for k, (_, match) in enumerate(excludes):
            if all(m is None or i in m for m, i in zip(match, combo)):
                if not dropped:
                    excluded[k] += 1
                dropped = True
        if dropped:
            continue
        entries = [axis.entries[i] for axis, i in zip(axes, combo)]
        pairs = [*fixed, *(pair for entry in entries for pair in entry.overrides), *extra]
        flat = dict(base_flat)
        flat.update(pairs)
        labels = [entry.label for entry in entries]
        try:
            cfg = check_config(nest(flat), where="cell")
        except ConfigError as err:
            raise _cell_error(reader, err, base_flat, fixed, fixed_line, extra, entries, labels) from None
        digest = config_hash(cfg)
        try:
            batch = batch_plan(cfg, world_size).batch
        except UsageError as err:
            raise _cell_error(reader, ConfigError(f"cell: {err} (world_size {world_size})"), base_flat, fixed,
                              fixed_line, extra, entries, labels) from None
        if digest in seen:
            other = seen[digest]
            k = next(k for k, (a, b) in enumerate(zip(other, combo)) if a != b)
            first = "-".join(axis.entries[i].label for axis, i in zip(axes, other))
            raise reader.error_at(entries[k].line, f"cells '{first}' and '{'-'.join(labels)}' resolve to "
                                                   f"the same config (hash {digest}): make them differ or "
                                                   f"exclude one")
        seen[digest] = combo
        cells.append(Cell(
            run_id="-".join([*labels, config_hash({"config": digest, "batch": batch})[:RUN_ID_HASH]]),
            axes={axis.name: entry.value for axis, entry in zip(axes, entries)},
            overrides=tuple(pairs),
            config=cfg,
            config_hash=digest,
            batch=batch,
        ))
    for k, (line, _) in enumerate(excludes):
        if not excluded[k]:
            raise reader.error_at(line, "exclude matches no cell (the entries above already drop every "
                                        "cell it names)")
    if not cells:
        raise reader.error_at(excludes[-1][0] if excludes else 1, "exclude drops every cell")
    return tuple(cells)


def _cell_error(reader: _Reader, err: ConfigError, base_flat: dict, fixed: list, fixed_line: int,
                extra: list, entries: list[_Entry], labels: list[str]) -> MatrixError:
    """A cross-key rule failed: blame ``set`` if the base with ``set`` already fails, then the
    caller's overrides, else the last axis value of the cell that sets something."""
    message = str(err).removeprefix("cell: ")
    for pairs, blame in ((fixed, None), ([*fixed, *extra], "--set")):
        try:
            check_config(nest({**base_flat, **dict(pairs)}), where="cell")
        except ConfigError:
            if blame is None:
                return reader.error_at(fixed_line, f"base + set: {message}")
            return MatrixError(f"{reader.shown}: with --set: {message}")
    line = next((e.line for e in reversed(entries) if e.overrides), fixed_line)
    return reader.error_at(line, f"cell '{'-'.join(labels)}': {message}")


def load_matrix(name_or_path: str | os.PathLike, overrides: Sequence[tuple[str, Any]] = ()) -> Matrix:
    """Read a matrix file and expand it into checked cells.

    Args:
        name_or_path: an experiment name (``"demo"``, see :func:`find_matrix`) or a YAML path.
        overrides: ``(dotted key, value)`` pairs applied to every cell after ``set`` and the
            axes (``--set KEY VALUE``; a string value is read as YAML). A config key that is an
            axis of the matrix is refused.

    Returns:
        The :class:`Matrix`, its cells in expansion order (first axis slowest).

    Raises:
        MatrixError: one line, ``FILE:LINE: what``.
    """
    path = find_matrix(name_or_path)
    reader = _Reader(path)
    root = reader.root
    if reader.is_null(root):
        raise reader.error_at(1, "the file is empty; a matrix needs at least 'base'")
    top: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, key_node, value_node in reader.items(root, "the top level"):
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(key, TOP_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"expected {', '.join(TOP_KEYS)}"
            raise reader.error(key_node, f"unknown top-level key '{key}'; {hint}")
        top[key] = (key_node, value_node)
    if "base" not in top:
        raise reader.error(root, "missing 'base': the config the cells start from (a name or a YAML path)")

    description = ""
    if "description" in top:
        node = top["description"][1]
        description = reader.value(node)
        if not isinstance(description, str):
            raise reader.error(node, f"description must be a string, got {describe(description)}")
        description = " ".join(description.split())
    base, base_flat = _base(reader, top["base"][1])
    fixed_line = reader.line(top["set"][0] if "set" in top else top["base"][0])
    fixed = reader.overrides(top["set"][1], "set") if "set" in top else []
    world_size = _int(reader, top["world_size"][1], "world_size", 1) if "world_size" in top else 1
    profile = _profile(reader, top["profile"][1]) if "profile" in top else ProfileRequest()

    axes: list[_Axis] = []
    if "axes" in top and not reader.is_null(top["axes"][1]):
        for name, key_node, value_node in reader.items(top["axes"][1], "axes"):
            axes.append(_axis(reader, name, key_node, value_node))
    excludes = _excludes(reader, top["exclude"][1], axes) if "exclude" in top else []

    def refuse_axis(key: str, where: str) -> None:
        axis = next((a for a in axes if a.name == key), None)
        if axis is not None:
            raise MatrixError(f"{where}: '{key}' is an axis of this matrix (line {axis.line}); "
                              f"edit or exclude its values instead")

    extra = _as_matrix_error(apply_overrides, {}, list(overrides), reader.shown, refuse=refuse_axis)

    cells = _expand(reader, base_flat, fixed, fixed_line, axes, excludes, extra, world_size)
    reference: dict[str, Any] = {}
    if "reference" in top:
        line, reference = _reference(reader, top["reference"][1], axes)
        if not any(all(_same(cell.axes[a], v) for a, v in reference.items()) for cell in cells):
            raise reader.error_at(line, "reference: the excludes drop every cell it names")
    return Matrix(
        name=path.stem,
        path=path.resolve(),
        description=description,
        base=base,
        world_size=world_size,
        profile=profile.as_dict(),
        axes=tuple((axis.name, tuple(entry.value for entry in axis.entries)) for axis in axes),
        cells=cells,
        reference=reference,
    )
