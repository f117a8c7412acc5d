"""Representational-similarity measures between two feature matrices.

Every function takes ``X`` ``[n, d1]`` and ``Y`` ``[n, d2]`` whose rows are the *same* ``n``
images (any widths) and returns a Python ``float``. All arithmetic is float64 and
vectorised (no Python loop over images; FAISS for nearest neighbours).

Numerical safety
----------------
A measure that is mathematically undefined on the given inputs (e.g. CKA when one side has
no variance at all, RSA when an image's feature vector is constant) returns ``nan`` -- the
documented flag -- and never raises, warns or returns ``inf``. Columns whose centred values
are at round-off level relative to their magnitude (constant features) are treated as
exactly constant, so a constant column never turns into amplified round-off noise.
Rank-deficient but non-constant features give ordinary finite values. Non-finite input
values raise :class:`ValueError` (they are a caller bug, not a degenerate representation).

Measures (``MEASURES``)
-----------------------
``linear_cka``           Kornblith et al. 2019; ``debiased=True``: Song et al. 2012 unbiased
                         HSIC as in Nguyen et al. 2021.
``rbf_cka``              RBF-kernel CKA, bandwidth from the median heuristic of Kornblith's
                         notebook.
``mutual_knn``           Huh et al. 2024 mutual k-NN alignment (platonic-rep).
``cknna``                Huh et al. 2024 CKNNA (platonic-rep ``AlignmentMetrics.cknna``).
``procrustes_distance``  Williams et al. 2021 angular shape metric (netrep ``LinearMetric``
                         with ``alpha=1``, ``score_method="angular"``), in radians.
``rsa``                  Kriegeskorte et al. 2008 correlation of RDMs.
``svcca``                Raghu et al. 2017 SVCCA (mean canonical correlation).

Only ``procrustes_distance`` is a distance (0 = identical up to rotation/scale); all the
others are similarities with 1 = identical.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "MEASURES",
    "cknna",
    "linear_cka",
    "mutual_knn",
    "procrustes_distance",
    "rbf_cka",
    "rsa",
    "similarity",
    "svcca",
]

F64 = NDArray[np.float64]
_EPS = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------- helpers


def _pair(X: ArrayLike, Y: ArrayLike, min_n: int = 2) -> tuple[F64, F64]:
    """Validate and convert a pair of feature matrices to float64 ``[n, d]`` arrays."""
    x = np.asarray(X, dtype=np.float64)
    y = np.asarray(Y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"X and Y must be 2-D [n, d]; got shapes {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"X and Y must have the same rows (images): {x.shape[0]} != {y.shape[0]}")
    if x.shape[0] < min_n:
        raise ValueError(f"need at least {min_n} rows, got {x.shape[0]}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("X and Y must be finite (found NaN or inf)")
    return x, y


def _center(x: F64) -> F64:
    """Column-centre ``x``; columns constant up to round-off become exactly zero."""
    xc = x - x.mean(axis=0, keepdims=True)
    n = x.shape[0]
    tol = 8.0 * max(n, 16) * _EPS * np.abs(x).max(axis=0)
    flat = np.abs(xc).max(axis=0) <= tol
    if flat.any():
        xc[:, flat] = 0.0
    return xc


def _ratio(num: float, den_sq: float) -> float:
    """``num / sqrt(den_sq)``, or ``nan`` when the denominator is not strictly positive."""
    if not np.isfinite(den_sq) or den_sq <= 0.0 or not np.isfinite(num):
        return float("nan")
    return float(num / np.sqrt(den_sq))


def _l2_rows(x: F64) -> F64:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (cosine 0 to everything)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _rows_all_equal(x: F64) -> bool:
    """True when every row equals the first (up to round-off): neighbours are undefined."""
    scale = max(float(np.abs(x).max()), 1e-300)
    return bool(np.abs(x - x[:1]).max() <= 64 * _EPS * scale)


def _hsic_u_linear(x: F64, y: F64) -> float:
    """Unbiased HSIC (Song et al. 2012, eq. 5) of the linear Grams ``K = x xᵀ``, ``L = y yᵀ``,
    times ``n (n − 3)``, computed in feature space without forming ``n × n`` matrices."""
    n = x.shape[0]
    kd = np.einsum("ij,ij->i", x, x)  # diag K
    ld = np.einsum("ij,ij->i", y, y)
    # tr(K̃ L̃) = Σ_{i≠j} K_ij L_ij = ||xᵀ y||²_F − Σ_i K_ii L_ii
    tr = _frob_sq_cross(x, y) - float(kd @ ld)
    k1 = x @ x.sum(axis=0) - kd  # K̃ 1
    l1 = y @ y.sum(axis=0) - ld
    sk = float(k1.sum())
    sl = float(l1.sum())
    return tr + sk * sl / ((n - 1) * (n - 2)) - 2.0 * float(k1 @ l1) / (n - 2)


def _frob_sq_cross(x: F64, y: F64) -> float:
    """``||xᵀ y||²_F = tr(x xᵀ y yᵀ)``, through whichever side is cheaper."""
    n = x.shape[0]
    if x.shape[1] * y.shape[1] <= n * n:
        m = x.T @ y
        return float(np.einsum("ij,ij->", m, m))
    return float(np.einsum("ij,ij->", x @ x.T, y @ y.T))


def _hsic_u_gram(K: F64, L: F64) -> float:
    """Unbiased HSIC of (possibly non-symmetric) kernels, times ``n (n − 3)``, exactly as
    platonic-rep's ``hsic_unbiased`` (``tr(K̃ L̃)`` written as ``Σ K̃ ∘ L̃ᵀ``)."""
    n = K.shape[0]
    Kt = K.copy()
    Lt = L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    tr = float(np.einsum("ij,ji->", Kt, Lt))
    return (
        tr
        + float(Kt.sum()) * float(Lt.sum()) / ((n - 1) * (n - 2))
        - 2.0 * float(Kt.sum(axis=0) @ Lt.sum(axis=1)) / (n - 2)
    )


