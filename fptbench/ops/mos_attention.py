"""Mixture-of-softmaxes attention without the score matrix.

This is the attention of FPT's Self-Transformer and Grounding-Transformer (spec sections
"Self-Transformer", "Grounding Transformer" and "Computing mixture attention without the score
matrix"):

    out = sum_n pi_n * softmax_j( sim(q_n, k_n) * scale ) @ v          [paper, eq. of ST / GT]

where q and k are split into N contiguous channel parts, v is not split [code], and
sim is a dot product or the negative squared Euclidean distance [paper, GT].

Two exact computations are provided; neither holds an (Lq x Lk) tensor:

* ``impl="sdpa"``: one fused ``scaled_dot_product_attention`` call per mixture component (the
  N components run as N heads of one call), weighted by pi and summed. Each head is made
  contiguous and zero-padded to a multiple of 8 (exact), so a fused kernel accepts it: with the
  modules' transposed views or a stride-0 V, SDPA silently took its math path and materialised
  Lq x Lk (issue #10). The V product is done N times. With N = 1 this is the minimal work.
* ``impl="blocks"``: query blocks [spec (b)]. For a block of queries compute each part's scores
  against all keys, softmax them, combine W = sum_n pi_n softmax(S_n) and multiply by V once.
  Only one block's tiles exist at a time; the backward pass recomputes each block (custom
  autograd Function), so training memory is linear in pixels as well. This is the minimal
  work, 2 * Lq * Lk * (D + Dv) FLOPs.

``impl="naive"`` materialises the (Lq x Lk) scores with plain autograd: the baseline that the
benchmark compares against, never picked by ``auto``.

``impl="auto"`` [ours, measured]:
* CPU (benchmarks/fpt_neck.py, 2 cores, fp32): blocks whenever N > 1 (sdpa with padding reached
  about half the throughput of blocks for ST's N = 2, a quarter for GT's N = 4) or when there is
  dropout (no fused CPU kernel takes it); sdpa when N = 1 without dropout.
* CUDA (benchmarks/gpu_check.py on an H200, reports/gpu_check/): sdpa, with q/k heads left at
  their own width ("unpadded": the kernel takes Dv != D) except with dropout. In bf16, ST at P2 of an 800x1333 image
  (Lq = Lk = 67.2k) ran at 381 TFLOP/s counted in minimal FLOPs forward (222 forward+backward)
  against 131 (85) for blocks; padding q/k to V's width gave 346 (215). In fp32 sdpa and blocks
  are within 10% of each other (26 vs 24 TFLOP/s forward+backward).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "mos_attention",
    "euclidean_as_dot",
    "choose_impl",
    "compute_dtype",
    "block_rows",
    "IMPLS",
    "SDPA_LAYOUTS",
    "DROPOUT_ON",
    "DEFAULT_TILE_ELEMENTS",
    "PROFILE_FORWARD",
    "PROFILE_BACKWARD",
]

# [ours] Cap on the elements of the (N + 2) score tiles of one query block: 2^26 floats =
# 256 MiB in fp32 on the CPU, so that the whole neck stays far below the memory target at COCO
# sizes. On CUDA the cap is 4x larger (2^28 elements, 512 MiB in bf16): fewer, larger blocks
# keep the GPU busy instead of launch-bound (issue #10).
DEFAULT_TILE_ELEMENTS = 1 << 26
CUDA_TILE_ELEMENTS = 1 << 28

# The one declaration of the implementation names; fptbench.config's ``attention.impl`` choices
# are pinned to it by tests/test_config.py.
IMPLS = ("auto", "sdpa", "blocks", "naive")
# How ``sdpa`` lays out the N components (see ``_mos_sdpa``): "equal" pads q/k parts to V's width
# so every fused kernel (flash included) accepts them; "unpadded" keeps q/k at their own width
# (rounded up to a multiple of 8), for fewer multiply-adds, which only CUDA's memory-efficient and
# cuDNN kernels take (Dv != D). "auto" = "unpadded" on CUDA without dropout (faster in every case
# measured on an H200: module docstring), "equal" elsewhere.
SDPA_LAYOUTS = ("auto", "equal", "unpadded")
# Where attention dropout applies: "softmax" drops each component's softmax A_n before the
# mixture, with an independent mask per component, as the authors' MixtureOfSoftMax does [code]
# (self_trans.py, MixtureOfSoftMax.forward: dropout(attn), then the pi-weighted sum); and as a
# fused SDPA kernel does per head. "mixture" drops the mixed weights W with one mask [ours].
DROPOUT_ON = ("softmax", "mixture")
# Profiler labels: benchmarks/fpt_neck.py times attention inside the neck by these names.
PROFILE_FORWARD = "fptbench::mos_attention"
PROFILE_BACKWARD = "fptbench::mos_attention.backward"
_SIMILARITIES = ("dot", "euclidean")
# Fused kernels (flash, memory-efficient, cuDNN) want head widths that are multiples of 8.
HEAD_ALIGN = 8


def euclidean_as_dot(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Rewrite -||q - k||^2 as a dot product of augmented vectors [spec, GT "Exact and cheap"].

    -||q - k||^2 = -||q||^2 + 2 q.k - ||k||^2, and -||q||^2 is constant over keys, so it cancels
    in a softmax over keys. With q~ = [2q, 1] and k~ = [k, -||k||^2], q~ . k~ = 2 q.k - ||k||^2.
    Callers pass float32 (``mos_attention`` and ``local_mos_attention`` upcast under autocast):
    ||k||^2 overflows fp16 above 65504, and the dot-product form cancels catastrophically in
    half precision [issue #10].

    Args:
        q (Tensor): (..., Lq, d) queries.
        k (Tensor): (..., Lk, d) keys.
    Returns:
        (q~, k~): (..., Lq, d + 1) and (..., Lk, d + 1), contiguous.
    """
    q_aug = torch.cat([2.0 * q, q.new_ones(q.shape[:-1] + (1,))], dim=-1)
    k_aug = torch.cat([k, -(k * k).sum(dim=-1, keepdim=True)], dim=-1)
    return q_aug, k_aug


