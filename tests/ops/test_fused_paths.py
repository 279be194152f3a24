"""The guard that cannot be fooled again [issue #10]: every attention path as the modules call it.

Each module (ST, GT, LGT) x normaliser x similarity x ``attention.impl`` runs on its real inputs
(transposed conv outputs: strides as in training), forward and backward, train and eval, fp32
and bf16 autocast, under

* the largest-tensor recorder: no tensor of Lq x Lk elements is created, on any path;
* strict mode (SDPA's math backend disabled): a call that no fused kernel accepts raises;
* the SDPA recorder: every SDPA call took a fused kernel, with unit last-dimension strides.

The landed code failed all three (a (2, 2400, 2400) score tensor for ST with sdpa); the sizes
below are the smallest where a query block is smaller than Lq, so the recorder can tell a block
from the whole matrix.
"""

import pytest
import torch

from fptbench.modeling.grounding_transformer import GroundingTransformer
from fptbench.modeling.self_transformer import SelfTransformer
from fptbench.ops import mos_attention
from fptbench.ops.guard import largest_tensor_created, sdpa_backends_recorded, strict_fused_attention
from fptbench.ops.mos_attention import IMPLS, choose_impl

C = 64  # pyramid width in these tests (strides follow the same pattern at 256)
FINE = (64, 96)  # GT/LGT query map; ST uses ST_MAP
ST_MAP = (48, 64)

MODULES = {  # name -> (constructor, Lq, Lk)
    "st_mos": (lambda impl: SelfTransformer(C, attention_impl=impl), 48 * 64, 48 * 64),
    "st_mos_pool": (lambda impl: SelfTransformer(C, pool_kv=True, attention_impl=impl), 48 * 64, 24 * 32),
    "st_softmax": (lambda impl: SelfTransformer(C, normalizer="softmax", attention_impl=impl), 48 * 64, 48 * 64),
    "gt_euclidean": (lambda impl: GroundingTransformer(C, inner_channels=32, attention_impl=impl), 64 * 96, 32 * 48),
    "gt_dot": (lambda impl: GroundingTransformer(C, inner_channels=32, similarity="dot", attention_impl=impl), 64 * 96, 32 * 48),
    "gt_softmax": (
        lambda impl: GroundingTransformer(C, inner_channels=32, normalizer="softmax", attention_impl=impl),
        64 * 96,
        32 * 48,
    ),
    "lgt": (lambda impl: GroundingTransformer(C, inner_channels=32, window=5, attention_impl=impl), 64 * 96, 32 * 48),
}
RUNNABLE_IMPLS = [i for i in IMPLS if i != "naive"]  # naive materialises the scores by design