def _knn(xn: F64, k: int) -> NDArray[np.int64]:
    """Indices ``[n, k]`` of each row's ``k`` largest inner products, self excluded (FAISS
    ``IndexFlatIP``; ties broken by FAISS order)."""
    import faiss  # local: keeps importing this module cheap

    n, d = xn.shape
    xf = np.ascontiguousarray(xn, dtype=np.float32)
    index = faiss.IndexFlatIP(d)
    index.add(xf)
    _, idx = index.search(xf, k + 1)
    idx = idx.astype(np.int64)
    is_self = idx == np.arange(n)[:, None]
    # drop self where FAISS returned it; otherwise (ties) drop the (k+1)-th hit
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    return idx[keep].reshape(n, k)


def _knn_mask(idx: NDArray[np.int64], n: int) -> NDArray[np.bool_]:
    mask = np.zeros((n, n), dtype=bool)
    mask[np.arange(n)[:, None], idx] = True
    return mask


def _check_k(k: int, n: int) -> int:
    k = int(k)
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, n − 1] = [1, {n - 1}], got {k}")
    return k


# --------------------------------------------------------------------------- CKA


def linear_cka(X: ArrayLike, Y: ArrayLike, *, debiased: bool = False) -> float:
    """Linear centred kernel alignment.

    Parameters
    ----------
    X, Y : array_like, shapes ``[n, d1]`` and ``[n, d2]``
        Features of the same ``n`` images (rows).
    debiased : bool, default False
        ``False``: the original (biased) estimator of Kornblith et al. (2019),
        ``||Ycᵀ Xc||²_F / (||Xcᵀ Xc||_F ||Ycᵀ Yc||_F)`` on column-centred features, equal to
        ``HSIC_b(K, L) / sqrt(HSIC_b(K, K) HSIC_b(L, L))`` with linear Grams.
        ``True``: the same ratio with the unbiased HSIC estimator of Song et al. (2012, eq. 5)
        -- "debiased CKA" (Nguyen et al. 2021); needs ``n >= 4``. Its expectation for
        independent features is ≈ 0, whereas the biased value is positive (≈ d/n) then.

    Returns
    -------
    float
        In ``[0, 1]`` for the biased estimator (the debiased one can be slightly negative).
        ``nan`` when either side has no variance (every feature constant), and for the
        debiased estimator also when a self-HSIC estimate is not positive.

    Notes
    -----
    Invariant to orthogonal transforms and isotropic scaling of either side and to
    translations. Computed in feature space (``O(n d²)``) or through ``n × n`` Grams,
    whichever is cheaper; no ``n × n`` matrix when ``d1 d2 <= n²``.

    References
    ----------
    Kornblith, Norouzi, Lee, Hinton (2019). Similarity of Neural Network Representations
    Revisited. ICML.
    Song, Smola, Gretton, Bedo, Borgwardt (2012). Feature Selection via Dependence
    Maximization. JMLR 13.
    Nguyen, Raghu, Kornblith (2021). Do Wide and Deep Networks Learn the Same Things? ICLR.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(12.0).reshape(6, 2) ** 2
    >>> round(linear_cka(X, 3.0 * X), 12)
    1.0
    """
    x, y = _pair(X, Y, min_n=4 if debiased else 2)
    xc, yc = _center(x), _center(y)
    if debiased:
        hxy = _hsic_u_linear(xc, yc)
        hxx = _hsic_u_linear(xc, xc)
        hyy = _hsic_u_linear(yc, yc)
        if not (hxx > 0.0 and hyy > 0.0):
            return float("nan")
        return _ratio(hxy, hxx * hyy)
    return _ratio(_frob_sq_cross(xc, yc), _frob_sq_cross(xc, xc) * _frob_sq_cross(yc, yc))


