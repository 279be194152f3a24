"""Cluster profiles (slurm/*.yaml): every shipped profile loads, sbatch options map as documented,
and a bad profile is one clear error."""

from __future__ import annotations

import pytest

from fptbench.errors import UsageError
from fptbench.launch.cluster import ClusterProfile, load_cluster_profile
from tests.launch.workspace import REPO_ROOT


def test_example_documents_every_key_and_loads():
    text = (REPO_ROOT / "slurm" / "example.yaml").read_text()
    keys = [name for name in ClusterProfile.__dataclass_fields__ if name != "path"]
    for key in keys:
        assert f"\n{key}:" in "\n" + text, f"slurm/example.yaml does not document {key}"
    profile = load_cluster_profile(str(REPO_ROOT / "slurm" / "example.yaml"))
    assert profile.gpus_per_node == 8 and profile.tasks == 8 and profile.world_size == 8


def test_submitit_parameters_of_an_8_gpu_profile(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("partition: learnfair\naccount: fpt\nqos: high\nconstraint: volta32gb\nnodes: 2\n"
                    "gpus_per_node: 8\ncpus_per_task: 10\nmem_per_task_gb: 60\ntimeout_min: 4320\n"
                    "array_parallelism: 32\nmax_requeues: 5\nsignal_delay_s: 120\nsetup: [module load cuda]\n"
                    "additional: {exclusive: true}\n")
    profile = load_cluster_profile(str(path))
    assert profile.world_size == 16
    assert profile.submitit_parameters() == {
        "nodes": 2, "tasks_per_node": 8, "cpus_per_task": 10, "gpus_per_node": 8, "mem_gb": 480.0,
        "timeout_min": 4320, "slurm_array_parallelism": 32, "slurm_signal_delay_s": 120,
        "slurm_partition": "learnfair", "slurm_account": "fpt", "slurm_qos": "high",
        "slurm_constraint": "volta32gb", "slurm_setup": ["module load cuda"],
        "slurm_additional_parameters": {"exclusive": True},
    }


def test_cpu_profile_defaults_to_one_task():
    profile = load_cluster_profile(str(REPO_ROOT / "slurm" / "dev.yaml"))
    assert profile.partition == "dev" and profile.tasks == 1 and profile.world_size == 1
    assert "slurm_qos" not in profile.submitit_parameters()


@pytest.mark.parametrize("text, fragment", [
    ("partiton: dev\n", "unknown key 'partiton'; did you mean 'partition'?"),
    ("gpus_per_node: -1\n", "gpus_per_node: expected an integer >= 0, got -1"),
    ("nodes: two\n", "nodes: expected an integer >= 1, got 'two'"),
    ("mem_per_task_gb: 0\n", "mem_per_task_gb: expected a positive number of GiB"),
    ("setup: module load cuda\n", "setup: expected a list of shell lines"),
    ("partition: [a, b]\n", "partition: expected a string or null"),
    ("- a\n", "expected a mapping of profile keys"),
    ("a: [\n", "malformed YAML"),
    ("nodes: 1\nnodes: 2\n", ":2: malformed YAML: duplicate key 'nodes'"),  # PyYAML alone keeps the last
])
def test_bad_profiles_are_one_line_errors_naming_the_file(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        load_cluster_profile(str(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message and fragment in message, message


def test_missing_profile_names_the_file():
    with pytest.raises(UsageError, match="nope.yaml: cluster profile not found"):
        load_cluster_profile("slurm/nope.yaml")
