"""Feature analyses on finished stores (docs/protocols.md §3): tidy tables, no forward pass."""

from __future__ import annotations

from collections.abc import Sequence
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


def _grid_frame(
    gx: Store,
    gy: Store,
    x: tuple[np.ndarray, list[tuple[str, int]]],
    y: tuple[np.ndarray, list[tuple[str, int]]],
    *,
    points: str,
    kind: str,
    minmax: bool,
) -> pd.DataFrame:
    (kx, lx), (ky, ly) = x, y
    grid = _cka(kx, ky, minmax=minmax)
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
) -> pd.DataFrame:
    """Layer × layer CKA between two models (or one model with itself, §3.2)."""
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
    )


def cka_grids_table(
    stores: Sequence[Store | str],
    *,
    points: str = "norm",
    kind: str = "all",
    minmax: bool = False,
) -> pd.DataFrame:
    """Layer × layer CKA of every unordered pair of ``stores`` in their order, self-pairs
    included (§3.2): the rows of :func:`cka_pair_table` for each pair ``(x, y)``, ``x`` not
    after ``y``.  Each store's Grams are read once, so M models cost M reads, not M(M+1)."""
    gs = [Store.open(s) for s in stores]
    for g in gs[1:]:
        _same_partition(gs[0], g)
    grams = [_interleaved(g, GRID_POINTS[points], kind) for g in gs]
    frames = [
        _grid_frame(gs[a], gs[b], grams[a], grams[b], points=points, kind=kind, minmax=minmax)
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
) -> pd.DataFrame:
    """Image-level clustering per layer (§3.5): k-means on CLS and on mean-pooled spatial
    features against the class labels; ``feature='noise'`` rows are the random-chance
    baseline (noise of the same shape, seeded; ``noise='uniform'`` is the faithful variant)."""
    from vitlib.metrics.clustering import cluster_scores, noise_like

    g = Store.open(store)
    meta = g.meta
    y = g.labels
    k = k or int(len(np.unique(y)))
    kw: dict[str, Any] = dict(seed=seed, n_init=n_init, max_iter=max_iter, tol=tol)
    rows = []
    for feat, kind in (("cls", "cls"), ("spatial", "spatial_mean")):
        name = keys.feature("block", kind)
        for layer in g.layers_of(name):
            x = g.layer(name, layer).astype(np.float32)
            what = f"dataset {g.dataset!r}, {feat} block {layer + 1}"
            for m, v in cluster_scores(x, y, k, what=what, **kw).items():
                rows.append({"feature": feat, "layer": layer, "metric": m, "value": v})
    x = noise_like((len(y), meta["embed_dim"]), noise, seed)
    for m, v in cluster_scores(x, y, k, what=f"dataset {g.dataset!r}, noise", **kw).items():
        rows.append({"feature": "noise", "layer": -1, "metric": m, "value": v})
    t = pd.DataFrame(rows)
    for col, val in {
        "k": k,
        "seed": seed,
        "noise": noise,
        "n_images": len(y),
    }.items():
        t[col] = val
    return t
