"""Atomic file writes: nothing the harness writes is ever seen half-written."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from fptbench.errors import UsageError

__all__ = ["WriteError", "atomic_write", "writable_dir", "write_bytes_atomic", "write_json_atomic", "current_umask"]


class WriteError(UsageError, OSError):
    """A file could not be written (read-only or full file system, a folder where a file should be):
    one line naming the file and the system's reason. Also an OSError, for callers that catch those."""


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) if needed and check that a file can be made in it, before
    any work whose result would then be lost.

    Raises:
        WriteError: ``"PATH: is a file, not a folder"`` or ``"PATH: cannot write in the WHAT: REASON"``
            (read-only file system, permissions, no space for even a directory entry).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(f"{path}: is a file, not a folder (the {what})")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        blocker = _blocker(path)
        reason = f"{blocker} is a file, not a folder" if blocker is not None else (err.strerror or str(err))
        raise WriteError(f"{path}: cannot write in the {what}: {reason}") from None
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], None], *, binary: bool = True) -> Path:
    """Write ``path`` through ``write(file)`` into a temporary file of the same folder, fsync it,
    then ``os.replace`` it over ``path``: a reader (or a run killed at any instant) sees either
    the old file or the new one, never a partial one.

    The file gets the mode ``0666 & ~umask``, as ``open`` would give it (``mkstemp`` makes 0600,
    which teammates could not read).

    Raises:
        WriteError: the folder or file cannot be written (``EROFS``, ``ENOSPC``, ``EACCES``, a
            path through a file); ``path`` is left as it was and no temporary file remains.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            reason = err.strerror or str(err)
            blocker = _blocker(path)
            if blocker is not None:  # mkdir says "File exists", open "Not a directory"
                reason = f"{blocker} is a file, not a folder"
            raise WriteError(f"{path}: cannot write: {reason}") from None
        raise
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`): a reader sees the old file or
    the new one, never a part."""
    return atomic_write(path, lambda f: f.write(data))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (see :func:`write_bytes_atomic`).

    Serialised before anything is written: a value JSON cannot hold (NaN, a tensor) raises
    ``ValueError``/``TypeError`` and leaves ``path`` as it was.
    """
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"))


def _blocker(path: Path) -> Path | None:
    """The first parent of ``path`` that exists and is a file (why a folder there cannot be made)."""
    return next((p for p in path.parents if p.exists() and not p.is_dir()), None)
