"""Fixtures for tests that submit to a real SLURM scheduler: the dev cluster and submitit folders.

``slurm_cluster`` uses the scheduler that answers ``sinfo`` if it is fptbench's dev cluster
(``slurm/dev-cluster.sh``); if none answers and this is root with the SLURM packages installed,
it starts the dev cluster for the session and stops it afterwards. Otherwise the tests that use
it skip with the reason (a laptop without root runs the local-executor tests only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEV_CLUSTER = REPO_ROOT / "slurm" / "dev-cluster.sh"
DEV_CLUSTER_NAME = "fptbench"  # ClusterName in the slurm.conf that dev-cluster.sh writes
READY_STATES = {"idle", "mixed", "allocated", "completing"}  # sinfo %T of a usable node


def _run(*cmd: str, timeout: float = 10) -> subprocess.CompletedProcess | None:
    """Run a SLURM client; None if it is missing or does not answer within ``timeout`` seconds."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _scheduler_answers() -> bool:
    """Whether ``sinfo`` lists a node that can run jobs (idle, mixed, allocated, completing)."""
    out = _run("sinfo", "-h", "-o", "%T")
    return out is not None and out.returncode == 0 and bool(READY_STATES & set(out.stdout.split()))


def _cluster_info() -> dict:
    """{"name", "partition" (the default one), "gpus_per_node"} of the scheduler that answers."""
    config = _run("scontrol", "show", "config")
    name = ""
    for line in config.stdout.splitlines() if config is not None else ():
        key, _, value = line.partition("=")
        if key.strip() == "ClusterName":
            name = value.strip()
    partitions = _run("sinfo", "-h", "-o", "%P %G")
    partition, gpus = "", 0
    for line in partitions.stdout.splitlines() if partitions is not None else ():
        part, _, gres = line.partition(" ")
        if part.endswith("*"):  # sinfo marks the default partition with *
            partition = part[:-1]
            for item in gres.split(","):  # e.g. gpu:2 or gpu:a100:8(S:0-1)
                fields = item.split("(")[0].split(":")
                if fields[0] == "gpu" and fields[-1].isdigit():
                    gpus = int(fields[-1])
    return {"name": name, "partition": partition, "gpus_per_node": gpus}


def _packages_installed() -> bool:
    return all(shutil.which(b) or Path("/usr/sbin", b).exists()
               for b in ("munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd", "sinfo"))


@pytest.fixture(scope="session")
def slurm_cluster():
    """The dev SLURM cluster: {"name", "partition", "gpus_per_node", "started"}; skips if none.

    "started" is True when this fixture brought it up (and will stop it at the end of the session).
    """
    started = False
    if not _scheduler_answers():
        if os.geteuid() != 0:
            pytest.skip("no SLURM scheduler answers (sinfo) and starting one "
                        "(slurm/dev-cluster.sh) needs root")
        if not _packages_installed():
            pytest.skip("no SLURM scheduler answers and the SLURM packages are not installed; "
                        "run `bash slurm/dev-cluster.sh start` as root (it installs them)")
        out = subprocess.run(["bash", str(DEV_CLUSTER), "start"], capture_output=True, text=True,
                             timeout=600)
        if out.returncode != 0:
            pytest.fail(f"slurm/dev-cluster.sh start failed:\n{out.stdout}{out.stderr}", pytrace=False)
        started = True
    info = _cluster_info()
    if info["name"] != DEV_CLUSTER_NAME:
        pytest.skip(f"the SLURM scheduler that answers is cluster {info['name']!r}, not the dev "
                    f"cluster of slurm/dev-cluster.sh; these tests run only there")
    yield {**info, "started": started}
    if started:
        subprocess.run(["bash", str(DEV_CLUSTER), "stop"], capture_output=True, text=True, timeout=120)


@pytest.fixture
def submitit_folder(tmp_path: Path) -> Path:
    """A fresh submitit folder per test.

    The dev cluster's job ids depend on the clock and a wiped cluster may reuse one: a folder
    shared between tests or runs could return a stale result for a reused id.
    """
    folder = tmp_path / "submitit"
    folder.mkdir()
    return folder


@pytest.fixture(scope="session")
def local_sweep(tmp_path_factory):
    """The tiny matrix (bfp, fpt, broken) run once through the local executor, by the CLI.

    Returns (workspace, CompletedProcess of the sweep)."""
    from tests.launch.workspace import fptbench, make_workspace

    work = make_workspace(tmp_path_factory.mktemp("sweep"))
    return work, fptbench(work, "sweep", "tiny")
