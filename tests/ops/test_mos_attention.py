"""mos_attention against a plain implementation with an explicit score matrix.

The reference below is the spec's equation written the obvious way (one (Lq x Lk) matrix per
mixture component); the op must agree with it in float32 to 1e-5 relative, forward and
gradients, on every implementation, and must never create an (Lq x Lk) tensor.
"""

import pytest
import torch

from fptbench.ops import mos_attention
from fptbench.ops.mos_attention import choose_impl, dropout_keep_scale, euclidean_as_dot

from fptbench.ops.guard import largest_tensor_created


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


@pytest.mark.parametrize("dropout_on", ["softmax", "mixture"])
def test_blocks_dropout_backward_replays_the_masks(dropout_on):
    # Forward and backward must draw the same masks, so the op is a deterministic function of
    # its inputs for a fixed global seed (gradcheck would fail otherwise).
    q, k, v, pi = make(1, 40, 30, 8, 2, 6, dtype=torch.float64)

    def f(q, k, v, pi):
        torch.manual_seed(123)
        return mos_attention(q, k, v, pi, dropout_p=0.3, impl="blocks", block_size=16, dropout_on=dropout_on)

    assert torch.autograd.gradcheck(f, (q, k, v, pi), eps=1e-6, atol=1e-5)


def test_blocks_softmax_dropout_is_the_authors_per_component_masks():
    """[code] self_trans.py MixtureOfSoftMax.forward: attn = dropout(softmax(q k^T / T)) per
    component, then sum_n pi_n attn_n, then @ v. Rebuilt here with the masks the op draws
    (replayed from its seed), compared in float64."""
    from fptbench.ops.mos_attention import _block_mask

    q, k, v, pi = make(2, 40, 30, 8, 2, 6, dtype=torch.float64)
    torch.manual_seed(7)
    out = mos_attention(q, k, v, pi, dropout_p=0.3, impl="blocks", block_size=16)
    torch.manual_seed(7)
    seed = int(torch.randint(0, 2**62, (1,)).item())
    N, d, Lq, Lk, rows = 2, 4, 40, 30, 16
    nblocks = (Lq + rows - 1) // rows
    expected = torch.empty(2, Lq, 6, dtype=torch.float64)
    for b in range(2):
        for i, s in enumerate(range(0, Lq, rows)):
            e = min(s + rows, Lq)
            keep = ~_block_mask(N, e - s, Lk, 0.3, seed, b * nblocks + i, q.device)
            W = 0
            for n in range(N):
                A = torch.softmax(q[b, s:e, n * d : (n + 1) * d] @ k[b, :, n * d : (n + 1) * d].T / d**0.5, -1)
                W = W + pi[b, n] * A * keep[n] * dropout_keep_scale(0.3)
            expected[b, s:e] = W @ v[b]
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("impl, dropout_on", [("blocks", "softmax"), ("blocks", "mixture"), ("naive", "softmax"), ("naive", "mixture")])
def test_dropout_kind_and_expectation_agree_across_impls(impl, dropout_on):
    # Two identical components with pi = (1/2, 1/2): per-component masks leave a weight at 0,
    # 1/2 or 1 of its kept value; one mask on the mixture only at 0 or 1. Every impl must show
    # its mode's kind, and the mean over draws must be the dropout-free output.
    g = torch.Generator().manual_seed(0)
    q1, k1 = torch.randn(1, 6, 4, generator=g, dtype=torch.float64), torch.randn(1, 5, 4, generator=g, dtype=torch.float64)
    q, k = torch.cat([q1, q1], -1), torch.cat([k1, k1], -1)
    pi = torch.full((1, 2), 0.5, dtype=torch.float64)
    eye = torch.eye(5, dtype=torch.float64).unsqueeze(0)
    clean = mos_attention(q, k, eye, pi, impl="naive")
    torch.manual_seed(1)
    draws = torch.stack([mos_attention(q, k, eye, pi, dropout_p=0.5, impl=impl, dropout_on=dropout_on) for _ in range(800)])
    ratio = (draws / (clean * 2.0)).round(decimals=6)  # kept weights are scaled by 1 / (1 - p) = 2
    halves = ((ratio - 0.5).abs() < 1e-6).any().item()
    assert halves == (dropout_on == "softmax")
    assert set(ratio.unique().tolist()) <= {0.0, 0.5, 1.0}
    torch.testing.assert_close(draws.mean(0), clean, atol=0.1 * clean.max().item(), rtol=0)


def test_mixture_dropout_with_sdpa_is_refused():
    q, k, v, pi = make(1, 10, 10, 8, 2, 8)
    with pytest.raises(ValueError, match="dropout_on 'mixture' needs impl 'blocks' or 'naive'"):
        mos_attention(q, k, v, pi, dropout_p=0.1, impl="sdpa", dropout_on="mixture")


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
