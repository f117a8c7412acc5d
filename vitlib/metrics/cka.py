"""Centered kernel alignment (linear kernel) with the unbiased HSIC estimator.

Paper eq. 1–2 / docs/protocols.md §3.1: for minibatches ``i`` of ``n`` examples with linear Grams
``K_i = X_i X_iᵀ`` and ``L_i = Y_i Y_iᵀ`` (diagonals zeroed),

    HSIC_u(K, L) = [tr(K L) + 1ᵀK1 · 1ᵀL1 / ((n−1)(n−2)) − 2/(n−2) · 1ᵀ K L 1] / (n(n−3))
    CKA = Σ_i HSIC_u(K_i, L_i) / sqrt(Σ_i HSIC_u(K_i, K_i) · Σ_i HSIC_u(L_i, L_i))

:func:`cka_grid_from_grams` evaluates every layer pair of two models from Grams stored at
extraction in two matrix products per minibatch: ``tr(K L) = ⟨K, L⟩`` (Grams are
symmetric) and ``1ᵀ K L 1 = (K1)·(L1)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    ArrayLike = np.ndarray | torch.Tensor
else:
    ArrayLike = Any

# numpy only: a CKA job reads stored Grams and does a few small matrix products, so it
# need not import torch (2.6 s of start-up per job on this machine).
log = logging.getLogger(__name__)


def _t(x: ArrayLike) -> np.ndarray:
    """float64 array of an array or a (CPU or GPU) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def minmax_rescale(grams: np.ndarray) -> np.ndarray:
    """The original code's per-Gram rescaling ``(K − min K) / max(K − min K)`` over all
    entries (docs/protocols.md §3.1 step 3; the ``faithful`` setting)."""
    lo = grams.min(axis=(-2, -1), keepdims=True)
    k = grams - lo
    hi = k.max(axis=(-2, -1), keepdims=True)
    return k / np.where(hi > 0, hi, 1.0)


