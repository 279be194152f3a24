"""Time and memory of the paper-exact FPT neck on this machine's CPU, against its own matmul.

The neck is the spec's full model: ST on P2..P5 (MoS, N = 2), GT between every pair (MoS, N = 4,
Euclidean), RT between every pair, fusion, at batch 1 in fp32, with ST keys/values at full
resolution ("exact") and pooled ("pool", [code]). "naive" is the same exact neck with
materialised score matrices (``attention.impl: naive``), run only where it fits in memory.

Per input size it prints wall time, the peak memory the neck adds (resident-set high-water mark
minus the resident set before the run, in a fresh process per case), and attention throughput:
the spec's minimal FLOP count over the time spent inside the attention ops (profiler ranges
``fptbench::mos_attention`` and ``.backward``), as a fraction of the same run's matmul GFLOP/s.

FLOPs counted per attention call: forward 2 * Lq * Lk * (D + Dv), the spec's minimal work (the V
product once, however the mixtures are computed; D without the Euclidean extra channel).
Backward 2 * Lq * Lk * (3D + 2Dv): dW, dV, dQ, dK and the recomputed scores, FlashAttention's
convention, since no memory-linear backward can skip recomputing them. Both counts are printed.

    python benchmarks/fpt_neck.py                      # all sizes, modes and variants (~15 min)
    python benchmarks/fpt_neck.py --sizes 400x667 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fptbench.engine.machine import matmul_gflops  # noqa: E402
from fptbench.modeling.fpt import FeaturePyramidTransformer  # noqa: E402
from fptbench.ops.mos_attention import PROFILE_BACKWARD, PROFILE_FORWARD  # noqa: E402

CHANNELS = 256
VARIANTS = ("exact", "pool", "naive")
MODES = ("fwd", "fwd+bwd")


def pyramid_shapes(h: int, w: int) -> list[tuple[int, int]]:
    """P2..P5 sizes of a torchvision ResNet for an (h, w) image: ceil-halving from the stem."""
    sizes = []
    for _ in range(2):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    for _ in range(4):
        sizes.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


def attention_calls(shapes, pool: bool) -> list[tuple[int, int, int, int, int]]:
    """(Lq, Lk, D, Dv, N) of every attention in the full neck (all pairs)."""
    calls = []
    for t, (h, w) in enumerate(shapes):
        hk, wk = (math.ceil(h / 2), math.ceil(w / 2)) if pool else (h, w)
        calls.append((h * w, hk * wk, CHANNELS, CHANNELS, 2))  # ST
        for s in range(t + 1, len(shapes)):
            calls.append((h * w, shapes[s][0] * shapes[s][1], 128, 128, 4))  # GT
    return calls


def attention_flops(calls, mode: str) -> float:
    fwd = sum(2.0 * lq * lk * (d + dv) for lq, lk, d, dv, _ in calls)
    bwd = sum(2.0 * lq * lk * (3 * d + 2 * dv) for lq, lk, d, dv, _ in calls)
    return fwd if mode == "fwd" else fwd + bwd


def naive_bytes(calls, mode: str) -> float:
    """Rough peak of the materialised scores: N + 2 tiles (fwd), 2N + 4 with autograd."""
    return max((n + 2 if mode == "fwd" else 2 * n + 4) * lq * lk * 4.0 for lq, lk, _, _, n in calls)


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_case(size: tuple[int, int], variant: str, mode: str) -> dict:
    """One measurement; meant to run in a fresh process (see main)."""
    torch.manual_seed(0)
    impl = "naive" if variant == "naive" else "auto"
    neck = FeaturePyramidTransformer(
        CHANNELS, st_args=dict(pool_kv=variant == "pool", attention_impl=impl), gt_args=dict(attention_impl=impl)
    )
    shapes = pyramid_shapes(*size)
    # Warm-up at a small size: thread pools, kernels and allocator paths, not timed.
    warm = [torch.randn(1, CHANNELS, max(1, h // 8), max(1, w // 8)) for h, w in shapes]
    neck.train(mode != "fwd")
    with torch.set_grad_enabled(mode != "fwd"):
        out = neck(warm)
        if mode != "fwd":
            sum(o.sum() for o in out).backward()
    neck.zero_grad(set_to_none=True)
    del out, warm
    feats = [torch.randn(1, CHANNELS, h, w) for h, w in shapes]
    with open("/proc/self/clear_refs", "w") as f:  # reset the resident-set high-water mark
        f.write("5")
    rss0 = _rss_kb("VmRSS:")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        with torch.set_grad_enabled(mode != "fwd"):
            out = neck(feats)
            if mode != "fwd":
                sum(o.sum() for o in out).backward()
        wall = time.perf_counter() - t
    peak = _rss_kb("VmHWM:") - rss0
    attn_us = sum(e.cpu_time_total for e in prof.key_averages() if e.key in (PROFILE_FORWARD, PROFILE_BACKWARD))
    flops = attention_flops(attention_calls(shapes, variant == "pool"), mode)
    return {
        "size": list(size),
        "variant": variant,
        "mode": mode,
        "wall_s": wall,
        "peak_extra_mb": peak / 1024,
        "attention_s": attn_us / 1e6,
        "attention_gflop": flops / 1e9,
        "attention_gflops": flops / (attn_us / 1e6) / 1e9 if attn_us else float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="400x667,800x1333,1000x1400", help="comma-separated HxW input sizes")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--naive-limit-gb", type=float, default=12.0, help="skip naive where its scores need more")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--child", nargs=3, metavar=("HxW", "VARIANT", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        h, w = map(int, args.child[0].split("x"))
        print(json.dumps(run_case((h, w), args.child[1], args.child[2])))
        return

    sizes = [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, fp32, batch 1")
    mm = matmul_gflops(4096)
    print(f"matmul (4096^2, fp32): {mm:.0f} GFLOP/s")
    rows = []
    header = f"{'input':>10} {'variant':>6} {'mode':>8} {'wall s':>8} {'peak MB':>8} {'attn GFLOP':>10} {'GFLOP/s':>8} {'of matmul':>9}"
    print(header)
    for size in sizes:
        for variant in args.variants.split(","):
            for mode in args.modes.split(","):
                tag = f"{size[0]}x{size[1]}"
                if variant == "naive":
                    need = naive_bytes(attention_calls(pyramid_shapes(*size), False), mode) / 2**30
                    if need > args.naive_limit_gb:
                        print(f"{tag:>10} {variant:>6} {mode:>8}   does not fit: scores alone need ~{need:.0f} GB")
                        rows.append({"size": list(size), "variant": variant, "mode": mode, "skipped_gb": need})
                        continue
                cmd = [sys.executable, os.path.abspath(__file__), "--child", tag, variant, mode]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    print(f"{tag:>10} {variant:>6} {mode:>8}   failed: {res.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(res.stdout.strip().splitlines()[-1])
                r["matmul_gflops"] = mm
                r["fraction_of_matmul"] = r["attention_gflops"] / mm
                rows.append(r)
                print(
                    f"{tag:>10} {variant:>6} {mode:>8} {r['wall_s']:8.1f} {r['peak_extra_mb']:8.0f} "
                    f"{r['attention_gflop']:10.0f} {r['attention_gflops']:8.0f} {r['fraction_of_matmul']:9.2f}",
                    flush=True,
                )
    exact = {(tuple(r["size"]), r["mode"]): r for r in rows if r["variant"] == "exact" and "peak_extra_mb" in r}
    for mode in MODES:
        pts = sorted((s[0] * s[1], r["peak_extra_mb"]) for (s, m), r in exact.items() if m == mode)
        for (p0, m0), (p1, m1) in zip(pts, pts[1:]):
            growth = math.log(m1 / m0) / math.log(p1 / p0)
            print(f"exact {mode}: pixels x{p1 / p0:.2f} -> memory x{m1 / m0:.2f} (for 2x pixels: x{2 ** growth:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_gflops": mm, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