def choose_impl(impl: str, num_parts: int, device: torch.device, dropout_p: float = 0.0) -> str:
    """Resolve ``impl="auto"`` to "sdpa" or "blocks" (see the module docstring).

    On the CPU, sdpa only when N = 1 and there is no dropout: torch's CPU flash kernel refuses
    dropout, so sdpa would silently take the math path and materialise Lq x Lk.
    """
    if impl != "auto":
        return impl
    if device.type == "cpu":
        return "sdpa" if num_parts == 1 and dropout_p == 0 else "blocks"
    return "sdpa"


def _check_inputs(q: Tensor, k: Tensor, v: Tensor, pi: Tensor, similarity: str, impl: str) -> None:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3 or pi.dim() != 2:
        raise ValueError(
            "mos_attention expects q (B, Lq, D), k (B, Lk, D), v (B, Lk, Dv), pi (B, N); got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, pi {tuple(pi.shape)}"
        )
    B, _, D = q.shape
    if k.shape[0] != B or v.shape[0] != B or pi.shape[0] != B:
        raise ValueError("mos_attention: q, k, v and pi must share the batch size B")
    if k.shape[2] != D:
        raise ValueError(f"mos_attention: q and k must have the same channels D, got {D} and {k.shape[2]}")
    if v.shape[1] != k.shape[1]:
        raise ValueError(f"mos_attention: k and v must have the same length Lk, got {k.shape[1]} and {v.shape[1]}")
    if D % pi.shape[1] != 0:
        raise ValueError(f"mos_attention: the number of parts N={pi.shape[1]} must divide D={D}")
    if similarity not in _SIMILARITIES:
        raise ValueError(f"mos_attention: similarity must be one of {_SIMILARITIES}, got {similarity!r}")
    if impl not in IMPLS:
        raise ValueError(f"mos_attention: impl must be one of {IMPLS}, got {impl!r}")


