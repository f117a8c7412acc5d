"""Attention metrics against loop-based formulations and hand-made heads."""

import math

import numpy as np
import pytest
import torch

from vitlib.attention import aligned_aggregate, mass_threshold_mask, mean_attention_distance


def random_attention(rng, shape_lead, n):
    logits = rng.normal(size=(*shape_lead, n, n)) * 2
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def loop_distance(attn_hnn, K, P):
    """docs/protocols.md §2.5 written with explicit loops."""
    H = attn_hnn.shape[0]
    out = np.zeros(H)
    for h in range(H):
        tot = 0.0
        for q in range(K * K):
            row = attn_hnn[h, P + q, P:]
            s = row.sum()
            if s == 0:
                continue
            row = row / s
            qr, qc = divmod(q, K)
            for k in range(K * K):
                kr, kc = divmod(k, K)
                tot += row[k] * math.hypot((kc - qc) / (K - 1), (kr - qr) / (K - 1))
        out[h] = tot / (K * K)
    return out


def loop_aligned(attn_hnn, K, P):
    """docs/protocols.md §2.3 with a canvas loop over query positions."""
    H = attn_hnn.shape[0]
    M = 2 * K - 1
    canvas = np.zeros((H, M, M))
    for h in range(H):
        for q in range(K * K):
            row = attn_hnn[h, P + q, P:]
            row = row / row.sum() if row.sum() > 0 else row
            i, j = divmod(q, K)
            canvas[h, K - 1 - i : 2 * K - 1 - i, K - 1 - j : 2 * K - 1 - j] += row.reshape(K, K)
    return canvas / (K * K)


@pytest.mark.parametrize("K,P", [(4, 1), (5, 1), (3, 5)])
def test_distance_and_aligned_match_loops(K, P):
    rng = np.random.default_rng(K + P)
    attn = random_attention(rng, (2, 3), P + K * K)  # [B, H, N, N]
    d = mean_attention_distance(attn, (K, K), P)
    a = aligned_aggregate(attn, (K, K), P)
    assert isinstance(d, np.ndarray) and d.shape == (2, 3)
    assert a.shape == (2, 3, 2 * K - 1, 2 * K - 1)
    for b in range(2):
        np.testing.assert_allclose(d[b], loop_distance(attn[b], K, P), rtol=1e-5)
        np.testing.assert_allclose(a[b], loop_aligned(attn[b], K, P), rtol=1e-5, atol=1e-7)


def right_neighbour_head(K, P=1):
    """Every spatial query attends the cell to its right (the last column: itself)."""
    N = P + K * K
    A = np.zeros((N, N))
    A[:P, 0] = 1.0
    for q in range(K * K):
        r, c = divmod(q, K)
        A[P + q, P + r * K + min(c + 1, K - 1)] = 1.0
    return A


def test_hand_made_right_neighbour_head():
    K = 6
    A = right_neighbour_head(K)[None]  # one head
    d = mean_attention_distance(torch.from_numpy(A), (K, K), 1)
    assert isinstance(d, torch.Tensor)
    # K(K-1) queries at distance 1/(K-1), K at distance 0
    assert d.item() == pytest.approx((K * (K - 1) / (K - 1)) / K**2)
    a = aligned_aggregate(A, (K, K), 1)[0]
    c = K - 1
    assert a[c, c + 1] == pytest.approx((K - 1) / K)  # one to the right
    assert a[c, c] == pytest.approx(1 / K)  # last column attends itself
    assert a.sum() == pytest.approx(1.0)
    assert np.count_nonzero(a) == 2


def test_global_uniform_head_and_all_cls_rows():
    K, P = 4, 1
    N = P + K * K
    A = np.full((1, N, N), 1.0 / N)
    d = mean_attention_distance(A, (K, K), P)
    # uniform over spatial keys: the mean pairwise distance of the grid
    pos = np.array([(c / (K - 1), r / (K - 1)) for r in range(K) for c in range(K)])
    ref = np.linalg.norm(pos[:, None] - pos[None], axis=-1).mean()
    assert d[0] == pytest.approx(ref)
    # a head whose spatial rows put all mass on CLS: zero rows, distance 0, no NaN
    B = np.zeros((1, N, N))
    B[..., 0] = 1.0
    assert mean_attention_distance(B, (K, K), P)[0] == 0.0
    assert np.all(aligned_aggregate(B, (K, K), P) == 0)


def test_mass_threshold_mask_hand_case():
    m = np.array([0.5, 0.3, 0.1, 0.1])
    np.testing.assert_array_equal(mass_threshold_mask(m, 0.6), [True, True, False, False])
    np.testing.assert_array_equal(mass_threshold_mask(m, 0.5), [True, False, False, False])
    m2 = np.array([0.5, 0.3, 0.15, 0.05]) * 7  # unnormalised input
    np.testing.assert_array_equal(mass_threshold_mask(m2, 0.9), [True, True, True, False])
    t = mass_threshold_mask(torch.tensor([[0.1, 0.2, 0.7]]), 0.6)
    assert t.dtype == torch.bool and t.tolist() == [[False, False, True]]
    with pytest.raises(ValueError):
        mass_threshold_mask(m, 0.0)


def test_shape_errors_name_the_shape():
    with pytest.raises(ValueError, match="N = 1 \\+ 4\\*4 = 17"):
        mean_attention_distance(np.zeros((2, 16, 16)), (4, 4), 1)
