"""Grounding Transformer (GT): top-down, a finer level queries a coarser one [paper]."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from fptbench.ops import linear_attention, local_mos_attention, mos_attention

from .mixture import MixtureWeights

__all__ = ["GroundingTransformer", "NORMALIZERS"]

# "linear" is the authors' GT as shipped [code]; fptbench.config's gt.normalizer is pinned to this.
NORMALIZERS = ("mos", "softmax", "linear")


class GroundingTransformer(nn.Module):
    """GT(X^f <- X^c) = BN(Conv1x1(sum_n pi_n softmax_j(s^n_ij) v_j))  (spec "Grounding Transformer").

    q = Wq X^f, k = Wk X^c, v = Wv X^c are 1x1 convs to ``inner_channels`` (128 [code]);
    s^n_ij = -||q_{i,n} - k_{j,n}||^2 * scale with N = 4 parts [paper] and scale
    1/sqrt(part width) [ours]; pi from the mean of k as in ST. The output BN starts with weight
    and bias zero [code], and there is no residual [code]: at initialisation GT adds nothing.

    With ``window > 0`` this is the locality-constrained GT (LGT) [paper]: each fine query sees
    only the window x window coarse positions around its coarse cell (``local_mos_attention``).

    Args:
        channels: C of both levels (the pyramid width).
        stride: scale ratio s = stride(coarse) / stride(fine) (1, 2, 4 or 8); used by LGT. With
            s = 1 (levels of one resolution) each query's window is centred on its own position.
        inner_channels: width of q, k and v (128 [code]).
        parts: N; ignored (N = 1) when ``normalizer="softmax"`` or ``"linear"``.
        normalizer: "mos" [paper] | "softmax" (the MoS ablation) | "linear" [code]: what the
            authors' ``FPT_a`` builds, ``GroundTrans(mode='dot')`` (grounding_trans.py,
            ``forward``): out = (q k^T / Lk) v with no softmax, no scale and no parts
            (``linear_attention``); needs ``similarity="dot"`` and the global GT.
        similarity: "euclidean" [paper] | "dot" (the paper's similarity ablation).
        out_bias: the output 1x1 conv has a bias, as the authors' ``W_z`` conv does [code];
            False [ours] (a bias before BN only matters in eval, through the running mean).
        window: 0 for the global GT; an odd side for LGT (5 [ours] when the paper's is unknown).
        attention_impl, block_size: passed to ``mos_attention`` (the global GT only: LGT is one
            batched product, memory-linear on every device, that ``attention.impl`` does not
            apply to).
    Shapes:
        fine (Tensor): (B, C, Hf, Wf), coarse (Tensor): (B, C, Hc, Wc) -> (B, C, Hf, Wf).
    """

    @staticmethod
    def config_args(section: Mapping[str, Any], attention: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor keywords from the config sections ``gt`` and ``attention``.

        The ``gt`` keys are the constructor's keyword names, except ``gt.channels``, which is
        ``inner_channels`` here (``channels`` is the pyramid width).
        """
        args = dict(section, attention_impl=attention["impl"], block_size=attention["block_size"])
        args["inner_channels"] = args.pop("channels")
        return args

    def __init__(
        self,
        channels: int,
        *,
        stride: int = 2,
        inner_channels: int = 128,
        parts: int = 4,
        normalizer: str = "mos",
        similarity: str = "euclidean",
        window: int = 0,
        out_bias: bool = False,
        attention_impl: str = "auto",
        block_size: int = 0,
    ) -> None:
        super().__init__()
        if normalizer not in NORMALIZERS:
            raise ValueError(f"GroundingTransformer: normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
        if normalizer == "linear" and (similarity != "dot" or window > 0):
            raise ValueError(
                "GroundingTransformer: normalizer 'linear' [code] is the authors' global dot-product GT; "
                f"it needs similarity 'dot' and window 0, got similarity {similarity!r}, window {window}"
            )
        if similarity not in ("euclidean", "dot"):
            raise ValueError(f"GroundingTransformer: similarity must be 'euclidean' or 'dot', got {similarity!r}")
        if window < 0 or (window > 0 and window % 2 == 0):
            raise ValueError(f"GroundingTransformer: window must be 0 (global) or odd, got {window}")
        parts = parts if normalizer == "mos" else 1
        self.normalizer = normalizer
        if inner_channels % parts != 0:
            raise ValueError(f"GroundingTransformer: parts={parts} must divide inner_channels={inner_channels}")
        self.stride = stride
        self.similarity = similarity
        self.window = window
        self.attention_impl = attention_impl
        self.block_size = block_size
        self.query = nn.Conv2d(channels, inner_channels, 1)
        self.key = nn.Conv2d(channels, inner_channels, 1)
        self.value = nn.Conv2d(channels, inner_channels, 1)
        self.mixture = MixtureWeights(inner_channels, parts)
        self.out = nn.Conv2d(inner_channels, channels, 1, bias=out_bias)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.norm.weight)  # [code]
        nn.init.zeros_(self.norm.bias)

    def forward(self, fine: Tensor, coarse: Tensor) -> Tensor:
        B, _, Hf, Wf = fine.shape
        q = self.query(fine)
        k = self.key(coarse)
        v = self.value(coarse)
        pi = self.mixture(k)
        if self.normalizer == "linear":
            o = linear_attention(q.flatten(2).transpose(1, 2), k.flatten(2).transpose(1, 2), v.flatten(2).transpose(1, 2))
            o = o.transpose(1, 2).reshape(B, -1, Hf, Wf)
        elif self.window > 0:
            o = local_mos_attention(q, k, v, pi, stride=self.stride, window=self.window, similarity=self.similarity)
        else:
            o = mos_attention(
                q.flatten(2).transpose(1, 2),
                k.flatten(2).transpose(1, 2),
                v.flatten(2).transpose(1, 2),
                pi,
                similarity=self.similarity,
                impl=self.attention_impl,
                block_size=self.block_size,
            )
            o = o.transpose(1, 2).reshape(B, -1, Hf, Wf)
        return self.norm(self.out(o))
