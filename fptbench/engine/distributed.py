"""torch.distributed set-up from the environment that torchrun or SLURM gives a process, and the
one choice of the device a process computes on."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Mapping

import torch
import torch.distributed as dist

from fptbench.config import SCHEMA
from fptbench.errors import UsageError

__all__ = [
    "DEVICES",
    "DistInfo",
    "choose_device",
    "close_distributed",
    "cuda_device_count",
    "gpu_request",
    "init_distributed",
    "local_device_index",
]

DEVICES = SCHEMA["device"].choices
"""Values of the config's ``device`` key, as its schema declares them."""

# What SLURM sets in a job or step that was allocated GPUs. SLURM_GPUS_ON_NODE is a count; the
# two others list the allocated GPUs' indices ("0" is GPU 0, not none).
SLURM_GPU_COUNT = "SLURM_GPUS_ON_NODE"
SLURM_GPU_LISTS = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS")


@dataclass(frozen=True)
class DistInfo:
    """This process's place among the ranks, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def local_device_index(local_rank: int, device_count: int) -> int:
    """The CUDA device a process with ``local_rank`` uses among the ``device_count`` it sees.

    ``local_rank % device_count``: one process per GPU of a node sees them all (rank 3 -> cuda:3);
    with one visible GPU per task (``--gpus-per-task=1``, ``--gpu-bind``) every rank is cuda:0.
    The model is placed on this device and DDP is given it (``device_ids``): one choice for both.
    """
    if device_count < 1:
        raise ValueError(f"device_count must be >= 1, got {device_count}")
    if local_rank < 0:
        raise ValueError(f"local_rank must be >= 0, got {local_rank}")
    return local_rank % device_count


def gpu_request(env: Mapping[str, str] | None = None) -> str | None:
    """Why this process is expected to have a GPU: ``"SLURM_JOB_GPUS=0,1"`` when SLURM allocated
    it some (from its job or step variables), None otherwise."""
    env = os.environ if env is None else env
    count = env.get(SLURM_GPU_COUNT, "").strip()
    if count and count != "0":
        return f"{SLURM_GPU_COUNT}={count}"
    for name in SLURM_GPU_LISTS:
        value = env.get(name, "").strip()
        if value:
            return f"{name}={value}"
    return None


def _cuda_unusable_why() -> str:
    """What this torch says about CUDA, for the one-line error."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return (f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) finds no usable GPU: "
            f"check nvidia-smi, and that the NVIDIA driver supports CUDA {torch.version.cuda}")


def choose_device(want: str = "auto", local_rank: int = 0) -> torch.device:
    """The device of a process: the config's ``device`` key applied to what this machine has.

    ``cpu``: the CPU, even where a GPU is visible. ``cuda``: ``cuda:local_device_index(...)``, or
    a UsageError if CUDA is unusable. ``auto``: CUDA when usable; else the CPU, except where SLURM
    allocated GPUs (:func:`gpu_request`), which is the same error: training on the CPU (and gloo)
    on a GPU node is never what was meant (e.g. a torch built for a CUDA newer than the driver).

    Raises:
        UsageError: one line naming what asked for CUDA and why it is unusable.
    """
    if want not in DEVICES:
        raise UsageError(f"device: expected one of {', '.join(DEVICES)}, got {want!r}")
    if want == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", local_device_index(local_rank, torch.cuda.device_count()))
    asked = "device: cuda" if want == "cuda" else gpu_request()
    if asked is None:
        return torch.device("cpu")
    raise UsageError(f"{asked} asks for CUDA, but {_cuda_unusable_why()}; "
                     f"to run on the CPU instead, set device: cpu (--set device cpu)")


def _slurm_env() -> dict[str, str] | None:
    """torchrun-style variables from a SLURM step with several tasks (srun without torchrun).

    SLURM_STEP_NUM_TASKS, not SLURM_NTASKS: a batch script's own shell (no srun) sees the job's
    task count but is a single process, and must not wait for ranks that never start.
    """
    ntasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    if ntasks <= 1 or "SLURM_PROCID" not in os.environ:
        return None
    env = {
        "WORLD_SIZE": str(ntasks),
        "RANK": os.environ["SLURM_PROCID"],
        "LOCAL_RANK": os.environ.get("SLURM_LOCALID", "0"),
    }
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST", "127.0.0.1")
        try:
            first = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True)
            env["MASTER_ADDR"] = first.stdout.split()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            env["MASTER_ADDR"] = nodes.split(",")[0]
    if "MASTER_PORT" not in os.environ:
        # [ours] a port derived from the job id, so that jobs sharing a node do not collide
        env["MASTER_PORT"] = str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000)
    return env


def env_world_size() -> int:
    """How many processes this one trains with, from the environment alone (torchrun's WORLD_SIZE,
    else an srun step's task count, as :func:`init_distributed` will read them), before any process
    group exists: 1 for a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ["WORLD_SIZE"])
    if "SLURM_PROCID" in os.environ:
        return max(1, int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")))
    return 1


def init_distributed(cfg: Mapping) -> DistInfo:
    """The device of this process (:func:`choose_device` of the config's ``device``) and, when it
    is one of several, the default process group.

    Reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, or derives them
    from SLURM's variables. Backend: NCCL on CUDA, gloo on the CPU. A single process gets no
    process group. A rank waits ``train.dist_timeout_min`` in a collective before failing.

    Raises:
        UsageError: CUDA is asked for (``device``, or GPUs allocated by SLURM) and unusable.
    """
    device = cfg["device"]
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend(),
                        choose_device(device, local_rank))
    env = dict(os.environ)
    if int(env.get("WORLD_SIZE", "1")) <= 1:
        slurm = _slurm_env()
        if slurm is None:
            return DistInfo(device=choose_device(device, int(env.get("LOCAL_RANK", "0"))))
        os.environ.update(slurm)
        env.update(slurm)
    local_rank = int(env.get("LOCAL_RANK", "0"))
    dev = choose_device(device, local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(minutes=cfg["train"]["dist_timeout_min"]))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend, dev)


def close_distributed() -> None:
    """Destroy the default process group if this process set one up (a no-op otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cuda_device_count() -> int:
    """How many CUDA devices this process sees (0 where CUDA is unusable): what the launcher
    shares among the cells it runs at once."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
