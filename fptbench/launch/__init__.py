"""The launcher: a matrix's cells as submitit jobs (local, SLURM, debug), their state, and
idempotent resubmission. It knows nothing of tensors: each cell calls the engine."""

from .cell import CellRunner, CellSpec
from .cluster import ClusterProfile, load_cluster_profile
from .state import SweepState, is_complete
from .status import CellStatus, cell_statuses
from .sweep import EXECUTORS, cancel_sweep, format_plan, format_status, plan_sweep, results_root, run_sweep, sweep_status

__all__ = [
    "CellRunner", "CellSpec", "ClusterProfile", "load_cluster_profile", "SweepState", "is_complete",
    "CellStatus", "cell_statuses", "EXECUTORS", "cancel_sweep", "format_plan", "format_status",
    "plan_sweep", "results_root", "run_sweep", "sweep_status",
]
