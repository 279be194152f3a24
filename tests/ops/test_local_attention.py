"""local_mos_attention against an explicit loop over fine positions and their windows."""

import pytest
import torch
import torch.nn.functional as F

from fptbench.ops import local_mos_attention
from fptbench.ops.local_attention import cell_groups

from fptbench.ops.guard import largest_tensor_created
from .test_mos_attention import assert_close_rel


def reference(q, k, v, pi, stride, window, similarity):
    """For each fine position: gather its window (zero keys/values outside), then MoS softmax."""
    B, D, Hf, Wf = q.shape
    _, _, Hc, Wc = k.shape
    Dv = v.shape[1]
    N = pi.shape[1]
    d = D // N
    r = window // 2
    out = torch.zeros(B, Dv, Hf, Wf, dtype=q.dtype)
    for b in range(B):
        for y in range(Hf):
            for x in range(Wf):
                cy, cx = min(y // stride, Hc - 1), min(x // stride, Wc - 1)
                keys, vals = [], []
                for yy in range(cy - r, cy + r + 1):
                    for xx in range(cx - r, cx + r + 1):
                        inside = 0 <= yy < Hc and 0 <= xx < Wc
                        keys.append(k[b, :, yy, xx] if inside else torch.zeros(D, dtype=q.dtype))
                        vals.append(v[b, :, yy, xx] if inside else torch.zeros(Dv, dtype=q.dtype))
                K, V = torch.stack(keys), torch.stack(vals)
                acc = 0
                for n in range(N):
                    qn, Kn = q[b, n * d : (n + 1) * d, y, x], K[:, n * d : (n + 1) * d]
                    s = Kn @ qn if similarity == "dot" else -((Kn - qn) ** 2).sum(-1)
                    acc = acc + pi[b, n] * torch.softmax(s * d**-0.5, 0) @ V
                out[b, :, y, x] = acc
    return out


CASES = [  # B, D, Hf, Wf, Hc, Wc, Dv, N, stride, window
    (2, 8, 9, 7, 5, 4, 5, 2, 2, 3),  # odd sizes, Hf < Hc * stride (last cell short)
    (1, 8, 13, 10, 3, 2, 4, 4, 4, 5),  # Hf > Hc * stride: the last cell takes the remainder
    (1, 4, 6, 6, 2, 2, 3, 1, 2, 7),  # window larger than the coarse map, N = 1
    (1, 8, 5, 11, 3, 3, 6, 2, 2, 1),  # window 1: each query sees its own cell only
    (2, 8, 16, 16, 2, 2, 3, 2, 8, 3),  # stride 8 (P2 <- P5)
    (1, 16, 8, 8, 4, 4, 16, 4, 2, 5),  # borders on every side
    (2, 8, 7, 9, 7, 9, 5, 2, 1, 3),  # stride 1: levels of one resolution (the unscathed pyramid)
]


@pytest.mark.parametrize("similarity", ["euclidean", "dot"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_matches_window_loop(case, similarity):
    B, D, Hf, Wf, Hc, Wc, Dv, N, stride, window = case
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, D, Hf, Wf, generator=g).requires_grad_()
    k = torch.randn(B, D, Hc, Wc, generator=g).requires_grad_()
    v = torch.randn(B, Dv, Hc, Wc, generator=g).requires_grad_()
    pi = torch.softmax(torch.randn(B, N, generator=g), -1).requires_grad_()
    out = local_mos_attention(q, k, v, pi, stride=stride, window=window, similarity=similarity)
    ref = reference(q, k, v, pi, stride, window, similarity)
    assert out.shape == (B, Dv, Hf, Wf)
    assert_close_rel(out, ref)
    go = torch.randn(ref.shape, generator=g)
    grads = torch.autograd.grad((out * go).sum(), (q, k, v, pi))
    grads_ref = torch.autograd.grad((ref * go).sum(), (q, k, v, pi))
    for a, b in zip(grads, grads_ref):
        assert_close_rel(a, b)


def own_position_windows(q, k, v, pi, window, similarity):
    """Stride 1 from the definition: the query at (y, x) sees the window x window block of k and v
    around (y, x), zero outside the map; written with padding and slicing, independently of
    ``reference``'s cell arithmetic."""
    B, D, H, W = q.shape
    N = pi.shape[1]
    d = D // N
    r = window // 2
    kp, vp = F.pad(k, (r, r, r, r)), F.pad(v, (r, r, r, r))
    out = torch.zeros(B, v.shape[1], H, W, dtype=q.dtype)
    for b in range(B):
        for y in range(H):
            for x in range(W):
                K = kp[b, :, y : y + window, x : x + window].flatten(1)  # (D, window^2)
                V = vp[b, :, y : y + window, x : x + window].flatten(1)
                for n in range(N):
                    qn, Kn = q[b, n * d : (n + 1) * d, y, x, None], K[n * d : (n + 1) * d]
                    s = (qn * Kn).sum(0) if similarity == "dot" else -((qn - Kn) ** 2).sum(0)
                    out[b, :, y, x] += pi[b, n] * (V * torch.softmax(s / d**0.5, 0)).sum(1)
    return out


@pytest.mark.parametrize("similarity", ["euclidean", "dot"])
@pytest.mark.parametrize("N, window", [(2, 3), (1, 5), (4, 1)])
def test_stride_one_windows_centred_on_each_query(N, window, similarity):
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 2, 8, 5, 7, generator=g, dtype=torch.float64)
    v = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64)
    pi = torch.softmax(torch.randn(2, N, generator=g, dtype=torch.float64), -1)
    out = local_mos_attention(q, k, v, pi, stride=1, window=window, similarity=similarity)
    torch.testing.assert_close(out, own_position_windows(q, k, v, pi, window, similarity), rtol=1e-5, atol=1e-5)


def test_cell_groups_cover_every_position_once():
    for fine, coarse, stride in [(9, 5, 2), (13, 3, 4), (5, 3, 2), (1, 1, 2), (16, 2, 8), (7, 7, 1)]:
        gather, scatter, size = cell_groups(fine, coarse, stride, torch.device("cpu"))
        assert gather[scatter].tolist() == list(range(fine))
        assert len(gather) == coarse * size
        assert (gather == fine).sum().item() == coarse * size - fine  # the rest are empty slots


def test_never_allocates_score_matrix():
    # Lq x Lk = 4096 x 1024 = 4.2M elements; the windows hold 1024 cells x 25 keys.
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 16, 64, 64, generator=g, requires_grad=True)
    k = torch.randn(1, 16, 32, 32, generator=g, requires_grad=True)
    v = torch.randn(1, 16, 32, 32, generator=g, requires_grad=True)
    pi = torch.full((1, 2), 0.5)
    with largest_tensor_created() as biggest:
        local_mos_attention(q, k, v, pi, stride=2, window=5).sum().backward()
    assert biggest.numel < 4096 * 1024 // 8, biggest.op


@pytest.mark.parametrize("kwargs, message", [(dict(window=4), "odd"), (dict(window=0), "odd"), (dict(stride=0), "stride")])
def test_bad_arguments(kwargs, message):
    q, k, v = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2), torch.randn(1, 8, 2, 2)
    args = dict(stride=2, window=3) | kwargs
    with pytest.raises(ValueError, match=message):
        local_mos_attention(q, k, v, torch.ones(1, 1), **args)
