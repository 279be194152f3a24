"""Linear ("dot product") attention, the normaliser of the authors' GT [code].

The authors' ``FPT_a`` builds every Grounding Transformer as ``GroundTrans(mode='dot')``
(grounding_trans.py, ``forward``: ``f = theta_x @ phi_x``, then ``f_div_C = f / N`` with N the
number of coarse positions, ``y = f_div_C @ g_x``): the non-local network's "dot product"
normalisation, with no softmax, no scale and no mixture. Associativity makes it linear in
pixels: out = q (k^T v) / Lk, and no (Lq x Lk) tensor is ever formed.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["linear_attention"]


def linear_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """out = (q k^T / Lk) v, computed as q (k^T v) / Lk.

    Args:
        q (Tensor): (B, Lq, D) queries.
        k (Tensor): (B, Lk, D) keys.
        v (Tensor): (B, Lk, Dv) values.
    Returns:
        Tensor: (B, Lq, Dv).
    """
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3 or k.shape[:2] != v.shape[:2] or q.shape[::2] != k.shape[::2]:
        raise ValueError(
            "linear_attention expects q (B, Lq, D), k (B, Lk, D), v (B, Lk, Dv); got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    kv = torch.matmul(k.transpose(1, 2), v)  # (B, D, Dv)
    return torch.matmul(q, kv) / k.shape[1]
