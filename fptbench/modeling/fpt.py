"""The Feature Pyramid Transformer neck: ST, GT and RT between pyramid levels, then fusion [paper]."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .grounding_transformer import GroundingTransformer
from .rendering_transformer import RenderingTransformer
from .self_transformer import SelfTransformer

__all__ = ["FeaturePyramidTransformer", "NORMS", "make_norm"]

# fptbench.config's fpt.norm choices are pinned to this by tests/test_config.py.
NORMS = ("none", "bn", "gn")


def make_norm(kind: str, channels: int) -> nn.Module:
    """The neck's norm after a conv: "none" (identity), "bn", or "gn" (32 groups [code])."""
    if kind not in NORMS:
        raise ValueError(f"FeaturePyramidTransformer: norm must be 'none', 'bn' or 'gn', got {kind!r}")
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(32, channels)
    return nn.Identity()


class FeaturePyramidTransformer(nn.Module):
    """Transforms a feature pyramid with ST, GT and RT and fuses the results per level.

    Each level l concatenates, in this order [code, matches the paper's figure]: ST(X_l);
    RT(X_l <- X_f) for every finer level f (nearest first); GT(X_l <- X_c) for every coarser
    level c (nearest first); X_l itself (FPT_a.py, ``FPT.forward``: P4 = [ST, RT<-P3, RT<-P2,
    GT<-P5, X]). One Conv3x3 (k * C -> C) then fuses them, followed by
    ``norm`` (none | bn | gn; no activation, like FPN's output convs [ours]). The coarsest level
    gets no GT and the finest no RT; every (target, source) pair has its own weights, so P2..P5
    with ``pairs="all"`` has 4 ST, 6 GT and 6 RT modules, and ``pairs="adjacent"`` keeps only
    neighbouring levels. A switched-off transformer contributes nothing to the concatenation.

    Module names say what they are: ``st.p3`` is ST at P3, ``gt.p2_from_p4`` grounds P2 in P4,
    ``rt.p5_from_p2`` renders P5 with P2, ``fuse.p2`` is P2's fusion conv. Level i is named
    P(first_level + i) by its place in the pyramid, whatever its stride.

    The scale s = stride(c) / stride(f) of each GT and RT pair comes from ``level_strides``, so
    levels that share a resolution (s = 1: the unscathed pyramid of the segmentation models, or
    C3..C5 of a dilated trunk) work as strided ones do. ``forward`` checks that the maps' sizes
    agree with it: a pyramid of another shape would make LGT's windows and RT's downsampling
    silently wrong.

    Args:
        channels: C of every level (the pyramid width; fptbench.modeling.backbone.OUT_CHANNELS).
        num_levels: pyramid levels, finest first.
        st, gt, rt: which transformers are on (at least one).
        pairs: "all" | "adjacent".
        norm: norm after each fusion conv, "none" | "bn" | "gn" (GN with 32 groups; the
            authors' configs use GroupNorm [code]).
        fuse_init: "default" (torch's Conv2d initialisation) or "identity" [ours]: each fusion
            conv starts as the identity on its level's own input X_l and zero on the transformer
            outputs, so the neck starts as BFP (exactly, with norm "none") and the transformers'
            contributions grow from zero, as GT's zero-initialised BN does [code]; GT's BN then
            starts at BatchNorm's default instead (both at zero, GT would never learn).
        first_level: the name of level 0 is P(first_level).
        level_strides: stride of each level with respect to the image, finest first, each a
            power-of-2 multiple (1 included) of the previous one; None: 2^(first_level + i), the
            strided pyramid P2..P5 (4, 8, 16, 32).
        st_args, gt_args, rt_args: keyword arguments of every SelfTransformer,
            GroundingTransformer and RenderingTransformer (their ``config_args`` build them from
            the config sections), so that a transformer's key is declared and used in its own
            module, never copied here.
    Shapes:
        features (list[Tensor]): num_levels NCHW maps, finest first; level i + 1 is s times
        smaller than level i (s from ``level_strides``; ceil or floor, e.g. a ResNet's ceil
        halving) -> the transformed list, same shapes.
    """

    def __init__(
        self,
        channels: int,
        num_levels: int = 4,
        *,
        st: bool = True,
        gt: bool = True,
        rt: bool = True,
        pairs: str = "all",
        norm: str = "gn",
        fuse_init: str = "default",
        first_level: int = 2,
        level_strides: Sequence[int] | None = None,
        st_args: Mapping[str, Any] | None = None,
        gt_args: Mapping[str, Any] | None = None,
        rt_args: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not (st or gt or rt):
            raise ValueError("FeaturePyramidTransformer: switch on at least one of st, gt, rt (all off is BFP itself)")
        if fuse_init not in ("default", "identity"):
            raise ValueError(f"FeaturePyramidTransformer: fuse_init must be 'default' or 'identity', got {fuse_init!r}")
        if pairs not in ("all", "adjacent"):
            raise ValueError(f"FeaturePyramidTransformer: pairs must be 'all' or 'adjacent', got {pairs!r}")
        if level_strides is None:
            level_strides = [2 ** (first_level + i) for i in range(num_levels)]
        strides = tuple(level_strides)
        ratios = [c // f if f >= 1 and c % f == 0 else 0 for f, c in zip(strides, strides[1:])]
        if len(strides) != num_levels or min(strides, default=1) < 1 or any(r < 1 or r & (r - 1) for r in ratios):
            raise ValueError(
                f"FeaturePyramidTransformer: level_strides must be {num_levels} positive strides, finest first, "
                f"each a power-of-2 multiple of the previous one, got {level_strides!r}"
            )
        st_args, gt_args, rt_args = dict(st_args or {}), dict(gt_args or {}), dict(rt_args or {})
        self.num_levels = num_levels
        self.level_strides = strides
        self.names = [f"p{first_level + i}" for i in range(num_levels)]
        self.st = nn.ModuleDict()
        self.gt = nn.ModuleDict()
        self.rt = nn.ModuleDict()
        # inputs[t]: ordered (kind, source level) pairs concatenated for target level t.
        self.inputs: list[list[tuple[str, int]]] = []
        for t in range(num_levels):
            srcs: list[tuple[str, int]] = []
            if st:
                self.st[self.names[t]] = SelfTransformer(channels, **st_args)
                srcs.append(("st", t))
            for s in reversed(range(t)):  # finer levels, nearest first [code]
                if rt and (pairs == "all" or t - s == 1):
                    key = f"{self.names[t]}_from_{self.names[s]}"
                    self.rt[key] = RenderingTransformer(channels, stride=strides[t] // strides[s], **rt_args)
                    srcs.append(("rt", s))
            for s in range(t + 1, num_levels):  # coarser levels, nearest first [code]
                if pairs == "adjacent" and s - t != 1:
                    continue
                if gt:
                    key = f"{self.names[t]}_from_{self.names[s]}"
                    self.gt[key] = GroundingTransformer(channels, stride=strides[s] // strides[t], **gt_args)
                    srcs.append(("gt", s))
            srcs.append(("x", t))
            self.inputs.append(srcs)
        self.fuse = nn.ModuleDict(
            {
                self.names[t]: nn.Sequential(
                    nn.Conv2d(len(self.inputs[t]) * channels, channels, 3, padding=1, bias=norm == "none"),
                    make_norm(norm, channels),
                )
                for t in range(num_levels)
            }
        )
        if fuse_init == "identity":
            for t in range(num_levels):
                conv = self.fuse[self.names[t]][0]
                nn.init.zeros_(conv.weight)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
                x_block = len(self.inputs[t]) - 1  # X_l is concatenated last
                with torch.no_grad():
                    conv.weight[:, x_block * channels : (x_block + 1) * channels, 1, 1] = torch.eye(channels)
            # GT's output BN starts at zero [code]; with its fusion weights at zero too, neither
            # would ever get a gradient (each one's gradient is a product with the other), and GT
            # would stay off for good. The fusion weights already start its contribution at zero,
            # so here its BN takes BatchNorm's own start (weight 1, bias 0) [ours].
            for module in self.gt.values():
                nn.init.ones_(module.norm.weight)
                nn.init.zeros_(module.norm.bias)

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any], channels: int, num_levels: int = 4, level_strides: Sequence[int] | None = None
    ) -> "FeaturePyramidTransformer":
        """Build from a config dict with sections fpt, st, gt, rt and attention (fptbench.config).

        Each transformer takes its own section (``config_args``); only the ``fpt`` keys are read
        here. ``channels``, ``num_levels`` and ``level_strides`` describe the pyramid, which the
        caller builds.
        """
        fpt, att = cfg["fpt"], cfg["attention"]
        return cls(
            channels,
            num_levels,
            st=fpt["st"],
            gt=fpt["gt"],
            rt=fpt["rt"],
            pairs=fpt["pairs"],
            norm=fpt["norm"],
            fuse_init=fpt["fuse_init"],
            level_strides=level_strides,
            st_args=SelfTransformer.config_args(cfg["st"], att),
            gt_args=GroundingTransformer.config_args(cfg["gt"], att),
            rt_args=RenderingTransformer.config_args(cfg["rt"]),
        )

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        if len(features) != self.num_levels:
            raise ValueError(f"FeaturePyramidTransformer: expected {self.num_levels} levels, got {len(features)}")
        self._check_sizes(features)
        outs = []
        for t, srcs in enumerate(self.inputs):
            name = self.names[t]
            parts = []
            for kind, s in srcs:
                if kind == "st":
                    parts.append(self.st[name](features[t]))
                elif kind == "rt":
                    parts.append(self.rt[f"{name}_from_{self.names[s]}"](features[t], features[s]))
                elif kind == "gt":
                    parts.append(self.gt[f"{name}_from_{self.names[s]}"](features[t], features[s]))
                else:
                    parts.append(features[t])
            outs.append(self.fuse[name](torch.cat(parts, dim=1)))
        return outs

    def _check_sizes(self, features: Sequence[Tensor]) -> None:
        """Each level is s times smaller than the one before it, rounded either way (s from ``level_strides``)."""
        for i in range(1, self.num_levels):
            s = self.level_strides[i] // self.level_strides[i - 1]
            fine, coarse = features[i - 1].shape[-2:], features[i].shape[-2:]
            if any(c not in (f // s, -(-f // s)) for f, c in zip(fine, coarse)):
                raise ValueError(
                    f"FeaturePyramidTransformer: {self.names[i]} is {tuple(coarse)} and {self.names[i - 1]} is "
                    f"{tuple(fine)}, but level_strides {self.level_strides} make {self.names[i]} {s}x smaller"
                )
