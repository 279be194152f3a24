"""Shared test helpers: the repository root, a runner for the ``fptbench`` command, and the GPU
hidden from every test that means the CPU.

The suite is a CPU suite: its numbers, bitwise checks and 2-rank gloo runs mean the CPU, and it
must pass unchanged on a machine that has a GPU. So, unless the run selects the GPU tests alone
(``pytest -m gpu``), :func:`pytest_configure` sets ``CUDA_VISIBLE_DEVICES=""`` before any test
module is imported, hence before torch initialises CUDA: this process and every subprocess a test
starts see no GPU. The SLURM variables that say a job was allocated GPUs are dropped too (a suite
run inside ``srun --gpus`` still means the CPU; the engine would otherwise refuse to train on it).
Tests marked ``gpu`` are then skipped with the reason, and run with ``pytest -m gpu``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

GPU_HIDDEN_REASON = "the GPU is hidden so that the CPU tests mean the CPU; run the GPU tests alone: pytest -m gpu"
SLURM_GPU_VARIABLES = ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")


def selects_gpu_tests_only(markexpr: str) -> bool:
    """Whether ``-m markexpr`` selects a test marked ``gpu`` alone and no test without ``gpu``
    (checked for an unmarked test and for one with every marker but ``gpu``)."""
    if not markexpr.strip():
        return False
    from _pytest.mark.expression import Expression  # pytest's own -m evaluator

    expression = Expression.compile(markexpr)
    return (expression.evaluate(lambda name, **_: name == "gpu")
            and not expression.evaluate(lambda name, **_: False)
            and not expression.evaluate(lambda name, **_: name != "gpu"))


def pytest_configure(config: pytest.Config) -> None:
    config.gpu_hidden = not selects_gpu_tests_only(config.getoption("markexpr") or "")
    if config.gpu_hidden:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        for name in SLURM_GPU_VARIABLES:
            os.environ.pop(name, None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.gpu_hidden:
        for item in items:
            if item.get_closest_marker("gpu") is not None:
                # skipif (not skip): pytest reads an item's own skipif marks before its module's.
                item.add_marker(pytest.mark.skipif(True, reason=GPU_HIDDEN_REASON))


@pytest.fixture
def repo_root() -> Path:
    """The repository root (where README.md and pyproject.toml are)."""
    return REPO_ROOT


@pytest.fixture
def run_cli():
    """Run ``python -m fptbench ARGS...`` in a subprocess; returns the CompletedProcess (text)."""

    def run(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``env``: variables set for this run on top of the test process's."""
        env = {**os.environ, **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        return subprocess.run([sys.executable, "-m", "fptbench", *args], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return run
