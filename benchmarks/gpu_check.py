#!/usr/bin/env python
"""One-call GPU check of the FPT engine [issue #10]: kernels, exactness, memory and speed.

    python benchmarks/gpu_check.py [--out DIR] [--sections abcdef] [--smoke]

Writes ``DIR/gpu_check.json`` (every figure, rewritten after each section so a killed run keeps
what it measured) and ``DIR/gpu_check.md`` (a readable summary). Sections:

  a  which SDPA kernel every attention call of the neck takes: fp32 / bf16 / fp16, train / eval,
     and whether the neck runs with SDPA's math backend disabled (strict mode);
  b  each op and module on CUDA against a float64 CPU reference: outputs and gradients;
  c  the neck's peak memory at 800x1333, batch 1 and 2, fp32 and bf16, fwd and fwd+bwd;
  d  one training iteration of maskrcnn_r50_fpt (and _bfp) with 2 images at 800x1333 under
     bf16 autocast: time and peak memory;
  e  attention throughput, in minimal FLOPs 2·Lq·Lk·(D+Dv) forward and 2·Lq·Lk·(3D+2Dv)
     backward, against the same GPU's torch.matmul and SDPA flash at equal head dims (128);
  f  BFP vs FPT inference latency at 800x1333, whole model and neck.

``--smoke`` runs every section on tiny shapes on the CPU (the test suite runs it, so the script
cannot rot). Only torch, torchvision, PyYAML and fptbench itself are needed: the GPU image has no
pycocotools, fvcore or submitit, and nothing here imports them. Figures are printed, never
asserted: a timing never fails anything.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a bare checkout

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fptbench.config import load_config  # noqa: E402
from fptbench.fileio import write_json_atomic  # noqa: E402
from fptbench.modeling import build_model  # noqa: E402
from fptbench.modeling.backbone import OUT_CHANNELS  # noqa: E402
from fptbench.modeling.fpt import FeaturePyramidTransformer  # noqa: E402
from fptbench.modeling.grounding_transformer import GroundingTransformer  # noqa: E402
from fptbench.modeling.rendering_transformer import RenderingTransformer  # noqa: E402
from fptbench.modeling.self_transformer import SelfTransformer  # noqa: E402
from fptbench.ops import local_mos_attention, mos_attention  # noqa: E402
from fptbench.ops.guard import largest_tensor_created, sdpa_backends_recorded, strict_fused_attention  # noqa: E402

SECTIONS = "abcdef"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Check:
    """Shapes and repetitions of one run: the real ones on a GPU, tiny ones for ``--smoke``."""

    def __init__(self, smoke: bool, device: torch.device, deadline: float = math.inf, save: Callable[[], None] = lambda: None) -> None:
        self.smoke = smoke
        self.device = device
        self.deadline = deadline  # time.perf_counter() after which sections stop adding rows
        self.save = save  # rewrites the JSON: sections call it after each row
        self.rows: list[dict] = []  # the running section's rows (saved as they come)
        self.image = (96, 160) if smoke else (800, 1333)  # (h, w) before the transform's padding
        self.kernel_image = (64, 96) if smoke else (400, 667)  # section a: kernels, not speed
        self.runs = 1 if smoke else 3
        self.warmup = 0 if smoke else 1
        self.matmul_n = 256 if smoke else 8192
        # Smoke runs keep one variant per axis where the full run sweeps them.
        self.impls = ("auto",) if smoke else ("auto", "sdpa", "blocks")
        self.batches = (1,) if smoke else (1, 2)
        self.dtypes = ("fp32",) if smoke else ("fp32", "bf16")
        self.models = ("maskrcnn_r50_fpt",) if smoke else ("maskrcnn_r50_bfp", "maskrcnn_r50_fpt")
        # A small trunk and few RoIs on the CPU; torchvision's defaults on the GPU.
        self.model_overrides = (
            [("model.backbone", "resnet18"), ("model.box_batch_size_per_image", 32), ("model.rpn_post_nms_top_n_train", 100),
             ("model.rpn_pre_nms_top_n_test", 100), ("model.rpn_post_nms_top_n_test", 100)]
            if smoke else []
        )


# ---------------------------------------------------------------------------------------------
# helpers


def out_of_time(c: Check) -> bool:
    if time.perf_counter() > c.deadline:
        c.rows.append({"skipped": "the --deadline-s passed; the remaining rows of this section were not run"})
        return True
    return False


def add_row(c: Check, row: dict) -> None:
    c.rows.append(row)
    c.save()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, runs: int, warmup: int) -> float:
    """Median seconds of ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(max(1, runs)):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> dict:
    """Peak memory above what was allocated before ``fn`` (CUDA), or the largest tensor (CPU), and
    the seconds of that one call (with the recorder on the CPU: slower)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        t = time.perf_counter()
        fn()
        sync(device)
        return {
            "peak_extra_mb": round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1),
            "seconds": round(time.perf_counter() - t, 4),
        }
    t = time.perf_counter()
    with largest_tensor_created() as largest:
        fn()
    return {"peak_extra_mb": None, "largest_tensor": largest.op, "seconds": round(time.perf_counter() - t, 4)}


def padded(h: int, w: int) -> tuple[int, int]:
    """The transform pads the batch to a multiple of 32 (torchvision's size_divisible)."""
    return math.ceil(h / 32) * 32, math.ceil(w / 32) * 32


def resized(h: int, w: int, min_size: int = 800, max_size: int = 1333) -> tuple[int, int]:
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return round(h * scale), round(w * scale)


def pyramid(h: int, w: int) -> list[tuple[int, int]]:
    """P2..P5 sizes of a ResNet for a padded (h, w) batch."""
    h, w = padded(h, w)
    return [(math.ceil(h / 2**i), math.ceil(w / 2**i)) for i in range(2, 6)]


def build_neck(device: torch.device, overrides: list[tuple[str, Any]] = ()) -> FeaturePyramidTransformer:
    cfg = load_config("maskrcnn_r50_fpt", list(overrides))
    torch.manual_seed(0)
    return FeaturePyramidTransformer.from_config(cfg, OUT_CHANNELS, 4).to(device)


def pyramid_inputs(shapes, batch: int, device: torch.device, requires_grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(0)
    return [
        torch.randn(batch, OUT_CHANNELS, h, w, generator=g).to(device).requires_grad_(requires_grad) for h, w in shapes
    ]


def neck_step(neck, feats, train: bool, dtype: torch.dtype, device: torch.device) -> None:
    neck.train(train)
    with torch.set_grad_enabled(train), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        outs = neck(feats)
    if train:
        sum(o.float().square().mean() for o in outs).backward()
        neck.zero_grad(set_to_none=True)
        for f in feats:
            f.grad = None


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _sig(x: float) -> float:
    """Three significant figures (CPU smoke rates are tiny, GPU ones large)."""
    return float(f"{x:.3g}")


def attention_flops(Lq: int, Lk: int, D: int, Dv: int, backward: bool) -> float:
    """Minimal FLOPs: forward 2·Lq·Lk·(D+Dv); backward recomputes S and adds dW, dv, dq, dk."""
    fwd = 2.0 * Lq * Lk * (D + Dv)
    return fwd + (2.0 * Lq * Lk * (3 * D + 2 * Dv) if backward else 0.0)


# ---------------------------------------------------------------------------------------------
# sections


def section_a(c: Check) -> dict:
    """Which SDPA kernel each attention call of the neck takes (impl sdpa, as on CUDA's auto)."""
    shapes = pyramid(*c.kernel_image)
    rows = c.rows
    for impl in ("sdpa", "auto"):
        neck = build_neck(c.device, [("attention.impl", impl)])
        for name, dtype in DTYPES.items():
            if c.device.type == "cpu" and name != "fp32":
                continue  # bf16 on the CPU is tested by tests/ops/test_fused_paths.py
            for train in (False, True):
                if c.device.type == "cpu" and train and impl == "sdpa":
                    continue  # refused on the CPU: ST's dropout has no fused CPU kernel
                feats = pyramid_inputs(shapes, 1, c.device, requires_grad=train)
                row = {"impl": impl, "dtype": name, "mode": "train" if train else "eval"}
                try:
                    with strict_fused_attention(), sdpa_backends_recorded() as calls:
                        neck_step(neck, feats, train, dtype, c.device)
                    row["strict_ok"] = True
                except RuntimeError as e:  # a call no fused kernel accepted
                    row["strict_ok"] = False
                    row["error"] = str(e).splitlines()[0][:200]
                    with sdpa_backends_recorded() as calls:
                        neck_step(neck, feats, train, dtype, c.device)
                counts: dict[str, int] = {}
                for call in calls:
                    key = f"{call.backend}:{call.dtype}:d{call.shapes[0][-1]}/v{call.shapes[2][-1]}"
                    counts[key] = counts.get(key, 0) + 1
                row["calls"] = counts
                row["all_fused"] = all(call.backend != "math" for call in calls)
                add_row(c, row)
    return {"image": c.kernel_image, "rows": rows}


def _op_cases(smoke: bool):
    # (B, Lq, Lk, D, N, Dv): ST-like, GT-like and plain softmax widths.
    if smoke:
        return [(1, 40, 30, 16, 2, 16), (2, 50, 20, 16, 4, 16), (1, 30, 30, 8, 1, 8)]
    return [(2, 700, 500, 256, 2, 256), (2, 900, 300, 128, 4, 128), (1, 600, 600, 256, 1, 256)]


def section_b(c: Check) -> dict:
    """Ops and modules on the device against float64 CPU references, forward and gradients."""
    rows = c.rows
    dev = c.device
    layouts = ["equal"] + (["unpadded"] if dev.type == "cuda" else [])  # "auto" is one of these
    for B, Lq, Lk, D, N, Dv in _op_cases(c.smoke):
        g = torch.Generator().manual_seed(0)
        base = [torch.randn(B, Lq, D, generator=g), torch.randn(B, Lk, D, generator=g), torch.randn(B, Lk, Dv, generator=g)]
        pi0 = torch.softmax(torch.randn(B, N, generator=g), -1)
        gout = torch.randn(B, Lq, Dv, generator=g)
        for similarity in ("dot", "euclidean"):
            ref_in = [t.double().requires_grad_() for t in base] + [pi0.double().requires_grad_()]
            ref = mos_attention(*ref_in, similarity=similarity, impl="naive")
            ref_grads = torch.autograd.grad((ref * gout.double()).sum(), ref_in)
            for impl, layout in [("sdpa", lay) for lay in layouts] + [("blocks", "auto")]:
                for dname in ("fp32", "bf16"):
                    dtype = DTYPES[dname]
                    ins = [t.to(dev, dtype).requires_grad_() for t in base] + [pi0.to(dev).requires_grad_()]
                    out = mos_attention(*ins, similarity=similarity, impl=impl, sdpa_layout=layout)
                    grads = torch.autograd.grad((out.float() * gout.to(dev)).sum(), ins)
                    errs = {"out": rel_err(out, ref)} | {f"d{n}": rel_err(a, b) for n, a, b in zip("q k v pi".split(), grads, ref_grads)}
                    # bf16 inputs are rounded to 8 bits: tolerate ~2^-6 relative; fp32 is exact to rounding
                    # (TF32 off). Euclidean always runs in fp32, from bf16-rounded inputs.
                    tol = 1e-4 if dname == "fp32" else 6e-2
                    add_row(c, {
                        "op": "mos_attention", "impl": impl, "layout": layout, "similarity": similarity,
                        "dtype": dname, "shape": [B, Lq, Lk, D, N, Dv],
                        "max_rel_err": {k: float(f"{v:.2e}") for k, v in errs.items()},
                        "ok": max(errs.values()) <= tol,
                    })
    # Locality-constrained attention (no impl: one batched product).
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, 32, 40, 56, generator=g), torch.randn(2, 32, 10, 14, generator=g), torch.randn(2, 32, 10, 14, generator=g)
    pi = torch.softmax(torch.randn(2, 4, generator=g), -1)
    ref_in = [t.double().requires_grad_() for t in (q, k, v, pi)]
    ref = local_mos_attention(*ref_in, stride=4, window=5)
    ref_grads = torch.autograd.grad(ref.sum(), ref_in)
    ins = [t.to(dev).requires_grad_() for t in (q, k, v, pi)]
    out = local_mos_attention(*ins, stride=4, window=5)
    grads = torch.autograd.grad(out.sum(), ins)
    errs = {"out": rel_err(out, ref)} | {f"d{n}": rel_err(a, b) for n, a, b in zip("q k v pi".split(), grads, ref_grads)}
    add_row(c, {"op": "local_mos_attention", "dtype": "fp32", "max_rel_err": {k: float(f"{x:.2e}") for k, x in errs.items()}, "ok": max(errs.values()) <= 1e-4})
    # Modules in eval mode, device fp32 against a float64 CPU copy; cuDNN's TF32 convolutions
    # (on by default) would add ~1e-4 of their own.
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    C = 64
    modules = {
        "SelfTransformer": (SelfTransformer(C), 1),
        "SelfTransformer(pool_kv)": (SelfTransformer(C, pool_kv=True), 1),
        "GroundingTransformer": (GroundingTransformer(C, stride=2, inner_channels=32), 2),
        "GroundingTransformer(window=5)": (GroundingTransformer(C, stride=2, inner_channels=32, window=5), 2),
        "RenderingTransformer": (RenderingTransformer(C, stride=2), 2),
    }
    for name, (module, n_in) in modules.items():
        torch.manual_seed(0)
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn_like(p) * 0.1)
        module.eval()
        fine, coarse = torch.randn(2, C, 24, 40), torch.randn(2, C, 12, 20)
        if name.startswith("Rendering"):
            args = (coarse, fine)
        else:
            args = (fine,) if n_in == 1 else (fine, coarse)
        ref = module.double()(*[a.double() for a in args])
        out = module.float().to(dev)(*[a.to(dev) for a in args])
        err = rel_err(out, ref)
        add_row(c, {"op": name, "dtype": "fp32", "max_rel_err": {"out": float(f"{err:.2e}")}, "ok": err <= 1e-4})
        module.cpu()
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    return {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn_in_module_check": False, "rows": rows, "all_ok": all(r["ok"] for r in rows)}


def section_c(c: Check) -> dict:
    """Peak memory of the neck at the COCO size (800x1333 -> padded 800x1344)."""
    shapes = pyramid(*c.image)
    # The first call of a shape pays cuDNN/cuBLAS set-up: warm every level once, untimed.
    warm = build_neck(c.device)
    neck_step(warm, pyramid_inputs(shapes, 1, c.device, requires_grad=True), True, torch.float32, c.device)
    del warm
    for impl in c.impls:
        neck = build_neck(c.device, [("attention.impl", impl)])
        for batch in c.batches:
            for dname in c.dtypes:
                for mode in ("fwd", "fwd+bwd"):
                    train = mode == "fwd+bwd"
                    if c.device.type == "cpu" and train and impl == "sdpa":
                        continue
                    feats = pyramid_inputs(shapes, batch, c.device, requires_grad=train)
                    row = {"impl": impl, "batch": batch, "dtype": dname, "mode": mode}
                    step = lambda: neck_step(neck, feats, train, DTYPES[dname], c.device)  # noqa: E731
                    if out_of_time(c):
                        return {"pyramid": shapes, "rows": c.rows}
                    try:
                        row |= peak_bytes(step, c.device)
                    except torch.OutOfMemoryError as e:
                        row["error"] = "out of memory: " + str(e).splitlines()[0][:120]
                    add_row(c, row)
                    del feats
    return {"pyramid": shapes, "rows": c.rows}


def _detection_batch(c: Check, n: int):
    g = torch.Generator().manual_seed(0)
    h, w = c.image
    images = [torch.rand(3, h, w, generator=g).to(c.device) for _ in range(n)]
    targets = []
    for _ in range(n):
        boxes = torch.tensor([[10.0, 20.0, w * 0.4, h * 0.5], [w * 0.5, h * 0.3, w * 0.9, h * 0.9], [5.0, 5.0, 60.0, 40.0]])
        masks = torch.zeros(3, h, w, dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        targets.append({"boxes": boxes.to(c.device), "labels": torch.tensor([1, 2, 3], device=c.device), "masks": masks.to(c.device)})
    return images, targets


def _model(c: Check, name: str, extra: list = ()):
    overrides = [("model.min_size", min(c.image)), ("model.max_size", max(c.image))] + c.model_overrides + list(extra)
    cfg = load_config(name, overrides)
    torch.manual_seed(0)
    return build_model(cfg).to(c.device)


def section_d(c: Check) -> dict:
    """One training iteration (SGD step) with 2 images under bf16 autocast: time and peak memory."""
    rows = c.rows
    images, targets = _detection_batch(c, 2)
    for name in c.models:
        model = _model(c, name).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)  # lr 0: shapes, not learning

        def step():
            with torch.autocast(c.device.type, dtype=torch.bfloat16):
                losses = model(images, targets)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        row = {"config": name, "images": 2, "size": list(c.image), "amp": "bf16"}
        try:
            row["loss_finite"] = bool(torch.isfinite(step()).item())  # also the warm-up
            row |= peak_bytes(step, c.device)
            row["seconds_per_iter"] = round(timed(step, c.device, c.runs, 0), 4)
        except torch.OutOfMemoryError as e:
            row["error"] = "out of memory: " + str(e).splitlines()[0][:120]
        add_row(c, row)
        del model, opt
        if c.device.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows}


