"""The one YAML reader of the harness: safe, refuses a key written twice, errors at FILE:LINE.

Configs, experiment matrices, cluster profiles and the paper's reference values are all read
through here, so a duplicate key (which PyYAML silently resolves to the last value) is an error in
every one of them, and a syntax error names the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fptbench.errors import UsageError

__all__ = ["UniqueKeyLoader", "YAMLFileError", "compose_yaml", "construct", "load_yaml", "read_text"]


class YAMLFileError(UsageError):
    """A file is not valid YAML (or has a duplicate key): ``FILE:LINE: YAML error: PROBLEM``.

    ``line`` and ``column`` count from 1 (None when the parser gives no position); ``problem`` is
    the parser's one-line complaint, so that a caller can word the message its own way.
    """

    def __init__(self, shown: str, line: int | None, column: int | None, problem: str, label: str = "YAML error"):
        self.shown, self.line, self.column, self.problem = shown, line, column, problem
        super().__init__(f"{self.at}: {label}: {problem}")

    @property
    def at(self) -> str:
        """``FILE:LINE``, or ``FILE`` when the position is unknown."""
        return f"{self.shown}:{self.line}" if self.line else self.shown


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a key written twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _error(err: yaml.YAMLError, shown: str, label: str = "YAML error") -> YAMLFileError:
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        problem = " ".join(str(err.problem or err.context or "invalid YAML").split())
        if mark is not None:
            return YAMLFileError(shown, mark.line + 1, mark.column + 1, problem, label)
        return YAMLFileError(shown, None, None, problem, label)
    return YAMLFileError(shown, None, None, " ".join(str(err).split()), label)


def read_text(path: Path, shown: str | None = None) -> str:
    """The file's text. A missing file raises FileNotFoundError (callers say what was looked
    for); any other failure raises ``UsageError("SHOWN: cannot read: REASON")``."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise UsageError(f"{shown or path}: cannot read: {reason}") from None


def load_yaml(path: str | Path, shown: str | None = None, *, missing: str | None = None,
              label: str = "YAML error") -> Any:
    """The document in ``path`` as plain Python values (None for an empty file).

    Args:
        shown: the file's name in messages (default: the path).
        missing: with it, a missing file is ``UsageError("SHOWN: MISSING")``.
        label: what a bad document is called: ``SHOWN:LINE: LABEL: PROBLEM``.

    Raises:
        FileNotFoundError: there is no such file (without ``missing``).
        UsageError: the file cannot be read; :class:`YAMLFileError` for bad YAML or a duplicate key.
    """
    shown = shown or str(path)
    try:
        text = read_text(Path(path), shown)
    except FileNotFoundError:
        if missing is None:
            raise
        raise UsageError(f"{shown}: {missing}") from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise _error(err, shown, label) from None


def compose_yaml(text: str, shown: str) -> tuple[UniqueKeyLoader, yaml.Node | None]:
    """The node tree of a document, with line numbers, and the loader that makes values of its
    nodes (:func:`construct`). Raises :class:`YAMLFileError`."""
    loader = UniqueKeyLoader(text)
    try:
        return loader, loader.get_single_node()
    except yaml.YAMLError as err:
        raise _error(err, shown) from None


def construct(loader: UniqueKeyLoader, node: yaml.Node, shown: str) -> Any:
    """The plain value of a node of :func:`compose_yaml`'s tree. Raises :class:`YAMLFileError`."""
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as err:
        raise _error(err, shown) from None
