"""Self-Transformer (ST): non-local interaction within one pyramid level [paper]."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from fptbench.ops import mos_attention
from fptbench.ops.mos_attention import DROPOUT_ON

from .mixture import MixtureWeights

__all__ = ["SelfTransformer", "MIXTURE_INPUTS"]

# What pi is computed from; fptbench.config's st.mixture_input is pinned to this.
MIXTURE_INPUTS = ("keys", "queries")


class SelfTransformer(nn.Module):
    """ST(X) = X + BN(Conv1x1(sum_n pi_n softmax(q_n k_n^T * scale) v))  (spec "Self-Transformer").

    q = Wq X, k = Wk X', v = Wv X' are 1x1 convs with biases [code]; q and k are split into
    ``parts`` contiguous channel parts (N = 2 [paper]) and v is not split [code]. The scale is
    1/sqrt(channels) [code], not 1/sqrt(part width). The residual and the BN are [code].

    Args:
        channels: C of the level (the pyramid width).
        parts: N; ignored (N = 1) when ``normalizer="softmax"`` (the paper's MoS ablation).
        normalizer: "mos" | "softmax".
        pool_kv: X' = AvgPool(3, stride 2, pad 1)(X) with the padding excluded from each average,
            keys and values at half resolution [code] (self_trans.py, ``SelfTrans.__init__``:
            ``nn.AvgPool2d(3, 2, 1, count_include_pad=False)``); False (X' = X) is the
            paper's equation and the default [paper].
        shared_qk: Wq and Wk are one conv [code option].
        mixture_input: what pi is computed from, "keys" (mean of k [paper, wording
            unconfirmed]) or "queries" (mean of the full-resolution q [code]: self_trans.py,
            ``MixtureOfSoftMax.forward``, ``bar_qt = torch.mean(qt, 2, True)``). They differ
            only with ``pool_kv`` or separate q/k convs.
        attn_dropout: dropout probability on the attention weights in training (0.1 [code]).
        dropout_on: "softmax" drops each component's softmax before mixing [code], "mixture"
            the mixed weights [ours] (``mos_attention``'s ``dropout_on``).
        attention_impl, block_size: passed to ``mos_attention``.
    Shapes:
        x (Tensor): (B, C, H, W) -> (B, C, H, W). Odd H and W work.
    """

    @staticmethod
    def config_args(section: Mapping[str, Any], attention: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor keywords from the config sections ``st`` and ``attention``.

        The ``st`` keys are the constructor's keyword names, so a new key is declared in
        fptbench.config and taken here, nowhere else.
        """
        return dict(section, attention_impl=attention["impl"], block_size=attention["block_size"])

    def __init__(
        self,
        channels: int,
        *,
        parts: int = 2,
        normalizer: str = "mos",
        pool_kv: bool = False,
        shared_qk: bool = False,
        mixture_input: str = "keys",
        attn_dropout: float = 0.1,
        dropout_on: str = "softmax",
        attention_impl: str = "auto",
        block_size: int = 0,
    ) -> None:
        super().__init__()
        if normalizer not in ("mos", "softmax"):
            raise ValueError(f"SelfTransformer: normalizer must be 'mos' or 'softmax', got {normalizer!r}")
        if mixture_input not in MIXTURE_INPUTS:
            raise ValueError(f"SelfTransformer: mixture_input must be 'keys' or 'queries', got {mixture_input!r}")
        if dropout_on not in DROPOUT_ON:
            raise ValueError(f"SelfTransformer: dropout_on must be one of {DROPOUT_ON}, got {dropout_on!r}")
        parts = 1 if normalizer == "softmax" else parts
        if channels % parts != 0:
            raise ValueError(f"SelfTransformer: parts={parts} must divide channels={channels}")
        self.pool_kv = pool_kv
        self.mixture_input = mixture_input
        self.attn_dropout = attn_dropout
        self.dropout_on = dropout_on
        self.attention_impl = attention_impl
        self.block_size = block_size
        self.scale = 1.0 / math.sqrt(channels)  # [code]
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = None if shared_qk else nn.Conv2d(channels, channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.mixture = MixtureWeights(channels, parts)
        self.out = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        x_kv = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False) if self.pool_kv else x
        q = self.query(x)
        k = (self.key or self.query)(x_kv)
        v = self.value(x_kv)
        pi = self.mixture(q if self.mixture_input == "queries" else k)
        o = mos_attention(
            q.flatten(2).transpose(1, 2),
            k.flatten(2).transpose(1, 2),
            v.flatten(2).transpose(1, 2),
            pi,
            similarity="dot",
            scale=self.scale,
            dropout_p=self.attn_dropout if self.training else 0.0,
            dropout_on=self.dropout_on,
            impl=self.attention_impl,
            block_size=self.block_size,
        )
        o = o.transpose(1, 2).reshape(B, C, H, W)
        return x + self.norm(self.out(o))
