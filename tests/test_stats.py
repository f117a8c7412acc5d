"""Bootstrap intervals and the layer-wise permutation test, against independent
formulations: a plain loop bootstrap, the normal approximation, scipy's exact test."""

import numpy as np
import pytest
from scipy import stats as st

from vitlib.stats import bootstrap_ci, bootstrap_runs_ci, permutation_test_layers, settings_of


def _loop_bootstrap(v, resamples, level, seed):
    """The textbook bootstrap: resample indices, take the mean, percentiles of the means.
    (Its own random stream: equal to ours up to Monte-Carlo error.)"""
    rng = np.random.default_rng(seed + 1)
    n = len(v)
    means = [v[rng.integers(0, n, n)].mean(axis=0) for _ in range(resamples)]
    a = (1 - level) / 2
    return np.quantile(means, a, axis=0), np.quantile(means, 1 - a, axis=0)


def test_bootstrap_matches_loop_and_normal_approximation():
    rng = np.random.default_rng(0)
    v = np.stack([rng.normal(3.0, 2.0, 400), (rng.random(400) < 0.3) * 100.0], axis=1)
    lo, hi = bootstrap_ci(v, resamples=4000, level=0.9, seed=1)
    llo, lhi = _loop_bootstrap(v, 4000, 0.9, 1)
    se = v.std(axis=0) / np.sqrt(len(v))
    z = st.norm.ppf(0.95)
    for j in range(2):  # Monte-Carlo error of a 5 % quantile of 4000 resamples: ~0.03 se
        assert lo[j] == pytest.approx(llo[j], abs=0.12 * se[j])
        assert hi[j] == pytest.approx(lhi[j], abs=0.12 * se[j])
        assert lo[j] == pytest.approx(v[:, j].mean() - z * se[j], abs=0.15 * se[j])
        assert hi[j] == pytest.approx(v[:, j].mean() + z * se[j], abs=0.15 * se[j])


def test_bootstrap_is_seeded_ignores_nan_and_handles_edges():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(50, 3))
    a = bootstrap_ci(v, resamples=200, seed=3)
    b = bootstrap_ci(v, resamples=200, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    w = v.copy()
    w[::5, 0] = np.nan  # nan items are left out, like nanmean
    lo, hi = bootstrap_ci(w, resamples=500, seed=0)
    assert lo[0] < np.nanmean(w[:, 0]) < hi[0]
    lo, hi = bootstrap_ci(np.full((10, 2), np.nan), resamples=50)
    assert np.isnan(lo).all() and np.isnan(hi).all()
    lo, hi = bootstrap_ci(np.ones(10) * 7.0, resamples=50)  # no spread: a point interval
    assert lo == pytest.approx(7.0) and hi == pytest.approx(7.0)
    lo, hi = bootstrap_ci(v, resamples=0)
    assert np.isnan(lo).all()


def test_bootstrap_covers_the_mean_at_its_level():
    rng = np.random.default_rng(2)
    x = rng.exponential(1.0, size=(200, 400))  # 400 independent experiments, true mean 1
    lo, hi = bootstrap_ci(x, resamples=400, level=0.9, seed=0)
    coverage = float(((lo <= 1.0) & (1.0 <= hi)).mean())
    assert 0.84 < coverage < 0.95


def test_permutation_test_matches_scipy_exact_and_controls_layers():
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 1.0, (5, 4))
    b = rng.normal(0.0, 1.0, (5, 4))
    a[:, 0] += 2.5  # a real difference at layer 0 only
    d, p, padj = permutation_test_layers(a, b, permutations=20000, seed=0)
    np.testing.assert_allclose(d, a.mean(0) - b.mean(0))
    for layer in range(4):
        ref = st.permutation_test(
            (a[:, layer], b[:, layer]),
            lambda x, y: np.mean(x) - np.mean(y),
            permutation_type="independent",
            alternative="two-sided",
            n_resamples=np.inf,
        ).pvalue
        assert p[layer] == pytest.approx(ref, abs=1e-12)  # C(10, 5) = 252: enumerated, exact
    assert p[0] < 0.02 and (padj >= p).all()
    # sampled relabellings (more than permutations) agree with the exact test
    _, ps, _ = permutation_test_layers(a, b, permutations=200, seed=0)
    np.testing.assert_allclose(ps, p, atol=0.1)
    # one member each: two relabellings, nothing can be significant (p = 1)
    _, p1, q1 = permutation_test_layers(a[:1], b[:1])
    np.testing.assert_array_equal(p1, 1.0)
    np.testing.assert_array_equal(q1, 1.0)
    # family-wise error under the null: max-statistic adjustment keeps it near alpha
    hits = 0
    for seed in range(200):
        r = np.random.default_rng(100 + seed)
        _, _, q = permutation_test_layers(
            r.normal(size=(8, 6)), r.normal(size=(8, 6)), permutations=199, seed=seed
        )
        hits += bool((q <= 0.05).any())
    assert hits / 200 < 0.09


def test_two_level_bootstrap_reduces_to_the_item_bootstrap_and_holds_the_runs():
    """One run: exactly :func:`bootstrap_ci`. Runs that differ by a constant: the interval
    spans the runs' means (each resample draws one run), much wider than any one run's."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 3))
    lo1, hi1 = bootstrap_ci(x, resamples=300, seed=2)
    lo, hi = bootstrap_runs_ci(x[None], resamples=300, seed=2)
    np.testing.assert_allclose(lo, lo1, atol=1e-12)  # the same resamples (sums reordered)
    np.testing.assert_allclose(hi, hi1, atol=1e-12)
    runs = np.stack([x[:, 0], x[:, 0] + 5.0])  # [2, 200]
    lo, hi = bootstrap_runs_ci(runs, resamples=400, seed=0)
    m = x[:, 0].mean()
    assert lo < m + 0.1 and hi > m + 4.9  # both runs' means lie inside
    single = bootstrap_ci(x[:, 0], resamples=400, seed=0)
    assert hi - lo > 10 * (single[1] - single[0])
    nan_lo, _ = bootstrap_runs_ci(runs, resamples=0)
    assert np.isnan(nan_lo)
    with pytest.raises(ValueError, match="runs, items"):
        bootstrap_runs_ci(np.zeros(3))


def test_settings_validation():
    assert settings_of(None) == (1000, 0.95, 0)
    assert settings_of({"bootstrap": 10}) == (10, 0.95, 0)
    with pytest.raises(ValueError, match="level"):
        settings_of({"level": 1.5})
    with pytest.raises(ValueError, match="a and b"):
        permutation_test_layers(np.zeros((3, 2)), np.zeros((3, 3)))
