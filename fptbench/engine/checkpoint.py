"""Training checkpoints: atomic files with everything an exact resume needs."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fptbench.errors import UsageError
from fptbench.fileio import atomic_write

__all__ = ["CHECKPOINT_DIR", "LAST", "rng_state", "set_rng_state", "save_checkpoint", "find_last", "load_checkpoint"]

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pth"


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
    path = atomic_write(folder / f"model_{iteration:07d}.pth", lambda f: torch.save(state, f))
    tmp = folder / f".{LAST}.{os.getpid()}.tmp"
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(path, tmp)
        os.replace(tmp, folder / LAST)
    except OSError:  # no hard links on this file system: write a second copy, atomically
        atomic_write(folder / LAST, lambda f: torch.save(state, f))
    return path


def find_last(output_dir: str | os.PathLike) -> Path | None:
    path = Path(output_dir) / CHECKPOINT_DIR / LAST
    return path if path.exists() else None


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
