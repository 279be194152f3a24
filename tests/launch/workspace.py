"""A tiny sweep workspace for the launcher tests: the embedded dataset and small matrices.

Cells train ResNet-18 Mask R-CNN for 6 iterations on 4 synthetic images of 128 px (checkpoint
every 2), evaluate on 2, and profile at 128 x 128 once: ~15 s a cell on 2 cores. Records of two runs of
a cell are compared bit for bit (weights digest included): see tests/engine/test_reproducible.py
for what that took (MKL_CBWR).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fptbench.data.synth import write_synth

REPO_ROOT = Path(__file__).resolve().parents[2]

SET = """\
set:
  model.rpn_pre_nms_top_n_test: 50
  model.rpn_post_nms_top_n_test: 50
  model.box_detections_per_img: 10
  train.max_iter: 6
  train.images_per_device: 1
  train.warmup_iters: 1
  train.steps: []
  train.checkpoint_period: 2
  train.log_period: 1
  model.backbone_pretrain: ""   # a fresh trunk: no pre-training
profile: {size: [128, 128], runs: 1, warmup: 0}
"""
BFP = "    bfp: {}\n"
FPT = "    fpt: {fpt.st: true, fpt.gt: true, fpt.rt: true, fpt.fuse_init: identity, fpt.norm: none}\n"
BROKEN = "    broken: {data.train: no_such_split}\n"
# Fields that may differ between two runs of the same cell: time, and the job that ran it.
VOLATILE = {"created", "training.wall_time_s", "profile.latency_ms", "profile.neck_latency_ms",
            "profile.peak_memory_mb", "launch"}


def write_matrix(work: Path, name: str, labels: str) -> Path:
    path = work / "experiments" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"description: launcher test {name}\nbase: synth_r18_bfp\n{SET}axes:\n  ablation:\n{labels}")
    return path


def make_workspace(work: Path) -> Path:
    write_synth(work / "data" / "synth", train=4, val=2, size=128, seed=0)
    write_matrix(work, "tiny", BFP + FPT + BROKEN)
    write_matrix(work, "tiny_bfp", BFP)  # the same bfp cell (same config, same run id) alone
    return work


def fptbench(work: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m fptbench ARGS`` in ``work`` (relative data.root and experiments/ resolve there)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "fptbench", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=timeout)


def records(root: Path) -> dict[str, dict]:
    """run id -> record, for every result.json under ``root`` (results/<experiment>)."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/result.json"))}


def stable(record: dict) -> dict:
    """The record without the fields that may differ between two runs of the same cell."""
    out = json.loads(json.dumps(record))
    for key in VOLATILE:
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    return out


def status_rows(text: str) -> dict[str, list[str]]:
    """run id -> [state, job, elapsed, attempts, box AP] from `fptbench status` output."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[1] in ("done", "running", "pending", "requeued", "failed", "cancelled", "missing"):
            rows[parts[0]] = parts[1:]
    return rows
