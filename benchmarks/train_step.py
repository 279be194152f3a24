"""Seconds per training iteration of the synthetic configs, beside this machine's matmul rate.

A CPU's speed says little on its own; the matmul rate measured in the same run lets a reader
compare figures across machines (seconds x GFLOP/s is roughly constant for one config). Each
config is timed as it ships and, with ``--torchvision``, with torchvision's head widths and RoI
sampling (model.fpn_channels 256, box_head_dim 1024, mask_head_channels 256,
roi_sampling_ratio 2, box_batch_size_per_image 512, box_positive_fraction 0.25): the speed-up
the synthetic configs' [ours] settings buy.

    python benchmarks/train_step.py                       # synth_r18_bfp, synth_r18_fpt
    python benchmarks/train_step.py --torchvision --iters 6

Prints one line per config: median seconds per iteration (forward, backward, SGD step on real
batches of the embedded dataset, data loading excluded), and the matmul GFLOP/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from fptbench.config import load_config  # noqa: E402
from fptbench.data import build_dataset  # noqa: E402
from fptbench.data.synth import write_synth  # noqa: E402
from fptbench.engine.machine import matmul_gflops  # noqa: E402
from fptbench.engine.trainer import collate  # noqa: E402
from fptbench.modeling import build_model  # noqa: E402

CONFIGS = ("synth_r18_bfp", "synth_r18_fpt")
TORCHVISION = [("model.fpn_channels", 256), ("model.box_head_dim", 1024), ("model.mask_head_channels", 256),
               ("model.roi_sampling_ratio", 2), ("model.box_batch_size_per_image", 512),
               ("model.box_positive_fraction", 0.25), ("gt.channels", 128)]


def seconds_per_iter(name: str, data: Path, overrides: list, iters: int, warmup: int) -> float:
    """Median wall seconds of one SGD iteration of ``name`` (train.images_per_device images)."""
    cfg = load_config(name, [("data.root", str(data)), ("model.backbone_pretrain", ""), *overrides])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    dataset = build_dataset(cfg, "train")
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batch = cfg["train"]["images_per_device"]
    times = []
    for it in range(warmup + iters):
        images, targets = collate([dataset[(it * batch + i) % len(dataset)] for i in range(batch)])
        t = time.perf_counter()
        loss = sum(model(list(images), list(targets)).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--iters", type=int, default=8, help="timed iterations per config (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--torchvision", action="store_true", help="also time torchvision's head widths and sampling")
    p.add_argument("--data", help="synthetic dataset folder (default: a fresh one in a temp dir)")
    args = p.parse_args()
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="fptbench-step-")) / "synth"
    if not (data / "annotations").exists():
        write_synth(data)
    rate = matmul_gflops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; matmul 2048^3 fp32: {rate:.0f} GFLOP/s")
    variants = [("as shipped", [])] + ([("torchvision heads", TORCHVISION)] if args.torchvision else [])
    for name in args.configs.split(","):
        for label, overrides in variants:
            s = seconds_per_iter(name, data, overrides, args.iters, args.warmup)
            print(f"{name:>16} {label:>18}: {s:6.3f} s/iter  ({s * rate:6.0f} s x GFLOP/s)", flush=True)
    print(f"matmul after the runs: {matmul_gflops():.0f} GFLOP/s (a drop means the machine was shared)")


if __name__ == "__main__":
    main()
