"""Rendering Transformer (RT): bottom-up, a coarser level is rendered with a finer one [paper]."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RenderingTransformer"]


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]


class RenderingTransformer(nn.Module):
    """RT(X^c <- X^f) (spec "Rendering Transformer").

    ``variant="paper"`` [paper], the default:
        w = GAP(X^f);  Q_att = X^c * w (channel-wise);
        V_dow = log2(s) x [Conv3x3 stride 2 + BN], ReLU between them;
        RT = ReLU(BN(Conv3x3(Q_att)) + V_dow).
    Levels that share a resolution (s = 1, the unscathed pyramid of the segmentation models)
    have log2(1) = 0 stride-2 convs; V_dow is then one Conv3x3 of stride 1 + BN [ours], so that
    the value path keeps the learned conv and the BN that it has at every other s and only the
    downsampling is dropped (the identity would add the raw, unnormalised X^f to a BN output).
    ``variant="code"`` [code]: the 3x3 conv is applied to X^c before the weighting, and the GAP
    vector goes through Conv1x1 + BN + ReLU: Q_att = BN(Conv3x3(X^c)) * ReLU(BN(Conv1x1(w))).
    The authors' single stride-2 conv crashes for s > 2; here it is one Conv3x3 of stride s
    [ours], so every level pair works (stride 1 for s = 1). Its BN on the (B, C, 1, 1) GAP vector needs >= 2 images
    per device in training, as in the authors' setup (2 per GPU).

    Args:
        channels: C of both levels (the pyramid width).
        stride: s = stride(coarse) / stride(fine), a power of 2 (1, 2, 4, 8).
        variant: "paper" | "code".
    Shapes:
        coarse (Tensor): (B, C, Hc, Wc), fine (Tensor): (B, C, Hf, Wf) -> (B, C, Hc, Wc).
        The downsampled fine map is ceil(Hf / s) x ceil(Wf / s), the coarse map's size in any
        stride-2 pyramid; should it differ, it is resized to the coarse map (nearest) [ours].
    """

    @staticmethod
    def config_args(section: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor keywords from the config section ``rt`` (its keys are the keywords' names)."""
        return dict(section)

    def __init__(self, channels: int, *, stride: int = 2, variant: str = "paper") -> None:
        super().__init__()
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"RenderingTransformer: stride must be a power of 2 >= 1, got {stride}")
        if variant not in ("paper", "code"):
            raise ValueError(f"RenderingTransformer: variant must be 'paper' or 'code', got {variant!r}")
        self.variant = variant
        if variant == "paper":
            steps = int(math.log2(stride))
            layers: list[nn.Module] = []
            for i in range(steps):
                layers += _conv_bn(channels, channels, 3, stride=2)
                if i < steps - 1:
                    layers.append(nn.ReLU(inplace=True))
            self.downsample = nn.Sequential(*(layers or _conv_bn(channels, channels, 3)))  # s = 1 [ours]
            self.query = nn.Sequential(*_conv_bn(channels, channels, 3))
            self.weight = None
        else:
            self.downsample = nn.Sequential(*_conv_bn(channels, channels, 3, stride=stride))
            self.query = nn.Sequential(*_conv_bn(channels, channels, 3))
            self.weight = nn.Sequential(*_conv_bn(channels, channels, 1), nn.ReLU(inplace=True))

    def forward(self, coarse: Tensor, fine: Tensor) -> Tensor:
        w = fine.mean(dim=(2, 3), keepdim=True)
        if self.variant == "paper":
            q = self.query(coarse * w)
        else:
            q = self.query(coarse) * self.weight(w)
        v = self.downsample(fine)
        if v.shape[-2:] != q.shape[-2:]:
            v = F.interpolate(v, size=q.shape[-2:], mode="nearest")
        return F.relu(q + v)
