"""Uncertainty of reported numbers: bootstrap intervals and permutation tests.

Every per-layer score vitlib reports is a mean over items (images, queries, keypoints,
objects). :func:`bootstrap_ci` gives its percentile bootstrap interval, resampling the items
with replacement, vectorised over resamples (the resample means are one matrix product of
multinomial counts with the per-item values, in chunks).  The same seeded resamples are used
for every column of ``values`` (e.g. every layer), so intervals of different layers are
comparable.  :func:`permutation_test_layers` tests "group A differs from group B" at every
layer with a max-statistic correction across layers (Westfall–Young), which controls the
family-wise error over the layers.

Settings (``statistics:`` in the config; docs/protocols.md §D7): ``bootstrap`` resamples
(0: no intervals), ``level`` (the interval's coverage) and ``seed``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "DEFAULTS",
    "bootstrap_ci",
    "bootstrap_runs_ci",
    "percentile_interval",
    "permutation_test_layers",
    "resample_counts",
    "settings_of",
]

#: The defaults of the config's ``statistics`` block.
DEFAULTS: Mapping[str, Any] = {"bootstrap": 1000, "level": 0.95, "seed": 0}


def settings_of(statistics: Mapping[str, Any] | None) -> tuple[int, float, int]:
    """``(resamples, level, seed)`` of a ``statistics`` block (missing keys: defaults)."""
    s = {**DEFAULTS, **(statistics or {})}
    n, level, seed = int(s["bootstrap"]), float(s["level"]), int(s["seed"])
    if n < 0 or not 0.0 < level < 1.0:
        raise ValueError(f"statistics: bootstrap must be >= 0 and level in (0, 1), got {s}")
    return n, level, seed


def resample_counts(
    n: int, resamples: int, seed: int, chunk: int = 64
) -> Iterator[NDArray[np.float64]]:
    """The bootstrap's resamples as multinomial counts ``[≤ chunk, n]`` (how often each item
    is drawn; rows sum to ``n``), in chunks; the same for the same ``(n, resamples, seed)``."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        draws = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def percentile_interval(
    samples: ArrayLike, level: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The ``(1 − level)/2`` and ``(1 + level)/2`` quantiles of bootstrap statistics
    ``[resamples, ...]`` over the first axis, ignoring ``nan`` resamples."""
    m = np.asarray(samples, dtype=np.float64)
    a = (1.0 - level) / 2.0
    lo = np.full(m.shape[1:], np.nan)
    hi = np.full(m.shape[1:], np.nan)
    has = np.isfinite(m).any(axis=0)
    if has.any():
        q = np.nanquantile(m[:, has], [a, 1.0 - a], axis=0)
        lo[has], hi[has] = q[0], q[1]
    return lo, hi


def bootstrap_ci(
    values: ArrayLike,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    weights: ArrayLike | None = None,
    chunk: int = 64,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Percentile bootstrap interval of the mean over the first axis (items).

    Parameters
    ----------
    values : array ``[n, ...]``
        Per-item values; ``nan`` items are left out of every resample's mean (as of the
        point estimate ``nanmean``).
    resamples, level, seed : the bootstrap's size, coverage and seed.
    weights : array ``[n]`` or like ``values``, optional
        Item weights: the statistic is ``Σ w x / Σ w`` (e.g. a per-pair PCK weighted by the
        pair's keypoints is the PCK of all keypoints, resampled by pair).

    Returns
    -------
    (low, high) : arrays of shape ``values.shape[1:]``; ``nan`` where there are no finite
    items or ``resamples == 0``.

    Examples
    --------
    >>> lo, hi = bootstrap_ci(np.r_[np.zeros(50), np.ones(50)], resamples=2000)
    >>> bool(0.38 < lo < 0.42 and 0.58 < hi < 0.62)
    True
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0:
        raise ValueError("values must have an item axis")
    n = v.shape[0]
    rest = v.shape[1:]
    flat = v.reshape(n, -1)
    ok = np.isfinite(flat)
    low = np.full(flat.shape[1], np.nan)
    high = np.full(flat.shape[1], np.nan)
    if resamples <= 0 or n == 0:
        return low.reshape(rest), high.reshape(rest)
    x = np.where(ok, flat, 0.0)
    w = ok.astype(np.float64)
    if weights is not None:
        wt = np.asarray(weights, dtype=np.float64).reshape(n, -1)
        x, w = x * wt, w * wt
    means = np.empty((resamples, flat.shape[1]))
    start = 0
    for counts in resample_counts(n, resamples, seed, chunk):
        with np.errstate(invalid="ignore", divide="ignore"):
            means[start : start + len(counts)] = (counts @ x) / (counts @ w)
        start += len(counts)
    low, high = percentile_interval(means, level)
    return low.reshape(rest), high.reshape(rest)


def bootstrap_runs_ci(
    values: ArrayLike,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    chunk: int = 64,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Percentile interval of the mean over items and runs (seeds) of a two-level bootstrap.

    ``values [S, n, ...]``: per-item values of ``S`` runs of a randomised procedure (seeded
    probe trainings) on the same ``n`` items. Each resample draws one run uniformly and the
    items with replacement (the same item counts as :func:`bootstrap_ci`), so the interval
    holds the spread of the runs and the sampling of the items; with ``S = 1`` it equals
    :func:`bootstrap_ci` of ``values[0]``. Returns ``(low, high)`` of shape
    ``values.shape[2:]``."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim < 2 or v.shape[0] < 1:
        raise ValueError(f"values must be [runs, items, ...], got shape {v.shape}")
    S, n = v.shape[:2]
    rest = v.shape[2:]
    flat = v.reshape(S, n, -1)
    if resamples <= 0 or n == 0:
        nan = np.full(rest, np.nan)
        return nan, nan.copy()
    ok = np.isfinite(flat)
    x = np.where(ok, flat, 0.0)
    w = ok.astype(np.float64)
    rng = np.random.default_rng([seed, 1])  # the run drawn by each resample
    means = np.empty((resamples, flat.shape[2]))
    start = 0
    for counts in resample_counts(n, resamples, seed, chunk):
        runs = rng.integers(0, S, size=len(counts))
        with np.errstate(invalid="ignore", divide="ignore"):
            num = np.einsum("rn,rnk->rk", counts, x[runs])
            means[start : start + len(counts)] = num / np.einsum("rn,rnk->rk", counts, w[runs])
        start += len(counts)
    low, high = percentile_interval(means, level)
    return low.reshape(rest), high.reshape(rest)


def permutation_test_layers(
    a: ArrayLike,
    b: ArrayLike,
    *,
    permutations: int = 1000,
    seed: int = 0,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Does group A differ from group B at each layer? Two-sided permutation test of the
    difference of means, with Westfall–Young max-|t| adjustment across layers.

    Parameters
    ----------
    a, b : arrays ``[n_a, L]`` and ``[n_b, L]``
        One row per member of each group (e.g. the models of two families, or per-image
        scores), one column per layer (normalised depth bins).

    Returns
    -------
    (difference, p, p_adjusted) : arrays ``[L]``: mean(a) − mean(b); the permutation p-value
    per layer, ``(1 + #{|d*| >= |d|}) / (1 + P)``; and the family-wise adjusted p-value
    (single-step max statistic: ``(1 + #{max_l |d*_l| >= |d_l|}) / (1 + P)``). When there
    are no more distinct relabellings than ``permutations`` (few members: e.g. 3 models
    against 3 give 20), all of them are enumerated and the test is exact:
    ``p = #{relabellings with |d*| >= |d|} / #relabellings``, the observed one included, so
    the smallest attainable p is ``1 / C(n_a + n_b, n_a)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> d, p, padj = permutation_test_layers(rng.normal(1, 1, (30, 3)), rng.normal(0, 1, (30, 3)))
    >>> bool((p < 0.01).all() and (padj >= p).all())
    True
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"a and b must be [n, L] with the same L, got {x.shape}, {y.shape}")
    if x.shape[0] < 1 or y.shape[0] < 1:
        raise ValueError("each group needs at least one member")
    both = np.concatenate([x, y])
    na, n = x.shape[0], both.shape[0]
    d = x.mean(axis=0) - y.mean(axis=0)
    total = both.sum(axis=0)
    exact = math.comb(n, na) <= permutations
    if exact:  # every relabelling once (the observed one among them)
        idx = np.array(list(itertools.combinations(range(n), na)), dtype=np.int64)
    else:  # a random relabelling: the first na of a permutation are group A
        rng = np.random.default_rng(seed)
        idx = np.argsort(rng.random((permutations, n)), axis=1)[:, :na]
    sa = both[idx].sum(axis=1)  # [P, L]
    dstar = sa / na - (total - sa) / (n - na)
    absd = np.abs(d)
    tol = 1e-12 * np.maximum(absd, 1.0)
    extra = 0.0 if exact else 1.0
    count = len(idx) + extra
    p = (extra + (np.abs(dstar) >= absd - tol).sum(axis=0)) / count
    mx = np.abs(dstar).max(axis=1)
    padj = (extra + (mx[:, None] >= absd[None, :] - tol).sum(axis=0)) / count
    return d, p, np.maximum(padj, p)
