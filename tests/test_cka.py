"""CKA against an independent (loop, textbook) formulation and known identities."""

import numpy as np
import pytest
import torch

from vitlib.metrics.cka import cka_grid_from_grams, linear_cka, minibatch_cka


def hsic_u_reference(K, L):
    """Song et al. 2012 unbiased HSIC, written term by term with explicit sums."""
    n = K.shape[0]
    K = K.copy()
    L = L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    t1 = np.trace(K @ L)
    t2 = (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
    t3 = 2.0 / (n - 2) * (one @ K @ L @ one)
    return (t1 + t2 - t3) / (n * (n - 3))


def ref_minibatch_cka(xs, ys, minmax=False):
    def g(a):
        a = a.reshape(a.shape[0], -1)
        k = a @ a.T
        if minmax:
            k = k - k.min()
            k = k / k.max()
        return k

    num = sum(hsic_u_reference(g(x), g(y)) for x, y in zip(xs, ys))
    dx = sum(hsic_u_reference(g(x), g(x)) for x in xs)
    dy = sum(hsic_u_reference(g(y), g(y)) for y in ys)
    return num / np.sqrt(dx * dy)


@pytest.fixture()
def feats():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(5, 8, 10))  # 5 minibatches of 8
    layers_x = [
        base @ rng.normal(size=(10, 12)) + 0.5 * rng.normal(size=(5, 8, 12)) for _ in range(3)
    ]
    layers_y = [np.tanh(base @ rng.normal(size=(10, 6))) for _ in range(2)]
    return layers_x, layers_y


def grams_of(layers):
    return np.stack([np.einsum("cnd,cmd->cnm", l, l) for l in layers], 1)  # [C, L, n, n]


@pytest.mark.parametrize("minmax", [False, True])
def test_grid_matches_reference(feats, minmax):
    lx, ly = feats
    grid = cka_grid_from_grams(grams_of(lx), grams_of(ly), minmax=minmax)
    assert grid.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            assert grid[i, j] == pytest.approx(ref_minibatch_cka(lx[i], ly[j], minmax), rel=1e-9)


def test_minibatch_cka_equals_grid(feats):
    lx, ly = feats
    got = minibatch_cka(list(lx[0]), list(ly[1]))
    assert got == pytest.approx(cka_grid_from_grams(grams_of(lx), grams_of(ly))[0, 1], rel=1e-9)


def test_identities():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 20))
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-10)  # rotation
    assert linear_cka(x, 3.7 * x) == pytest.approx(1.0, abs=1e-10)  # isotropic scaling
    assert linear_cka(x, x @ q, unbiased=False) == pytest.approx(1.0, abs=1e-10)
    y = rng.normal(size=(50, 30))
    assert abs(linear_cka(x, y)) < 0.1  # independent
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), rel=1e-12)  # symmetric
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(x)) == pytest.approx(1.0)


def test_biased_matches_textbook_formula():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 7))
    xc, yc = x - x.mean(0), y - y.mean(0)
    ref = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(x, y, unbiased=False) == pytest.approx(ref, rel=1e-10)


def test_minmax_matters_only_across_batches(feats):
    lx, ly = feats
    one = cka_grid_from_grams(grams_of(lx)[:1], grams_of(ly)[:1])
    one_mm = cka_grid_from_grams(grams_of(lx)[:1], grams_of(ly)[:1], minmax=True)
    np.testing.assert_allclose(one, one_mm, rtol=1e-9)  # single batch: invariant (§3.1)


def test_small_batches_rejected():
    g = np.ones((2, 1, 3, 3))
    with pytest.raises(ValueError, match="at least 4"):
        cka_grid_from_grams(g, g)


def test_cka_interval_is_the_bootstrap_over_minibatches():
    """The interval equals recomputing the CKA grid on resampled stacks of minibatches (the
    same resample counts), brackets the estimate, and is a point when all minibatches agree."""
    from vitlib.metrics.cka import (
        cka_grid_from_grams,
        cka_grid_interval,
        hsic_grid,
        hsic_per_batch,
        hsic_self,
    )
    from vitlib.stats import resample_counts

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 8, 5))
    y = x[:, [0, 2]] + 0.8 * rng.normal(size=(6, 2, 8, 5))
    gx, gy = x @ x.transpose(0, 1, 3, 2), y @ y.transpose(0, 1, 3, 2)
    xy, xx, yy = hsic_per_batch(gx, gy)
    np.testing.assert_allclose(xy.sum(0), hsic_grid(gx, gy), atol=1e-12)
    np.testing.assert_allclose(xx.sum(0), hsic_self(gx), atol=1e-12)
    lo, hi = cka_grid_interval(gx, gy, resamples=300, seed=4)
    counts = np.concatenate(list(resample_counts(6, 300, 4))).astype(int)
    boot = np.stack([cka_grid_from_grams(np.repeat(gx, c, 0), np.repeat(gy, c, 0)) for c in counts])
    np.testing.assert_allclose(lo, np.quantile(boot, 0.025, axis=0), atol=1e-12)
    np.testing.assert_allclose(hi, np.quantile(boot, 0.975, axis=0), atol=1e-12)
    v = cka_grid_from_grams(gx, gy)
    assert (lo <= v + 1e-12).all() and (v <= hi + 1e-12).all()
    same = np.repeat(gx[:1], 4, 0)
    lo, hi = cka_grid_interval(same, same, resamples=50)
    np.testing.assert_allclose(lo, cka_grid_from_grams(same, same), atol=1e-12)