def _run(module, train: bool, bf16: bool):
    g = torch.Generator().manual_seed(0)
    if isinstance(module, SelfTransformer):
        inputs = [torch.randn(2, C, *ST_MAP, generator=g, requires_grad=True)]
    else:
        inputs = [
            torch.randn(2, C, *FINE, generator=g, requires_grad=True),
            torch.randn(2, C, FINE[0] // 2, FINE[1] // 2, generator=g, requires_grad=True),
        ]
    module.train(train)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = module(*inputs)
    if train:
        out.float().square().mean().backward()
    return out


def _expect_refusal(name: str, impl: str, train: bool) -> bool:
    # ST trains with attention dropout 0.1 [code]; no fused CPU kernel takes dropout.
    return impl == "sdpa" and train and name.startswith("st")


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("impl", RUNNABLE_IMPLS)
@pytest.mark.parametrize("name", list(MODULES))
def test_no_score_matrix_and_only_fused_kernels(name, impl, train, bf16):
    build, Lq, Lk = MODULES[name]
    torch.manual_seed(0)
    module = build(impl)
    if _expect_refusal(name, impl, train):
        with pytest.raises(ValueError, match="no fused kernel on the CPU"):
            _run(module, train, bf16)
        return
    with strict_fused_attention(), sdpa_backends_recorded() as calls, largest_tensor_created() as largest:
        _run(module, train, bf16)
    assert largest.numel < Lq * Lk, f"{name}/{impl}: {largest.op} (Lq x Lk = {Lq} x {Lk})"
    for call in calls:
        assert call.backend == "flash_cpu", call
        assert all(s[-1] == 1 for s in call.strides), call
    # Which calls go through SDPA at all: the resolved impl decides it (LGT never does).
    resolved = choose_impl(impl, module.mixture.parts, torch.device("cpu"), 0.1 if train and name.startswith("st") else 0.0)
    uses_sdpa = resolved == "sdpa" and name != "lgt"
    assert bool(calls) == uses_sdpa, (name, impl, resolved, calls)


def test_strict_mode_turns_a_fallback_into_an_error():
    """The guard has teeth: transposed (last stride != 1) inputs fail under strict mode."""
    x = torch.randn(1, 2, 32, 64).transpose(-1, -2)  # (1, 2, 64, 32), last stride 64
    with strict_fused_attention(), pytest.raises(RuntimeError):
        torch.nn.functional.scaled_dot_product_attention(x, x, x)
    with sdpa_backends_recorded() as calls:
        torch.nn.functional.scaled_dot_product_attention(x, x, x)
    assert [c.backend for c in calls] == ["math"]


def test_recorder_sees_the_naive_score_matrix():
    module = SelfTransformer(C, attention_impl="naive").eval()
    with largest_tensor_created() as largest:
        _run(module, train=False, bf16=False)
    assert largest.numel >= (48 * 64) ** 2


def test_sdpa_with_dropout_on_cpu_is_refused_not_materialised():
    q = torch.randn(1, 100, 16)
    pi = torch.ones(1, 1)
    with pytest.raises(ValueError, match="impl 'sdpa' with attention dropout"):
        mos_attention(q, q, q, pi, impl="sdpa", dropout_p=0.1)
    assert choose_impl("auto", 1, torch.device("cpu"), 0.1) == "blocks"
    assert choose_impl("auto", 1, torch.device("cpu"), 0.0) == "sdpa"


@pytest.mark.parametrize("similarity", ["dot", "euclidean"])
def test_sdpa_equal_layout_matches_scores(similarity):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 50, 12, generator=g), torch.randn(2, 40, 12, generator=g)
    v, pi = torch.randn(2, 40, 20, generator=g), torch.softmax(torch.randn(2, 4, generator=g), -1)
    ref = mos_attention(q, k, v, pi, similarity=similarity, impl="naive")
    with strict_fused_attention():
        out = mos_attention(q, k, v, pi, similarity=similarity, impl="sdpa", sdpa_layout="equal")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # Dv != D is the memory-efficient kernel's alone (CUDA): refused on the CPU, not materialised.
    with pytest.raises(ValueError, match="'unpadded'"):
        mos_attention(q, k, v, pi, similarity=similarity, impl="sdpa", sdpa_layout="unpadded")


@pytest.mark.parametrize("impl", ["sdpa", "blocks"])
def test_euclidean_scores_stay_exact_under_fp16_autocast(impl):
    """-||k||^2 in fp16 overflows above 65504 and loses absolute precision [issue #10, point 5].

    Features of scale 30 (||k||^2 ~ 29k for 32 channels, ~1e5 for the augmented parts summed):
    the result under fp16 autocast must equal the fp32 computation on the same fp16 inputs up to
    fp16 output rounding.
    """
    g = torch.Generator().manual_seed(0)
    q = (30 * torch.randn(1, 64, 128, generator=g)).half()
    k = (30 * torch.randn(1, 48, 128, generator=g)).half()
    k[:, :8] = q[:, :8]  # some exact matches, so the softmax is peaked
    v = torch.randn(1, 48, 128, generator=g).half()
    pi = torch.softmax(torch.randn(1, 4, generator=g), -1)
    ref = mos_attention(q.float(), k.float(), v.float(), pi, similarity="euclidean", impl="naive")
    with torch.autocast("cpu", dtype=torch.float16):
        out = mos_attention(q, k, v, pi, similarity="euclidean", impl=impl)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), ref, rtol=2e-3, atol=2e-3)
