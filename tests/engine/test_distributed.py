"""The device a process computes on, and what makes the engine refuse to run (issue #10).

Everything here runs on the CPU: the device arithmetic takes the device count as an argument,
and "SLURM allocated GPUs" is what SLURM says it is, its environment variables, set here for real
in this process or in a subprocess. The suite hides any GPU from these tests (tests/conftest.py),
so CUDA is unusable in them as it is on a node whose driver is older than torch's CUDA.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from fptbench.config import SCHEMA, load_config
from fptbench.engine.distributed import (
    DEVICES, DistInfo, choose_device, cuda_device_count, gpu_request, init_distributed, local_device_index,
)
from fptbench.errors import UsageError
from tests.conftest import REPO_ROOT, selects_gpu_tests_only


# --- the suite means the CPU ------------------------------------------------------------------

def test_the_suite_hides_the_gpu_here_and_in_subprocesses():
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert not torch.cuda.is_available() and cuda_device_count() == 0
    code = "import os, torch; print(repr(os.environ['CUDA_VISIBLE_DEVICES']), torch.cuda.device_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["''", "0"]


@pytest.mark.parametrize("markexpr, only_gpu", [
    ("", False), ("gpu", True), ("gpu and not slow", True), ("not gpu", False), ("slow", False),
    ("gpu or slow", False), ("gpu or not gpu", False),
])
def test_the_gpu_is_shown_only_to_a_run_of_gpu_tests_alone(markexpr, only_gpu):
    assert selects_gpu_tests_only(markexpr) is only_gpu


# --- point 4: one device choice for the model and for DDP -------------------------------------

@pytest.mark.parametrize("local_rank, count, index", [
    (0, 8, 0), (3, 8, 3), (7, 8, 7),  # one process per GPU of a node, every GPU visible
    (0, 1, 0), (3, 1, 0), (7, 1, 0),  # --gpus-per-task=1: each task sees its own GPU as cuda:0
    (5, 4, 1), (2, 2, 0),  # fewer visible GPUs than local ranks: wrap around
])
def test_local_device_index_is_the_local_rank_modulo_the_visible_gpus(local_rank, count, index):
    assert local_device_index(local_rank, count) == index


def test_local_device_index_refuses_no_gpus_and_negative_ranks():
    with pytest.raises(ValueError, match="device_count"):
        local_device_index(0, 0)
    with pytest.raises(ValueError, match="local_rank"):
        local_device_index(-1, 2)


# --- point 3: CUDA asked for and unusable: one line, never the CPU -----------------------------

def test_the_device_choices_are_the_schemas():
    assert DEVICES == SCHEMA["device"].choices == ("auto", "cuda", "cpu")
    assert SCHEMA["device"].default == "auto"


@pytest.mark.parametrize("env, reason", [
    ({}, None),
    ({"SLURM_GPUS_ON_NODE": "0"}, None),  # a count: none allocated
    ({"SLURM_GPUS_ON_NODE": "2"}, "SLURM_GPUS_ON_NODE=2"),
    ({"SLURM_JOB_GPUS": "0"}, "SLURM_JOB_GPUS=0"),  # a list of indices: GPU 0
    ({"SLURM_STEP_GPUS": "4,5"}, "SLURM_STEP_GPUS=4,5"),
    ({"SLURM_JOB_GPUS": "", "SLURM_STEP_GPUS": " "}, None),
    ({"SLURM_JOB_ID": "12", "SLURM_NTASKS": "8"}, None),  # a CPU job
])
def test_gpu_request_reads_what_slurm_allocated(env, reason):
    assert gpu_request(env) == reason


def test_without_a_request_auto_is_the_cpu_and_cpu_always_is(monkeypatch):
    for name in ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS"):
        monkeypatch.delenv(name, raising=False)
    assert choose_device("auto") == torch.device("cpu")
    monkeypatch.setenv("SLURM_JOB_GPUS", "0,1")
    assert choose_device("cpu", local_rank=1) == torch.device("cpu")  # the user's explicit choice


@pytest.mark.parametrize("want, env, named", [
    ("cuda", {}, "device: cuda"),
    ("auto", {"SLURM_GPUS_ON_NODE": "8"}, "SLURM_GPUS_ON_NODE=8"),
    ("auto", {"SLURM_STEP_GPUS": "3"}, "SLURM_STEP_GPUS=3"),
])
def test_cuda_asked_for_and_unusable_is_one_line_naming_who_asked(monkeypatch, want, env, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError) as err:
        choose_device(want)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{named} asks for CUDA, but torch {torch.__version__}")
    assert "set device: cpu" in message


def test_an_unknown_device_is_refused():
    with pytest.raises(UsageError, match="device: expected one of auto, cuda, cpu, got 'tpu'"):
        choose_device("tpu")


@pytest.mark.parametrize("command, env, named", [
    ("train", {"SLURM_GPUS_ON_NODE": "1"}, "SLURM_GPUS_ON_NODE=1"),
    ("train", {"SLURM_JOB_GPUS": "0,1,2,3"}, "SLURM_JOB_GPUS=0,1,2,3"),
    ("train", {"SET": "cuda"}, "device: cuda"),
    ("eval", {"SLURM_STEP_GPUS": "0"}, "SLURM_STEP_GPUS=0"),
])
def test_train_and_eval_refuse_to_fall_back_to_the_cpu(tmp_path, command, env, named):
    """As a user meets it: `fptbench train` in a SLURM job with GPUs that torch cannot use exits
    2 with one line before building anything (no data is needed to get there)."""
    args = [sys.executable, "-m", "fptbench", command, "synth_r18_bfp", "--output", str(tmp_path / "out"),
            "--data-root", str(tmp_path / "no_data")]
    if command == "eval":
        args += ["--ckpt", str(tmp_path / "no.pth")]
    if env.get("SET"):
        args += ["--set", "device", env.pop("SET")]
    run_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **env)
    out = subprocess.run(args, capture_output=True, text=True, env=run_env, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fptbench: error: {named} asks for CUDA"), out.stderr
    assert not (tmp_path / "out").exists()


# --- point 8: two gloo ranks: the finite-loss flag and the collective timeout -------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(rank: int, port: int, cfg: dict, results) -> None:
    from fptbench.engine.trainer import _all_finite

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_distributed(cfg)
    out = {"info": (info.rank, info.world_size, info.backend, str(info.device))}
    # one rank's loss is not finite: every rank learns it (and all stop together)
    out["one_nan"] = _all_finite(torch.tensor(float("nan") if rank == 1 else 1.5), info)
    out["all_finite"] = _all_finite(torch.tensor(2.0 + rank), info)
    # train.dist_timeout_min bounds the wait: rank 1 waits in a barrier that rank 0 never enters
    if rank == 1:
        try:
            torch.distributed.barrier()
            out["waited"] = "returned"
        except RuntimeError as err:  # DistBackendError included
            out["waited"] = "timed out" if "timed out" in str(err).lower() or "timeout" in str(err).lower() else str(err)
    else:
        time.sleep(8 * cfg["train"]["dist_timeout_min"] * 60)
    results[rank] = out
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_share_the_finite_flag_and_wait_as_long_as_the_config_says():
    cfg = load_config("synth_r18_bfp", [("train.dist_timeout_min", 0.02)])  # 1.2 s
    results = mp.Manager().dict()
    mp.spawn(_two_ranks, args=(_free_port(), cfg, results), nprocs=2, join=True)
    assert results[0]["info"] == (0, 2, "gloo", "cpu") and results[1]["info"] == (1, 2, "gloo", "cpu")
    assert results[0]["one_nan"] is results[1]["one_nan"] is False
    assert results[0]["all_finite"] is results[1]["all_finite"] is True
    assert results[1]["waited"] == "timed out"


def test_the_dist_timeout_is_declared_in_the_schema_above_ncclls_default():
    spec = SCHEMA["train.dist_timeout_min"]
    assert spec.type is float and spec.default > 10  # NCCL's default: 10 minutes
    assert DistInfo().device == torch.device("cpu")
