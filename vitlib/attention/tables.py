"""Attention analyses that read a finished store and write tidy tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from vitlib import keys
from vitlib.attention.core import uniform_attention_distance
from vitlib.store import Store

DISTANCE_UNITS = ("normalised", "tokens", "pixels")


def attention_distance_table(
    store: Store | str,
    *,
    units: str = "normalised",
    statistics: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Mean attention distance per layer and head over all images of a store, with its
    bootstrap interval over the images (``ci_low``, ``ci_high``; docs/protocols.md §D7).

    Returns a tidy table with columns ``model, dataset, view, layer, head, metric, value,
    std, n_images, units`` (``layer``/``head`` 0-based; ``metric`` = ``attention_distance``).
    ``units``: ``normalised`` (unit square, docs/protocols.md §2.5), ``tokens`` (× (K−1), the grid
    units of Raghu et al.) or ``pixels`` (tokens × patch size).
    """
    if units not in DISTANCE_UNITS:
        raise ValueError(f"units must be one of {DISTANCE_UNITS}, got {units!r}")
    g = Store.open(store)
    meta = g.meta
    dist = g.array(keys.ATTN_DISTANCE)
    n, L, H = dist.shape
    # Stream over image chunks: sums of x and x² per (layer, head); the per-image values are
    # kept for the bootstrap (n × L × H float32: 50,000 × 24 × 16 = 77 MB)
    s1 = np.zeros((L, H))
    s2 = np.zeros((L, H))
    step = dist.chunks[0]
    parts = []
    for lo in range(0, n, step):
        x = np.asarray(dist[lo : lo + step], dtype=np.float64)
        s1 += x.sum(0)
        s2 += (x * x).sum(0)
        parts.append(x.astype(np.float32))
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    from vitlib.stats import bootstrap_ci, settings_of

    resamples, level, seed = settings_of(statistics)
    ci_lo, ci_hi = bootstrap_ci(
        np.concatenate(parts) if parts else np.zeros((0, L, H)),
        resamples=resamples,
        level=level,
        seed=seed,
    )
    scale = 1.0
    if units != "normalised":
        scale = max(max(meta["grid_hw"]) - 1, 1)
        if units == "pixels":
            scale *= meta["spec"]["patch_size"]
    layer, head = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    return pd.DataFrame(
        {
            "layer": layer.ravel(),
            "head": head.ravel(),
            "metric": "attention_distance",
            "value": (mean * scale).ravel(),
            "ci_low": (ci_lo * scale).ravel(),
            "ci_high": (ci_hi * scale).ravel(),
            "std": (std * scale).ravel(),
            "n_images": n,
            "units": units,
            # uniform attention over the same grid, in the same units (the figure's reference)
            "uniform": uniform_attention_distance(tuple(meta["grid_hw"])) * scale,
        }
    )
