"""Similarity measures against independent formulations, hand cases and claimed invariances."""

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group, spearmanr

from vitlib.metrics.cka import linear_cka as vitlib_unbiased_cka
from vitlib.metrics.similarity import (
    MEASURES,
    cknna,
    linear_cka,
    mutual_knn,
    procrustes_distance,
    rbf_cka,
    rsa,
    similarity,
    svcca,
)


@pytest.fixture()
def xy():
    r = np.random.default_rng(0)
    X = r.normal(size=(120, 16))
    Y = np.tanh(X @ r.normal(size=(16, 12))) + 0.5 * r.normal(size=(120, 12))
    return X, Y


def rot(d, seed=1):
    return ortho_group.rvs(d, random_state=seed)


# ---------------------------------------------------------------- independent references


def cka_gram_reference(X, Y, unbiased=False):
    """Textbook Gram/HSIC formulation with explicit centring matrix (no feature-space tricks)."""
    n = X.shape[0]
    K, L = X @ X.T, Y @ Y.T
    if not unbiased:
        H = np.eye(n) - np.ones((n, n)) / n

        def h(A, B):
            return np.trace(A @ H @ B @ H)
    else:

        def h(A, B):
            A, B = A.copy(), B.copy()
            np.fill_diagonal(A, 0)
            np.fill_diagonal(B, 0)
            one = np.ones(n)
            return (
                np.trace(A @ B)
                + (one @ A @ one) * (one @ B @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * (one @ A @ B @ one)
            ) / (n * (n - 3))

    return h(K, L) / np.sqrt(h(K, K) * h(L, L))


def kornblith_rbf_cka(X, Y, threshold=1.0):
    """Kornblith et al.'s CKA notebook (gram_rbf, center_gram, cka), transcribed."""

    def gram_rbf(x):
        dot = x @ x.T
        sq = np.diag(dot)
        d2 = -2 * dot + sq[:, None] + sq[None, :]
        return np.exp(-d2 / (2 * threshold**2 * np.median(d2)))

    def center_gram(g):
        g = g.copy()
        means = np.mean(g, 0)
        means -= np.mean(means) / 2
        g -= means[:, None]
        g -= means[None, :]
        return g

    gx, gy = center_gram(gram_rbf(X)), center_gram(gram_rbf(Y))
    return gx.ravel() @ gy.ravel() / (np.linalg.norm(gx) * np.linalg.norm(gy))


def brute_knn(X, k):
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    return np.argsort(-S, axis=1)[:, :k]


# platonic-rep (minyoungg/platonic-rep, metrics.py) transcribed in torch, for mutual_knn / cknna
def _pr_knn(f, topk):
    return (f @ f.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :topk]


def _pr_hsic_unbiased(K, L):
    m = K.shape[0]
    Kt = K.clone().fill_diagonal_(0)
    Lt = L.clone().fill_diagonal_(0)
    v = (
        torch.sum(Kt * Lt.T)
        + torch.sum(Kt) * torch.sum(Lt) / ((m - 1) * (m - 2))
        - 2 * torch.sum(torch.mm(Kt, Lt)) / (m - 2)
    )
    return v / (m * (m - 3))


def pr_mutual_knn(A, B, topk):
    A = torch.nn.functional.normalize(torch.as_tensor(A), p=2, dim=-1)
    B = torch.nn.functional.normalize(torch.as_tensor(B), p=2, dim=-1)
    ka, kb = _pr_knn(A, topk), _pr_knn(B, topk)
    n = ka.shape[0]
    r = torch.arange(n).unsqueeze(1)
    ma, mb = torch.zeros(n, n, dtype=A.dtype), torch.zeros(n, n, dtype=A.dtype)
    ma[r, ka] = 1.0
    mb[r, kb] = 1.0
    return ((ma * mb).sum(dim=1) / topk).mean().item()


def pr_cknna(A, B, topk):
    A = torch.nn.functional.normalize(torch.as_tensor(A), p=2, dim=-1)
    B = torch.nn.functional.normalize(torch.as_tensor(B), p=2, dim=-1)
    n = A.shape[0]
    K, L = A @ A.T, B @ B.T

    def sim(K, L):
        Kh = K.clone().fill_diagonal_(float("-inf"))
        Lh = L.clone().fill_diagonal_(float("-inf"))
        _, ik = torch.topk(Kh, topk, dim=1)
        _, il = torch.topk(Lh, topk, dim=1)
        mk = torch.zeros(n, n, dtype=K.dtype).scatter_(1, ik, 1)
        ml = torch.zeros(n, n, dtype=K.dtype).scatter_(1, il, 1)
        m = mk * ml
        return _pr_hsic_unbiased(m * K, m * L)

    return sim(K, L).item() / (torch.sqrt(sim(K, K) * sim(L, L)) + 1e-6).item()


# ---------------------------------------------------------------- linear CKA


def test_linear_cka_matches_gram_formulation(xy):
    X, Y = xy
    for unbiased in (False, True):
        ref = cka_gram_reference(X, Y, unbiased=unbiased)
        assert linear_cka(X, Y, debiased=unbiased) == pytest.approx(ref, abs=1e-12)
    # wide features (d > n) go through the Gram branch
    r = np.random.default_rng(3)
    A, B = r.normal(size=(10, 40)), r.normal(size=(10, 50))
    assert linear_cka(A, B) == pytest.approx(cka_gram_reference(A, B), abs=1e-12)
    assert linear_cka(A, B, debiased=True) == pytest.approx(
        cka_gram_reference(A, B, True), abs=1e-12
    )


def test_linear_cka_feature_space_formula(xy):
    X, Y = xy
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    ref = np.linalg.norm(Yc.T @ Xc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    assert linear_cka(X, Y) == pytest.approx(ref, abs=1e-12)


def test_debiased_matches_existing_vitlib_estimator(xy):
    X, Y = xy
    assert linear_cka(X, Y, debiased=True) == pytest.approx(
        vitlib_unbiased_cka(X, Y, unbiased=True), abs=1e-12
    )


def test_linear_cka_hand_case():
    # x = (1, 2, 3), y = (1, 4, 9): centred (−1, 0, 1) and (−11, −2, 13)/3; for 1-D features
    # CKA = corr² = (xc·yc)² / (|xc|² |yc|²) = 8² / (2 · 294/9) = 48/49
    x = np.array([[1.0], [2.0], [3.0]])
    assert linear_cka(x, x**2) == pytest.approx(48 / 49, abs=1e-14)


def test_linear_cka_invariances(xy):
    X, Y = xy
    Q = rot(X.shape[1])
    base = linear_cka(X, Y)
    assert linear_cka(X @ Q * 3.7 + 2.0, Y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(X, X @ Q) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X, X @ Q, debiased=True) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X, Y) == pytest.approx(linear_cka(Y, X), abs=1e-14)


def test_debiased_close_to_biased_for_large_n():
    r = np.random.default_rng(5)
    X = r.normal(size=(4000, 8))
    Y = X @ r.normal(size=(8, 6)) + r.normal(size=(4000, 6))
    b, u = linear_cka(X, Y), linear_cka(X, Y, debiased=True)
    assert abs(b - u) < 0.01


def test_debiased_unbiased_under_independence():
    b, u = [], []
    for seed in range(40):
        r = np.random.default_rng(100 + seed)
        X, Y = r.normal(size=(40, 10)), r.normal(size=(40, 10))
        b.append(linear_cka(X, Y))
        u.append(linear_cka(X, Y, debiased=True))
    assert np.mean(b) > 0.15  # biased estimator ≈ d/n-ish for independent features
    assert abs(np.mean(u)) < 0.01
    assert abs(np.mean(u)) < 0.1 * np.mean(b)


# ---------------------------------------------------------------- RBF CKA


def test_rbf_cka_matches_kornblith_notebook(xy):
    X, Y = xy
    for t in (0.5, 1.0, 2.0):
        assert rbf_cka(X, Y, sigma_frac=t) == pytest.approx(kornblith_rbf_cka(X, Y, t), abs=1e-10)


def test_rbf_cka_identity_and_invariances(xy):
    X, Y = xy
    assert rbf_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    base = rbf_cka(X, Y)
    assert rbf_cka(X @ rot(X.shape[1]) + 10.0, Y) == pytest.approx(base, abs=1e-10)
    assert rbf_cka(5.0 * X, Y) == pytest.approx(base, abs=1e-10)
    assert 0.0 < base < 1.0


# ---------------------------------------------------------------- neighbours


def test_mutual_knn_against_bruteforce_and_platonic_rep(xy):
    X, Y = xy
    for k in (1, 5, 10):
        nx, ny = brute_knn(X, k), brute_knn(Y, k)
        ref = np.mean([len(set(a) & set(b)) / k for a, b in zip(nx, ny)])
        got = mutual_knn(X, Y, k)
        assert got == pytest.approx(ref, abs=1e-15)
        assert got == pytest.approx(pr_mutual_knn(X, Y, k), abs=1e-15)


def test_mutual_knn_rotation_and_chance():
    r = np.random.default_rng(2)
    X = r.normal(size=(300, 20))
    assert mutual_knn(X, 2.5 * X @ rot(20), 10) == 1.0
    n, k = 400, 10
    vals = [mutual_knn(r.normal(size=(n, 16)), r.normal(size=(n, 16)), k) for _ in range(5)]
    assert np.mean(vals) == pytest.approx(k / (n - 1), abs=0.006)


def test_cknna_matches_platonic_rep(xy):
    X, Y = xy
    for k in (2, 5, 10, 30):
        ref = pr_cknna(X, Y, k)
        assert cknna(X, Y, k, eps=1e-6) == pytest.approx(ref, abs=1e-12)
    assert cknna(X, X, 10) == pytest.approx(1.0, abs=1e-12)
    assert cknna(X, X @ rot(16), 10) == pytest.approx(1.0, abs=1e-10)
    with pytest.raises(ValueError):
        cknna(X, Y, 1)


# ---------------------------------------------------------------- Procrustes


def test_procrustes_zero_symmetric_and_nuclear_norm(xy):
    X, Y = xy
    assert procrustes_distance(X, 0.3 * X @ rot(16) + 4.0) < 1e-7
    d = procrustes_distance(X, Y)
    assert d == pytest.approx(procrustes_distance(Y, X), abs=1e-12)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Xc, Yc = Xc / np.linalg.norm(Xc), Yc / np.linalg.norm(Yc)
    ref = np.arccos(np.linalg.norm(Xc.T @ Yc, ord="nuc"))
    assert d == pytest.approx(ref, abs=1e-12)
    assert 0 < d <= np.pi / 2


def test_procrustes_hand_2d_case():
    X = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    Y = np.array([[1.0, 0], [-1, 0], [0, 2], [0, -2]])
    # XᵀY = diag(2, 4); ||X||² = 4, ||Y||² = 10 → cos θ = 6 / sqrt(40) = 3 / sqrt(10)
    assert procrustes_distance(X, Y) == pytest.approx(np.arccos(3 / np.sqrt(10)), abs=1e-14)
    # width mismatch: zero padding, a 1-D copy of X's first axis
    Z = X[:, :1]
    assert procrustes_distance(X, Z) == pytest.approx(np.arccos(2 / np.sqrt(8)), abs=1e-14)


# ---------------------------------------------------------------- RSA / SVCCA


def test_rsa_against_scipy_and_invariances(xy):
    X, Y = xy
    rx, ry = 1 - np.corrcoef(X), 1 - np.corrcoef(Y)
    iu = np.triu_indices(len(X), 1)
    assert rsa(X, Y) == pytest.approx(spearmanr(rx[iu], ry[iu]).statistic, abs=1e-12)
    assert rsa(X, Y, method="pearson") == pytest.approx(
        np.corrcoef(rx[iu], ry[iu])[0, 1], abs=1e-12
    )
    assert rsa(X, 3.0 * X - 1.0) == pytest.approx(1.0, abs=1e-12)
    assert rsa(X, 3.0 * X, method="pearson") == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError):
        rsa(X, Y, method="kendall")  # type: ignore[arg-type]


