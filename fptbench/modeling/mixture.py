"""Mixture weights pi of the mixture-of-softmaxes normaliser, shared by ST and GT."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MixtureWeights"]


class MixtureWeights(nn.Module):
    """pi = softmax_n(w_n . mean_j k_j), one set per image [paper, wording unconfirmed].

    Args:
        channels: channels of the keys k.
        parts: N, the number of softmaxes. N = 1 (the plain-softmax ablation) has no parameters
            and returns ones.
    Shapes:
        k (Tensor): (B, C, H, W) keys -> pi (Tensor): (B, N), rows summing to 1.
    """

    def __init__(self, channels: int, parts: int) -> None:
        super().__init__()
        self.parts = parts
        self.proj = nn.Linear(channels, parts, bias=False) if parts > 1 else None

    def forward(self, k: Tensor) -> Tensor:
        if self.proj is None:
            return k.new_ones(k.shape[0], 1)
        return self.proj(k.mean(dim=(2, 3))).softmax(dim=-1)