def mos_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    pi: Tensor,
    *,
    similarity: str = "dot",
    scale: float | None = None,
    dropout_p: float = 0.0,
    impl: str = "auto",
    block_size: int = 0,
    sdpa_layout: str = "auto",
    dropout_on: str = "softmax",
) -> Tensor:
    """Mixture-of-softmaxes attention, memory-linear in Lq and Lk, forward and backward.

    Args:
        q (Tensor): (B, Lq, D) queries, any strides (the modules pass transposed conv outputs).
        k (Tensor): (B, Lk, D) keys.
        v (Tensor): (B, Lk, Dv) values (not split into parts [code]).
        pi (Tensor): (B, N) mixture weights, summing to 1 over N; N divides D. The D channels of
            q and k are split into N contiguous parts of D / N channels.
        similarity: "dot" (q_n . k_n) or "euclidean" (-||q_n - k_n||^2) [paper, GT]. Euclidean
            attention always runs in float32, also under autocast [issue #10].
        scale: multiplies the similarity; None means 1 / sqrt(D / N).
        dropout_p: dropout on the attention weights, applied whenever > 0 (callers pass 0 in
            eval, as with ``scaled_dot_product_attention``). ``sdpa`` with dropout on the CPU is
            refused: no fused CPU kernel takes dropout.
        dropout_on: "softmax" (each component's softmax, independent masks [code]; every impl)
            or "mixture" (the mixed weights, one mask [ours]; blocks and naive only: a fused
            kernel drops per head). Both keep the expectation: E[out] = the dropout-free out.
        impl: "auto" | "sdpa" | "blocks" | "naive" (module docstring).
        block_size: queries per block for ``blocks``; 0 picks ``block_rows``' choice.
        sdpa_layout: "auto" | "equal" | "unpadded" (``SDPA_LAYOUTS``).
    Returns:
        Tensor: (B, Lq, Dv) = sum_n pi[:, n] * softmax_j(sim(q_n, k_n) * scale) @ v, in q's dtype.
    """
    _check_inputs(q, k, v, pi, similarity, impl)
    if block_size < 0:
        raise ValueError(f"mos_attention: block_size must be >= 0 (0 = automatic), got {block_size}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"mos_attention: dropout_p must be in [0, 1), got {dropout_p}")
    if dropout_on not in DROPOUT_ON:
        raise ValueError(f"mos_attention: dropout_on must be one of {DROPOUT_ON}, got {dropout_on!r}")
    if sdpa_layout not in SDPA_LAYOUTS:
        raise ValueError(f"mos_attention: sdpa_layout must be one of {SDPA_LAYOUTS}, got {sdpa_layout!r}")
    B, Lq, D = q.shape
    Lk = k.shape[1]
    N = pi.shape[1]
    d = D // N
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    mixture_dropout = dropout_p > 0 and dropout_on == "mixture"
    impl = choose_impl(impl, N, q.device, dropout_p)
    if impl == "sdpa" and mixture_dropout:
        if N > 1:
            raise ValueError(
                "mos_attention: dropout_on 'mixture' needs impl 'blocks' or 'naive' (a fused kernel drops each "
                "component's softmax; that is dropout_on 'softmax')"
            )
        mixture_dropout = False  # one component: its softmax is the mixture
    if impl == "sdpa" and dropout_p > 0 and q.device.type == "cpu":
        raise ValueError(
            "mos_attention: impl 'sdpa' with attention dropout has no fused kernel on the CPU (it would "
            "materialise the Lq x Lk scores); use impl 'auto' or 'blocks', or dropout 0"
        )
    out_dtype = q.dtype
    dtype = compute_dtype(q, similarity)
    # Inputs are cast once to the compute dtype and autocast is off inside, so every kernel
    # below runs in that dtype (autocast would otherwise re-cast the fused call's inputs).
    with torch.profiler.record_function(PROFILE_FORWARD), torch.autocast(q.device.type, enabled=False):
        q, k, v, pi = (t.to(dtype) for t in (q, k, v, pi))
        # (B, N, L, d): one "head" per mixture component (views; copies happen once, below).
        qn = q.reshape(B, Lq, N, d).transpose(1, 2)
        kn = k.reshape(B, Lk, N, d).transpose(1, 2)
        if similarity == "euclidean":
            qn, kn = euclidean_as_dot(qn, kn)
        if impl == "sdpa":
            out = _mos_sdpa(qn, kn, v, pi, scale, dropout_p, sdpa_layout)
        elif impl == "naive":
            out = _mos_naive(qn, kn, v, pi, scale, dropout_p, mixture_dropout)
        else:
            seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout_p > 0 else 0
            out = _MoSBlockAttention.apply(
                (qn * scale).contiguous(), kn.contiguous(), v.contiguous(), pi, float(dropout_p), seed, int(block_size),
                mixture_dropout,
            )
    return out.to(out_dtype)


def _autocast_dtype(x: Tensor) -> torch.dtype:
    """The dtype autocast would run a matmul in for x's device, or x's own dtype without autocast."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def compute_dtype(q: Tensor, similarity: str) -> torch.dtype:
    """float32 for Euclidean scores in half precision (exactness of -||k||^2), else autocast's dtype."""
    dtype = _autocast_dtype(q)
    if similarity == "euclidean" and dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype


def _mos_naive(qn: Tensor, kn: Tensor, v: Tensor, pi: Tensor, scale: float, dropout_p: float, mixture_dropout: bool) -> Tensor:
    """Materialised (B, N, Lq, Lk) scores: the memory-quadratic baseline."""
    attn = torch.softmax(torch.matmul(qn * scale, kn.transpose(-1, -2)), dim=-1)
    if not mixture_dropout:
        attn = F.dropout(attn, dropout_p)
    mixed = torch.einsum("bn,bnqk->bqk", pi, attn)
    return torch.matmul(F.dropout(mixed, dropout_p) if mixture_dropout else mixed, v)


def _round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def _heads(x: Tensor, width: int) -> Tensor:
    """(B, N, L, w) -> contiguous (B, N, L, width), zero channels appended.

    Fused kernels need a last-dimension stride of 1 and refuse the transposed views the modules
    produce; F.pad with zero width returns a clone with the input's strides, hence the explicit
    ``contiguous`` [issue #10].
    """
    if width > x.shape[-1]:
        x = F.pad(x, (0, width - x.shape[-1]))
    return x.contiguous()


def _mos_sdpa(qn: Tensor, kn: Tensor, v: Tensor, pi: Tensor, scale: float, dropout_p: float, layout: str) -> Tensor:
    """N components as N heads of one fused attention call, then the pi-weighted sum.

    Zero channels change no dot product, so padding is exact. "equal": q, k and v heads all
    padded to round_up(max(d, Dv), 8), which every fused kernel accepts. "unpadded": q/k padded to
    round_up(d, 8) and v to round_up(Dv, 8); only the memory-efficient kernel takes Dv != D.
    V is copied per head (N x Lk x Dv, linear): a stride-0 ``expand`` is refused by fused kernels.
    """
    B, N, Lq, dq = qn.shape
    Lk, Dv = v.shape[1], v.shape[2]
    if layout == "auto":
        # With dropout (ST in training) only "equal" was run on a GPU (gpu_check section a);
        # "unpadded" + dropout is not measured, so auto does not pick it [ours].
        layout = "unpadded" if qn.device.type == "cuda" and dropout_p == 0 else "equal"
    if layout == "unpadded":
        if qn.device.type == "cpu":
            raise ValueError("mos_attention: sdpa_layout 'unpadded' (Dv != D) has no fused kernel on the CPU; use 'equal' or 'auto'")
        wq, wv = _round_up(dq, HEAD_ALIGN), _round_up(Dv, HEAD_ALIGN)
    else:
        wq = wv = _round_up(max(dq, Dv), HEAD_ALIGN)
    qh, kh = _heads(qn, wq), _heads(kn, wq)
    vh = _heads(v.unsqueeze(1).expand(B, N, Lk, Dv), wv)
    o = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=dropout_p, scale=scale)
    return torch.einsum("bn,bnqc->bqc", pi, o[..., :Dv])


