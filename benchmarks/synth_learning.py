"""Does training work, and does the neck matter beyond seed noise? BFP vs FPT on the embedded data.

The paper's protocol in miniature, as the demo runs it: the ResNet-18 trunk is pre-trained once
(``model.backbone_pretrain`` of the synthetic configs: BFP Mask R-CNN on the synthetic training
split, cached under the data folder), then BFP (synth_r18_bfp) and FPT (synth_r18_fpt) are
fine-tuned from it with several seeds, on this machine's CPU cores, and evaluated with
pycocotools on the synthetic validation split. The untrained model of each config (fresh neck
and heads on the pre-trained trunk) gives the chance level of this evaluation.

Prints, per config, box and mask AP as mean ± std over seeds (sample std) with each seed's
value, the training minutes per run, and Welch's two-sided t-test of FPT against BFP; the
matmul rate of this machine, measured in the same run, is printed beside the times.

    python benchmarks/synth_learning.py                       # seeds 0 1 2
    python benchmarks/synth_learning.py --seeds 0 1 --set train.max_iter 20   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from fptbench.config import load_config  # noqa: E402
from fptbench.data.synth import summary_line, write_synth  # noqa: E402
from fptbench.engine import evaluate_model, train  # noqa: E402
from fptbench.engine.machine import matmul_gflops  # noqa: E402
from fptbench.engine.model import load_model  # noqa: E402
from fptbench.engine.pretrain import ensure_trunk  # noqa: E402
from fptbench.report.significance import fmt_p, welch_p  # noqa: E402

CONFIGS = ("synth_r18_bfp", "synth_r18_fpt")
METRICS = (("bbox", "AP"), ("bbox", "AP50"), ("segm", "AP"))


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data", help="synthetic dataset folder (default: a fresh one under --out)")
    p.add_argument("--out", help="where the runs go (default: a temp dir)")
    p.add_argument("--set", dest="overrides", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configs; the first is the baseline")
    p.add_argument("--json", help="write the runs here too")
    args = p.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="fptbench-learning-"))
    data = Path(args.data) if args.data else work / "synth"
    if not (data / "annotations").exists():
        print(summary_line(write_synth(data)))
    rate = matmul_gflops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, matmul {rate:.0f} GFLOP/s; runs in {work}")
    names = args.configs.split(",")
    runs: dict[str, list[dict]] = {}
    chance: dict[str, dict] = {}
    for name in names:
        for seed in args.seeds:
            cfg = load_config(name, [("data.root", str(data)), ("seed", seed)] + [tuple(o) for o in args.overrides])
            if name not in chance:
                t0 = time.perf_counter()
                trunk = ensure_trunk(cfg, log=print)
                print(f"trunk: {trunk['path']} ({'pre-trained' if trunk['pretrained_here'] else 'cached'}, "
                      f"{time.perf_counter() - t0:.0f} s)")
                torch.manual_seed(seed)
                untrained = load_model(cfg, pretrained=True)
                chance[name] = evaluate_model(cfg, untrained, work / f"{name}-untrained", progress=False)["metrics"]
            out = work / f"{name}-s{seed}"
            record = train(cfg, out, resume=(out / "checkpoints").exists())
            runs.setdefault(name, []).append({
                "seed": seed,
                "train_minutes": record["training"]["wall_time_s"] / 60,
                "metrics": {f"{k}.{m}": record["metrics"][k][m] for k, m in METRICS},
                "record": str(out / "result.json"),
            })
    base = names[0]
    print(f"\nmatmul {rate:.0f} GFLOP/s; mean ± std over seeds {args.seeds}; p: Welch's two-sided t-test against {base}")
    header = f"{'config':>14} {'train min':>9}" + "".join(f" {k + '.' + m:>22} {'p':>7}" for k, m in METRICS)
    print(header + f" {'untrained box AP':>16}")
    for name in names:
        line = f"{name:>14} {statistics.mean(r['train_minutes'] for r in runs[name]):9.2f}"
        for key, metric in METRICS:
            values = [r["metrics"][f"{key}.{metric}"] for r in runs[name]]
            base_values = [r["metrics"][f"{key}.{metric}"] for r in runs[base]]
            pv = welch_p(values, base_values) if name != base else None
            line += f" {_mean_std(values):>14} {str([round(v, 1) for v in values]):>7} {fmt_p(pv) if pv is not None else '':>7}"
        print(line + f" {chance[name]['bbox']['AP']:16.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"matmul_gflops": rate, "runs": runs, "untrained": chance}, indent=1))


if __name__ == "__main__":
    main()
