"""benchmarks/gpu_check.py cannot rot: its --smoke mode runs every section on tiny CPU shapes."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_gpu_check_smoke_runs_every_section(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["smoke"] is True
    sections = result["sections"]
    assert sorted(sections) == list("abcdef")
    assert not [k for k, s in sections.items() if "error" in s or s.get("partial")]
    # a: every SDPA call the neck made took a fused kernel, with math disabled.
    assert all(row["strict_ok"] and row["all_fused"] for row in sections["a"]["rows"])
    assert any(row["calls"] for row in sections["a"]["rows"])  # impl sdpa made calls
    # b: every op and module agrees with its float64 reference.
    assert sections["b"]["all_ok"], [r for r in sections["b"]["rows"] if not r["ok"]]
    # d: the training iteration ran and its loss is finite.
    assert all(row["loss_finite"] for row in sections["d"]["rows"])
    for key in "cef":
        assert sections[key]["rows"] and not any("error" in row for row in sections[key]["rows"]), key
    assert (tmp_path / "gpu_check.md").read_text().startswith("# GPU check")


def test_gpu_check_refuses_unknown_sections(tmp_path):
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--sections", "az", "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown section(s) z" in proc.stderr
