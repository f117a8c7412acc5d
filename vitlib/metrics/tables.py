"""Feature analyses on finished stores (docs/protocols.md §3): tidy tables, no forward pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from vitlib import keys
from vitlib.store import Store

#: "norm": the paper's grids over norm1/norm2 of every block (2L rows, §3.2);
#: "block": block outputs (L rows).
GRID_POINTS = {"norm": ("norm1", "norm2"), "block": ("block",)}


def _grams(g: Store, point: str, kind: str) -> np.ndarray:
    name = keys.gram(point, kind)
    if not g.has(name):
        raise KeyError(
            f"{g.path} has no {name}: extract with extract.gram_points including {point!r}"
        )
    return np.asarray(g.gram(point, kind)[...], dtype=np.float64)  # [C, L, n, n]


def _interleaved(
    g: Store, points: Sequence[str], kind: str
) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """Stack Grams of several points per block in module order: [C, L·len(points), n, n]."""
    gs = [_grams(g, p, kind) for p in points]
    C, L = gs[0].shape[:2]
    out = np.stack(gs, 2).reshape(C, L * len(points), *gs[0].shape[2:])
    labels = [(p, layer) for layer in range(L) for p in points]
    return out, labels


def _same_partition(gx: Store, gy: Store) -> None:
    mx, my = gx.meta, gy.meta
    if (
        mx["manifest_digest"] != my["manifest_digest"]
        or mx["cka_batch_size"] != my["cka_batch_size"]
    ):
        raise ValueError(
            f"{gx.path} and {gy.path} were extracted from different manifests or CKA"
            " partitions; CKA needs the same images in the same minibatches"
        )


def _cka(*a, **k):  # noqa: ANN002, ANN003, ANN202 - torch only where CKA is computed
    from vitlib.metrics.cka import cka_grid_from_grams

    return cka_grid_from_grams(*a, **k)


def _cka_interval(
    kx: np.ndarray, ky: np.ndarray, minmax: bool, statistics: Mapping[str, Any] | None
) -> tuple[np.ndarray, np.ndarray]:
    from vitlib.metrics.cka import cka_grid_interval
    from vitlib.stats import settings_of

    resamples, level, seed = settings_of(statistics)
    return cka_grid_interval(kx, ky, minmax=minmax, resamples=resamples, level=level, seed=seed)


def _grid_frame(
    gx: Store,
    gy: Store,
    x: tuple[np.ndarray, list[tuple[str, int]]],
    y: tuple[np.ndarray, list[tuple[str, int]]],
    *,
    points: str,
    kind: str,
    minmax: bool,
    statistics: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    (kx, lx), (ky, ly) = x, y
    grid = _cka(kx, ky, minmax=minmax)
    lo, hi = _cka_interval(kx, ky, minmax, statistics)
    i, j = np.meshgrid(np.arange(len(lx)), np.arange(len(ly)), indexing="ij")
    return pd.DataFrame(
        {
            "model_x": gx.model,
            "model_y": gy.model,
            "family_x": gx.family,
            "family_y": gy.family,
            "row": i.ravel(),
            "col": j.ravel(),
            "point_x": [lx[a][0] for a in i.ravel()],
            "layer_x": [lx[a][1] for a in i.ravel()],
            "point_y": [ly[b][0] for b in j.ravel()],
            "layer_y": [ly[b][1] for b in j.ravel()],
            "metric": "cka",
            "value": grid.ravel(),
            "ci_low": lo.ravel(),  # bootstrap over the CKA minibatches (docs §D7)
            "ci_high": hi.ravel(),
            "points": points,
            "kind": kind,
            "minmax": minmax,
        }
    )


def cka_pair_table(
    store_x: Store | str,
    store_y: Store | str,
    *,
    points: str = "norm",
    kind: str = "all",
    minmax: bool = False,
    statistics: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Layer × layer CKA between two models (or one model with itself, §3.2), with bootstrap
    intervals over the minibatches (``ci_low``, ``ci_high``)."""
    gx, gy = Store.open(store_x), Store.open(store_y)
    _same_partition(gx, gy)
    return _grid_frame(
        gx,
        gy,
        _interleaved(gx, GRID_POINTS[points], kind),
        _interleaved(gy, GRID_POINTS[points], kind),
        points=points,
        kind=kind,
        minmax=minmax,
        statistics=statistics,
    )


