"""Multiply-adds with fvcore, FPT's attention included.

Units: ``macs`` is fvcore's count, one multiply-add = 1; ``flops`` = 2 x macs, always.

fvcore traces the model (``torch.jit`` tracer) and counts convolutions, linear layers, matmul,
bmm, einsum and norms from the traced shapes. It has no count for the ops FPT's attention runs
as, so without the handles below it would silently drop most of FPT's cost:

* ``attention.impl: blocks``: ``prim::PythonOp._MoSBlockAttention`` (a custom autograd Function;
  its inner products are not in the trace). Inputs: q (B, N, Lq, d') already scaled,
  k (B, N, Lk, d'), v (B, Lk, Dv), pi (B, N).
* ``attention.impl: sdpa``: ``aten::scaled_dot_product_attention`` over N zero-padded heads;
  the handle walks back through ``aten::pad`` / ``unsqueeze`` / ``expand`` to the unpadded
  widths and to the one V that the N heads share.
* ``attention.impl: naive`` and LGT (``local_mos_attention``): ``aten::matmul`` for QK and AV,
  which fvcore counts already; inside an attention module they are only relabelled. LGT between
  levels of one resolution (s = 1) runs its QK as ``aten::linalg_vecdot`` and its AV as
  ``aten::addcmul``, one per window offset; inside an attention module each counts one MAC per
  element of its product (outside, vecdot counts so too and addcmul nothing, as fvcore's
  elementwise ops).

What "attention" counts [ours, the spec's minimal count, section "Computing mixture attention
without the score matrix"]: the mathematical attention, the same whatever ``attention.impl``
computes it. For one call with q (B, Lq, D), k (B, Lk, D), v (B, Lk, Dv) and N parts:

    attention MACs = B * Lq * Lk * (D_sim + Dv)             (:func:`attention_macs`)

* QK: Lq * Lk * D_sim, D_sim = D for the dot similarity and D + N for the Euclidean one (the
  exact rewrite q~ = [2q, 1], k~ = [k, -||k||^2] appends one channel per part, spec "GT").
* AV: Lq * Lk * Dv once: v is shared by the N parts and sum_n pi_n (P_n V) = (sum_n pi_n P_n) V.
  ``sdpa`` really multiplies V N times and pads every part to V's width (about 4x the work for GT,
  spec (a)); that extra work is not counted, because it is the kernel's, not the model's.
* Not counted, whatever the impl: softmax, the pi-weighted mixing of the N parts, the scaling
  and the Euclidean rewrite's norms (elementwise work; fvcore counts none elsewhere either). The
  mixing einsum of ``sdpa`` and ``naive`` inside an attention module is therefore set to 0, so
  that the whole model's count does not depend on ``attention.impl`` either.
* LGT: B * slots * window^2 * (D_sim + Dv), slots = the grouped query layout's rows, = Lq when
  the fine map is exactly ``stride`` times the coarse one; zero-padded window keys count.

The op label of all of it in ``by_operator()`` is :data:`ATTENTION`.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import Any, Iterable, Optional

import torch
from torch import nn

with warnings.catch_warnings():  # fvcore.nn scripts a loss at import: torch's deprecation warning
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import bmm_flop_jit, einsum_flop_jit, get_shape, matmul_flop_jit

from fptbench.modeling import GroundingTransformer, SelfTransformer

__all__ = ["ATTENTION", "FlopAnalysis", "attention_macs", "attention_scopes", "mos_block_attention_macs",
           "sdpa_attention_macs"]

# Op label of the QK and AV products in FlopAnalysis.by_operator().
ATTENTION = "attention"
BLOCKS_OP = "prim::PythonOp._MoSBlockAttention"
SDPA_OP = "aten::scaled_dot_product_attention"

# Ops that do no arithmetic (data movement, shape queries, profiler markers), ignored like
# fvcore's own _IGNORED_OPS so that uncounted_ops lists only ops that may hide arithmetic.
ZERO_COST_OPS = (
    "aten::pad",
    "aten::new_ones",
    "aten::expand_as",
    "aten::_shape_as_tensor",
    "aten::scalar_tensor",
    "aten::fill_",
    "aten::scatter",
    "aten::meshgrid",
    "profiler::_record_function_enter_new",
    "profiler::_record_function_exit",
)

# Ops between sdpa's inputs and the tensors they were padded / broadcast from (see _unpadded).
_VIEW_CHAIN = ("aten::pad", "aten::constant_pad_nd", "aten::unsqueeze", "aten::expand", "aten::contiguous",
               "aten::to", "aten::clone")


def attention_macs(*, batch: int, queries: int, keys: int, qk_channels: int, v_channels: int) -> int:
    """QK + AV multiply-adds of one mixture attention: batch * queries * keys * (qk + v).

    Args:
        batch: B.
        queries: Lq; keys: Lk (window^2 per query for LGT).
        qk_channels: D_sim, the width of the similarity's dot product over all N parts (D for
            "dot", D + N for "euclidean").
        v_channels: Dv.
    """
    return batch * queries * keys * (qk_channels + v_channels)


def mos_block_attention_macs(inputs: list, outputs: list) -> Counter:
    """fvcore handle of ``prim::PythonOp._MoSBlockAttention`` (impl ``blocks``).

    Inputs: q (B, N, Lq, d'), k (B, N, Lk, d'), v (B, Lk, Dv), pi (B, N); d' = D_sim / N.
    """
    B, N, Lq, d = get_shape(inputs[0])
    Lk, Dv = get_shape(inputs[2])[1:]
    return Counter({ATTENTION: attention_macs(batch=B, queries=Lq, keys=Lk, qk_channels=N * d, v_channels=Dv)})


def _unpadded(value: Any) -> tuple[list[int], bool]:
    """Shape of the tensor a sdpa input was zero-padded / broadcast from, and whether it was
    broadcast over the heads (unsqueezed to a size-1 head dimension, then expanded)."""
    shape = get_shape(value)
    broadcast = False
    while value.node().kind() in _VIEW_CHAIN:
        node = value.node()
        if node.kind() == "aten::unsqueeze":
            broadcast = True
        value = node.inputsAt(0)
        if get_shape(value) is None:
            break
        shape = get_shape(value)
    if len(shape) == 4 and shape[1] == 1:
        broadcast = True
    return shape, broadcast


def _summed_over_heads(value: Any, depth: int = 4) -> bool:
    """Whether ``value`` (B, H, L, C) reaches an einsum (the pi-weighted sum over heads of
    ``_mos_sdpa``) through at most ``depth`` slicing ops."""
    for use in value.uses():
        kind = use.user.kind()
        if kind == "aten::einsum":
            return True
        if kind in ("aten::slice", "aten::narrow", "aten::contiguous", "prim::ListConstruct") and depth > 0:
            if any(_summed_over_heads(out, depth - 1) for out in use.user.outputs()):
                return True
    return False


def sdpa_attention_macs(inputs: list, outputs: list) -> Counter:
    """fvcore handle of ``aten::scaled_dot_product_attention``: the mathematical QK + AV.

    q (B, H, Lq, E), k (B, H, Lk, E), v (B, H, Lk, Ev). Widths are taken before zero padding
    (``_mos_sdpa`` pads every part to V's width: the padded channels change no product). When V
    is one (B, Lk, Dv) tensor broadcast over the H heads and the H outputs are then summed (an
    einsum: the mixture sum_n pi_n P_n V = (sum_n pi_n P_n) V), AV counts once; otherwise H times
    (plain multi-head attention).
    """
    B, H, Lq, _ = get_shape(inputs[0])
    Lk = get_shape(inputs[1])[-2]
    q_shape, _ = _unpadded(inputs[0])
    v_shape, broadcast = _unpadded(inputs[2])
    qk = H * q_shape[-1]
    v_heads = 1 if broadcast and _summed_over_heads(outputs[0]) else H
    macs = attention_macs(batch=B, queries=Lq, keys=Lk, qk_channels=qk, v_channels=v_heads * v_shape[-1])
    return Counter({ATTENTION: macs})


def attention_scopes(model: nn.Module) -> frozenset[str]:
    """Names of the modules whose own ops are attention: every SelfTransformer and
    GroundingTransformer ("" if ``model`` is one). Their convs and mixture Linear are submodules,
    so only ``mos_attention`` / ``local_mos_attention`` ops run in these scopes."""
    return frozenset(name for name, m in model.named_modules() if isinstance(m, (SelfTransformer, GroundingTransformer)))


def _scope(outputs: list) -> str:
    """Innermost module name of the node producing ``outputs`` (fvcore's naming)."""
    return outputs[0].node().scopeName().split("/")[-1]


def _relabel_in(scopes: frozenset[str], op: str, handle):
    """Wrap fvcore's handle: inside an attention scope, matmul/bmm are QK or AV products
    (label ATTENTION) and einsum is the pi-weighted mixing (0, see the module docstring)."""

    def count(inputs: list, outputs: list) -> Counter:
        if _scope(outputs) not in scopes:
            return Counter({op: handle(inputs, outputs)})
        if op == "einsum":
            return Counter()
        return Counter({ATTENTION: handle(inputs, outputs)})

    return count


def _elementwise_attention(scopes: frozenset[str], op: str, factors: tuple[int, int], *, outside: bool):
    """A handle for the s = 1 LGT's products: one MAC per element of the broadcast product of
    the inputs at ``factors`` (``linalg_vecdot(x, y, dim)``: (0, 1); ``addcmul(out, a, b)``:
    (1, 2)), labelled ATTENTION inside an attention scope; outside, the same count under ``op``
    (``outside``) or nothing."""

    def count(inputs: list, outputs: list) -> Counter:
        shapes = (tuple(get_shape(inputs[i])) for i in factors)
        macs = math.prod(torch.broadcast_shapes(*shapes))
        if _scope(outputs) in scopes:
            return Counter({ATTENTION: macs})
        return Counter({op: macs}) if outside else Counter()

    return count


class FlopAnalysis(FlopCountAnalysis):
    """fvcore's FlopCountAnalysis with fptbench's attention handles, quiet.

    Unsupported-op and uncalled-module warnings and tracer warnings are off; the ops that were
    not counted are in :meth:`uncounted_ops` instead. Counts are fvcore's MACs; the attention
    products are under the op label :data:`ATTENTION` (``by_operator()`` /
    ``by_module_and_operator()``).

    Args:
        model (nn.Module): traced as ``model(*inputs)``, in whatever mode it is in (use eval).
        inputs (tuple): positional inputs, e.g. ``([image],)`` for a torchvision detector.
        scopes (Iterable[str] | None): names of the attention modules; None:
            :func:`attention_scopes` of ``model``.
    """

    def __init__(self, model: nn.Module, inputs: tuple, *, scopes: Optional[Iterable[str]] = None) -> None:
        super().__init__(model, inputs)
        scopes = attention_scopes(model) if scopes is None else frozenset(scopes)
        self._script_calls: Counter = Counter()
        self.set_op_handle(
            **{
                BLOCKS_OP: mos_block_attention_macs,
                SDPA_OP: sdpa_attention_macs,
                "aten::matmul": _relabel_in(scopes, "matmul", matmul_flop_jit),
                "aten::mm": _relabel_in(scopes, "mm", matmul_flop_jit),
                "aten::bmm": _relabel_in(scopes, "bmm", bmm_flop_jit),
                "aten::einsum": _relabel_in(scopes, "einsum", einsum_flop_jit),
                "aten::linalg_vecdot": _elementwise_attention(scopes, "vecdot", (0, 1), outside=True),
                "aten::addcmul": _elementwise_attention(scopes, "addcmul", (1, 2), outside=False),
                "prim::CallFunction": self._record_script_call,
            }
        )
        self.set_op_handle(**{op: None for op in ZERO_COST_OPS})
        self.unsupported_ops_warnings(False)
        self.uncalled_modules_warnings(False)
        self.tracer_warnings("none")

    def _record_script_call(self, inputs: list, outputs: list) -> Counter:
        # A call into a TorchScript function (torchvision's batched NMS, mask pasting): its ops
        # are not in the trace. Count nothing, but name it in uncounted_ops.
        name = str(inputs[0].type()).rsplit(".", 1)[-1]
        self._script_calls[f"prim::CallFunction {name}"] += 1
        return Counter()

    def _analyze(self):
        if self._stats is None:  # handles run again on a fresh analysis
            self._script_calls.clear()
        return super()._analyze()

    def total_macs(self, module_name: str = "") -> int:
        """MACs of ``module_name`` ("" = the model), as an int (fvcore's einsum gives floats)."""
        return int(round(self.total(module_name)))

    def attention_macs(self, module_name: str = "") -> int:
        """QK + AV MACs of the attention under ``module_name``."""
        return int(round(self.by_operator(module_name).get(ATTENTION, 0)))

    def uncounted_ops(self) -> dict[str, int]:
        """{op: number of calls} of ops with no count, most frequent first (empty if none)."""
        self._analyze()
        ops = Counter(self.unsupported_ops())
        ops.update(self._script_calls)
        return dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))
