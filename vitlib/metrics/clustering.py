"""Clustering scores: seeded FAISS k-means, purity, NMI and ARI (docs/protocols.md §3.5–3.6).

Degenerate inputs stop with a :class:`~vitlib.data.manifest.DataError` instead of writing
numbers that look like results: fewer than two classes (NMI and ARI are then 1 or 0 by
construction and purity is 1, whatever the features), ``k`` outside ``2..n`` (one cluster,
or more clusters than points) and non-finite features (k-means on NaN).  A figure drawn
from such a table would be blank or meaningless, so no row is written; the message names
the input (``what``), the value and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vitlib.data.manifest import DataError


def purity(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Cluster purity: ``(1/n) Σ_clusters max_class |cluster ∩ class|``.

    Parameters
    ----------
    y_true, y_pred : ``[n]`` integer labels (any values).

    Returns
    -------
    float in ``(0, 1]``; 1 when every cluster holds a single class.

    References
    ----------
    .. [1] C. D. Manning, P. Raghavan and H. Schütze, "Introduction to Information
       Retrieval", Cambridge University Press, 2008, Sec. 16.3 (purity).
    .. [2] M. Walmer, S. Suri, K. Gupta and A. Shrivastava, "Teaching Matters: Investigating
       the Role of Supervision in Vision Transformers", CVPR 2023, Sec. 5.2–5.3.

    Examples
    --------
    Cluster 0 holds classes (0, 0, 1), majority 2; cluster 1 holds (1, 1), majority 2; so
    purity = (2 + 2) / 5:

    >>> purity([0, 0, 1, 1, 1], [0, 0, 0, 1, 1])
    0.8
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(
            f"need two equally long non-empty label vectors, got {y_true.shape} and {y_pred.shape}"
        )
    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    return float(table.max(axis=1).sum() / y_true.size)


def kmeans_labels(
    x: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> np.ndarray:
    """Seeded k-means with scikit-learn's semantics, FAISS for the arithmetic.

    Each of the ``n_init`` restarts starts from scikit-learn's k-means++ seeding (FAISS's own
    random initialisation lands in clearly worse minima on well-separated data) and runs
    Lloyd iterations on all points — assignment by a FAISS flat index, centres as cluster
    means (an empty cluster takes the point farthest from its centre, as scikit-learn
    relocates) — until the squared centre shift summed over clusters is ≤ ``tol`` × the mean
    per-feature variance of ``x`` (scikit-learn's ``tol``) or ``max_iter`` iterations; the
    restart with the lowest inertia (sum of squared distances to the final centres) wins.
    """
    import faiss
    from scipy import sparse
    from sklearn.cluster import kmeans_plusplus

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise DataError(f"k-means: k must be in 1..{n} (the number of points), got {k}")
    tol_abs = float(tol) * float(np.mean(np.var(x, axis=0, dtype=np.float64)))
    index = faiss.IndexFlatL2(d)

    def assign(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index.reset()
        index.add(np.ascontiguousarray(c, dtype=np.float32))
        dist, lab = index.search(x, 1)
        return dist[:, 0], lab[:, 0]

    best_labels, best_obj = None, np.inf
    for r in range(n_init):
        init, _ = kmeans_plusplus(x, k, random_state=seed + r)
        c = init.astype(np.float64)
        for _ in range(max(1, int(max_iter))):
            dist, lab = assign(c)
            onehot = sparse.csr_matrix((np.ones(n), (lab, np.arange(n))), shape=(k, n))
            sums = np.asarray(onehot @ x, dtype=np.float64)
            counts = np.bincount(lab, minlength=k).astype(np.float64)
            empty = np.flatnonzero(counts == 0)
            if len(empty):  # scikit-learn: the farthest points become the empty centres
                far = np.argsort(-dist, kind="stable")[: len(empty)]
                sums[empty], counts[empty] = x[far], 1.0
            new = sums / counts[:, None]
            shift = float(((new - c) ** 2).sum())
            c = new
            if shift <= tol_abs:
                break
        dist, lab = assign(c)
        obj = float(dist.sum(dtype=np.float64))
        if obj < best_obj:
            best_labels, best_obj = lab, obj
    assert best_labels is not None, f"no k-means restart with a finite inertia (n_init {n_init})"
    return best_labels


def check_clusterable(x: np.ndarray, y: np.ndarray, k: int, *, what: str = "clustering") -> None:
    """Raise :class:`DataError` unless ``x [n, d]``/``y [n]`` can be scored with ``k``
    clusters: at least two classes in ``y``, ``2 <= k <= n``, finite features.

    ``what`` names the input in the message (e.g. ``"dataset 'coco', layer 3"``).
    """
    y = np.asarray(y)
    x = np.asarray(x)
    n = len(y)
    if x.ndim != 2 or len(x) != n:
        raise DataError(
            f"{what}: features {tuple(x.shape)} and labels {tuple(y.shape)} do not match"
        )
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(
            f"{what}: clustering scores need at least two classes, got {len(classes)}"
            f" ({classes.tolist()[:3]}) among {n} samples: NMI, ARI and purity would be"
            " constant whatever the features; use a dataset (or subset) with two or more"
            " classes, or leave this analysis out"
        )
    if not 2 <= k <= n:
        raise DataError(
            f"{what}: k-means needs 2 <= k <= {n} (the number of samples), got k = {k}"
            + (" (more clusters than samples)" if k > n else " (a single cluster)")
        )
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise DataError(
            f"{what}: the features hold {bad} non-finite values (NaN or inf); k-means on them"
            " would be meaningless"
        )


def cluster_scores(
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-4,
    what: str = "clustering",
) -> dict[str, float]:
    """k-means ``x`` into ``k`` clusters (:func:`kmeans_labels`) and score against ``y``: NMI,
    ARI (scikit-learn) and purity.

    Degenerate inputs (:func:`check_clusterable`: fewer than two classes, ``k`` outside
    ``2..n``, non-finite features) raise :class:`DataError` naming ``what`` and the value —
    never a row of constant or NaN scores.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    check_clusterable(x, y, k, what=what)
    pred = kmeans_labels(x, k, seed=seed, n_init=n_init, max_iter=max_iter, tol=tol)
    return {
        "nmi": float(normalized_mutual_info_score(y, pred)),
        "ari": float(adjusted_rand_score(y, pred)),
        "purity": purity(y, pred),
    }


def contingency_scores(table: np.ndarray) -> dict[str, np.ndarray]:
    """NMI (arithmetic normalisation), ARI and purity of contingency tables.

    Parameters
    ----------
    table : array ``[..., C, K]``
        Counts of (class, cluster) pairs, possibly weighted by integer multiplicities (a
        bootstrap resample); classes or clusters with no count are absent, as in a labelling
        that does not use them.

    Returns
    -------
    ``{"nmi", "ari", "purity"}`` → arrays ``[...]``, equal to scikit-learn's
    ``normalized_mutual_info_score`` / ``adjusted_rand_score`` and :func:`purity` on the
    labellings the tables count (each pair repeated as often as counted), their special cases
    included (both labellings a single group: NMI 1; no information: NMI 0; perfect pair
    agreement: ARI 1).
    """
    t = np.asarray(table, dtype=np.float64)
    n = t.sum(axis=(-2, -1))
    a = t.sum(axis=-1)  # class sizes [..., C]
    b = t.sum(axis=-2)  # cluster sizes [..., K]
    with np.errstate(divide="ignore", invalid="ignore"):
        nn = n[..., None, None]
        pij = t / nn
        outer = a[..., :, None] * b[..., None, :]
        mi = np.where(t > 0, pij * np.log(t * nn / outer), 0.0).sum(axis=(-2, -1))
        mi = np.clip(np.where(np.abs(mi) < np.finfo(float).eps, 0.0, mi), 0.0, None)
        pa, pb = a / n[..., None], b / n[..., None]
        ha = -np.where(a > 0, pa * np.log(pa), 0.0).sum(axis=-1)
        hb = -np.where(b > 0, pb * np.log(pb), 0.0).sum(axis=-1)
        nmi = np.where(mi == 0, 0.0, mi / ((ha + hb) / 2.0))
        single = ((a > 0).sum(axis=-1) == 1) & ((b > 0).sum(axis=-1) == 1)
        nmi = np.where(single, 1.0, nmi)
        sq = (t**2).sum(axis=(-2, -1))
        tp = sq - n
        fp = (t * b[..., None, :]).sum(axis=(-2, -1)) - sq
        fn = (t * a[..., :, None]).sum(axis=(-2, -1)) - sq
        tn = n**2 - fp - fn - sq
        ari = 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
        ari = np.where((fn == 0) & (fp == 0), 1.0, ari)
        pur = t.max(axis=-2).sum(axis=-1) / n
    return {"nmi": nmi, "ari": ari, "purity": pur}


def clustering_interval(
    y: np.ndarray,
    preds: np.ndarray,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of NMI, ARI and purity over k-means seeds and items.

    ``preds [S, n]``: the cluster labels of ``S`` seeded k-means runs. Each resample draws one
    run uniformly and the items with replacement (a two-level bootstrap: the spread of the
    seeds and the sampling of the items, with the clusterings fixed) and scores the resampled
    contingency table (:func:`contingency_scores`); with ``S = 1`` it is the item bootstrap.
    A resample repeats items, and a repeated item agrees with itself, so the resamples'
    scores sit above the full sample's (plug-in mutual information grows as the number of
    distinct items shrinks); the percentile interval is shifted by that bootstrap bias
    (mean of the resamples − the mean of the runs' scores), which centres it on the reported
    value. Returns metric → ``(low, high)`` (``nan`` when ``resamples == 0``)."""
    from vitlib.stats import percentile_interval, resample_counts

    y = np.asarray(y)
    preds = np.atleast_2d(np.asarray(preds))
    nan = (float("nan"), float("nan"))
    if resamples <= 0:
        return {m: nan for m in ("nmi", "ari", "purity")}
    _, yi = np.unique(y, return_inverse=True)
    C = int(yi.max()) + 1
    K = int(preds.max()) + 1
    rng = np.random.default_rng([seed, 1])  # the run drawn by each resample
    scores: dict[str, list[np.ndarray]] = {"nmi": [], "ari": [], "purity": []}
    for counts in resample_counts(len(yi), resamples, seed):
        runs = rng.integers(0, len(preds), size=len(counts))
        tables = np.empty((len(counts), C * K))
        for s in np.unique(runs):
            pair = yi * K + preds[s]  # [n] cell of each item
            sel = runs == s
            tables[sel] = np.stack([np.bincount(pair, c, C * K) for c in counts[sel]])
        for m, v in contingency_scores(tables.reshape(-1, C, K)).items():
            scores[m].append(v)
    full = np.zeros((len(preds), C * K))
    for s, p in enumerate(preds):
        full[s] = np.bincount(yi * K + p, minlength=C * K)
    point = {m: float(np.mean(v)) for m, v in contingency_scores(full.reshape(-1, C, K)).items()}
    out = {}
    for m, parts in scores.items():
        boot = np.concatenate(parts)
        bias = float(np.nanmean(boot)) - point[m]
        lo, hi = percentile_interval(boot[:, None], level)
        out[m] = (float(lo[0]) - bias, float(hi[0]) - bias)
    return out


def seeded_cluster_scores(
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    seeds: int = 1,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-4,
    what: str = "clustering",
    statistics: Mapping[str, Any] | None = None,
) -> dict[str, tuple[float, float, float]]:
    """NMI, ARI and purity of ``seeds`` k-means runs (:func:`cluster_scores`; run ``j`` seeds
    its restarts from ``seed + j·n_init``, so runs share no restart) → metric →
    ``(mean over runs, ci_low, ci_high)``, the interval from :func:`clustering_interval`
    with the ``statistics`` settings (docs §D7). ``seeds = 1``: the paper's single run."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from vitlib.stats import settings_of

    if seeds < 1:
        raise ValueError(f"{what}: seeds must be >= 1, got {seeds}")
    check_clusterable(x, y, k, what=what)
    y = np.asarray(y)
    preds = np.stack(
        [
            kmeans_labels(x, k, seed=seed + j * n_init, n_init=n_init, max_iter=max_iter, tol=tol)
            for j in range(seeds)
        ]
    )
    value = {
        "nmi": np.mean([normalized_mutual_info_score(y, p) for p in preds]),
        "ari": np.mean([adjusted_rand_score(y, p) for p in preds]),
        "purity": np.mean([purity(y, p) for p in preds]),
    }
    resamples, level, bseed = settings_of(statistics)
    ci = clustering_interval(y, preds, resamples=resamples, level=level, seed=bseed)
    return {m: (float(value[m]), *ci[m]) for m in ("nmi", "ari", "purity")}


def noise_like(shape: tuple[int, ...], kind: str, seed: int) -> np.ndarray:
    """Random-chance features: ``gaussian`` (fixed: what the paper says) or ``uniform``
    (faithful: the original code's U[0, 1)), seeded."""
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return rng.standard_normal(shape).astype(np.float32)
    if kind == "uniform":
        return rng.random(shape, dtype=np.float32)
    raise ValueError(f"noise must be 'gaussian' or 'uniform', got {kind!r}")