def test_svcca_reference_and_identities(xy):
    X, Y = xy
    assert svcca(X, X @ rot(16) * 2.0) == pytest.approx(1.0, abs=1e-10)
    # keep=1: mean canonical correlation of the full centred spaces, via whitened cross-cov
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)

    def inv_sqrt(C):
        w, V = np.linalg.eigh(C)
        return V @ np.diag(w**-0.5) @ V.T

    M = inv_sqrt(Xc.T @ Xc) @ Xc.T @ Yc @ inv_sqrt(Yc.T @ Yc)
    ref = np.linalg.svd(M, compute_uv=False).mean()
    assert svcca(X, Y, keep=1.0) == pytest.approx(ref, abs=1e-10)
    # rank-deficient X (a duplicated column) is fine and finite
    Xd = np.hstack([X, X[:, :1]])
    assert np.isfinite(svcca(Xd, Y))


# ---------------------------------------------------------------- safety and dispatch


@pytest.mark.parametrize("measure", MEASURES)
def test_constant_features_give_nan_without_warnings(measure, xy):
    X, _ = xy
    C = np.full((X.shape[0], 5), 0.1)
    kw = {"k": 5} if measure in ("mutual_knn", "cknna") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(similarity(C, X, measure, **kw))
        assert np.isnan(similarity(X, C, measure, **kw))
        # rank-deficient (one informative column plus constant/duplicated ones) stays finite
        R = np.hstack([X[:, :1], C[:, :2], 2 * X[:, :1]])
        assert np.isfinite(similarity(R, X, measure, **kw))


def test_constant_column_does_not_perturb_cka(xy):
    X, Y = xy
    Xp = np.hstack([X, np.full((len(X), 1), 1e6 + 0.1)])
    assert linear_cka(Xp, Y) == pytest.approx(linear_cka(X, Y), abs=1e-12)


def test_dispatch_and_validation(xy):
    X, Y = xy
    assert similarity(X, Y, "linear_cka", debiased=True) == linear_cka(X, Y, debiased=True)
    assert set(MEASURES) == {
        "linear_cka",
        "rbf_cka",
        "mutual_knn",
        "cknna",
        "procrustes_distance",
        "rsa",
        "svcca",
    }
    with pytest.raises(ValueError):
        similarity(X, Y, "nope")
    with pytest.raises(ValueError):
        linear_cka(X, Y[:-1])
    with pytest.raises(ValueError):
        linear_cka(X, np.where(Y > 2, np.nan, Y))
    with pytest.raises(ValueError):
        mutual_knn(X, Y, len(X))
