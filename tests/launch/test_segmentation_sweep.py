"""Segmentation cells in a sweep: their records are complete, and status shows their mIoU.

The fast tests read hand-made records; the slow one runs a tiny segmentation matrix through
submitit's local executor (train, evaluate, profile, record) and reads `fptbench status`.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from fptbench.launch.state import RESULT_FILE, SweepState, is_complete
from fptbench.launch.status import cell_statuses, headline
from fptbench.launch.sweep import format_status
from tests.launch.workspace import fptbench, records, status_rows


def _record(metrics: dict) -> dict:
    return {"config": {}, "metrics": metrics, "cell": {}, "profile": {},
            "launch": {"executor": "local", "job_id": "1", "attempts": 1, "started": "2026-11-28T10:00:00+00:00",
                       "finished": "2026-11-28T10:01:30+00:00"}}


SEGMENTATION = {"segmentation": {"mIoU": 41.25, "pixel_acc": 90.0, "mean_acc": 50.0, "per_class_iou": {"a": 41.25}}}
DETECTION = {"bbox": {"AP": 12.5}, "segm": {"AP": 10.0}}


def test_headline_is_box_ap_for_detection_and_miou_for_segmentation():
    assert headline(_record(DETECTION)) == ("box AP", 12.5)
    assert headline(_record(SEGMENTATION)) == ("mIoU", 41.25)
    assert headline(_record({})) == ("", None)


def test_status_of_done_segmentation_and_detection_cells(tmp_path):
    cells = [SimpleNamespace(run_id=rid, axes={"neck": rid}) for rid in ("seg", "det", "none")]
    for rid, metrics in (("seg", SEGMENTATION), ("det", DETECTION)):
        (tmp_path / rid).mkdir()
        (tmp_path / rid / RESULT_FILE).write_text(json.dumps(_record(metrics)))
    assert is_complete(_record(SEGMENTATION))  # a segmentation record completes a cell as a detection one does
    seg, det, none = cell_statuses(cells, tmp_path, SweepState(tmp_path, "x"))
    assert (seg.state, seg.metric_name, seg.metric, seg.elapsed_s) == ("done", "mIoU", 41.25, 90.0)
    assert (det.state, det.metric_name, det.metric) == ("done", "box AP", 12.5)
    assert (none.state, none.metric_name, none.metric) == ("missing", "", None)
    # the score column is named by the records' headlines, else by the matrix's task
    header = lambda text: text.splitlines()[0].split()[6:]  # after run id, state, job, elapsed, attempts
    assert header(format_status([seg, none], experiment="x")) == ["mIoU"]
    assert header(format_status([seg, det], experiment="x")) == ["box", "AP", "/", "mIoU"]
    assert header(format_status([none], experiment="x", metric_name="mIoU")) == ["mIoU"]
    assert header(format_status([none], experiment="x")) == ["box", "AP"]


MATRIX = """\
description: launcher test, segmentation
base: synth_seg_r18_base
set:
  model.fpn_channels: 16
  model.backbone_pretrain: ""   # a fresh trunk: no pre-training
  gt.channels: 8
  seg.ufp_kernels: [1, 3]
  seg.crop_size: [64, 64]
  train.max_iter: 4
  train.images_per_device: 2
  train.checkpoint_period: 2
profile: {size: [64, 64], runs: 1, warmup: 0}
axes:
  neck:
    base: {}
    lgt: {fpt.st: true, fpt.gt: true, fpt.rt: true, fpt.norm: bn, gt.window: 3}
"""


@pytest.mark.slow  # two cells: ~1 min on 2 cores
def test_a_segmentation_matrix_runs_through_the_local_executor(tmp_path):
    from fptbench.data.synth import write_synth_seg

    write_synth_seg(tmp_path / "data" / "synth", train=4, val=2, size=64, seed=0)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "tiny_seg.yaml").write_text(MATRIX)
    sweep = fptbench(tmp_path, "sweep", "tiny_seg")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    found = records(tmp_path / "results" / "tiny_seg")
    assert sorted(rid.split("-")[0] for rid in found) == ["base", "lgt"]
    for rid, record in found.items():
        assert is_complete(record) and set(record["metrics"]) == {"segmentation"}
        assert record["training"]["iterations"] == 4 and record["config"]["model"]["task"] == "segmentation"
        assert {"backbone", "pyramid", "fpt", "head", "aux_head"} <= set(record["profile"]["by_part"])
    by_neck = {rid.split("-")[0]: r for rid, r in found.items()}
    assert by_neck["lgt"]["profile"]["attention"]["macs"] > 0 == by_neck["base"]["profile"]["attention"]["macs"]
    status = fptbench(tmp_path, "status", "tiny_seg")
    rows = status_rows(status.stdout)
    assert status.stdout.splitlines()[0].split()[-1] == "mIoU"
    for rid, record in found.items():
        assert rows[rid][0] == "done" and rows[rid][-1] == f"{record['metrics']['segmentation']['mIoU']:.1f}"
    cell_log = "".join(p.read_text() for p in (tmp_path / "results" / "tiny_seg" / ".submitit").glob("*/*_log.out"))
    for rid, record in found.items():
        assert f"cell {rid} done: mIoU {record['metrics']['segmentation']['mIoU']:.1f} -> " in cell_log
    report = fptbench(tmp_path, "report", "tiny_seg")
    assert report.returncode == 0, report.stderr[-2000:]
    (table,) = (tmp_path / "reports" / "tiny_seg" / "tables").glob("miou_*.md")  # one dataset
    assert "baseline" in table.read_text() and table.read_text().strip() in report.stdout, report.stdout