def _matmul_tflops(c: Check, dtype: torch.dtype, tf32: bool) -> float:
    n = c.matmul_n
    a = torch.randn(n, n, device=c.device, dtype=dtype)
    b = torch.randn(n, n, device=c.device, dtype=dtype)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        t = timed(lambda: a @ b, c.device, max(3, c.runs), 1)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 2.0 * n**3 / t / 1e12


def _attention_cases(c: Check):
    P2, P3 = pyramid(*c.image)[:2]
    L2, L3 = P2[0] * P2[1], P3[0] * P3[1]
    Lp = math.ceil(P2[0] / 2) * math.ceil(P2[1] / 2)
    # name, Lq, Lk, D, N, Dv, similarity
    return [
        ("ST P2", L2, L2, 256, 2, 256, "dot"),
        ("ST P2 pool_kv", L2, Lp, 256, 2, 256, "dot"),
        ("GT P2<-P3", L2, L3, 128, 4, 128, "euclidean"),
    ]


def section_e(c: Check) -> dict:
    """Attention throughput in minimal FLOPs vs matmul and flash at equal head dims."""
    dev = c.device
    out: dict[str, Any] = {"flop_convention": "forward 2*Lq*Lk*(D+Dv), backward 2*Lq*Lk*(3D+2Dv); D counts the Euclidean column"}
    out["matmul_tflops"] = {
        "bf16": _sig(_matmul_tflops(c, torch.bfloat16, False)),
        "fp32": _sig(_matmul_tflops(c, torch.float32, False)),
        "fp32_tf32": _sig(_matmul_tflops(c, torch.float32, True)),
    }
    rows = c.rows
    for name, Lq, Lk, D, N, Dv, similarity in _attention_cases(c):
        Dm = D + (N if similarity == "euclidean" else 0)
        g = torch.Generator().manual_seed(0)
        for dname in ("bf16", "fp32"):
            dtype = DTYPES[dname]
            q = torch.randn(1, Lq, D, generator=g).to(dev, dtype)
            k = torch.randn(1, Lk, D, generator=g).to(dev, dtype)
            v = torch.randn(1, Lk, Dv, generator=g).to(dev, dtype)
            pi = torch.softmax(torch.randn(1, N, generator=g), -1).to(dev)
            # Reference: one fused SDPA call, 2 heads of 128 for q, k and v (flash in bf16,
            # memory-efficient in fp32), same Lq and Lk.
            rq = torch.randn(1, 2, Lq, 128, device=dev, dtype=dtype)
            rk = torch.randn(1, 2, Lk, 128, device=dev, dtype=dtype)
            for mode in ("fwd", "fwd+bwd"):
                bwd = mode == "fwd+bwd"
                rqg, rkg = rq.clone().requires_grad_(bwd), rk.clone().requires_grad_(bwd)

                def ref_call():
                    o = F.scaled_dot_product_attention(rqg, rkg, rkg)
                    if bwd:
                        o.sum().backward()

                with sdpa_backends_recorded() as calls:
                    ref_call()  # also the warm-up
                ref_t = timed(ref_call, dev, c.runs, 0)
                ref_tflops = attention_flops(Lq, Lk, 256, 256, bwd) / ref_t / 1e12
                variants = [("sdpa", "equal", 0), ("blocks", "auto", 0)]
                if dev.type == "cuda":
                    variants.insert(1, ("sdpa", "unpadded", 0))
                    if name == "ST P2" and dname == "bf16":
                        variants += [("blocks", "auto", rows_) for rows_ in (256, 4096)]
                if dev.type == "cpu" and bwd:
                    variants = [v_ for v_ in variants if v_[0] != "sdpa"]  # training ST: dropout-free here, fine either way
                for impl, layout, block in variants:
                    qi, ki, vi = (t.clone().requires_grad_(bwd) for t in (q, k, v))

                    def call():
                        o = mos_attention(qi, ki, vi, pi, similarity=similarity, impl=impl, sdpa_layout=layout, block_size=block)
                        if bwd:
                            o.float().sum().backward()

                    row = {"case": name, "Lq": Lq, "Lk": Lk, "D": Dm, "Dv": Dv, "N": N, "dtype": dname, "mode": mode,
                           "impl": impl, "layout": layout, "block_rows": block or "auto"}
                    if out_of_time(c):
                        return out | {"rows": c.rows}
                    try:
                        with sdpa_backends_recorded() as ours:
                            call()  # also the warm-up
                        t = timed(call, dev, c.runs, 0)
                        tflops = attention_flops(Lq, Lk, Dm, Dv, bwd) / t / 1e12
                        row |= {
                            "ms": round(t * 1e3, 2),
                            "tflops_minimal": _sig(tflops),
                            "kernel": sorted({x.backend for x in ours}) or ["none"],
                            "ref_kernel": sorted({x.backend for x in calls}),
                            "ref_tflops": _sig(ref_tflops),
                            "vs_ref": round(tflops / ref_tflops, 3),
                            "vs_matmul": round(tflops / out["matmul_tflops"]["bf16" if dname == "bf16" else "fp32"], 3),
                        }
                    except (RuntimeError, torch.OutOfMemoryError) as e:
                        row["error"] = str(e).splitlines()[0][:160]
                    add_row(c, row)
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
    out["rows"] = rows
    return out


