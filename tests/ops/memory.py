"""Test helper: re-exports the largest-tensor recorder of ``fptbench.ops.guard``."""

from fptbench.ops.guard import Largest, largest_tensor_created

__all__ = ["Largest", "largest_tensor_created"]
