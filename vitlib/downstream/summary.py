"""Summary tables of downstream results (paper Tables 1, 5 and 6)."""

from __future__ import annotations

import pandas as pd


def table6(probe: pd.DataFrame) -> pd.DataFrame:
    """Linear-probe top-1 in the layout of the paper's Table 6: one row per model, columns
    CLS / spatial with and without BatchNorm, at the paper's block (the last; block 8 for
    BEiT) — from the long probe table."""
    if "metric" in probe:
        probe = probe[probe["metric"] == "top1"].rename(columns={"value": "top1"})
    from vitlib.downstream.tables import probe_layers

    paper = probe.apply(
        lambda r: probe_layers("paper", int(r["depth"]), str(r["family"]))[0], axis=1
    )
    last = probe[probe.layer == paper].copy()
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
    """The per-layer scores the summary takes from one long table, as declared by its
    analysis in the registry (:attr:`vitlib.registry.Analysis.summary`): columns ``dataset,
    model, family, depth, layer, metric`` (the headline's label) and ``value``."""
    from vitlib.registry import get

    names = table["analysis"].unique()
    if len(names) != 1:
        raise ValueError(f"a headline needs the table of one analysis, got {list(names)}")
    a = get(str(names[0]))
    if not a.summary:
        raise ValueError(f"analysis {a.name!r} declares no summary metric")
    out = []
    for h in a.summary:
        sel = table[table["metric"] == h.metric]
        label = h.label
        for col, val in h.where.items():
            if col == "k" and not (sel[col] == val).any():  # fewer neighbours than asked
                val = int(sel[col].iloc[0])
                label = f"{h.label.split(' (')[0]} (k={val})"
            sel = sel[sel[col] == val]
        keep = ["dataset", "model", "family", "depth", "layer"]
        out.append(sel[keep].assign(metric=label, value=sel["value"].astype(float)))
    return pd.concat(out, ignore_index=True)


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
