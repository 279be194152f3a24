"""How fast this machine multiplies matrices: the yardstick printed beside every timing.

A CPU's seconds say little on their own; the matmul rate measured in the same run lets a reader
compare figures across machines (and see when a machine was shared: the rate drops).
"""

from __future__ import annotations

import statistics
import time

import torch

__all__ = ["matmul_gflops"]


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of an ``n x n`` matmul on the CPU with this process's threads (median of
    ``repeats`` after one warm-up product)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9