def section_f(c: Check) -> dict:
    """Inference latency, batch 1, BFP vs FPT, whole model and neck, fp32 and bf16."""
    rows = c.rows
    images, _ = _detection_batch(c, 1)
    shapes = pyramid(*c.image)
    for name in c.models:
        model = _model(c, name).eval()
        for dname in c.dtypes:
            dtype = DTYPES[dname]

            def run():
                with torch.no_grad(), torch.autocast(c.device.type, dtype=dtype, enabled=dtype != torch.float32):
                    model(images)

            row = {"config": name, "dtype": dname, "model_ms": round(timed(run, c.device, c.runs + 2 * (not c.smoke), c.warmup + 1) * 1e3, 2)}
            neck = getattr(model.backbone, "fpt", None)
            if neck is not None:
                feats = pyramid_inputs(shapes, 1, c.device)
                row["neck_ms"] = round(timed(lambda: neck_step(neck, feats, False, dtype, c.device), c.device, c.runs + 2 * (not c.smoke), c.warmup + 1) * 1e3, 2)
            add_row(c, row)
        del model
        if c.device.type == "cuda":
            torch.cuda.empty_cache()
    return {"image": list(c.image), "rows": rows}


RUNNERS = {"a": section_a, "b": section_b, "c": section_c, "d": section_d, "e": section_e, "f": section_f}


