"""Summary tables of downstream results (paper Tables 1, 5 and 6)."""

from __future__ import annotations

import pandas as pd


def table6(probe: pd.DataFrame) -> pd.DataFrame:
    """Last-layer linear-probe top-1 in the layout of the paper's Table 6: one row per model,
    columns CLS / spatial with and without BatchNorm."""
    last = probe[probe.layer == probe.depth - 1].copy()
    last["column"] = (last["feature"].map({"cls": "CLS", "spatial_mean": "Spatial"}) +
                      last["batchnorm"].map({True: " +BN", False: ""}))
    order = list(dict.fromkeys(last["model"]))
    return last.pivot(index="model", columns="column", values="top1").reindex(order)


def best_layer(table: pd.DataFrame, metric: str, *, group: str = "model") -> pd.DataFrame:
    """Best layer per model for a per-layer metric (paper Tables 1 and 5): the 1-based layer,
    of how many, and the score there."""
    idx = table.groupby(group, sort=False)[metric].idxmax()
    best = table.loc[idx, [group, "layer", "depth", metric]].copy()
    best["layer"] = best["layer"] + 1
    return best.rename(columns={"layer": "best_layer", "depth": "of", metric: f"best_{metric}"})
