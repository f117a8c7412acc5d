"""Object- and part-level feature clustering (docs/protocols.md §3.6) from a token store.

Each annotation's soft token mask (resized to the image's token grid; centre-cropped only
for the non-dense ``patches`` view) pools the block outputs of every layer:
``f = Σ_rc m[r, c] · F[r, c, :]``.  k-means per layer on the pooled features against the
annotations' categories gives purity, NMI and ARI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from vitlib import keys
from vitlib.data.annotations import annotation_masks, coco_for_item, token_masks
from vitlib.data.manifest import Manifest
from vitlib.metrics.clustering import noise_like, seeded_cluster_scores
from vitlib.store import Store


def segment_masks(
    manifest: Manifest, grids: np.ndarray, *, crop: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image: soft token masks ``[A, gh·gw]`` (float32) of its usable annotations at
    its token grid (``grids[i]``) and their categories ``[A]`` (``A`` may be 0)."""
    out = []
    for i, item in enumerate(manifest.items):
        coco = coco_for_item(manifest, item)
        gh, gw = (int(v) for v in grids[i])
        soft, c = token_masks(
            annotation_masks(coco, int(item.meta["image_id"])), (gh, gw), crop=crop
        )
        out.append((soft.reshape(len(soft), -1).astype(np.float32), np.asarray(c, np.int64)))
    return out


def pool(soft: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """``[A, L, D]``: ``Σ_m soft[a, m] · tokens[m, l, :]`` in float32 (tokens ``[m, L, D]``)."""
    return np.einsum("am,mld->ald", soft, tokens.astype(np.float32))


def pooled_features(store: Store | str, manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """``[A, L, D]`` mask-pooled features of every usable annotation and their categories:
    pooled during the extraction (need ``segment_pool``) or from a token store."""
    g = Store.open(store)
    meta = g.meta
    if g.has(keys.SEG_POOLED):
        x, y = g.read(keys.SEG_POOLED), g.read(keys.SEG_CATEGORY)
        if not len(y):
            raise ValueError(f"{manifest.dataset!r}: no annotation survives at token resolution")
        return x, y
    if not g.is_token_view:
        raise ValueError(
            f"{g.path} is not a token store (view {meta['view']!r}); object"
            " clustering needs the 'dense' or 'patches' view"
        )
    crop = meta["view"] == "patches"
    offsets = g.read(keys.OFFSETS)
    grids = g.read(keys.GRID)
    tokens = g.array(keys.TOKENS)
    feats: list[np.ndarray] = []
    cats: list[np.ndarray] = []
    for i, (soft, c) in enumerate(segment_masks(manifest, grids, crop=crop)):
        if not len(soft):
            continue
        feats.append(pool(soft, np.asarray(tokens[offsets[i] : offsets[i + 1]])))
        cats.append(c)
    if not feats:
        raise ValueError(f"{manifest.dataset!r}: no annotation survives at token resolution")
    return np.concatenate(feats), np.concatenate(cats)


def segment_clustering_table(
    store: Store | str,
    manifest: Manifest,
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
    """Per layer purity / NMI / ARI of k-means on pooled object (COCO) or part
    (PartImageNet) features; ``k`` defaults to the number of categories present (the
    original used 80 for both datasets: set ``k: 80`` to reproduce). ``seeds`` k-means runs
    are averaged; ``ci_low``/``ci_high`` resample the runs and the annotations
    (:func:`~vitlib.metrics.clustering.seeded_cluster_scores`; docs §D7)."""
    s = Store.open(store)
    x, y = pooled_features(s, manifest)
    k = k or int(len(np.unique(y)))
    k = min(k, len(y))
    rows = []
    kw: dict[str, Any] = dict(
        seed=seed, seeds=seeds, n_init=n_init, max_iter=max_iter, tol=tol, statistics=statistics
    )
    for layer in range(x.shape[1]):
        what = f"dataset {manifest.dataset!r}, block {layer + 1}"
        for m, (v, lo, hi) in seeded_cluster_scores(x[:, layer], y, k, what=what, **kw).items():
            rows.append(
                {"feature": "pooled", "layer": layer, "metric": m, "value": v}
                | {"ci_low": lo, "ci_high": hi}
            )
    for m, (v, lo, hi) in seeded_cluster_scores(
        noise_like((len(y), x.shape[2]), noise, seed), y, k, what="noise", **kw
    ).items():
        rows.append(
            {"feature": "noise", "layer": -1, "metric": m, "value": v, "ci_low": lo, "ci_high": hi}
        )
    t = pd.DataFrame(rows)
    level = "part" if manifest.kind == "partimagenet" else "object"
    for col, val in {
        "level": level,
        "k": k,
        "seed": seed,
        "seeds": seeds,
        "noise": noise,
        "n_segments": len(y),
    }.items():
        t[col] = val
    return t
