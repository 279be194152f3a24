"""Training checkpoints: atomic files with everything an exact resume needs.

``OUTPUT/checkpoints/`` holds ``model_{iteration:07d}.pth`` files and ``last.pth``, a hard link to
the newest. What survives a kill at any instant: the temporary files of an interrupted write are
removed when the next run starts (:func:`clean_temp_files`), a ``last.pth`` that cannot be read
is replaced by the newest readable ``model_N.pth`` (:func:`find_resumable`), and old periodic
files are pruned (:func:`prune_checkpoints`), the last :data:`KEEP_LAST` kept.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from fptbench.errors import UsageError
from fptbench.fileio import atomic_write

__all__ = ["CHECKPOINT_DIR", "LAST", "KEEP_LAST", "rng_state", "set_rng_state", "save_checkpoint", "find_last",
           "find_resumable", "load_checkpoint", "clean_temp_files", "prune_checkpoints", "numbered_checkpoints"]

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pth"
KEEP_LAST = 2
"""Periodic checkpoints always kept, newest first [ours]: two, so that a corrupt newest one
still leaves one to resume from."""
_NUMBERED = re.compile(r"model_(\d+)\.pth")


def rng_state() -> dict[str, Any]:
    """Every random generator the training loop draws from (Python, NumPy, torch CPU and CUDA).

    Plain Python values and tensors only, so that checkpoints load with torch.load(weights_only=True).
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss}
    state = {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def save_checkpoint(
    output_dir: str | os.PathLike,
    *,
    iteration: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any = None,
    rng: Any = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``OUTPUT/checkpoints/model_{iteration:07d}.pth`` and make ``last.pth`` point to it.

    The file holds the model, optimizer, scheduler (and AMP scaler) states, the number of
    iterations done, and the RNG states: ``rng`` (under DDP, the list of every rank's
    :func:`rng_state`), or this process's. The data order needs none: it is a function of the
    iteration, see TrainBatchSampler. Both names are replaced atomically, ``last.pth`` as a
    hard link to the new file, so a run killed at any instant leaves a complete ``last.pth``.
    """
    folder = Path(output_dir) / CHECKPOINT_DIR
    state = {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "iteration": iteration,
        "rng": rng if rng is not None else rng_state(),
        "extra": extra or {},
    }
    path = atomic_write(folder / f"model_{iteration:07d}.pth", _saver(state, folder))
    _link_last(path)
    return path


def _saver(state: dict[str, Any], folder: Path):
    """``torch.save(state, f)`` whose failure is an OSError: torch reports a full disk as a
    RuntimeError ("unexpected pos ..."), which would otherwise end in a traceback."""
    def write(f) -> None:
        try:
            torch.save(state, f)
        except RuntimeError as err:
            free = shutil.disk_usage(folder).free / 2**20
            reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise OSError(errno.ENOSPC if free < 64 else errno.EIO,
                          f"torch.save failed with {free:.0f} MiB free on the file system ({reason})") from None
    return write


def _link_last(path: Path) -> None:
    """Make ``last.pth`` beside ``path`` the same file, atomically: a hard link, or (no hard links
    on this file system) a copy."""
    folder = path.parent
    tmp = folder / f".{LAST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
        os.replace(tmp, folder / LAST)
    except OSError:
        tmp.unlink(missing_ok=True)
        with path.open("rb") as src:  # the bytes just written, streamed, not read into memory
            atomic_write(folder / LAST, lambda f: shutil.copyfileobj(src, f))


def find_last(output_dir: str | os.PathLike) -> Path | None:
    """``OUTPUT/checkpoints/last.pth`` if it exists (readable or not: see :func:`find_resumable`)."""
    path = Path(output_dir) / CHECKPOINT_DIR / LAST
    return path if path.exists() else None


def numbered_checkpoints(output_dir: str | os.PathLike) -> dict[int, Path]:
    """``{iteration: OUTPUT/checkpoints/model_N.pth}`` of the periodic checkpoints on disk."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        match = _NUMBERED.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def find_resumable(output_dir: str | os.PathLike, log=None) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint of ``output_dir`` and its content, or None if there is none.

    ``last.pth`` first; when it is missing or unreadable (a corrupt or truncated file), the newest
    ``model_N.pth`` that loads, which then becomes ``last.pth`` again (so that every later reader
    of ``last.pth`` sees it). ``log`` is called with one line per file passed over.

    Raises:
        UsageError: checkpoints exist but none is readable (each file named in the message).
    """
    folder = Path(output_dir) / CHECKPOINT_DIR
    candidates = ([folder / LAST] if (folder / LAST).exists() else []) + list(reversed(numbered_checkpoints(output_dir).values()))
    problems = []
    for path in candidates:
        try:
            state = load_checkpoint(path)
        except UsageError as err:
            problems.append(str(err))
            if log is not None:
                log(f"warning: {err}; trying an older checkpoint")
            continue
        if path.name != LAST:
            _link_last(path)
            if log is not None and problems:
                log(f"{folder / LAST} replaced by {path.name}, the newest readable checkpoint")
        return path, state
    if problems:
        raise UsageError(f"{folder}: no readable checkpoint to resume from: {'; '.join(problems)}")
    return None


def clean_temp_files(output_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (``.NAME.*.tmp``) that a write killed midway left in ``output_dir``
    and its ``checkpoints/``: call before a run starts, when no other process writes there. Returns
    the files removed."""
    removed = []
    for folder in (Path(output_dir), Path(output_dir) / CHECKPOINT_DIR):
        if folder.is_dir():
            for path in folder.glob(".*.tmp"):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def prune_checkpoints(output_dir: str | os.PathLike, keep: Iterable[int] = ()) -> list[Path]:
    """Delete the periodic checkpoints of ``output_dir`` but the :data:`KEEP_LAST` newest and those
    at the iterations in ``keep`` (``train.keep_checkpoints``). Returns the files deleted."""
    numbered = numbered_checkpoints(output_dir)
    kept = set(list(numbered)[-KEEP_LAST:]) | set(keep)
    removed = []
    for iteration, path in numbered.items():
        if iteration not in kept:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a bad file is a UsageError naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"{path}: checkpoint not found") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a corrupt file
        raise UsageError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or "model" not in state or "iteration" not in state:
        raise UsageError(f"{path}: not an fptbench training checkpoint (no 'model' and 'iteration' entries)")
    return state
