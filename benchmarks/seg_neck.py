"""Time and memory of the segmentation neck (UFP at output stride 8 + FPT with LGT) on this
machine's CPU, against its own matmul: the pixel-level sibling of ``fpt_neck.py``.

The neck is the one ``fptbench.modeling.segmentation.build_segmentation_model`` builds from a
shipped config (default ``seg_r101_cityscapes_lgt``, the paper's pixel-level model): the
unscathed feature pyramid (four GCN blocks, kernels 1, 7, 15, 31, d = 256) on C5 of the dilated
ResNet-101 (2048 channels at output stride 8), then FPT on its four levels of one resolution: ST
on each (MoS, N = 2, keys and values at full resolution), the locality-constrained GT between
every pair (MoS, N = 4, Euclidean, 128 channels, a 5 x 5 window at s = 1), RT between every pair
(no strided convs at s = 1), fusion with GroupNorm. The input is random C5 features of the size
the trunk gives for a ``--size`` x ``--size`` crop (the whole model built on the meta device says
which; its pyramid and FPT are then built on the CPU with the same builders and checked against
it, parameter for parameter). Batch 1, fp32; fwd in evaluation mode, fwd+bwd in training mode.

Per mode it prints, from a fresh process per case: wall time of the neck, the peak memory it
adds (resident-set high-water mark minus the resident set before the run), and attention
throughput: the FLOPs of each attention over the time spent inside it (profiler ranges:
``fptbench::mos_attention`` and ``.backward`` for ST, ranges this script puts around
``local_mos_attention`` and its backward for LGT), as a fraction of the same run's matmul
GFLOP/s (``fptbench.engine.machine.matmul_gflops``, 4096^2 by default).

FLOPs counted per attention call, as ``fpt_neck.py`` counts them: forward 2 * Lq * Lk * (D + Dv),
backward 2 * Lq * Lk * (3D + 2Dv). ST: Lq = Lk = H * W, D = Dv = 256. LGT: Lk = window^2 keys
per query, the out-of-map (zero-padded) ones included because they are computed, D = Dv = 128.

Known [torch 2.14.1, oneDNN 3.12, CPU]: the backward of a Conv2d(256, 256, (31, 1), padding (15, 0))
on a 1 x 256 x h x h map aborts (heap corruption or segfault) for h = 10..16 and runs for h <= 8
and h >= 17, and runs with ``torch.backends.mkldnn`` off. The GCN blocks therefore pad
explicitly on the CPU (``fptbench.modeling.segmentation._PaddedConv2d``, the same numbers), which
does not abort; the warm-up is still sized to stay clear of those maps.

    python benchmarks/seg_neck.py                      # 769 x 769, the paper's Cityscapes crop (several minutes on 2 cores)
    python benchmarks/seg_neck.py --size 385 --modes fwd --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.fpt_neck import _rss_kb  # noqa: E402  (the detection neck's benchmark: one /proc reader)
from fptbench.config import load_config  # noqa: E402
from fptbench.engine.machine import matmul_gflops  # noqa: E402
from fptbench.modeling import grounding_transformer  # noqa: E402
from fptbench.modeling.fpt import FeaturePyramidTransformer  # noqa: E402
from fptbench.modeling.segmentation import (  # noqa: E402
    C5,
    UnscathedFeaturePyramid,
    build_segmentation_model,
    pyramid_channels,
    pyramid_strides,
)
from fptbench.ops.mos_attention import PROFILE_BACKWARD, PROFILE_FORWARD  # noqa: E402

MODES = ("fwd", "fwd+bwd")
LGT_FORWARD = "seg_neck::local_mos_attention"
LGT_BACKWARD = "seg_neck::local_mos_attention.backward"


def build_neck(cfg: dict, size: int) -> tuple[torch.nn.Module, torch.nn.Module, tuple[int, ...]]:
    """(pyramid, fpt, C5 shape) of ``build_segmentation_model(cfg)`` for a ``size`` x ``size`` image.

    The whole model is built on the meta device (no memory, no init) for C5's shape and the
    neck's structure; the pyramid and FPT are built again on the CPU with the builder's own parts
    and must match it, parameter for parameter.
    """
    with torch.device("meta"):
        meta = build_segmentation_model(cfg).eval()
        c5 = meta.backbone(torch.empty(1, 3, size, size))[C5]
    if meta.fpt is None or cfg["seg"]["pyramid"] != "ufp":
        raise SystemExit("the config's model has no FPT or no UFP pyramid: expected the paper's pixel-level neck")
    kernels = tuple(cfg["seg"]["ufp_kernels"])
    channels = pyramid_channels(cfg)
    pyramid = UnscathedFeaturePyramid(c5.shape[1], channels, kernels)
    strides = pyramid_strides(pyramid="ufp", output_stride=cfg["seg"]["output_stride"], num_levels=len(kernels))
    fpt = FeaturePyramidTransformer.from_config(cfg, channels=channels, num_levels=len(kernels), level_strides=strides)
    for mine, theirs in ((pyramid, meta.pyramid), (fpt, meta.fpt)):
        a = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
        b = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
        if a != b:
            raise SystemExit(f"the neck built here differs from build_segmentation_model's: {sorted(set(a.items()) ^ set(b.items()))[:3]}")
    return pyramid, fpt, tuple(c5.shape)


class _TimedLocal(torch.autograd.Function):
    """``local_mos_attention`` with its forward and its backward each inside a profiler range.

    The forward builds the op's own autograd graph on detached inputs; the backward runs that
    graph (``torch.autograd.grad``), so the work is autograd's, only bracketed."""

    @staticmethod
    def forward(ctx, q, k, v, pi, kwargs):
        inputs = [t.detach().requires_grad_(t.requires_grad) for t in (q, k, v, pi)]
        with torch.enable_grad(), torch.profiler.record_function(LGT_FORWARD):
            out = _LOCAL(*inputs, **kwargs)
        ctx.inputs, ctx.out = inputs, out
        return out.detach()

    @staticmethod
    def backward(ctx, grad):
        want = [t for t in ctx.inputs if t.requires_grad]
        with torch.profiler.record_function(LGT_BACKWARD):
            got = iter(torch.autograd.grad(ctx.out, want, grad))
        return (*(next(got) if t.requires_grad else None for t in ctx.inputs), None)


