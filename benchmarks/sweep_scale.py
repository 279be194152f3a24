"""How the sweep commands scale: expand and dry-run a matrix of 1,000 and of 10,000 cells, and
`status` over as many cells that all have a run record. Prints figures; asserts nothing about time.

    python benchmarks/sweep_scale.py [--cells 1000,10000]

Targets: issue 4, `fptbench sweep EXP --dry-run` on 1,000 cells < 2 s and `fptbench status EXP`
over 1,000 recorded cells < 3 s; issue 11, both < 5 s on 10,000 cells (2 cores). Both are timed
as whole commands (a fresh Python process, imports included), the way a user meets them, and the
in-process parts are timed separately.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_matrix(folder: Path, cells: int) -> Path:
    """10 x 10 x (cells / 100) cells: a named axis, a config-key axis and seeds, on the CPU-sized
    config."""
    seeds = max(1, cells // 100)
    # a fresh trunk: the cells are planned, never run, and need no pre-training data (sweep checks trunks first)
    lines = ["description: scale benchmark, not meant to run", "base: synth_r18_bfp",
             "set: {model.backbone_pretrain: ''}", "axes:", "  variant:"]
    for i in range(10):
        lines.append(f"    v{i}: {{train.base_lr: {0.001 * (i + 1):.3f}}}")
    lines.append(f"  train.max_iter: [{', '.join(str(100 + i) for i in range(10))}]")
    lines.append(f"  seed: [{', '.join(str(i) for i in range(seeds))}]")
    path = folder / "experiments" / "scale.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def fake_records(matrix, root: Path) -> None:
    """A complete record per cell, shaped like a real one (config, metrics, profile, launch)."""
    from fptbench.fileio import write_json_atomic
    from fptbench.records import make_record

    metrics = {kind: {k: 1.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")} for kind in ("bbox", "segm")}
    template = make_record(matrix.cells[0].config, metrics=metrics, dataset={"name": "val", "images": 50},
                           iterations=100, wall_time_s=1.0)
    profile = {"params": 1, "macs": 1, "flops": 2, "by_part": {}, "latency_ms": {"median": 1.0, "p90": 1.0, "runs": 1}}
    for cell in matrix.cells:
        record = copy.deepcopy(template)
        record["config"], record["config_hash"] = cell.config, cell.config_hash
        record["cell"] = {"experiment": matrix.name, "run_id": cell.run_id, "axes": cell.axes, "matrix": str(matrix.path)}
        record["profile"] = profile
        record["launch"] = {"executor": "local", "job_id": "1", "attempts": 1, "requeues": 0, "hostname": "h",
                            "started": "2026-11-24T00:00:00+00:00", "finished": "2026-11-24T00:10:00+00:00"}
        write_json_atomic(root / cell.run_id / "result.json", record)


def time_command(argv: list[str], cwd: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed:\n{proc.stderr}")
    return times


TARGETS_S = {1000: (2.0, 3.0), 10000: (5.0, 5.0)}  # cells -> (dry run, status), whole commands


def bench(cells: int, repeats: int) -> dict:
    from fptbench.experiments import load_matrix
    from fptbench.launch import format_status, run_sweep, sweep_status

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = write_matrix(work, cells)
        os.chdir(work)
        t0 = time.perf_counter()
        matrix = load_matrix(path)
        t_expand = time.perf_counter() - t0
        lines: list[str] = []
        t0 = time.perf_counter()
        run_sweep(matrix, dry_run=True, echo=lines.append)
        t_plan = time.perf_counter() - t0
        n = len(matrix.cells)
        dry_target, status_target = TARGETS_S.get(n, (None, None))
        print(f"cells: {n}")
        print(f"in process: expand {t_expand * 1000:.0f} ms, plan + dry-run table {t_plan * 1000:.0f} ms")
        cli = [sys.executable, "-m", "fptbench"]
        dry = time_command(cli + ["sweep", str(path), "--dry-run"], work, repeats)
        print(f"`fptbench sweep --dry-run` ({n} cells, whole command): median {statistics.median(dry):.2f} s "
              f"(runs: {', '.join(f'{t:.2f}' for t in dry)})" + (f"; target < {dry_target:g} s" if dry_target else ""))

        fake_records(matrix, work / "results" / matrix.name)
        t0 = time.perf_counter()
        statuses = sweep_status(matrix)
        text = format_status(statuses, experiment=matrix.name)
        t_status = time.perf_counter() - t0
        assert all(s.state == "done" for s in statuses), text[-500:]
        print(f"in process: status of {n} recorded cells {t_status * 1000:.0f} ms")
        st = time_command(cli + ["status", str(path)], work, repeats)
        print(f"`fptbench status` ({n} recorded cells, whole command): median {statistics.median(st):.2f} s "
              f"(runs: {', '.join(f'{t:.2f}' for t in st)})" + (f"; target < {status_target:g} s" if status_target else ""))
        size = sum(p.stat().st_size for p in (work / "results" / matrix.name).rglob("result.json"))
        print(f"records read: {n} files, {size / 1e6:.1f} MB")
        os.chdir(REPO)
        return {"cells": n, "dry_run_s": statistics.median(dry), "status_s": statistics.median(st)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="1000,10000", help="comma-separated matrix sizes (default 1000,10000)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    figures = [bench(int(c), args.repeats) for c in args.cells.split(",") if c.strip()]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
