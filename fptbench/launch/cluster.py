"""Cluster profiles: ``slurm/NAME.yaml``, the SLURM resources of every cell of a sweep.

``slurm/example.yaml`` documents every key. A profile says what one cell gets (nodes, GPUs,
tasks, CPUs and memory per task, time limit) and how the sweep's job array is run (partition,
account, qos, constraint, array parallelism, requeue bound). submitit turns it into sbatch options.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fptbench.errors import UsageError
from fptbench.paths import REPO_ROOT, find_named
from fptbench.yamlio import load_yaml

__all__ = ["ClusterProfile", "load_cluster_profile", "find_cluster_profile"]


@dataclass(frozen=True)
class ClusterProfile:
    """Resources of one cell and the sweep's array; defaults are a small CPU-only job."""

    partition: str | None = None  # --partition
    account: str | None = None  # --account
    qos: str | None = None  # --qos
    constraint: str | None = None  # --constraint (node features, e.g. volta32gb)
    nodes: int = 1  # nodes per cell
    gpus_per_node: int = 0  # GPUs per node; one task per GPU when > 0
    tasks_per_node: int | None = None  # default: gpus_per_node if > 0, else 1
    cpus_per_task: int = 2  # CPU cores per task (data-loader workers + the main thread)
    mem_per_task_gb: float = 8.0  # memory per task, GiB (sbatch --mem = this x tasks per node)
    timeout_min: int = 60  # time limit per attempt, minutes; a timeout requeues the cell
    array_parallelism: int = 16  # most cells of the array running at once (--array=...%N)
    max_requeues: int = 3  # [ours] requeues (preemption + time limit) a cell may use before failing; the
    # one declaration of the bound, counted once, by the cell's launch.json attempts (fptbench.launch.cell)
    signal_delay_s: int = 90  # USR2 this many seconds before the time limit: time to requeue
    setup: tuple[str, ...] = ()  # shell lines run before the job (module load, source a venv)
    additional: dict[str, Any] = field(default_factory=dict)  # other sbatch options, verbatim
    path: str = ""  # the file it was read from (not a key)

    @property
    def tasks(self) -> int:
        """Tasks (processes) per node: one per GPU, else ``tasks_per_node`` (default 1)."""
        if self.tasks_per_node is not None:
            return self.tasks_per_node
        return self.gpus_per_node if self.gpus_per_node > 0 else 1

    @property
    def world_size(self) -> int:
        """Processes per cell: nodes x tasks per node."""
        return self.nodes * self.tasks

    def submitit_parameters(self) -> dict[str, Any]:
        """Parameters for ``submitit.AutoExecutor(cluster="slurm").update_parameters`` (the requeue
        bound goes to the constructor: ``slurm_max_num_timeout=max_requeues``)."""
        params: dict[str, Any] = {
            "nodes": self.nodes,
            "tasks_per_node": self.tasks,
            "cpus_per_task": self.cpus_per_task,
            "gpus_per_node": self.gpus_per_node,
            "mem_gb": self.mem_per_task_gb * self.tasks,
            "timeout_min": self.timeout_min,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_signal_delay_s": self.signal_delay_s,
        }
        for key in ("partition", "account", "qos", "constraint"):
            value = getattr(self, key)
            if value is not None:
                params[f"slurm_{key}"] = value
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        if self.additional:
            params["slurm_additional_parameters"] = dict(self.additional)
        return params


_KEYS = {f.name: f for f in fields(ClusterProfile) if f.name != "path"}
_INT_MIN = {"nodes": 1, "gpus_per_node": 0, "tasks_per_node": 1, "cpus_per_task": 1, "timeout_min": 1,
            "array_parallelism": 1, "max_requeues": 0, "signal_delay_s": 0}


def find_cluster_profile(name_or_path: str) -> Path:
    """``dev`` -> ``slurm/dev.yaml`` (here, else in the repository); a path is taken as it is."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        return path
    return find_named(name_or_path, [Path("slurm"), REPO_ROOT / "slurm"]) or Path("slurm") / f"{name_or_path}.yaml"


def _check(path: Path, key: str, value: Any) -> Any:
    where = f"{path}: {key}"
    if key in ("partition", "account", "qos", "constraint"):
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{where}: expected a string or null, got {value!r}")
        return value
    if key in _INT_MIN:
        if value is None and key == "tasks_per_node":
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < _INT_MIN[key]:
            raise UsageError(f"{where}: expected an integer >= {_INT_MIN[key]}, got {value!r}")
        return value
    if key == "mem_per_task_gb":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise UsageError(f"{where}: expected a positive number of GiB, got {value!r}")
        return float(value)
    if key == "setup":
        if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
            raise UsageError(f"{where}: expected a list of shell lines, got {value!r}")
        return tuple(value)
    if key == "additional":
        if not isinstance(value, dict):
            raise UsageError(f"{where}: expected a mapping of sbatch options, got {value!r}")
        return dict(value)
    raise AssertionError(key)


def load_cluster_profile(name_or_path: str) -> ClusterProfile:
    """Read and check a profile; every key is optional, an unknown key is an error."""
    path = find_cluster_profile(name_or_path)
    data = load_yaml(path, missing="cluster profile not found (profiles live in slurm/; see slurm/example.yaml)",
                     label="malformed YAML") or {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of profile keys, got {type(data).__name__}")
    values = {}
    for key, value in data.items():
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), list(_KEYS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(_KEYS)}"
            raise UsageError(f"{path}: unknown key '{key}'{hint}")
        values[key] = _check(path, key, value)
    return ClusterProfile(**values, path=str(path))
