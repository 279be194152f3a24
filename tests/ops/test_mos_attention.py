"""mos_attention against a plain implementation with an explicit score matrix.

The reference below is the spec's equation written the obvious way (one (Lq x Lk) matrix per
mixture component); the op must agree with it in float32 to 1e-5 relative, forward and
gradients, on every implementation, and must never create an (Lq x Lk) tensor.
"""

import pytest
import torch

from fptbench.ops import mos_attention
from fptbench.ops.mos_attention import choose_impl, dropout_keep_scale, euclidean_as_dot

from .memory import largest_tensor_created


def reference(q, k, v, pi, similarity="dot", scale=None, mask=None):
    B, Lq, D = q.shape
    N = pi.shape[1]
    d = D // N
    scale = d**-0.5 if scale is None else scale
    W = 0
    for n in range(N):
        qn, kn = q[..., n * d : (n + 1) * d], k[..., n * d : (n + 1) * d]
        if similarity == "dot":
            s = qn @ kn.transpose(1, 2)
        else:
            s = -((qn[:, :, None, :] - kn[:, None, :, :]) ** 2).sum(-1)
        W = W + pi[:, n, None, None] * torch.softmax(s * scale, dim=-1)
    if mask is not None:
        W = W * mask
    return W @ v


def make(B, Lq, Lk, D, N, Dv, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Lq, D, generator=g, dtype=dtype).requires_grad_()
    k = torch.randn(B, Lk, D, generator=g, dtype=dtype).requires_grad_()
    v = torch.randn(B, Lk, Dv, generator=g, dtype=dtype).requires_grad_()
    pi = torch.softmax(torch.randn(B, N, generator=g, dtype=dtype), -1).requires_grad_()
    return q, k, v, pi


def assert_close_rel(a, b, rtol=1e-5, atol=1e-6):
    # Relative to the tensor's scale (elementwise relative error is meaningless near zero). The
    # atol only matters where the reference is exactly zero (q and k gradients when Lk = 1),
    # where float32 rounding of O(1) inputs leaves ~1e-8.
    err = (a - b).abs().max().item()
    ref = b.abs().max().item()
    assert err <= rtol * ref + atol, f"max abs error {err:.3e} vs scale {ref:.3e}"


SHAPES = [  # B, Lq, Lk, D, N, Dv
    (1, 1, 1, 4, 1, 4),
    (2, 37, 23, 8, 2, 5),  # odd sizes, B > 1, Dv != D
    (1, 100, 77, 16, 4, 16),
    (2, 5, 200, 12, 1, 7),  # N = 1
    (3, 64, 64, 32, 4, 48),
    (1, 129, 31, 256, 2, 256),  # ST-like widths
    (2, 50, 90, 128, 4, 128),  # GT-like widths
]