def block_rows(num_parts: int, Lk: int, block_size: int = 0, device_type: str = "cpu") -> int:
    """Queries per block of ``blocks``: ``block_size``, or the measured sweet spot within the cap.

    [ours] CPU, measured (benchmarks/fpt_neck.py shapes, 2 cores, fp32): forward and backward
    peak where the N score tiles hold about 2^23 elements (32 MiB): 128 rows at Lk = 66.8k (ST
    at P2, N = 2), 256 at 16.7k, ~1000 at 4.2k (N = 2) or 1k (GT, N = 4). Fewer rows pay
    per-block overhead; more fall out of cache. DEFAULT_TILE_ELEMENTS caps (N + 2) tiles.
    CUDA [ours]: N tiles of about 2^27 elements, at least 512 and at most 8192 rows, capped by
    CUDA_TILE_ELEMENTS: ~1000 rows at Lk = 66.8k, so ~65 blocks per image instead of ~500
    launch-bound ones (benchmarks/gpu_check.py measures it).
    """
    if block_size > 0:
        return block_size
    Lk = max(Lk, 1)
    if device_type == "cuda":
        rows = min(8192, max(512, (1 << 27) // (num_parts * Lk)))
        rows = min(rows, CUDA_TILE_ELEMENTS // ((num_parts + 2) * Lk))
    else:
        rows = min(1024, max(128, (1 << 23) // (num_parts * Lk)))
        rows = min(rows, DEFAULT_TILE_ELEMENTS // ((num_parts + 2) * Lk))
    return max(16, rows // 16 * 16)


def dropout_drop_mask(shape: tuple[int, int], p: float, seed: int, device: torch.device) -> Tensor:
    """Boolean (rows, cols) mask, True where a weight is dropped, replayable from ``seed``.

    One 64-bit draw gives four 16-bit lanes, each compared with a threshold, so the drop
    probability is p rounded to a multiple of 1/65536 [ours]: a third of the cost of
    ``bernoulli_`` on the CPU, which mattered because the mask is drawn again in backward.
    """
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    numel = shape[0] * shape[1]
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None, generator=g)
    return words.view(torch.int16)[:numel].view(shape) < _drop_threshold(p)


def _drop_threshold(p: float) -> int:
    return -32768 + round(p * 65536)


def dropout_keep_scale(p: float) -> float:
    """1 / (1 - p) for the quantised p that ``dropout_drop_mask`` really uses."""
    return 65536 / (65536 - round(p * 65536))


class _MoSBlockAttention(torch.autograd.Function):
    """Query-block MoS attention; recomputes each block in backward [spec (b)].

    Inputs are q (B, N, Lq, d) already multiplied by the scale, k (B, N, Lk, d), v (B, Lk, Dv),
    pi (B, N). Per block, with S_n = q_n k_n^T, P_n = softmax(S_n), dropout masks M_n (per
    component, ``dropout_on="softmax"`` [code]) or one mask M on the mixture, and c = 1 / (1 - p):
        W = c * sum_n pi_n (M_n * P_n)    or    W = c * M * sum_n pi_n P_n,    out = W v.
    Backward per block, with g = c * dout and Pt_n = M_n * P_n (or P_n, and dW masked by M):
        dv += W^T dout,   dW = g v^T,   T_n = Pt_n * dW,   r_n = rowsum(T_n),   dpi_n = sum(r_n),
        dS_n = pi_n (T_n - P_n r_n),   dq_n = dS_n k_n,   dk_n += dS_n^T q_n.
    The masks are drawn again from the same seeds in backward, never stored.
    """

    @staticmethod
    def forward(ctx, q, k, v, pi, dropout_p, seed, block_size, mixture_dropout):
        B, N, Lq, _ = q.shape
        Lk, Dv = v.shape[1], v.shape[2]
        rows = block_rows(N, Lk, block_size, q.device.type)
        use_dropout = dropout_p > 0
        # The dropout factor 1 / (1 - p) and, for N = 2, the sum of pi multiply the (rows x Dv)
        # output instead of the (rows x Lk) weights.
        c = dropout_keep_scale(dropout_p) if use_dropout else 1.0
        out = q.new_empty(B, Lq, Dv)
        S = q.new_empty(N, min(rows, Lq), Lk)
        W = q.new_empty(min(rows, Lq), Lk)
        nblocks = (Lq + rows - 1) // rows
        for b in range(B):
            kT = k[b].transpose(-1, -2).contiguous()  # (N, d, Lk): ~10% faster products than a view
            pib = pi[b : b + 1]
            out_scale = c
            if N == 2:  # W = pi_0 P_0 + pi_1 P_1 = (pi_0 + pi_1) * lerp(P_0, P_1, t): one fused pass
                total = pib.sum()
                t = float(pib[0, 1] / total)
                out_scale = c * float(total)
            for i, s in enumerate(range(0, Lq, rows)):
                e = min(s + rows, Lq)
                n = e - s
                P = torch.matmul(q[b, :, s:e], kT, out=S[:, :n])
                torch.softmax(P, -1, out=P)
                if use_dropout and not mixture_dropout:
                    P.masked_fill_(_block_mask(N, n, Lk, dropout_p, seed, b * nblocks + i, P.device), 0.0)
                Wb = W[:n]
                if N == 2:
                    torch.lerp(P[0], P[1], t, out=Wb)
                else:
                    torch.matmul(pib, P.view(N, -1), out=Wb.view(1, -1))
                if use_dropout and mixture_dropout:
                    Wb.masked_fill_(_block_mask(1, n, Lk, dropout_p, seed, b * nblocks + i, Wb.device)[0], 0.0)
                ob = torch.matmul(Wb, v[b], out=out[b, s:e])
                if out_scale != 1.0:
                    ob.mul_(out_scale)
        ctx.save_for_backward(q, k, v, pi)
        ctx.cfg = (rows, dropout_p if use_dropout else 0.0, seed, nblocks, mixture_dropout)
        return out

    @staticmethod
    def backward(ctx, dout):
        with torch.profiler.record_function(PROFILE_BACKWARD):
            return _MoSBlockAttention._backward(ctx, dout)

    @staticmethod
    def _backward(ctx, dout):
        q, k, v, pi = ctx.saved_tensors
        rows, dropout_p, seed, nblocks, mixture_dropout = ctx.cfg
        B, N, Lq, _ = q.shape
        Lk = v.shape[1]
        dout = dout.contiguous()
        dq = torch.empty_like(q)
        # dk, dv and dpi sum over every query block: accumulate in float32 whatever the input
        # dtype, so bf16/fp16 training does not lose the small late blocks [issue #10].
        acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        dk = torch.zeros_like(k, dtype=acc)
        dv = torch.zeros_like(v, dtype=acc)
        dpi = torch.zeros_like(pi, dtype=acc)
        low = acc != q.dtype
        m = min(rows, Lq)
        S = q.new_empty(N, m, Lk)
        T = q.new_empty(N, m, Lk)
        W = q.new_empty(m, Lk)
        dW = q.new_empty(m, Lk)
        c = dropout_keep_scale(dropout_p) if dropout_p > 0 else 1.0
        g_all = dout * c if c != 1.0 else dout
        for b in range(B):
            kT = k[b].transpose(-1, -2).contiguous()
            pib = pi[b : b + 1]
            g = g_all[b]
            for i, s in enumerate(range(0, Lq, rows)):
                e = min(s + rows, Lq)
                n = e - s
                P = torch.matmul(q[b, :, s:e], kT, out=S[:, :n])
                torch.softmax(P, -1, out=P)
                Wb, dWb, Tb = W[:n], dW[:n], T[:, :n]
                torch.matmul(g[s:e], v[b].t(), out=dWb)
                if dropout_p > 0 and not mixture_dropout:
                    # Pt = M * P in T; W from Pt. P itself stays unmasked for dS below.
                    torch.mul(P, ~_block_mask(N, n, Lk, dropout_p, seed, b * nblocks + i, P.device), out=Tb)
                    torch.matmul(pib, Tb.reshape(N, -1), out=Wb.view(1, -1))
                    Tb.mul_(dWb)
                else:
                    torch.matmul(pib, P.view(N, -1), out=Wb.view(1, -1))
                    if dropout_p > 0:
                        drop = _block_mask(1, n, Lk, dropout_p, seed, b * nblocks + i, Wb.device)[0]
                        Wb.masked_fill_(drop, 0.0)
                        dWb.masked_fill_(drop, 0.0)
                    torch.mul(P, dWb, out=Tb)
                if low:
                    dv[b] += torch.mm(Wb.t(), g[s:e])
                else:
                    dv[b].addmm_(Wb.t(), g[s:e])
                # T_n = Pt_n * dW;  r_n = rowsum(T_n);  dS_n / pi_n = T_n - P_n * r_n
                r = Tb.sum(dim=-1, keepdim=True)
                dpi[b] += r.sum(dim=(1, 2))
                Tb.addcmul_(P, r, value=-1.0)
                torch.matmul(Tb, k[b], out=dq[b, :, s:e])
                if low:
                    dk[b] += torch.bmm(Tb.transpose(1, 2), q[b, :, s:e])
                else:
                    dk[b].baddbmm_(Tb.transpose(1, 2), q[b, :, s:e])
        # dS_n carries a factor pi_n that was left out above; apply it once to the small results.
        scale = pi.view(B, N, 1, 1)
        dq.mul_(scale)
        dk.mul_(scale)
        return dq, dk.to(k.dtype), dv.to(v.dtype), dpi.to(pi.dtype), None, None, None, None


def _block_mask(num: int, rows: int, cols: int, p: float, seed: int, block: int, device: torch.device) -> Tensor:
    """(num, rows, cols) drop mask of one query block, replayable: one draw per block and seed."""
    return dropout_drop_mask((num * rows, cols), p, seed + block, device).view(num, rows, cols)