def hsic_terms(grams: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero the diagonals of ``[..., n, n]`` Grams; return (K̃ flattened, row sums, total)."""
    n = grams.shape[-1]
    flat = grams.reshape(*grams.shape[:-2], n * n).copy()
    flat[..., :: n + 1] = 0.0  # the diagonal of each n × n Gram, as a strided slice
    k = flat.reshape(grams.shape)
    return flat, k.sum(-1), flat.sum(-1)


def _layers_first(a: np.ndarray) -> np.ndarray:
    """``[C, L, m]`` → ``[L, C·m]``: the sum over minibatches of per-minibatch dot products
    becomes one matrix product."""
    C, L = a.shape[:2]
    return a.transpose(1, 0, 2).reshape(L, -1)


def hsic_grid(grams_x: np.ndarray, grams_y: np.ndarray) -> np.ndarray:
    """Unbiased HSIC between every layer pair, summed over minibatches.

    ``grams_x`` ``[C, Lx, n, n]``, ``grams_y`` ``[C, Ly, n, n]`` → ``[Lx, Ly]`` (every
    minibatch has the same ``n``, so the sum over minibatches folds into three matrix
    products).
    """
    C, _, n, _ = grams_x.shape
    if n < 4:
        raise ValueError(f"unbiased HSIC needs minibatches of at least 4 examples, got {n}")
    if grams_y.shape[0] != C or grams_y.shape[-1] != n:
        raise ValueError(f"Gram stacks differ: {tuple(grams_x.shape)} vs {tuple(grams_y.shape)}")
    kx, rx, sx = hsic_terms(grams_x)
    ky, ry, sy = hsic_terms(grams_y)
    tr = _layers_first(kx) @ _layers_first(ky).T  # Σ_c ⟨K_c, L_c⟩
    ones = sx.T @ sy / ((n - 1) * (n - 2))  # Σ_c 1ᵀK1 · 1ᵀL1
    cross = _layers_first(rx) @ _layers_first(ry).T * (2.0 / (n - 2))  # Σ_c (K1)·(L1)
    return (tr + ones - cross) / (n * (n - 3))


def hsic_self(grams: np.ndarray) -> np.ndarray:
    """``Σ_i HSIC_u(K_i, K_i)`` per layer: ``[C, L, n, n]`` → ``[L]``."""
    n = grams.shape[-1]
    k, r, s = hsic_terms(grams)
    return _self_terms(k, r, s, n).sum(0)


def hsic_per_batch(
    grams_x: np.ndarray, grams_y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unbiased HSIC of every minibatch separately: cross ``[C, Lx, Ly]`` and the two selves
    ``[C, Lx]``, ``[C, Ly]`` (their sums over ``C`` are :func:`hsic_grid` and
    :func:`hsic_self`)."""
    n = grams_x.shape[-1]
    kx, rx, sx = hsic_terms(grams_x)
    ky, ry, sy = hsic_terms(grams_y)
    tr = np.einsum("cam,cbm->cab", kx, ky)
    ones = sx[:, :, None] * sy[:, None, :] / ((n - 1) * (n - 2))
    cross = np.einsum("cam,cbm->cab", rx, ry) * (2.0 / (n - 2))
    xy = (tr + ones - cross) / (n * (n - 3))
    return xy, _self_terms(kx, rx, sx, n), _self_terms(ky, ry, sy, n)


def _self_terms(k: np.ndarray, r: np.ndarray, s: np.ndarray, n: int) -> np.ndarray:
    tr = (k * k).sum(-1)
    return (tr + s * s / ((n - 1) * (n - 2)) - (r * r).sum(-1) * (2.0 / (n - 2))) / (n * (n - 3))


def cka_grid_interval(
    grams_x: ArrayLike,
    grams_y: ArrayLike,
    *,
    minmax: bool = False,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of :func:`cka_grid_from_grams` over the minibatches:
    resample the ``C`` minibatches with replacement and recompute the ratio of summed HSICs
    (the stored per-minibatch Grams make this a matrix product). ``[Lx, Ly]`` each; ``nan``
    where CKA is undefined or ``resamples == 0``."""
    from vitlib.stats import percentile_interval, resample_counts

    gx, gy = _t(grams_x), _t(grams_y)
    if minmax:
        gx, gy = minmax_rescale(gx), minmax_rescale(gy)
    C, Lx = gx.shape[:2]
    Ly = gy.shape[1]
    nan = np.full((Lx, Ly), np.nan)
    if resamples <= 0:
        return nan, nan.copy()
    xy, xx, yy = hsic_per_batch(gx, gy)
    samples = np.empty((resamples, Lx, Ly))
    start = 0
    for counts in resample_counts(C, resamples, seed):
        num = (counts @ xy.reshape(C, -1)).reshape(-1, Lx, Ly)
        sx, sy = counts @ xx, counts @ yy
        den = np.sqrt(np.clip(sx, 0, None)[:, :, None] * np.clip(sy, 0, None)[:, None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            samples[start : start + len(counts)] = np.where(den > 0, num / den, np.nan)
        start += len(counts)
    return percentile_interval(samples, level)


def cka_grid_from_grams(
    grams_x: ArrayLike, grams_y: ArrayLike, *, minmax: bool = False
) -> np.ndarray:
    """Minibatch CKA between every layer of two models from stored Grams.

    Parameters
    ----------
    grams_x, grams_y : ``[C, Lx, n, n]`` and ``[C, Ly, n, n]`` — the Gram matrices of the same
        ``C`` minibatches (same images in the same order) for each layer.
    minmax : rescale each Gram to [0, 1] first (the original code; ``faithful``).

    Returns
    -------
    ``[Lx, Ly]`` float64 CKA values.  A layer whose summed self-HSIC is not positive (a
    constant representation: every Gram entry equal) has no defined CKA: its row/column is
    NaN and a warning names the layers, so the gap is flagged in the log, never silent.

    References
    ----------
    .. [1] S. Kornblith, M. Norouzi, H. Lee and G. Hinton, "Similarity of Neural Network
       Representations Revisited", ICML 2019.
    .. [2] T. Nguyen, M. Raghu and S. Kornblith, "Do Wide and Deep Networks Learn the Same
       Things? Uncovering How Neural Network Representations Vary with Width and Depth",
       ICLR 2021 (minibatch CKA with the unbiased HSIC).
    .. [3] L. Song, A. Smola, A. Gretton, J. Bedo and K. Borgwardt, "Feature Selection via
       Dependence Maximization", JMLR 13, 2012 (unbiased HSIC estimator).

    Examples
    --------
    Two minibatches of the same four points; model y's second minibatch is scaled by 2, so
    its Gram by 4.  HSIC is bilinear, the batch terms are h, 4h (cross) and h, 16h (y), and
    CKA = (1 + 4) / √(2 · 17) ≈ 0.8575; the original's min–max rescaling of every Gram
    (``minmax=True``) gives both batches the same weight again:

    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    >>> k = x @ x.T
    >>> grams_x = np.stack([k, k])[:, None]  # [C=2, Lx=1, n=4, n=4]
    >>> grams_y = np.stack([k, 4 * k])[:, None]
    >>> cka_grid_from_grams(grams_x, grams_y).round(4).tolist()
    [[0.8575]]
    >>> cka_grid_from_grams(grams_x, grams_y, minmax=True).round(4).tolist()
    [[1.0]]
    """
    gx, gy = _t(grams_x), _t(grams_y)
    if minmax:
        gx, gy = minmax_rescale(gx), minmax_rescale(gy)
    num = hsic_grid(gx, gy)
    sx, sy = hsic_self(gx), hsic_self(gy)
    bad_x = np.flatnonzero(~(sx > 0)).tolist()
    bad_y = np.flatnonzero(~(sy > 0)).tolist()
    if bad_x or bad_y:
        log.warning(
            "CKA undefined (NaN) for layers %s of x and %s of y: their self-HSIC is not"
            " positive (constant or degenerate features over the minibatches)",
            bad_x,
            bad_y,
        )
    den = np.sqrt(np.clip(sx, 0, None)[:, None] * np.clip(sy, 0, None)[None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~(den > 0)] = np.nan
    return out


def gram(x: ArrayLike) -> np.ndarray:
    t = _t(x)
    t = t.reshape(t.shape[0], -1)
    return t @ t.T


def linear_cka(x: ArrayLike, y: ArrayLike, unbiased: bool = True) -> float:
    """Linear CKA of ``x`` ``[n, d1]`` and ``y`` ``[n, d2]`` (one batch): the feature-matrix
    measure of :func:`vitlib.metrics.similarity.linear_cka` (this module computes CKA from
    stored per-minibatch Grams).

    ``unbiased=True`` uses the unbiased HSIC estimator (needs n ≥ 4); ``False`` the biased
    one, ``HSIC(K, L) = tr(K H L H) / (n−1)²`` with the centring matrix ``H``.

    References
    ----------
    .. [1] S. Kornblith, M. Norouzi, H. Lee and G. Hinton, "Similarity of Neural Network
       Representations Revisited", ICML 2019.
    .. [2] L. Song, A. Smola, A. Gretton, J. Bedo and K. Borgwardt, "Feature Selection via
       Dependence Maximization", JMLR 13, 2012 (unbiased HSIC estimator).

    Examples
    --------
    Linear CKA is invariant to scaling and translation.  For centred ``x`` (four points on
    the axes) and its first coordinate ``y``, the biased form is
    ‖yᵀx‖² / (‖xᵀx‖ ‖yᵀy‖) = 4 / (2√2 · 2) = 1/√2:

    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    >>> round(linear_cka(x, 2 * x + 1), 6)
    1.0
    >>> round(linear_cka(x, x[:, :1], unbiased=False), 4)
    0.7071
    """
    from vitlib.metrics import similarity  # the feature-matrix measures, one implementation

    xs, ys = _t(x), _t(y)
    if len(xs) != len(ys):
        raise ValueError(f"x and y need the same number of rows: {len(xs)} vs {len(ys)}")
    return similarity.linear_cka(xs, ys, debiased=unbiased)


def minibatch_cka(batches_x: Sequence[ArrayLike], batches_y: Sequence[ArrayLike]) -> float:
    """Minibatch CKA (paper eq. 2) over equally long lists of ``[n_i, d]`` arrays.

    Batches may differ in size (each HSIC uses its own ``n_i``).

    References
    ----------
    .. [1] T. Nguyen, M. Raghu and S. Kornblith, "Do Wide and Deep Networks Learn the Same
       Things? Uncovering How Neural Network Representations Vary with Width and Depth",
       ICLR 2021 (minibatch CKA with the unbiased HSIC).
    .. [2] S. Kornblith, M. Norouzi, H. Lee and G. Hinton, "Similarity of Neural Network
       Representations Revisited", ICML 2019.

    Examples
    --------
    The HSIC terms are summed over minibatches before the ratio, so a batch whose features
    are larger weighs more.  With the same batch twice and ``y`` scaled by 2 in the second
    (HSIC terms h, 4h across and h, 16h for ``y``), CKA = 5 / √(2 · 17) ≈ 0.8575, although
    each batch alone has CKA 1:

    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    >>> round(minibatch_cka([x, x], [x, 2 * x]), 4)
    0.8575
    """
    if len(batches_x) != len(batches_y) or not batches_x:
        raise ValueError("batches_x and batches_y must be equally long and non-empty")
    num = sxx = syy = 0.0
    for bx, by in zip(batches_x, batches_y):
        kx, ky = gram(bx)[None, None], gram(by)[None, None]
        num += float(hsic_grid(kx, ky)[0, 0])
        sxx += float(hsic_self(kx)[0])
        syy += float(hsic_self(ky)[0])
    return num / float(np.sqrt(sxx * syy))