_LOCAL = grounding_transformer.local_mos_attention


def _timed_local(q, k, v, pi, **kwargs):
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, pi)):
        return _TimedLocal.apply(q, k, v, pi, kwargs)
    with torch.profiler.record_function(LGT_FORWARD):
        return _LOCAL(q, k, v, pi, **kwargs)


def attention_calls(cfg: dict, c5: tuple[int, ...]) -> dict[str, list[tuple[int, int, int, int]]]:
    """(Lq, Lk, D, Dv) of every attention of the neck, by kind (``st``, ``lgt``)."""
    h, w = c5[-2:]
    levels = len(cfg["seg"]["ufp_kernels"])
    d, inner, window = pyramid_channels(cfg), cfg["gt"]["channels"], cfg["gt"]["window"]
    pairs = levels * (levels - 1) // 2 if cfg["fpt"]["pairs"] == "all" else levels - 1
    calls = {"st": [(h * w, h * w, d, d)] * levels if cfg["fpt"]["st"] else []}
    calls["lgt"] = [(h * w, window * window, inner, inner)] * pairs if cfg["fpt"]["gt"] else []
    return calls


def attention_flops(calls, mode: str) -> float:
    fwd = sum(2.0 * lq * lk * (d + dv) for lq, lk, d, dv in calls)
    bwd = sum(2.0 * lq * lk * (3 * d + 2 * dv) for lq, lk, d, dv in calls)
    return fwd if mode == "fwd" else fwd + bwd


