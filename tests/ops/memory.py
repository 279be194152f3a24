"""Test helper: the largest tensor any ATen op creates inside a block of code.

A TorchDispatchMode sees every op that autograd, the ops and the fused kernels run (a fused
attention kernel is one op: its internal tiles are not tensors), so it proves statements such as
"no (Lq x Lk) tensor is ever allocated" for forward and backward alike.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


@dataclass
class Largest:
    numel: int = 0
    op: str = ""


class _Watch(TorchDispatchMode):
    def __init__(self, record: Largest):
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
def largest_tensor_created():
    record = Largest()
    with _Watch(record):
        yield record
