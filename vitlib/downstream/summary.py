"""Summary tables of downstream results (paper Tables 1, 5 and 6)."""

from __future__ import annotations

import pandas as pd


def table6(probe: pd.DataFrame) -> pd.DataFrame:
    """Last-layer linear-probe top-1 in the layout of the paper's Table 6: one row per model,
    columns CLS / spatial with and without BatchNorm."""
    last = probe[probe.layer == probe.depth - 1].copy()
    last["column"] = last["feature"].map({"cls": "CLS", "spatial_mean": "Spatial"}) + last[
        "batchnorm"
    ].map({True: " +BN", False: ""})
    order = list(dict.fromkeys(last["model"]))
    return last.pivot(index="model", columns="column", values="top1").reindex(order)


def best_layer(table: pd.DataFrame, metric: str, *, group: str = "model") -> pd.DataFrame:
    """Best layer per model for a per-layer metric (paper Tables 1 and 5): the 1-based layer,
    of how many, and the score there."""
    idx = table.groupby(group, sort=False)[metric].idxmax()
    best = table.loc[idx, [group, "layer", "depth", metric]].copy()
    best["layer"] = best["layer"] + 1
    return best.rename(columns={"layer": "best_layer", "depth": "of", metric: f"best_{metric}"})


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """One per-layer score column ``value`` per (model, metric) from any downstream table:
    k-NN top-1 at k = 20, retrieval mAP (Medium, Hard), DAVIS J&F, SPair PCK@0.1."""
    t = table
    keep = ["model", "family", "depth", "layer"]
    if "top1" in t and "k" in t:  # k-NN
        k = 20 if (t["k"] == 20).any() else int(t["k"].iloc[0])
        out = t[t.k == k][keep].assign(
            value=t["top1"], metric=f"k-NN top-1 (k={k})", dataset=t["test"]
        )
    elif "protocol" in t:  # retrieval
        out = t[keep].assign(
            value=t["map"], metric="mAP " + t["protocol"].str.capitalize(), dataset=t["dataset"]
        )
    elif "JF" in t:  # DAVIS
        out = t[keep].assign(value=t["JF"], metric="J&F", dataset=t["dataset"])
    elif "alpha" in t:  # SPair
        a = 0.1 if (t["alpha"] == 0.1).any() else float(t["alpha"].iloc[0])
        out = t[t.alpha == a][keep].assign(value=t["pck"], metric=f"PCK@{a}", dataset=t["dataset"])
    else:
        raise ValueError(f"not a downstream table: columns {list(t.columns)}")
    return out.reset_index(drop=True)


def summary_table(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Best layer per (dataset, metric, model) as in the paper's Tables 1 and 5, with the
    last layer's score beside it (how much an intermediate layer gains)."""
    rows = []
    for t in tables:
        h = headline(t)
        for (ds, metric), g in h.groupby(["dataset", "metric"], sort=False):
            best = best_layer(g, "value")
            last = g[g.layer == g.depth - 1].set_index("model")["value"]
            for _, r in best.iterrows():
                rows.append(
                    {
                        "dataset": ds,
                        "metric": metric,
                        "model": r["model"],
                        "best_layer": int(r["best_layer"]),
                        "of": int(r["of"]),
                        "best": float(r["best_value"]),
                        "last_layer": float(last.get(r["model"], float("nan"))),
                    }
                )
    return pd.DataFrame(rows)


def summary_from_files(paths: list[str]) -> pd.DataFrame:
    return summary_table([pd.read_csv(p) for p in paths])
