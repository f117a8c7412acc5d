"""The similarity suite against the single-pair measures, PWCCA against an independent
formulation (CCA by covariance whitening), and the permutation machinery."""

import numpy as np
import pytest
from scipy.linalg import sqrtm

from vitlib.metrics.similarity import similarity
from vitlib.metrics.similarity_suite import (
    SUITE_MEASURES,
    LayerReps,
    SuiteOptions,
    pair_grids,
    pwcca,
)


def _single(x, y, m, opt):
    if m == "linear_cka_debiased":
        return similarity(x, y, "linear_cka", debiased=True)
    if m == "pwcca":
        return pwcca(x, y)
    kw = {
        "mutual_knn": {"k": opt.k},
        "cknna": {"k": opt.k},
        "rbf_cka": {"sigma_frac": opt.sigma_frac},
        "svcca": {"keep": opt.keep},
        "rsa": {"method": opt.rsa_method},
    }.get(m, {})
    return similarity(x, y, m, **kw)


def _layers(rng, n, dims, noise=0.5):
    base = rng.normal(size=(n, 6))
    return [np.tanh(base @ rng.normal(size=(6, d)) + noise * rng.normal(size=(n, d))) for d in dims]


@pytest.mark.parametrize(
    "rsa_method, n, dx, dy",
    [("spearman", 40, [5, 7, 5], [4, 4]), ("pearson", 12, [30, 20, 30], [25, 25])],
    ids=["feature-space", "gram-space"],  # the two routes of linear CKA
)
def test_grids_equal_single_pair_measures(rsa_method, n, dx, dy):
    rng = np.random.default_rng(0)
    xs = _layers(rng, n, dx)
    ys = _layers(rng, n, dy)
    ys.append(np.ones((n, 4)))  # a constant layer: nan where the measures say nan
    opt = SuiteOptions(k=4, rsa_method=rsa_method)
    rx, ry = LayerReps(xs, options=opt), LayerReps(ys, options=opt)
    perms = np.stack([rng.permutation(n) for _ in range(2)])
    grids = pair_grids(rx, ry, perms)
    assert set(grids) == set(SUITE_MEASURES)
    for m, g in grids.items():
        assert g.shape == (3, 3, 3)
        for p, pi in enumerate([np.arange(n), *perms]):
            for a, x in enumerate(xs):
                for b, y in enumerate(ys):
                    want = _single(x, y[pi], m, opt)
                    got = g[p, a, b]
                    if np.isnan(want):
                        assert np.isnan(got), (m, p, a, b)
                    else:
                        assert got == pytest.approx(want, abs=1e-9), (m, p, a, b)


def test_within_model_grid_is_symmetric_with_unit_diagonal():
    rng = np.random.default_rng(1)
    xs = _layers(rng, 30, [6, 6, 6])
    r = LayerReps(np.stack(xs, axis=1), options=SuiteOptions(k=4))
    g = pair_grids(r, r)
    for m, v in g.items():
        v = v[0]
        if m not in ("cknna", "pwcca"):  # not symmetric by definition (see below)
            np.testing.assert_allclose(v, v.T, atol=1e-9, err_msg=m)
        diag = np.diag(v)
        np.testing.assert_allclose(diag, 0.0 if m == "procrustes_distance" else 1.0, atol=2e-7)
    # CKNNA's cross term Σ_j (K̃ᵀ1)_j (L̃1)_j on non-symmetric masked kernels is not symmetric
    # in (K, L): the suite reproduces the single-pair function in both orders
    x, y = xs[0], xs[1]
    assert g["cknna"][0, 0, 1] == pytest.approx(similarity(x, y, "cknna", k=4), abs=1e-12)
    assert g["cknna"][0, 1, 0] == pytest.approx(similarity(y, x, "cknna", k=4), abs=1e-12)
    # PWCCA weights the correlations by the projections of one side (X on equal widths)
    assert g["pwcca"][0, 0, 1] == pytest.approx(pwcca(x, y), abs=1e-12)
    assert g["pwcca"][0, 1, 0] == pytest.approx(pwcca(y, x), abs=1e-12)


