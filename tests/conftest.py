"""Shared test helpers: the repository root and a runner for the ``fptbench`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    """The repository root (where README.md and pyproject.toml are)."""
    return REPO_ROOT


@pytest.fixture
def run_cli():
    """Run ``python -m fptbench ARGS...`` in a subprocess; returns the CompletedProcess (text)."""

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        return subprocess.run([sys.executable, "-m", "fptbench", *args], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return run
