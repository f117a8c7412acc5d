"""Object- and part-level feature clustering (PROTOCOLS §3.6) from a token store.

Each annotation's soft token mask (resized to the image's token grid; centre-cropped only
for the non-dense ``patches`` view) pools the block outputs of every layer:
``f = Σ_rc m[r, c] · F[r, c, :]``.  k-means per layer on the pooled features against the
annotations' categories gives purity, NMI and ARI.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vitlib.data.annotations import annotation_masks, coco_for_item, token_masks
from vitlib.data.manifest import Manifest
from vitlib.metrics.clustering import cluster_scores, noise_like
from vitlib.store import open_store, store_meta


def pooled_features(store_path: str, manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """``[A, L, D]`` mask-pooled features of every usable annotation and their categories."""
    g = open_store(store_path)
    meta = store_meta(g)
    if meta.get("kind") != "tokens":
        raise ValueError(
            f"{store_path} is not a token store (view {meta['view']!r}); object"
            " clustering needs the 'dense' or 'patches' view"
        )
    crop = meta["view"] == "patches"
    offsets = np.asarray(g["offsets"][...])
    grids = np.asarray(g["grid"][...])
    feats, cats = [], []
    for i, item in enumerate(manifest.items):
        coco = coco_for_item(manifest, item)
        gh, gw = (int(v) for v in grids[i])
        soft, c = token_masks(
            annotation_masks(coco, int(item.meta["image_id"])), (gh, gw), crop=crop
        )
        if not len(soft):
            continue
        tok = np.asarray(
            g["tokens"][offsets[i] : offsets[i + 1]], dtype=np.float32
        )  # [gh·gw, L, D]
        feats.append(np.einsum("am,mld->ald", soft.reshape(len(soft), -1).astype(np.float32), tok))
        cats.append(c)
    if not feats:
        raise ValueError(f"{manifest.dataset!r}: no annotation survives at token resolution")
    return np.concatenate(feats), np.concatenate(cats)


def segment_clustering_table(
    store_path: str,
    manifest: Manifest,
    *,
    k: int | None = None,
    seed: int = 0,
    n_init: int = 10,
    noise: str = "gaussian",
) -> pd.DataFrame:
    """Per layer purity / NMI / ARI of k-means on pooled object (COCO) or part
    (PartImageNet) features; ``k`` defaults to the number of categories present (the
    original used 80 for both datasets: set ``k: 80`` to reproduce)."""
    x, y = pooled_features(store_path, manifest)
    meta = store_meta(open_store(store_path))
    k = k or int(len(np.unique(y)))
    k = min(k, len(y))
    rows = []
    for layer in range(x.shape[1]):
        for m, v in cluster_scores(x[:, layer], y, k, seed=seed, n_init=n_init).items():
            rows.append({"feature": "pooled", "layer": layer, "metric": m, "value": v})
    for m, v in cluster_scores(
        noise_like((len(y), x.shape[2]), noise, seed), y, k, seed=seed, n_init=n_init
    ).items():
        rows.append({"feature": "noise", "layer": -1, "metric": m, "value": v})
    t = pd.DataFrame(rows)
    level = "part" if manifest.kind == "partimagenet" else "object"
    for col, val in {
        "model": meta["model"],
        "dataset": meta["dataset"],
        "level": level,
        "view": meta["view"],
        "family": meta["spec"]["family"],
        "depth": meta["depth"],
        "k": k,
        "seed": seed,
        "noise": noise,
        "n_segments": len(y),
    }.items():
        t[col] = val
    return t
