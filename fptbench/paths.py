"""Where things are: the repository root, and one way to turn a name or a path into a file.

Configs (``fptbench/configs/``), experiment matrices (``experiments/``) and cluster profiles
(``slurm/``) are all named the same way: an existing path is taken as it is, a bare name is
looked up in a few folders, first match wins.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Sequence

from fptbench.errors import UsageError

__all__ = ["REPO_ROOT", "find_named", "names_in", "resolve_name_or_path"]

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout that holds ``fptbench/``, ``experiments/``, ``slurm/`` and ``results/`` (the
package is installed editable)."""


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or os.sep in text


def _stem(name: str, suffixes: Sequence[str]) -> str:
    for suffix in suffixes:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_named(name: str, folders: Sequence[Path], suffixes: Sequence[str] = (".yaml",)) -> Path | None:
    """The first ``folder / (name + suffix)`` that is a file, folders first then suffixes; None if
    there is none. ``name`` may already end with one of ``suffixes``."""
    stem = _stem(name, suffixes)
    for folder in folders:
        for suffix in suffixes:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    return None


def names_in(folders: Sequence[Path], suffixes: Sequence[str] = (".yaml",), *, private: bool = True) -> list[str]:
    """Sorted names (file stems) found in ``folders``; ``private=False`` leaves out ``_*`` files."""
    names = {p.stem for folder in folders for suffix in suffixes for p in Path(folder).glob(f"*{suffix}")}
    return sorted(n for n in names if private or not n.startswith("_"))


def resolve_name_or_path(name_or_path: str | os.PathLike, folders: Sequence[Path], *, kind: str,
                         noun: str | None = None, suffixes: Sequence[str] = (".yaml",), private: bool = True,
                         error: type[UsageError] = UsageError) -> Path:
    """An existing file as it is, or a bare name (no folder separator) found by :func:`find_named`.

    Raises ``error``: ``"{kind} file not found: PATH"`` for a path that is not a file, else
    ``"unknown {noun} 'NAME'; did you mean 'X'? available: A, B"`` (``noun`` defaults to ``kind``;
    ``private=False`` hides ``_*`` files from the list).
    """
    text = str(name_or_path)
    path = Path(text)
    if path.is_file():
        return path
    if _looks_like_path(text):
        raise error(f"{kind} file not found: {text}")
    found = find_named(text, folders, suffixes)
    if found is not None:
        return found
    names = names_in(folders, suffixes, private=private)
    close = difflib.get_close_matches(_stem(text, suffixes), names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise error(f"unknown {noun or kind} '{text}'; {hint}available: {', '.join(names) or 'none'}")