def _rbf_gram(xc: F64, sigma_frac: float) -> F64 | None:
    """RBF Gram with Kornblith's median heuristic, or ``None`` when the bandwidth is 0."""
    sq = np.einsum("ij,ij->i", xc, xc)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (xc @ xc.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    med = float(np.median(d2))
    if not med > 0.0:
        return None
    return np.exp(-d2 / (2.0 * sigma_frac**2 * med))


def _center_gram(K: F64) -> F64:
    """``H K H`` with ``H = I − 11ᵀ/n``."""
    m = K.mean(axis=0)
    return K - m[:, None] - m[None, :] + m.mean()


def rbf_cka(X: ArrayLike, Y: ArrayLike, *, sigma_frac: float = 1.0) -> float:
    """CKA with Gaussian (RBF) kernels and the median-distance bandwidth.

    ``K_ij = exp(−||x_i − x_j||² / (2 σ²))`` with ``σ² = sigma_frac² · median_ij ||x_i −
    x_j||²`` -- the median taken over all ``n²`` entries of the squared-distance matrix
    (diagonal zeros included), exactly as ``gram_rbf(x, threshold=sigma_frac)`` in Kornblith's
    CKA notebook; same for ``L`` on ``Y``. Then ``CKA = ⟨HKH, HLH⟩_F / (||HKH||_F ||HLH||_F)``
    (biased HSIC).

    Parameters
    ----------
    X, Y : array_like, shapes ``[n, d1]`` and ``[n, d2]``
    sigma_frac : float, default 1.0
        Bandwidth as a fraction of the median pairwise distance (Kornblith's ``threshold``).

    Returns
    -------
    float
        In ``[0, 1]``; ``nan`` when the median pairwise distance of either side is 0
        (constant features, or more than half of all pairs coincide) so no bandwidth exists.

    Notes
    -----
    Invariant to translations, orthogonal transforms and isotropic scaling (the bandwidth
    scales with the data). Forms ``n × n`` matrices: ``O(n² d)`` time, ``O(n²)`` memory.

    References
    ----------
    Kornblith, Norouzi, Lee, Hinton (2019). Similarity of Neural Network Representations
    Revisited. ICML (and its accompanying ``CKA.ipynb`` notebook).
    """
    if not sigma_frac > 0:
        raise ValueError(f"sigma_frac must be > 0, got {sigma_frac}")
    x, y = _pair(X, Y)
    K = _rbf_gram(_center(x), sigma_frac)
    L = _rbf_gram(_center(y), sigma_frac)
    if K is None or L is None:
        return float("nan")
    Kc, Lc = _center_gram(K), _center_gram(L)
    num = float(np.einsum("ij,ij->", Kc, Lc))
    return _ratio(num, float(np.einsum("ij,ij->", Kc, Kc)) * float(np.einsum("ij,ij->", Lc, Lc)))


# --------------------------------------------------------------------------- neighbours


def mutual_knn(X: ArrayLike, Y: ArrayLike, k: int = 10, *, normalize: bool = True) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024).

    ``mean_i |N_k^X(i) ∩ N_k^Y(i)| / k`` where ``N_k^X(i)`` are the ``k`` rows of ``X`` with the
    largest cosine similarity to row ``i`` (rows L2-normalised first, ``i`` itself excluded),
    as platonic-rep's ``AlignmentMetrics.mutual_knn`` applied through its ``compute_score``
    (which normalises rows by default). Neighbours come from FAISS ``IndexFlatIP``.

    Parameters
    ----------
    X, Y : array_like, shapes ``[n, d1]`` and ``[n, d2]``
    k : int, default 10
        Neighbours per image, ``1 <= k <= n − 1``.
    normalize : bool, default True
        L2-normalise rows (cosine neighbours). ``False`` uses raw inner products.

    Returns
    -------
    float
        In ``[0, 1]``; ≈ ``k / (n − 1)`` for independent features. ``nan`` when all rows of
        ``X`` or of ``Y`` are identical (after normalisation), where neighbours are undefined.
        Other ties are broken by FAISS order; all-zero rows have similarity 0 to every row.

    References
    ----------
    Huh, Cheung, Wang, Isola (2024). The Platonic Representation Hypothesis. ICML.
    """
    x, y = _pair(X, Y)
    n = x.shape[0]
    k = _check_k(k, n)
    if normalize:
        x, y = _l2_rows(x), _l2_rows(y)
    if _rows_all_equal(x) or _rows_all_equal(y):
        return float("nan")
    ix, iy = _knn(x, k), _knn(y, k)
    # |N_X(i) ∩ N_Y(i)|: compare the two k-lists of every row ([n, k, k] booleans)
    hits = (ix[:, :, None] == iy[:, None, :]).any(axis=2).sum(axis=1)
    return float(hits.mean() / k)


def cknna(
    X: ArrayLike,
    Y: ArrayLike,
    k: int = 10,
    *,
    normalize: bool = True,
    eps: float = 0.0,
) -> float:
    """CKNNA: CKA restricted to mutual nearest-neighbour pairs (Huh et al. 2024).

    Follows platonic-rep's ``AlignmentMetrics.cknna`` (``unbiased=True``,
    ``distance_agnostic=False``): with ``K = X̂X̂ᵀ``, ``L = ŶŶᵀ`` (rows L2-normalised when
    ``normalize``; kernels *not* centred), ``M_X`` the 0/1 mask of each row's ``k``
    nearest neighbours under ``K`` (self excluded), ``M = M_X ∘ M_Y``,

        s(K, L) = HSIC_u(M ∘ K, M ∘ L),   CKNNA = s(K, L) / (sqrt(s(K, K) s(L, L)) + eps)

    where ``s(K, K)`` uses the mask ``M_X`` alone and ``HSIC_u`` is Song et al.'s unbiased
    estimator written for non-symmetric matrices (``tr(K̃ L̃)``).

    Parameters
    ----------
    X, Y : array_like, shapes ``[n, d1]`` and ``[n, d2]``, ``n >= 4``
    k : int, default 10
        Neighbours per image, ``2 <= k <= n − 1`` (platonic-rep rejects ``k < 2``).
    normalize : bool, default True
        L2-normalise rows first (platonic-rep's ``compute_score`` default).
    eps : float, default 0.0
        Added to the denominator. platonic-rep adds ``1e-6``; pass ``eps=1e-6`` to reproduce
        its numbers bit for bit. The default 0 gives the exact ratio (and ``nan`` instead
        of a silently deflated value when the denominator vanishes).

    Returns
    -------
    float
        ``nan`` when all rows of one side are identical, or when ``s(K, K) s(L, L) <= 0`` and
        ``eps == 0``.

    Notes
    -----
    Builds ``n × n`` matrices (``O(n² d)``); neighbours from FAISS ``IndexFlatIP``.

    References
    ----------
    Huh, Cheung, Wang, Isola (2024). The Platonic Representation Hypothesis. ICML.
    Song et al. (2012). Feature Selection via Dependence Maximization. JMLR 13.
    """
    x, y = _pair(X, Y, min_n=4)
    n = x.shape[0]
    k = _check_k(k, n)
    if k < 2:
        raise ValueError("CKNNA requires k >= 2")
    if normalize:
        x, y = _l2_rows(x), _l2_rows(y)
    if _rows_all_equal(x) or _rows_all_equal(y):
        return float("nan")
    K, L = x @ x.T, y @ y.T
    mx, my = _knn_mask(_knn(x, k), n), _knn_mask(_knn(y, k), n)
    m = mx & my
    s_kl = _hsic_u_gram(np.where(m, K, 0.0), np.where(m, L, 0.0))
    s_kk = _hsic_u_gram(np.where(mx, K, 0.0), np.where(mx, K, 0.0))
    s_ll = _hsic_u_gram(np.where(my, L, 0.0), np.where(my, L, 0.0))
    scale = 1.0 / (n * (n - 3))  # the estimator's normalisation, kept for eps to match
    s_kl, s_kk, s_ll = s_kl * scale, s_kk * scale, s_ll * scale
    prod = s_kk * s_ll
    if eps == 0.0:
        return _ratio(s_kl, prod)
    if not prod >= 0.0:
        return float("nan")
    return float(s_kl / (np.sqrt(prod) + eps))


# --------------------------------------------------------------------------- shape / RSA / CCA


def procrustes_distance(X: ArrayLike, Y: ArrayLike) -> float:
    """Angular Procrustes shape distance (Williams et al. 2021), in radians.

    Centre the columns, scale each matrix to unit Frobenius norm, zero-pad the narrower to
    equal width, and return ``θ = arccos(||X̂ᵀ Ŷ||_*)`` (nuclear norm) -- the angle after the
    optimal orthogonal alignment, as netrep's ``LinearMetric(alpha=1, center_columns=True,
    score_method="angular")``. Evaluated as ``2 arcsin(||X̂R − Ŷ||_F / 2)`` with the optimal
    rotation ``R`` (identical in exact arithmetic, but accurate near θ = 0 where arccos loses
    half the digits).

    Parameters
    ----------
    X, Y : array_like, shapes ``[n, d1]`` and ``[n, d2]``

    Returns
    -------
    float
        In ``[0, π/2]``: 0 iff ``Y`` is a rotation/reflection and isotropic scaling (plus a
        translation) of ``X``. Symmetric and a metric. ``nan`` when either side has no
        variance.

    References
    ----------
    Williams, Kunz, Kornblith, Linderman (2021). Generalized Shape Metrics on Neural
    Representations. NeurIPS.
    """
    x, y = _pair(X, Y)
    xc, yc = _center(x), _center(y)
    nx, ny = float(np.linalg.norm(xc)), float(np.linalg.norm(yc))
    if not (nx > 0.0 and ny > 0.0):
        return float("nan")
    xc, yc = xc / nx, yc / ny
    d = max(xc.shape[1], yc.shape[1])
    if xc.shape[1] < d:
        xc = np.pad(xc, ((0, 0), (0, d - xc.shape[1])))
    if yc.shape[1] < d:
        yc = np.pad(yc, ((0, 0), (0, d - yc.shape[1])))
    u, _, vt = np.linalg.svd(xc.T @ yc)
    resid = float(np.linalg.norm(xc @ (u @ vt) - yc))
    return float(2.0 * np.arcsin(min(resid / 2.0, 1.0)))


def _rdm_upper(x: F64) -> F64 | None:
    """Upper triangle of ``1 − corr(rows)``, or ``None`` if some row has no variance."""
    xc = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(xc, axis=1)
    scale = np.abs(x).max(axis=1)
    if np.any(norm <= 8.0 * max(x.shape[1], 16) * _EPS * scale) or np.any(norm == 0.0):
        return None
    z = xc / norm[:, None]
    iu = np.triu_indices(x.shape[0], k=1)
    return 1.0 - (z @ z.T)[iu]


def _pearson(a: F64, b: F64) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return _ratio(float(a @ b), float(a @ a) * float(b @ b))


def rsa(
    X: ArrayLike, Y: ArrayLike, *, method: Literal["spearman", "pearson"] = "spearman"
) -> float:
    """Representational similarity analysis: correlation of the two RDMs.

    ``RDM_ij = 1 − pearson(x_i, x_j)`` (correlation distance between images ``i`` and ``j``
    across features); the two RDMs' upper triangles (``i < j``) are compared with Spearman's
    rank correlation (ties get average ranks, as ``scipy.stats.spearmanr``) or Pearson's.

    Parameters
    ----------
    X, Y : array_like, shapes ``[n, d1]`` and ``[n, d2]``, ``n >= 3``, ``d >= 2``
    method : {"spearman", "pearson"}, default "spearman"

    Returns
    -------
    float
        In ``[−1, 1]``. ``nan`` when some image's feature vector is constant (its correlation
        distance is undefined) or when one RDM is constant.

    Notes
    -----
    Invariant to per-image affine maps ``x_i → a x_i + b`` (a > 0) and to global scaling.
    Forms ``n × n`` matrices.

    References
    ----------
    Kriegeskorte, Mur, Bandettini (2008). Representational similarity analysis -- connecting
    the branches of systems neuroscience. Front. Syst. Neurosci. 2:4.
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    x, y = _pair(X, Y, min_n=3)
    a, b = _rdm_upper(x), _rdm_upper(y)
    if a is None or b is None:
        return float("nan")
    if method == "spearman":
        from scipy.stats import rankdata

        a, b = rankdata(a).astype(np.float64), rankdata(b).astype(np.float64)
    return _pearson(a, b)


