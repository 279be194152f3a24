"""A detection ablation written out as plain data: records whose every number is fixed (no run, no
timing), so that the report built from them is the same bytes on any machine and any day.

Used to pin the detection report (tests/report/test_segmentation_report.py): it imports nothing
from fptbench, so the same records can be fed to an older checkout's report code.
"""

from __future__ import annotations

NECK_FLAGS = {"bfp": (False, False, False), "st": (True, False, False), "gt": (False, True, False),
              "fpt": (True, True, True)}
# (box AP, mask AP) per seed
APS = {"bfp": [(30.0, 27.0), (30.4, 27.2), (29.8, 27.1)], "st": [(31.0, 27.5), (30.2, 27.9)],
       "fpt": [(33.1, 29.0), (33.5, 29.4), (32.9, 29.1)]}
# params, GFLOPs of the neck (bfp, fpt), attention GMACs, latency median ms, per neck
COST = {"bfp": (44_000_000, 3.0, 0.0, 0.0, 120.0), "st": (45_500_000, 3.0, 2.5, 1.2, 150.0),
        "gt": (46_000_000, 3.0, 1.5, 0.6, 140.0), "fpt": (52_000_000, 3.0, 9.0, 3.1, 260.0)}


def _ap(box: float, mask: float, seed: int) -> dict:
    def task(ap: float) -> dict:
        return {"AP": ap, "AP50": ap + 20.0, "AP75": ap + 2.0 + 0.1 * seed, "APs": ap - 15.0, "APm": ap + 3.0, "APl": -1.0}
    return {"bbox": task(box), "segm": task(mask)}


def record(neck: str, seed: int) -> dict:
    """One complete record of the ablation cell ``neck`` (bfp, st, gt, fpt), seed ``seed``."""
    st, gt, rt = NECK_FLAGS[neck]
    params, bfp_gflops, fpt_gflops, attn_gmacs, latency = COST[neck]
    box, mask = APS[neck][seed]
    flops = 2 * 60e9 + (bfp_gflops + fpt_gflops) * 1e9
    return {
        "record_version": 1,
        "config": {"seed": seed, "model": {"task": "detection", "backbone": "resnet50", "head": "mask_rcnn"},
                   "fpt": {"st": st, "gt": gt, "rt": rt}, "gt": {"window": 0},
                   "data": {"train": "coco_2017_train", "test": "coco_2017_val"}},
        "metrics": _ap(box, mask, seed),
        "dataset": {"name": "coco_2017_val", "images": 5000},
        "device": {"type": "cuda", "name": "Test GPU"},
        "profile": {
            "params": params, "macs": flops / 2, "flops": flops,
            "by_part": {"bfp": {"flops": bfp_gflops * 1e9}, "fpt": {"flops": fpt_gflops * 1e9}},
            "attention": {"macs": attn_gmacs * 1e9, "flops": 2 * attn_gmacs * 1e9},
            "latency_ms": {"median": latency + seed, "p90": latency + 5.0 + seed, "runs": 10},
            "neck_latency_ms": {"median": latency / 4, "p90": latency / 4 + 1.0, "runs": 10},
            "peak_memory_mb": 1000.0 + params / 1e5, "input_size": [800, 1216], "device": "cuda:0",
        },
        "cell": {"experiment": "fixed", "run_id": f"{neck}-s{seed}", "axes": {"ablation": neck, "seed": seed},
                 "matrix": "experiments/fixed.yaml"},
    }


def ablation() -> dict:
    """``{"records", "cells"}``: bfp (3 seeds), st (2 seeds, seed 2 failed), gt (missing), fpt (3 seeds)."""
    records = [record(neck, seed) for neck in ("bfp", "st", "fpt") for seed in range(len(APS[neck]))]
    cells = [{"run_id": r["cell"]["run_id"], "axes": dict(r["cell"]["axes"]), "state": "done"} for r in records]
    cells.insert(5, {"run_id": "st-s2", "axes": {"ablation": "st", "seed": 2}, "state": "failed",
                     "error": "RuntimeError: NaN loss"})
    cells.insert(6, {"run_id": "gt-s0", "axes": {"ablation": "gt", "seed": 0}, "state": "missing"})
    return {"records": records, "cells": cells}