# ---------------------------------------------------------------------------------------------
# environment, summary, main


def environment(device: torch.device) -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        env["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        env["cudnn"] = torch.backends.cudnn.version()
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def summary(result: dict) -> str:
    """A readable Markdown digest of the JSON."""
    env = result["environment"]
    lines = [f"# GPU check: {env.get('gpu', env['device'])}", ""]
    lines.append(f"torch {env['torch']}, CUDA {env['cuda']}, driver {env.get('driver')}, cuDNN {env.get('cudnn')}, "
                 f"TF32 matmul {env['tf32_matmul']}" + (" (smoke run: tiny CPU shapes)" if result["smoke"] else ""))
    for key, sec in result["sections"].items():
        lines += ["", f"## {key}: {RUNNERS[key].__doc__.strip().splitlines()[0]}", ""]
        if "error" in sec:
            lines.append(f"failed: {sec['error']}")
            continue
        lines.append(f"({sec['seconds']} s)")
        if key == "e":
            lines.append(f"matmul TFLOP/s: {sec['matmul_tflops']}")
        for row in sec.get("rows", []):
            lines.append("- " + json.dumps(row, separators=(", ", ": ")))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "reports/gpu_check", help="folder for gpu_check.json/.md")
    parser.add_argument("--sections", default=SECTIONS, help=f"which of {SECTIONS} to run, e.g. 'abe'")
    parser.add_argument("--smoke", action="store_true", help="every section on tiny CPU shapes (the test suite runs this)")
    parser.add_argument("--deadline-s", type=float, default=480.0,
                        help="stop adding measurements after this many seconds (default 480: the issue's 8 minutes); what ran is kept")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown section(s) {''.join(unknown)}; expected letters of {SECTIONS}")
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available (torch.cuda.is_available() is False); use --smoke on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.smoke else "cuda")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"smoke": args.smoke, "environment": environment(device), "sections": {}}
    current = {"key": ""}

    def save() -> None:
        if current["key"]:
            result["sections"][current["key"]] = {"rows": c.rows, "partial": True}
        write_json_atomic(out_dir / "gpu_check.json", result)

    c = Check(args.smoke, device, deadline=time.perf_counter() + args.deadline_s, save=save)
    for key in args.sections:
        t0 = time.perf_counter()
        print(f"[gpu_check] section {key} ...", flush=True)
        c.rows, current["key"] = [], key
        if time.perf_counter() > c.deadline:
            sec = {"error": "skipped: the --deadline-s passed before this section started"}
        else:
            sec = None
        try:
            sec = sec or RUNNERS[key](c)
        except Exception as e:  # noqa: BLE001 - a failed section is reported, the others still run
            sec = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        sec["seconds"] = round(time.perf_counter() - t0, 1)
        result["sections"][key] = sec
        current["key"] = ""
        write_json_atomic(out_dir / "gpu_check.json", result)
        (out_dir / "gpu_check.md").write_text(summary(result))
        print(f"[gpu_check] section {key}: {sec['seconds']} s" + (f" FAILED {sec['error']}" if "error" in sec else ""), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    failed = [k for k, s in result["sections"].items() if "error" in s]
    print(f"gpu_check: {len(result['sections'])} sections, {len(failed)} failed{(' (' + ''.join(failed) + ')') if failed else ''}; "
          f"{out_dir / 'gpu_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