def _svd_keep(xc: F64, keep: float) -> F64 | None:
    """Top singular directions ``U_r S_r`` explaining ``keep`` of the variance."""
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    var = s**2
    total = float(var.sum())
    if not total > 0.0:
        return None
    tol = max(xc.shape) * _EPS * float(s[0])
    rank = int((s > tol).sum())
    r = int(np.searchsorted(np.cumsum(var) / total, keep - 1e-12) + 1)
    r = max(1, min(r, rank))
    return u[:, :r] * s[:r]


def svcca(X: ArrayLike, Y: ArrayLike, *, keep: float = 0.99) -> float:
    """Singular-vector canonical correlation analysis (Raghu et al. 2017).

    Centre the columns, keep each side's top singular directions explaining a fraction
    ``keep`` of its variance (squared singular values), then return the mean of the
    canonical correlations between the two reduced subspaces (the singular values of
    ``Q_Xᵀ Q_Y`` with ``Q`` orthonormal bases; ``min(r_X, r_Y)`` of them).

    Parameters
    ----------
    X, Y : array_like, shapes ``[n, d1]`` and ``[n, d2]``
    keep : float, default 0.99
        Variance fraction kept by the SVD step, in ``(0, 1]``.

    Returns
    -------
    float
        In ``[0, 1]``; ``nan`` when either side has no variance. Canonical correlations are
        only meaningful when ``n`` clearly exceeds the kept dimensions (otherwise they tend
        to 1).

    References
    ----------
    Raghu, Gilmer, Yosinski, Sohl-Dickstein (2017). SVCCA: Singular Vector Canonical
    Correlation Analysis for Deep Learning Dynamics and Interpretability. NeurIPS.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    x, y = _pair(X, Y, min_n=2)
    a, b = _svd_keep(_center(x), keep), _svd_keep(_center(y), keep)
    if a is None or b is None:
        return float("nan")
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    rho = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return float(np.clip(rho, 0.0, 1.0).mean())


# --------------------------------------------------------------------------- dispatch

_FUNCS: dict[str, Callable[..., float]] = {
    "linear_cka": linear_cka,
    "rbf_cka": rbf_cka,
    "mutual_knn": mutual_knn,
    "cknna": cknna,
    "procrustes_distance": procrustes_distance,
    "rsa": rsa,
    "svcca": svcca,
}
MEASURES: tuple[str, ...] = tuple(_FUNCS)


def similarity(X: ArrayLike, Y: ArrayLike, measure: str, **kw: Any) -> float:
    """Evaluate one of :data:`MEASURES` by name; ``kw`` go to that function.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(20, 3))
    >>> round(similarity(X, 2.0 * X, "linear_cka"), 12)
    1.0
    >>> similarity(X, X, "procrustes_distance") < 1e-7
    True
    """
    try:
        fn = _FUNCS[measure]
    except KeyError:
        raise ValueError(f"unknown measure {measure!r}; choose from {MEASURES}") from None
    return fn(X, Y, **kw)
