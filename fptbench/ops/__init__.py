"""Attention operators of FPT as pure functions on tensors (no modules, no I/O)."""

from .linear_attention import linear_attention
from .local_attention import local_mos_attention
from .mos_attention import mos_attention

__all__ = ["mos_attention", "local_mos_attention", "linear_attention"]
