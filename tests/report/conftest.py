"""Real run records for the report tests: tiny Mask / Faster R-CNN runs on the embedded data.

Each run trains ResNet-18 for 2 iterations at 64 px, evaluates with COCOeval and is profiled
(``fptbench.engine.profile.profile_model``), as a sweep cell is; the record then gets the
``cell``, ``profile`` and ``launch`` keys the launcher adds. Five runs, about 15 s on 2 idle cores:
the proposal and detection caps below keep evaluation and profiling of an untrained model cheap.

After 2 iterations every AP is 0.0 (and APm/APl are None: the 2 validation images hold no such
objects), so tests that pin the mean/std arithmetic write known numbers into copies of these
records; params, GFLOPs and latency are the runs' own.
"""

from __future__ import annotations

import copy

import pytest

from fptbench.config import config_hash, load_config
from fptbench.data.synth import write_synth
from fptbench.engine import train
from fptbench.engine.profile import profile_model

EXPERIMENT = "tiny"
TINY = [
    ("model.min_size", 64), ("model.max_size", 64),
    ("model.rpn_pre_nms_top_n_test", 50), ("model.rpn_post_nms_top_n_test", 50),
    ("model.box_detections_per_img", 10),
    ("train.max_iter", 2), ("train.images_per_device", 1), ("train.warmup_iters", 1), ("train.steps", []),
    ("train.checkpoint_period", 1000), ("train.log_period", 1000), ("model.backbone_pretrain", ""),
]
NECKS = {"bfp": (False, False, False), "st": (True, False, False), "fpt": (True, True, True)}


def _run(tmp, synth, name: str, *, neck: str, seed: int, head: str = "mask_rcnn") -> dict:
    st, gt, rt = NECKS[neck]
    cfg = load_config("synth_r18_bfp", TINY + [
        ("data.root", str(synth)), ("seed", seed), ("model.head", head),
        ("fpt.st", st), ("fpt.gt", gt), ("fpt.rt", rt), ("fpt.fuse_init", "identity"), ("fpt.norm", "none")])
    record = train(cfg, tmp / name, progress=False, save=False)
    record["profile"] = profile_model(cfg, size=(64, 64), runs=1, warmup=0)
    record["launch"] = {"executor": "debug", "job_id": "direct", "attempts": 1, "requeues": 0,
                        "hostname": "test", "finished": record["created"]}
    return record


def with_cell(record: dict, run_id: str, axes: dict, experiment: str = EXPERIMENT) -> dict:
    """A copy of ``record`` as the sweep cell ``run_id`` with ``axes``."""
    out = copy.deepcopy(record)
    out["cell"] = {"experiment": experiment, "run_id": run_id, "axes": dict(axes), "matrix": f"experiments/{experiment}.yaml"}
    return out


def cell_of(record: dict, state: str = "done") -> dict:
    return {"run_id": record["cell"]["run_id"], "axes": dict(record["cell"]["axes"]), "state": state}


def set_ap(record: dict, box: float, mask: float) -> dict:
    """Known AP numbers in a copy of a real record (2-iteration runs score 0.0 everywhere)."""
    out = copy.deepcopy(record)
    out["metrics"]["bbox"]["AP"] = box
    out["metrics"]["segm"]["AP"] = mask
    return out


SEEDED_AP = {
    "bfp": [(30.0, 27.0), (30.4, 27.2), (29.8, 27.1)],
    "st": [(31.0, 27.5), (30.2, 27.9)],
    "fpt": [(33.1, 29.0), (33.5, 29.4), (32.9, 29.1)],
}
"""(box AP, mask AP) per seed of the seeded ablation: FPT clearly above BFP, +ST within the noise."""


@pytest.fixture(scope="session")
def seeded(tiny_runs) -> dict:
    """An ablation with 3, 2 and 3 seeds (bfp, st, fpt) of known APs (:data:`SEEDED_AP`), copies
    of the real seed-0 records; the cells add st seed 2, failed."""
    records = []
    for label, aps in SEEDED_AP.items():
        for seed, (box, mask) in enumerate(aps):
            record = set_ap(tiny_runs[f"{label}-s0"], box, mask)
            records.append(with_cell(record, f"{label}-s{seed}", {"ablation": label, "seed": seed}))
    cells = [cell_of(r) for r in records]
    cells.insert(5, {"run_id": "st-s2", "axes": {"ablation": "st", "seed": 2}, "state": "failed",
                     "error": "RuntimeError: NaN loss"})
    return {"records": records, "cells": cells}


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, dict]:
    """Records by name: bfp-s0, bfp-s1, st-s0, fpt-s0 (Mask R-CNN), faster-bfp-s0 (Faster R-CNN)."""
    tmp = tmp_path_factory.mktemp("report_runs")
    synth = tmp / "synth"
    write_synth(synth, train=4, val=2, size=64, seed=0)
    runs = {
        "bfp-s0": _run(tmp, synth, "bfp-s0", neck="bfp", seed=0),
        "bfp-s1": _run(tmp, synth, "bfp-s1", neck="bfp", seed=1),
        "st-s0": _run(tmp, synth, "st-s0", neck="st", seed=0),
        "fpt-s0": _run(tmp, synth, "fpt-s0", neck="fpt", seed=0),
        "faster-bfp-s0": _run(tmp, synth, "faster-bfp-s0", neck="bfp", seed=0, head="faster_rcnn"),
    }
    return runs


def _rid(label: str, seed: int, record: dict) -> str:
    return f"{label}-s{seed}-{config_hash(record['config'])[:8]}"


@pytest.fixture(scope="session")
def ablation(tiny_runs) -> dict:
    """The ablation sweep: records of bfp (2 seeds), st, fpt (seed 0); cells add gt-s0 (failed)
    and fpt-s1 (missing)."""
    records = []
    for name in ("bfp-s0", "bfp-s1", "st-s0", "fpt-s0"):
        label, seed = name.split("-s")
        record = tiny_runs[name]
        records.append(with_cell(record, _rid(label, int(seed), record), {"ablation": label, "seed": int(seed)}))
    cells = [cell_of(r) for r in records]
    cells.insert(3, {"run_id": "gt-s0-0badc0de", "axes": {"ablation": "gt", "seed": 0}, "state": "failed",
                     "error": "RuntimeError: CUDA out of memory"})
    cells.append({"run_id": "fpt-s1-0000abcd", "axes": {"ablation": "fpt", "seed": 1}, "state": "missing"})
    return {"records": records, "cells": cells}


@pytest.fixture(scope="session")
def ablation_report(tmp_path_factory, ablation) -> dict:
    """``build_report`` of the ablation sweep (every format), written once."""
    from fptbench.report import build_report

    out = tmp_path_factory.mktemp("report") / "tiny"
    return build_report(ablation["records"], experiment=EXPERIMENT, out_dir=out, cells=ablation["cells"])