def _pwcca_whitening(x, y):
    """Independent PWCCA: CCA by whitening the covariance matrices, canonical variates
    h = Xc Σxx^{-1/2} u, weights Σ_j |⟨h_i/|h_i|, x_j⟩| on the side with fewer neurons."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    sxx, syy, sxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    wx = np.linalg.inv(np.real(sqrtm(sxx)))
    wy = np.linalg.inv(np.real(sqrtm(syy)))
    u, rho, vt = np.linalg.svd(wx @ sxy @ wy, full_matrices=False)
    if xc.shape[1] <= yc.shape[1]:
        h, acts = xc @ wx @ u, xc
    else:
        h, acts = yc @ wy @ vt.T, yc
    h = h / np.linalg.norm(h, axis=0)
    alpha = np.abs(h.T @ acts).sum(axis=1)
    return float(alpha @ rho / alpha.sum())


def test_pwcca_matches_whitening_formulation_and_identities():
    rng = np.random.default_rng(2)
    for dx, dy in [(3, 5), (6, 4), (5, 5)]:
        x = rng.normal(size=(200, dx))
        y = np.hstack([x[:, :2] @ rng.normal(size=(2, 2)), rng.normal(size=(200, dy - 2))])
        y += 0.3 * rng.normal(size=y.shape)
        assert pwcca(x, y) == pytest.approx(_pwcca_whitening(x, y), abs=1e-10)
    x = rng.normal(size=(100, 4))
    a = rng.normal(size=(4, 4))
    assert pwcca(x, x @ a + 3.0) == pytest.approx(1.0, abs=1e-10)  # invertible linear map
    # equal canonical correlations: the weights do not matter, PWCCA = ρ = SVCCA(keep=1)
    z = rng.normal(size=(5000, 2))
    e = rng.normal(size=(5000, 2))
    x, y = z, 0.6 * z + 0.8 * e
    assert pwcca(x, y) == pytest.approx(similarity(x, y, "svcca", keep=1.0), abs=1e-3)
    assert np.isnan(pwcca(np.ones((10, 3)), x[:10]))


def test_null_of_independent_layers_is_centred_on_chance():
    """Under the permutation null, mutual k-NN has mean k/(n−1) and the RSA correlation
    mean ≈ 0 (exact expectations over permutations); unbiased CKA ≈ 0."""
    rng = np.random.default_rng(3)
    n, k = 60, 5
    xs = _layers(rng, n, [8])
    opt = SuiteOptions(k=k)
    r = LayerReps(xs, options=opt)
    perms = np.stack([rng.permutation(n) for _ in range(300)])
    g = pair_grids(r, r, perms)
    null = {m: v[1:, 0, 0] for m, v in g.items()}
    assert null["mutual_knn"].mean() == pytest.approx(k / (n - 1), rel=0.1)
    assert abs(null["rsa"].mean()) < 0.01
    assert abs(null["linear_cka_debiased"].mean()) < 0.01
    for m in SUITE_MEASURES:  # the observed (identity) value beats every shuffled one
        obs = g[m][0, 0, 0]
        beaten = null[m] <= obs if m == "procrustes_distance" else null[m] >= obs
        assert not beaten.any(), m


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="layer 1"):
        LayerReps([np.zeros((5, 2)), np.full((5, 2), np.nan)])
    with pytest.raises(ValueError, match="unknown measures"):
        LayerReps([np.zeros((5, 2))], measures=["cka"])
    r = LayerReps([np.random.default_rng(0).normal(size=(6, 2))], options=SuiteOptions(k=2))
    with pytest.raises(ValueError, match="perms"):
        pair_grids(r, r, np.zeros((1, 5), np.int64))


def test_packed_halves_of_a_permuted_symmetric_matrix():
    """The packed layout (diagonal, then the strict upper triangle) of ``B[π, π]`` is a
    gather of the packed ``B``, and ``⟨A, B⟩_F`` is the diagonal products plus twice the
    upper ones."""
    from vitlib.metrics.similarity_suite import _pack, _packed_index

    rng = np.random.default_rng(3)
    n = 9
    a, b = rng.normal(size=(2, n, n))
    a, b = a + a.T, b + b.T
    pi = rng.permutation(n)
    assert np.array_equal(_pack(b)[_packed_index(pi)], _pack(b[np.ix_(pi, pi)]))
    pa, pb = _pack(a), _pack(b)
    assert pa[:n] @ pb[:n] + 2 * (pa[n:] @ pb[n:]) == pytest.approx(float((a * b).sum()))
