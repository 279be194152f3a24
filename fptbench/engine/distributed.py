"""torch.distributed set-up from the environment that torchrun or SLURM gives a process."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "close_distributed", "cuda_available", "init_distributed"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def device(self) -> torch.device:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # With --gpus-per-task a task sees only its own GPU: local rank 1 is then device 0.
        return torch.device("cuda", self.local_rank % torch.cuda.device_count())


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


def init_distributed() -> DistInfo:
    """Initialise the default process group when this process is one of several.

    Reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, or derives them
    from SLURM's variables. Backend: NCCL with CUDA, gloo on the CPU. A single process gets
    DistInfo() and no process group.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend())
    env = dict(os.environ)
    if int(env.get("WORLD_SIZE", "1")) <= 1:
        slurm = _slurm_env()
        if slurm is None:
            return DistInfo()
        os.environ.update(slurm)
        env.update(slurm)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    local_rank = int(env.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend)



def close_distributed() -> None:
    """Destroy the default process group if this process set one up (a no-op otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cuda_available() -> bool:
    """Whether this process sees a CUDA device (what the launcher asks before requesting GPUs)."""
    return torch.cuda.is_available()
