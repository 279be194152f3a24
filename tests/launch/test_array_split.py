"""A sweep larger than the scheduler's MaxArraySize: several job arrays, each cell run once.

The dev cluster is set to MaxArraySize=2 for this test (slurm/dev-cluster.sh max-array-size) and
back to SLURM's default afterwards; five cells then need three arrays (SLURM refuses one of five:
"Invalid job array specification"). [ours] Arrays of at most MaxArraySize tasks, indices
0 .. MaxArraySize - 1, as SLURM documents it (Slurm 22.05 accepts one more, index MaxArraySize).
The cells fail at once (each names its own missing training split), so that each cell's error
shows that its own array task ran it.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.launch.conftest import DEV_CLUSTER
from tests.launch.workspace import REPO_ROOT, fptbench, make_workspace, status_rows, write_matrix

pytestmark = pytest.mark.slow

DEV = str(REPO_ROOT / "slurm" / "dev.yaml")


@pytest.fixture
def small_arrays(slurm_cluster):
    def set_size(n: int) -> None:
        out = subprocess.run(["bash", str(DEV_CLUSTER), "max-array-size", str(n)], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr

    set_size(2)
    refused = subprocess.run(["sbatch", "--array=0-4", "--output=/dev/null", "--wrap", "true"], capture_output=True,
                             text=True, timeout=30)
    if refused.returncode == 0:
        subprocess.run(["scancel", refused.stdout.split()[-1]], timeout=30)
    assert refused.returncode != 0, "the scheduler accepts an array of 5"  # it must refuse it
    yield 2
    set_size(1001)


def test_a_sweep_over_max_array_size_submits_several_arrays(small_arrays, tmp_path):
    work = make_workspace(tmp_path)
    write_matrix(work, "five", "".join(f"    broken{i}: {{data.train: no_such_split_{i}}}\n" for i in range(5)))
    dry = fptbench(work, "sweep", "five", "--executor", "slurm", "--cluster", DEV, "--dry-run")
    assert "would submit 3 job array(s) of 5 cell(s)" in dry.stdout, dry.stdout + dry.stderr
    result = fptbench(work, "sweep", "five", "--executor", "slurm", "--cluster", DEV, "--wait")
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]  # every cell fails, as meant
    assert "submitted 5 cell(s) as SLURM job array(s)" in result.stdout
    entries = json.loads((work / "results" / "five" / "sweep.json").read_text())["cells"]
    arrays = {entry["job_id"].split("_")[0] for entry in entries.values()}
    assert len(entries) == 5 and len(arrays) == 3
    status = fptbench(work, "status", "five")
    rows = status_rows(status.stdout)
    assert sorted(row[0] for row in rows.values()) == ["failed"] * 5
    for i in range(5):  # each cell ran in its own task: its own error
        assert f"instances_no_such_split_{i}.json: not found" in status.stdout
