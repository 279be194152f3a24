"""Run records: every field present, JSON round trip, atomic writes, clear errors."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime

import pytest

import fptbench
from fptbench.config import config_hash, load_config
from fptbench.errors import UsageError
from fptbench.fileio import write_bytes_atomic, write_json_atomic
from fptbench.records import RECORD_KEYS, git_info, make_record, read_record

METRICS = {"bbox": {"AP": 37.5, "AP50": 58.1, "AP75": 40.2, "APs": 21.0, "APm": 41.0, "APl": None},
           "segm": {"AP": 34.0, "AP50": 55.0, "AP75": 36.1, "APs": 15.2, "APm": 36.6, "APl": 50.3}}


def test_record_has_every_field(repo_root):
    cfg = load_config("maskrcnn_r50_fpt", [("model.backbone", "resnet18")])
    record = make_record(cfg, metrics=METRICS, dataset={"name": "coco2017_val", "images": 5000},
                         iterations=90000, wall_time_s=12.34567, extra={"checkpoint": "ckpt/last.pth"})
    assert tuple(k for k in record if k in RECORD_KEYS) == RECORD_KEYS
    assert record["config"] == cfg and record["config_hash"] == config_hash(cfg)
    assert record["metrics"] == METRICS
    assert record["dataset"] == {"name": "coco2017_val", "images": 5000}
    assert record["training"] == {"iterations": 90000, "wall_time_s": 12.346}
    assert record["checkpoint"] == "ckpt/last.pth"
    assert set(record["versions"]) == {"python", "torch", "torchvision", "fptbench", "pycocotools"}
    assert record["versions"]["fptbench"] == fptbench.__version__
    assert record["versions"]["pycocotools"]  # installed: its version, not None
    assert record["device"]["type"] == "cpu" or record["device"]["type"] == "cuda"
    assert record["device"]["name"] and record["device"]["count"] == 1
    assert datetime.fromisoformat(record["created"]).utcoffset().total_seconds() == 0
    # The checkout this test runs from: the commit git reports, or a reason when not a checkout.
    if (repo_root / ".git").exists():
        head = subprocess.run(["git", "-C", str(repo_root), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        assert record["git"]["commit"] == head and re.fullmatch(r"[0-9a-f]{40}", head)
        assert isinstance(record["git"]["dirty"], bool)
    else:
        assert record["git"]["commit"] is None and record["git"]["reason"]


def test_dataset_object_gives_its_size_and_split():
    cfg = load_config("maskrcnn_r50_bfp")
    record = make_record(cfg, metrics={}, dataset=list(range(7)))  # anything with a len
    assert record["dataset"] == {"name": cfg["data"]["test"], "images": 7}
    assert make_record(cfg, metrics={})["dataset"] is None


def test_extra_cannot_replace_a_field():
    with pytest.raises(ValueError, match="metrics"):
        make_record(load_config("maskrcnn_r50_bfp"), metrics={}, extra={"metrics": {}})


def test_git_outside_a_checkout(tmp_path):
    info = git_info(tmp_path)
    assert info["commit"] is None and info["dirty"] is None and info["reason"]


def test_round_trip(tmp_path):
    record = make_record(load_config("maskrcnn_r50_bfp"), metrics=METRICS, iterations=10, wall_time_s=1.0)
    path = write_json_atomic(tmp_path / "run" / "result.json", record)
    assert read_record(path) == record
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temp file left


def test_failed_write_keeps_the_old_file(tmp_path):
    # NaN is not JSON: the write is refused before the file is touched.
    path = write_json_atomic(tmp_path / "result.json", {"config": {}, "metrics": {"AP": 1.0}})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"config": {}, "metrics": {"AP": float("nan")}})
    assert read_record(path)["metrics"] == {"AP": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
    write_bytes_atomic(path, b"replaced")
    assert path.read_bytes() == b"replaced"


@pytest.mark.parametrize("text, expected", [
    ('{"config": {}, "metrics": ', "malformed JSON at line 1"),
    ("[1, 2]", "expected a run record"),
    ('{"config": {}}', "not a run record: missing key\\(s\\) metrics"),
])
def test_bad_record_names_the_file(tmp_path, text, expected):
    path = tmp_path / "result.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=f"^{re.escape(str(path))}: {expected}"):
        read_record(path)


def test_missing_record_names_the_file(tmp_path):
    with pytest.raises(UsageError, match="nothere.json: run record not found"):
        read_record(tmp_path / "nothere.json")