def cka_grids_table(
    stores: Sequence[Store | str],
    *,
    points: str = "norm",
    kind: str = "all",
    minmax: bool = False,
    statistics: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Layer × layer CKA of every unordered pair of ``stores`` in their order, self-pairs
    included (§3.2): the rows of :func:`cka_pair_table` for each pair ``(x, y)``, ``x`` not
    after ``y``.  Each store's Grams are read once, so M models cost M reads, not M(M+1)."""
    gs = [Store.open(s) for s in stores]
    for g in gs[1:]:
        _same_partition(gs[0], g)
    grams = [_interleaved(g, GRID_POINTS[points], kind) for g in gs]
    frames = [
        _grid_frame(
            gs[a],
            gs[b],
            grams[a],
            grams[b],
            points=points,
            kind=kind,
            minmax=minmax,
            statistics=statistics,
        )
        for a in range(len(gs))
        for b in range(a, len(gs))
    ]
    return pd.concat(frames, ignore_index=True)


def last_layer_cka_table(stores: Sequence[Store | str], *, minmax: bool = False) -> pd.DataFrame:
    """CKA between the last block outputs of every model pair, for all / CLS / spatial tokens
    (paper Figures 6, 19)."""
    gs = [Store.open(s) for s in stores]
    for g in gs[1:]:
        _same_partition(gs[0], g)
    rows = []
    for kind in ("all", "cls", "spatial"):
        last = [_grams(g, "block", kind)[:, -1:] for g in gs]
        for a in range(len(gs)):
            for b in range(len(gs)):
                if b < a:
                    continue
                v = float(_cka(last[a], last[b], minmax=minmax)[0, 0])
                for x, y in {(a, b), (b, a)}:
                    rows.append(
                        {
                            "model_x": gs[x].model,
                            "model_y": gs[y].model,
                            "family_x": gs[x].family,
                            "family_y": gs[y].family,
                            "kind": kind,
                            "metric": "cka",
                            "value": v,
                            "minmax": minmax,
                        }
                    )
    return pd.DataFrame(rows)


def residual_table(store: Store | str, *, minmax: bool = False) -> pd.DataFrame:
    """Residual connections (§3.4): CKA skip (rows) vs branch (columns) per sub-block, and
    mean norm ratios ‖skip‖ / ‖branch‖ per block for all / CLS / spatial tokens."""
    g = Store.open(store)
    frames = []
    for sub in ("attn", "mlp"):
        grid = _cka(
            _grams(g, f"{sub}_skip", "all"), _grams(g, f"{sub}_branch", "all"), minmax=minmax
        )
        i, j = np.meshgrid(np.arange(grid.shape[0]), np.arange(grid.shape[1]), indexing="ij")
        frames.append(
            pd.DataFrame(
                {
                    "sub_block": sub,
                    "metric": "cka",
                    "layer_x": i.ravel(),
                    "layer_y": j.ravel(),
                    "value": grid.ravel(),
                }
            )
        )
        for kind in ("all", "cls", "spatial"):
            name = keys.norm_ratio(sub, kind)
            if g.has(name):
                r = g.read(name).astype(np.float64).mean(0)
                frames.append(
                    pd.DataFrame(
                        {
                            "sub_block": sub,
                            "metric": f"norm_ratio_{kind}",
                            "layer_x": np.arange(len(r)),
                            "layer_y": -1,
                            "value": r,
                        }
                    )
                )
    t = pd.concat(frames, ignore_index=True)
    t["minmax"] = minmax
    return t


def clustering_table(
    store: Store | str,
    *,
    k: int | None = None,
    seed: int = 0,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-4,
    noise: str = "gaussian",
    seeds: int = 1,
    statistics: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Image-level clustering per layer (§3.5): k-means on CLS and on mean-pooled spatial
    features against the class labels; ``feature='noise'`` rows are the random-chance
    baseline (noise of the same shape, seeded; ``noise='uniform'`` is the faithful variant).
    ``value``: the mean of ``seeds`` k-means runs (1: the paper's single run); ``ci_low`` /
    ``ci_high``: a bootstrap interval over the runs and the images
    (:func:`~vitlib.metrics.clustering.seeded_cluster_scores`; docs §D7)."""
    from vitlib.metrics.clustering import noise_like, seeded_cluster_scores

    g = Store.open(store)
    meta = g.meta
    y = g.labels
    k = k or int(len(np.unique(y)))
    kw: dict[str, Any] = dict(
        seed=seed, seeds=seeds, n_init=n_init, max_iter=max_iter, tol=tol, statistics=statistics
    )
    rows = []

    def add(feature: str, layer: int, scores: dict[str, tuple[float, float, float]]) -> None:
        for m, (v, lo, hi) in scores.items():
            rows.append(
                {"feature": feature, "layer": layer, "metric": m, "value": v}
                | {"ci_low": lo, "ci_high": hi}
            )

    for feat, kind in (("cls", "cls"), ("spatial", "spatial_mean")):
        name = keys.feature("block", kind)
        for layer in g.layers_of(name):
            x = g.layer(name, layer).astype(np.float32)
            what = f"dataset {g.dataset!r}, {feat} block {layer + 1}"
            add(feat, layer, seeded_cluster_scores(x, y, k, what=what, **kw))
    x = noise_like((len(y), meta["embed_dim"]), noise, seed)
    add("noise", -1, seeded_cluster_scores(x, y, k, what=f"dataset {g.dataset!r}, noise", **kw))
    t = pd.DataFrame(rows)
    for col, val in {
        "k": k,
        "seed": seed,
        "seeds": seeds,
        "noise": noise,
        "n_images": len(y),
    }.items():
        t[col] = val
    return t


# --------------------------------------------------------------------------- similarity suite


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (``nan`` entries ignored and kept ``nan``)."""
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size:
        order = ok[np.argsort(p[ok], kind="stable")]
        ranked = p[order] * ok.size / np.arange(1, ok.size + 1)
        q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q


def _null_stats(g: np.ndarray, distance: bool) -> dict[str, np.ndarray]:
    """Observed value and its permutation null per cell of ``g`` ``[1 + P, Lx, Ly]``."""
    value, null = g[0], g[1:]
    P = null.shape[0]
    nan = np.full(value.shape, np.nan)
    if P == 0:
        return {"value": value, "null_mean": nan, "null_std": nan, "z": nan, "p": nan}
    mean = null.mean(axis=0)
    std = null.std(axis=0, ddof=1) if P > 1 else nan
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(std > 0, (value - mean) / std, np.nan)
        # one-sided, in the direction of "more similar than chance"; a null value equal to
        # the observed one counts against it
        beats = (null <= value) if distance else (null >= value)
        p = (1.0 + beats.sum(axis=0)) / (P + 1.0)
    p = np.where(np.isfinite(value), p, np.nan)
    return {"value": value, "null_mean": mean, "null_std": std, "z": z, "p": p}


def _best(value: np.ndarray, axis: int, distance: bool) -> np.ndarray:
    """True where a cell is the best match along ``axis`` (first on ties; none if all nan)."""
    filled = np.where(np.isfinite(value), value, np.inf if distance else -np.inf)
    arg = filled.argmin(axis=axis) if distance else filled.argmax(axis=axis)
    out = np.zeros(value.shape, bool)
    any_ok = np.isfinite(value).any(axis=axis)
    if axis == 1:
        out[np.arange(value.shape[0]), arg] = any_ok
    else:
        out[arg, np.arange(value.shape[1])] = any_ok
    return out


def similarity_table(
    stores: Sequence[Store | str],
    *,
    measures: Sequence[str] | None = None,
    kinds: Sequence[str] = keys.FEATURE_KINDS,
    max_images: int | None = 2000,
    permutations: int = 100,
    null_measures: Sequence[str] | None = None,
    seed: int = 0,
    k: int = 10,
    sigma_frac: float = 1.0,
    keep: float = 0.99,
    rsa_method: str = "spearman",
    alpha: float = 0.05,
    cache_bytes: int = 8 << 30,
) -> pd.DataFrame:
    """Every similarity measure between every layer pair of every pair of models (self-pairs
    included, each unordered pair once, ``x`` not after ``y``), CLS and mean-spatial block
    outputs, each with its permutation null (docs/protocols.md §D6); ``metric`` names the
    measure.

    The same ``max_images`` images of every store (a seeded subset when the dataset has
    more) and the same seeded permutations for every pair. Columns: ``value``; the null's
    ``null_mean`` and ``null_std`` over ``permutations`` shuffles of the image
    correspondence; ``z``; the one-sided permutation ``p`` ((1 + #null at least as similar)
    / (1 + P)); ``q``, Benjamini–Hochberg over the layer × layer grid of that model pair,
    kind and measure, and ``significant`` (``q <= alpha``); ``best_for_x`` (``layer_y`` is
    the best match of ``layer_x`` in model y) and ``best_for_y``. Measures not in
    ``null_measures`` (default: all) get no null (``nan`` columns).

    Each model's per-layer precomputation is kept for the pairs that follow while the
    models' together stay under ``cache_bytes`` (then the least recently used is rebuilt
    when needed): ``3 L n (n + 1) / 2 × 8`` bytes per model for the ``n × n`` forms of
    linear CKA, RBF CKA and RSA, kept as packed halves (n = 2,000, 12 layers: 0.58 GB).
    """
    from vitlib.metrics.similarity_suite import (
        DISTANCES,
        SUITE_MEASURES,
        SuiteOptions,
        pair_grids,
    )

    names = list(measures or SUITE_MEASURES)
    bad = [m for m in names if m not in SUITE_MEASURES]
    if bad:
        raise ValueError(f"unknown similarity measures {bad}; choose from {SUITE_MEASURES}")
    with_null = [m for m in names if null_measures is None or m in null_measures]
    without = [m for m in names if m not in with_null]
    gs = [Store.open(s) for s in stores]
    for g in gs[1:]:
        if g.meta["manifest_digest"] != gs[0].meta["manifest_digest"]:
            raise ValueError(
                f"{g.path} and {gs[0].path} were extracted from different manifests;"
                " similarity needs the same images"
            )
    n = gs[0].n_items
    rng = np.random.default_rng(seed)
    if max_images is not None and n > max_images:
        rows = np.sort(rng.choice(n, size=max_images, replace=False))
    else:
        rows = np.arange(n)
    m = rows.size
    perms = np.stack([rng.permutation(m) for _ in range(permutations)]) if permutations else None
    options = SuiteOptions(k=k, sigma_frac=sigma_frac, keep=keep, rsa_method=rsa_method)  # type: ignore[arg-type]
    frames = []
    for kind in kinds:
        if kind not in keys.FEATURE_KINDS:
            raise ValueError(f"unknown feature kind {kind!r}; choose from {keys.FEATURE_KINDS}")
        name = keys.feature("block", kind)
        for g in gs:
            if not g.has(name):
                raise KeyError(f"{g.path} has no {name}: extract with the features need")
        cache = _RepCache(gs, name, rows, names, options, cache_bytes)
        for a in range(len(gs)):
            for b in range(a, len(gs)):
                ra = cache.get(a, b)
                rb = cache.get(b, a)
                # n × n forms of both sides kept for the next pair only when they fit
                release = 2 * 3 * max(ra.L, rb.L) * m * (m + 1) // 2 * 8 > cache_bytes // 2
                grids = {}
                if with_null:
                    grids = pair_grids(ra, rb, perms, with_null, release=release)
                if without:
                    grids.update(pair_grids(ra, rb, None, without, release=release))
                for measure in names:
                    frames.append(
                        _similarity_frame(
                            gs[a], gs[b], kind, measure, grids[measure], measure in DISTANCES
                        )
                    )
    out = pd.concat(frames, ignore_index=True)
    out["significant"] = out["q"] <= alpha
    out["n_images"] = m
    out["permutations"] = np.where(out["metric"].isin(with_null), permutations, 0)
    return out


class _RepCache:
    """Per-layer precomputations of the stores' features, least recently used evicted first
    once together they exceed ``budget`` bytes (never the pair's other side)."""

    def __init__(
        self,
        stores: Sequence[Store],
        key: str,
        rows: np.ndarray,
        measures: Sequence[str],
        options: Any,
        budget: int,
    ) -> None:
        self.stores, self.key, self.rows = stores, key, rows
        self.measures, self.options, self.budget = measures, options, budget
        self.held: dict[int, Any] = {}

    def get(self, i: int, keep: int) -> Any:
        from vitlib.metrics.similarity_suite import LayerReps

        if i in self.held:
            self.held[i] = self.held.pop(i)
            return self.held[i]
        g = self.stores[i]
        feats = np.asarray(g.array(self.key).oindex[self.rows], dtype=np.float64)
        try:
            r = LayerReps(feats, self.measures, self.options)
        except ValueError as e:
            raise ValueError(f"{g.path}, {self.key}: {e}") from e
        while self.held and sum(c.nbytes for c in self.held.values()) + r.nbytes > self.budget:
            old = next((j for j in self.held if j != keep), None)
            if old is None:
                break
            del self.held[old]
        self.held[i] = r
        return r


def _similarity_frame(
    gx: Store, gy: Store, kind: str, measure: str, grid: np.ndarray, distance: bool
) -> pd.DataFrame:
    stats = _null_stats(grid, distance)
    lx, ly = stats["value"].shape
    i, j = np.meshgrid(np.arange(lx), np.arange(ly), indexing="ij")
    cols = {k: v.ravel() for k, v in stats.items()}
    return pd.DataFrame(
        {
            "model_x": gx.model,
            "model_y": gy.model,
            "family_x": gx.family,
            "family_y": gy.family,
            "kind": kind,
            "metric": measure,
            "layer_x": i.ravel(),
            "layer_y": j.ravel(),
            **cols,
            "q": _bh(stats["p"].ravel()),
            "best_for_x": _best(stats["value"], 1, distance).ravel(),
            "best_for_y": _best(stats["value"], 0, distance).ravel(),
        }
    )