@pytest.mark.parametrize("impl", ["blocks", "sdpa", "naive"])
@pytest.mark.parametrize("similarity", ["dot", "euclidean"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_explicit_scores(impl, similarity, shape):
    q, k, v, pi = make(*shape)
    # block_size 16 forces several query blocks (and a ragged last one) on the blocks path.
    out = mos_attention(q, k, v, pi, similarity=similarity, impl=impl, block_size=16)
    ref = reference(q, k, v, pi, similarity)
    assert out.shape == (shape[0], shape[1], shape[5])
    assert_close_rel(out, ref)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((out * g).sum(), (q, k, v, pi))
    grads_ref = torch.autograd.grad((ref * g).sum(), (q, k, v, pi))
    for name, a, b in zip("q k v pi".split(), grads, grads_ref):
        assert_close_rel(a, b), name


@pytest.mark.parametrize("impl", ["blocks", "sdpa"])
def test_explicit_scale(impl):
    q, k, v, pi = make(2, 20, 30, 8, 2, 8)
    out = mos_attention(q, k, v, pi, scale=0.37, impl=impl)
    assert_close_rel(out, reference(q, k, v, pi, scale=0.37))


def test_euclidean_rewrite_is_distance_up_to_query_constant():
    # The augmented dot product equals -||q-k||^2 + ||q||^2: softmax over keys cannot tell them apart.
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(11, 5, generator=g, dtype=torch.float64)
    qa, ka = euclidean_as_dot(q, k)
    s = qa @ ka.T
    d = -torch.cdist(q, k) ** 2 + (q * q).sum(-1, keepdim=True)
    torch.testing.assert_close(s, d)


@pytest.mark.parametrize("impl", ["blocks", "sdpa"])
@pytest.mark.parametrize("similarity", ["dot", "euclidean"])
def test_never_allocates_score_matrix(impl, similarity):
    # Lq x Lk = 600 x 500 = 300k elements; every legitimate tensor here is far smaller.
    q, k, v, pi = make(1, 600, 500, 32, 2, 32)
    with largest_tensor_created() as biggest:
        out = mos_attention(q, k, v, pi, similarity=similarity, impl=impl, block_size=64)
        out.square().sum().backward()
    assert biggest.numel < 600 * 500 // 2, biggest.op


def test_blocks_bound_their_tiles_automatically():
    # With the automatic block size the tiles stay within DEFAULT_TILE_ELEMENTS-derived rows.
    from fptbench.ops.mos_attention import block_rows as _block_rows

    assert _block_rows(2, 66_800, 0) == 128  # ST at P2 of an 800x1333 image
    assert _block_rows(4, 1_050, 0) == 1024
    assert _block_rows(4, 10, 0) == 1024  # short key sets: capped, not unbounded
    assert _block_rows(2, 10**9, 0) == 16  # huge key sets: the memory cap wins, still a block


def test_dropout_is_on_mixed_weights_and_backward_replays_the_mask():
    # blocks: one mask on W = sum_n pi_n A_n [code]; forward and backward must use the same mask,
    # so the op is a deterministic function of its inputs for a fixed global seed.
    q, k, v, pi = make(1, 40, 30, 8, 2, 6, dtype=torch.float64)

    def f(q, k, v, pi):
        torch.manual_seed(123)
        return mos_attention(q, k, v, pi, dropout_p=0.3, impl="blocks", block_size=16)

    assert torch.autograd.gradcheck(f, (q, k, v, pi), eps=1e-6, atol=1e-5)
    # With v = identity the output is the mixed weights themselves: each is either dropped or
    # scaled by 1 / (1 - p), with one mask shared by all mixture components.
    eye = torch.eye(30, dtype=torch.float64).unsqueeze(0)
    torch.manual_seed(7)
    dropped = mos_attention(q, k, eye, pi, dropout_p=0.3, impl="blocks", block_size=16)
    W = reference(q, k, eye, pi)
    ratio = dropped / W
    kept = ratio > 0.5
    torch.testing.assert_close(ratio[kept], torch.full_like(ratio[kept], dropout_keep_scale(0.3)))
    assert abs(dropout_keep_scale(0.3) - 1 / 0.7) < 1e-4  # p quantised to 1/65536
    assert (ratio[~kept].abs() < 1e-12).all()
    assert 0.6 < kept.double().mean().item() < 0.8


def test_choose_impl():
    cpu = torch.device("cpu")
    assert choose_impl("auto", 2, cpu) == "blocks"
    assert choose_impl("auto", 1, cpu) == "sdpa"
    assert choose_impl("auto", 4, torch.device("cuda")) == "sdpa"
    assert choose_impl("blocks", 1, cpu) == "blocks"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(similarity="cosine"), "similarity"),
        (dict(impl="flash"), "impl"),
        (dict(block_size=-1), "block_size"),
    ],
)
def test_bad_arguments(kwargs, message):
    q, k, v, pi = make(1, 4, 4, 8, 2, 8)
    with pytest.raises(ValueError, match=message):
        mos_attention(q, k, v, pi, **kwargs)


def test_bad_shapes():
    q, k, v, pi = make(1, 4, 4, 8, 3, 8)  # 3 does not divide 8
    with pytest.raises(ValueError, match="must divide"):
        mos_attention(q, k, v, pi)
    q, k, v, pi = make(1, 4, 4, 8, 2, 8)
    with pytest.raises(ValueError, match="same length"):
        mos_attention(q, k, v[:, :3], pi)