def run_case(config: str, size: int, mode: str) -> dict:
    """One measurement; meant to run in a fresh process (see main)."""
    cfg = load_config(config)
    if cfg["gt"]["window"] == 0:
        raise SystemExit(f"{config}: gt.window is 0 (global GT); this benchmark times the LGT neck")
    torch.manual_seed(0)
    pyramid, fpt, c5 = build_neck(cfg, size)
    grounding_transformer.local_mos_attention = _timed_local  # the name GroundingTransformer calls
    train = mode != "fwd"
    pyramid.train(train)
    fpt.train(train)

    def neck(x: torch.Tensor) -> float:
        with torch.set_grad_enabled(train):
            out = fpt(list(pyramid({C5: x}).values()))
            if train:
                sum(o.sum() for o in out).backward()
        return float(out[0][0, 0, 0, 0])

    # Warm-up at a small size: thread pools, kernels and allocator paths, not timed. Its maps are
    # at least as wide as the largest GCN kernel: oneDNN's backward of the 31-wide convs aborts on
    # maps of 10 to 16 px (module docstring).
    side = [min(n, max(-(-n // 8), max(cfg["seg"]["ufp_kernels"]))) for n in c5[2:]]
    neck(torch.randn(1, c5[1], *side))
    pyramid.zero_grad(set_to_none=True)
    fpt.zero_grad(set_to_none=True)
    x = torch.randn(*c5)
    with open("/proc/self/clear_refs", "w") as f:  # reset the resident-set high-water mark
        f.write("5")
    rss0 = _rss_kb("VmRSS:")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        neck(x)
        wall = time.perf_counter() - t
    peak = _rss_kb("VmHWM:") - rss0
    by_key = {e.key: e.cpu_time_total for e in prof.key_averages()}
    calls = attention_calls(cfg, c5)
    row = {"config": config, "size": size, "c5": list(c5), "mode": mode, "wall_s": wall, "peak_extra_mb": peak / 1024}
    for kind, keys in (("st", (PROFILE_FORWARD, PROFILE_BACKWARD)), ("lgt", (LGT_FORWARD, LGT_BACKWARD))):
        seconds = sum(by_key.get(k, 0) for k in keys) / 1e6
        flops = attention_flops(calls[kind], mode)
        row[f"{kind}_calls"] = len(calls[kind])
        row[f"{kind}_s"] = seconds
        row[f"{kind}_gflop"] = flops / 1e9
        row[f"{kind}_gflops"] = flops / seconds / 1e9 if seconds else float("nan")
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=769, help="square crop side, px (769: Cityscapes' 769 x 769 crops)")
    p.add_argument("--config", default="seg_r101_cityscapes_lgt", help="a shipped segmentation config with LGT")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--matmul-n", type=int, default=4096, help="side of the square fp32 matmul measured as the yardstick")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--child", nargs=3, metavar=("CONFIG", "SIZE", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child[0], int(args.child[1]), args.child[2])))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, fp32, batch 1")
    mm = matmul_gflops(args.matmul_n)
    print(f"matmul ({args.matmul_n}^2, fp32): {mm:.0f} GFLOP/s")
    rows = []
    header = (f"{'crop':>5} {'C5':>11} {'mode':>8} {'wall s':>7} {'peak MB':>8} | {'ST GFLOP':>8} {'GFLOP/s':>7} "
              f"{'of mm':>5} | {'LGT GFLOP':>9} {'GFLOP/s':>7} {'of mm':>7}")
    print(f"{args.config}: UFP + FPT (LGT) at output stride 8")
    print(header)
    for mode in args.modes.split(","):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", args.config, str(args.size), mode]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{args.size:>5} {mode:>8}   failed: {res.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        r["matmul_gflops"] = mm
        for kind in ("st", "lgt"):
            r[f"{kind}_fraction_of_matmul"] = r[f"{kind}_gflops"] / mm
        rows.append(r)
        c5 = "x".join(map(str, r["c5"][1:]))
        print(f"{args.size:>5} {c5:>11} {mode:>8} {r['wall_s']:7.1f} {r['peak_extra_mb']:8.0f} | "
              f"{r['st_gflop']:8.1f} {r['st_gflops']:7.0f} {r['st_fraction_of_matmul']:5.2f} | "
              f"{r['lgt_gflop']:9.2f} {r['lgt_gflops']:7.3f} {r['lgt_fraction_of_matmul']:7.5f}", flush=True)
    if rows:
        r = rows[0]
        print(f"attention calls: {r['st_calls']} ST (Lq = Lk = {r['c5'][2] * r['c5'][3]}), {r['lgt_calls']} LGT "
              f"({r['c5'][2] * r['c5'][3]} queries x window^2 keys); ST + LGT time / wall: "
              + ", ".join(f"{x['mode']} {(x['st_s'] + x['lgt_s']) / x['wall_s']:.2f}" for x in rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_gflops": mm, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
