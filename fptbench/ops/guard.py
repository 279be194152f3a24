"""Guards for the memory-linear promise of the attention ops: what a block of code really ran.

CPU tests cannot see which CUDA kernel a call takes, so the guarantees are made checkable
[issue #10]:

* ``largest_tensor_created``: a TorchDispatchMode records the largest tensor any ATen op creates
  (forward and backward). A fused attention kernel is one op whose tiles are not tensors, so
  "no (Lq x Lk) tensor is ever allocated" becomes an assertion.
* ``sdpa_backends_recorded``: every ``scaled_dot_product_attention`` call inside the block, with
  the kernel it dispatched to ("flash", "efficient", "cudnn", "flash_cpu", or "math" when no
  fused kernel ran) and its inputs' shapes, dtypes and strides.
* ``strict_fused_attention``: SDPA's math backend disabled (``torch.nn.attention.sdpa_kernel``),
  so a call that no fused kernel accepts raises instead of silently materialising its scores.

Used by the tests and by ``benchmarks/gpu_check.py``; the modules never call these.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "Largest",
    "SDPACall",
    "largest_tensor_created",
    "sdpa_backends_recorded",
    "strict_fused_attention",
    "FUSED_BACKENDS",
]

# Fused SDPA backends: every one but MATH (the one that materialises the scores).
FUSED_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]

# ATen op (name prefix) -> backend name.
_KERNELS = {
    "aten._scaled_dot_product_flash_attention_for_cpu": "flash_cpu",
    "aten._scaled_dot_product_flash_attention": "flash",
    "aten._scaled_dot_product_efficient_attention": "efficient",
    "aten._scaled_dot_product_cudnn_attention": "cudnn",
    "aten._scaled_dot_product_fused_attention_overrideable": "overrideable",
}


@dataclass
class Largest:
    """The largest tensor created so far: its element count and ``op -> shape``."""

    numel: int = 0
    op: str = ""


class _LargestWatch(TorchDispatchMode):
    def __init__(self, record: Largest) -> None:
        super().__init__()
        self.record = record

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            # Views share storage with their base; count storage-owning results only.
            if isinstance(t, torch.Tensor) and t._base is None and t.numel() > self.record.numel:
                self.record.numel, self.record.op = t.numel(), f"{func} -> {tuple(t.shape)}"
        return out


@contextmanager
def largest_tensor_created() -> Iterator[Largest]:
    """Record the largest tensor any ATen op creates inside the block (forward and backward)."""
    record = Largest()
    with _LargestWatch(record):
        yield record


@dataclass
class SDPACall:
    """One ``scaled_dot_product_attention`` call: the kernel it took and what it was given."""

    backend: str
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    strides: list[tuple[int, ...]] = field(default_factory=list)
    dtype: str = ""
    dropout_p: float = 0.0


class _KernelWatch(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.kernels: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        for prefix, backend in _KERNELS.items():
            if name.startswith(prefix + ".") and "backward" not in name:
                self.kernels.append(backend)
                break
        return func(*args, **(kwargs or {}))


class _SDPAWatch(TorchFunctionMode):
    def __init__(self, calls: list[SDPACall]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        tensors = [a for a in args[:3] if isinstance(a, torch.Tensor)]
        watch = _KernelWatch()
        with watch:
            out = func(*args, **kwargs)
        self.calls.append(
            SDPACall(
                backend=watch.kernels[0] if watch.kernels else "math",
                shapes=[tuple(t.shape) for t in tensors],
                strides=[tuple(t.stride()) for t in tensors],
                dtype=str(tensors[0].dtype).replace("torch.", "") if tensors else "",
                dropout_p=float(kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)),
            )
        )
        return out


@contextmanager
def sdpa_backends_recorded() -> Iterator[list[SDPACall]]:
    """Record each ``scaled_dot_product_attention`` call inside the block and the kernel it took."""
    calls: list[SDPACall] = []
    with _SDPAWatch(calls):
        yield calls


@contextmanager
def strict_fused_attention() -> Iterator[None]:
    """SDPA without its math backend: an input no fused kernel accepts raises a RuntimeError."""
    with sdpa_kernel(FUSED_BACKENDS):
        yield
