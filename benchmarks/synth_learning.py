"""Does training work? BFP and FPT Mask R-CNN (ResNet-18) from scratch on the embedded dataset.

Both models run their shipped configs (synth_r18_bfp, synth_r18_fpt): the same schedule, the
same data, on this machine's CPU cores. The script writes the synthetic dataset, evaluates each
untrained model (its AP is the chance level of this evaluation), trains, evaluates with
pycocotools on the synthetic validation split, and prints box and mask AP with training minutes.
A run that needs more than --minutes of training is flagged.

    python benchmarks/synth_learning.py
    python benchmarks/synth_learning.py --set train.max_iter 20    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from fptbench.config import load_config  # noqa: E402
from fptbench.data.synth import summary_line, write_synth  # noqa: E402
from fptbench.engine import evaluate_model, train  # noqa: E402
from fptbench.modeling import build_model  # noqa: E402

CONFIGS = ("synth_r18_bfp", "synth_r18_fpt")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="training time each model must stay under")
    p.add_argument("--data", help="synthetic dataset folder (default: a fresh one under --out)")
    p.add_argument("--out", help="where the runs go (default: a temp dir)")
    p.add_argument("--set", dest="overrides", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configs to run")
    p.add_argument("--json", help="write the rows here too")
    args = p.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="fptbench-learning-"))
    data = Path(args.data) if args.data else work / "synth"
    if not (data / "annotations").exists():
        print(summary_line(write_synth(data)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; runs in {work}")
    rows = []
    for name in args.configs.split(","):
        cfg = load_config(name, [("data.root", str(data))] + [tuple(o) for o in args.overrides])
        torch.manual_seed(cfg["seed"])
        untrained = evaluate_model(cfg, build_model(cfg), work / f"{name}-untrained", progress=False)
        record = train(cfg, work / name)
        minutes = record["training"]["wall_time_s"] / 60
        rows.append({
            "config": name,
            "iterations": record["training"]["iterations"],
            "train_minutes": round(minutes, 2),
            "within_budget": minutes <= args.minutes,
            "box_AP": record["metrics"]["bbox"]["AP"],
            "box_AP50": record["metrics"]["bbox"]["AP50"],
            "mask_AP": record["metrics"]["segm"]["AP"],
            "untrained_box_AP": untrained["metrics"]["bbox"]["AP"],
            "record": str(work / name / "result.json"),
        })
        print(json.dumps(rows[-1]))
    print(f"\n{'config':>14} {'iters':>6} {'train min':>9} {'box AP':>7} {'box AP50':>8} {'mask AP':>7} {'untrained box AP':>16}")
    for r in rows:
        flag = "" if r["within_budget"] else f"  (over {args.minutes:g} min)"
        print(f"{r['config']:>14} {r['iterations']:>6} {r['train_minutes']:9.1f} {r['box_AP']:7.1f} "
              f"{r['box_AP50']:8.1f} {r['mask_AP']:7.1f} {r['untrained_box_AP']:16.1f}{flag}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
