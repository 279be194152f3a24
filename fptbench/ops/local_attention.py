"""Locality-constrained mixture attention, the attention of LGT [paper] (spec "Locality-constrained GT").

Each fine query attends only to the ``window x window`` coarse positions centred on the coarse
cell that contains it. All queries of one coarse cell share that window, so queries are grouped
by cell: (B x Hc x Wc) independent attention problems of (queries in the cell) x window^2 keys,
computed as one batched product. Memory is linear in pixels (window^2 keys per coarse cell); no
(Lq x Lk) tensor exists.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .mos_attention import compute_dtype, euclidean_as_dot

__all__ = ["local_mos_attention", "cell_groups"]


def cell_groups(fine: int, coarse: int, stride: int, device: torch.device) -> tuple[Tensor, Tensor, int]:
    """Group the positions of one fine axis by the coarse cell that contains them.

    Fine position y belongs to cell min(y // stride, coarse - 1) [issue #2]. Cells hold ``stride``
    positions each, except the last, which takes the remainder (more than ``stride`` when the
    fine axis is longer than coarse * stride, fewer or none when it is shorter).

    Returns:
        gather (Tensor): (coarse * size,) fine index of each slot, ``fine`` for an empty slot
            (a zero row appended to the fine map).
        scatter (Tensor): (fine,) slot of each fine position.
        size (int): slots per cell.
    """
    y = torch.arange(fine, device=device)
    cell = torch.clamp(y // stride, max=coarse - 1)
    slot = y - cell * stride
    size = max(stride, int(slot.max().item()) + 1) if fine > 0 else stride
    scatter = cell * size + slot
    gather = torch.full((coarse * size,), fine, dtype=torch.long, device=device)
    gather[scatter] = y
    return gather, scatter, size


def local_mos_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    pi: Tensor,
    *,
    stride: int,
    window: int,
    similarity: str = "euclidean",
    scale: float | None = None,
) -> Tensor:
    """Mixture-of-softmaxes attention of fine queries to a window of coarse keys.

    Args:
        q (Tensor): (B, D, Hf, Wf) fine queries.
        k (Tensor): (B, D, Hc, Wc) coarse keys.
        v (Tensor): (B, Dv, Hc, Wc) coarse values.
        pi (Tensor): (B, N) mixture weights summing to 1; N divides D (contiguous channel parts).
        stride: fine positions per coarse cell along each axis (the scale ratio s); 1 when the
            two levels share a resolution, each query's window then centred on its own position.
        window: odd side of the square key window, centred on the query's coarse cell.
            Positions outside the coarse map are zero keys and zero values [paper, wording
            unconfirmed]: a zero key scores 0 under both similarities (for "euclidean", after the
            -||q||^2 term that cancels in the softmax).
        similarity: "euclidean" (-||q_n - k_n||^2) or "dot".
        scale: multiplies the similarity; None means 1 / sqrt(D / N).
    Returns:
        Tensor: (B, Dv, Hf, Wf), in q's dtype. Euclidean scores are computed in float32 under
        autocast, as in ``mos_attention`` [issue #10].

    ``attention.impl`` does not apply here: this is one batched product whose score tensor is
    (B, Hc, Wc, N, s*s, window^2), linear in pixels for any map size, on any device. The key and
    value windows are unfolded copies, window^2 times the coarse maps. With s = 1 and maps of one
    size (the pixel-level pyramid) each query has its own window, and the batched product would
    be one-row matrices: that case runs a product and sum per window offset over shifted views
    instead [ours] (``_local_same_size``; the same numbers, about 9x faster on the CPU at 97 x 97,
    no unfolded copies).
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4 or pi.dim() != 2:
        raise ValueError("local_mos_attention expects q (B, D, Hf, Wf), k (B, D, Hc, Wc), v (B, Dv, Hc, Wc), pi (B, N)")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"local_mos_attention: window must be odd and >= 1, got {window}")
    if stride < 1:
        raise ValueError(f"local_mos_attention: stride must be >= 1, got {stride}")
    if similarity not in ("dot", "euclidean"):
        raise ValueError(f"local_mos_attention: similarity must be 'dot' or 'euclidean', got {similarity!r}")
    B, D, Hf, Wf = q.shape
    _, Dk, Hc, Wc = k.shape
    Dv = v.shape[1]
    N = pi.shape[1]
    if Dk != D or k.shape[2:] != v.shape[2:] or D % N != 0:
        raise ValueError(
            f"local_mos_attention: got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, pi {tuple(pi.shape)}; "
            "q and k need the same D, k and v the same map, and N must divide D"
        )
    d = D // N
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    out_dtype = q.dtype
    dtype = compute_dtype(q, similarity)
    with torch.autocast(q.device.type, enabled=False):
        out = _local(*(t.to(dtype) for t in (q, k, v, pi)), stride, window, similarity, scale)
    return out.to(out_dtype)


def _local(q: Tensor, k: Tensor, v: Tensor, pi: Tensor, stride: int, window: int, similarity: str, scale: float) -> Tensor:
    B, D, Hf, Wf = q.shape
    _, _, Hc, Wc = k.shape
    Dv = v.shape[1]
    N = pi.shape[1]
    d = D // N
    w2 = window * window

    # Channels last, split into parts: (B, N, H, W, d).
    qn = q.reshape(B, N, d, Hf, Wf).permute(0, 1, 3, 4, 2)
    kn = k.reshape(B, N, d, Hc, Wc).permute(0, 1, 3, 4, 2)
    if similarity == "euclidean":
        qn, kn = euclidean_as_dot(qn, kn)
    qn = qn * scale
    dd = qn.shape[-1]

    if stride == 1 and (Hf, Wf) == (Hc, Wc):
        return _local_same_size(qn, kn, v, pi, window)

    # Key and value windows per coarse cell; zero padding gives the zero keys and values.
    k_win = F.unfold(kn.permute(0, 1, 4, 2, 3).reshape(B * N, dd, Hc, Wc), window, padding=window // 2)
    k_win = k_win.reshape(B, N, dd, w2, Hc, Wc).permute(0, 4, 5, 1, 2, 3)  # (B, Hc, Wc, N, dd, w2)
    v_win = F.unfold(v, window, padding=window // 2)
    v_win = v_win.reshape(B, Dv, w2, Hc, Wc).permute(0, 3, 4, 2, 1)  # (B, Hc, Wc, w2, Dv)

    # Queries grouped by cell: (B, Hc, Wc, N, gh * gw, dd); empty slots read a zero row.
    gy, sy, gh = cell_groups(Hf, Hc, stride, q.device)
    gx, sx, gw = cell_groups(Wf, Wc, stride, q.device)
    qp = F.pad(qn, (0, 0, 0, 1, 0, 1))
    qg = qp[:, :, gy][:, :, :, gx]  # (B, N, Hc*gh, Wc*gw, dd)
    qg = qg.reshape(B, N, Hc, gh, Wc, gw, dd).permute(0, 2, 4, 1, 3, 5, 6).reshape(B, Hc, Wc, N, gh * gw, dd)

    attn = torch.softmax(torch.matmul(qg, k_win), dim=-1)  # (B, Hc, Wc, N, gh*gw, w2)
    mixed = torch.einsum("bn,byxnqw->byxqw", pi.to(attn.dtype), attn)
    out = torch.matmul(mixed, v_win)  # (B, Hc, Wc, gh*gw, Dv)

    out = out.reshape(B, Hc, Wc, gh, gw, Dv).permute(0, 5, 1, 3, 2, 4).reshape(B, Dv, Hc * gh, Wc * gw)
    return out[:, :, sy][:, :, :, sx]


def _local_same_size(qn: Tensor, kn: Tensor, v: Tensor, pi: Tensor, window: int) -> Tensor:
    """The s = 1 case (levels of one resolution, the pixel-level pyramid [paper]): each query's
    window is centred on its own position. The general path would run B*H*W*N one-row matrix
    products, which CPU BLAS runs at a small fraction of its rate, over window^2 unfolded copies
    of the keys and values; here each of the window^2 offsets is one product and sum over shifted
    views of the zero-padded maps, and nothing larger than one map is made (the scores are
    (B, N, window^2, H, W)). Same numbers as the general path (tests/ops/test_local_attention.py).

    qn, kn: (B, N, H, W, dd), scaled and (Euclidean) augmented as the general path makes them;
    v: (B, Dv, H, W); pi: (B, N). Returns (B, Dv, H, W)."""
    B, N, H, W, _ = qn.shape
    r = window // 2
    q = qn.permute(0, 1, 4, 2, 3)  # (B, N, dd, H, W)
    kp = F.pad(kn.permute(0, 1, 4, 2, 3), (r, r, r, r))
    vp = F.pad(v, (r, r, r, r))
    offsets = [(dy, dx) for dy in range(window) for dx in range(window)]  # unfold's order
    # vecdot (QK) and addcmul (AV): fptbench.engine.flops counts these two as the attention.
    scores = torch.stack([torch.linalg.vecdot(q, kp[..., dy : dy + H, dx : dx + W], dim=2) for dy, dx in offsets], dim=2)
    attn = torch.softmax(scores, dim=2)  # (B, N, w2, H, W)
    mixed = torch.einsum("bn,bnohw->bohw", pi.to(attn.dtype), attn)  # (B, w2, H, W)
    out = v.new_zeros(v.shape)
    for o, (dy, dx) in enumerate(offsets):
        out = torch.addcmul(out, mixed[:, o : o + 1], vp[..., dy : dy + H, dx : dx + W])
    return out
