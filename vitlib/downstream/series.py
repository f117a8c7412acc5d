"""Checkpoint series: one training run's checkpoints as one family, the epoch as an axis.

A series (config ``checkpoints:``) is analysed as the models ``<series>-e<epoch>``, one per
epoch, by every analysis like any model. :func:`series_table` gathers, from the best-layer
metrics of the summary (:func:`vitlib.downstream.summary.headline`), each epoch's per-layer
scores; :func:`series_figure` draws, per metric, the best layer's score and the last
layer's score against the epoch (with the best layer's bootstrap interval) and the whole
layer × epoch grid — how the layer a task prefers moves during training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

__all__ = ["series_figure", "series_table"]


def series_table(
    tables: Sequence[pd.DataFrame], series: Mapping[str, Sequence[tuple[int, str]]]
) -> pd.DataFrame:
    """Rows ``series, epoch, model, dataset, metric, layer, depth, value, ci_low, ci_high``
    of the series' models in the summary metrics of ``tables`` (one table per model, as
    the workflow writes them)."""
    from vitlib.downstream.summary import headline

    epoch_of = {mid: (name, int(e)) for name, eps in series.items() for e, mid in eps}
    if not tables or not epoch_of:
        return pd.DataFrame(
            columns=["series", "epoch", "model", "dataset", "metric", "layer", "value"]
        )
    every = pd.concat(list(tables), ignore_index=True)
    every = every[every["model"].isin(list(epoch_of))]
    out = []
    for _, t in every.groupby("analysis", sort=False):
        h = headline(t)
        h = h.assign(
            series=h["model"].map(lambda m: epoch_of[m][0]),
            epoch=h["model"].map(lambda m: epoch_of[m][1]),
        )
        out.append(
            h[["series", "epoch", "model", "dataset", "metric", "layer", "depth", "value"]].assign(
                ci_low=h["ci_low"].to_numpy(), ci_high=h["ci_high"].to_numpy()
            )
        )
    if not out:
        return pd.DataFrame(
            columns=["series", "epoch", "model", "dataset", "metric", "layer", "value"]
        )
    return pd.concat(out, ignore_index=True).sort_values(
        ["series", "dataset", "metric", "epoch", "layer"], kind="stable"
    )


def series_figure(table: pd.DataFrame, outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Per (series, dataset, metric): top, the best layer's score (solid, with its interval)
    and the last layer's (dashed) against the epoch, the best layer annotated; bottom, the
    score of every layer (rows) at every epoch (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitlib.plots.style import save_figure

    groups = list(table.groupby(["series", "dataset", "metric"], sort=False)) if len(table) else []
    if not groups:
        fig, ax = plt.subplots(figsize=(5, 1.6))
        ax.axis("off")
        ax.text(0.5, 0.5, "no checkpoint series with a best-layer metric", ha="center")
        save_figure(fig, outputs, dpi)
        return
    fig, axes = plt.subplots(
        2, len(groups), figsize=(3.8 * len(groups), 6.2), squeeze=False, layout="constrained"
    )
    for j, ((name, ds, metric), g) in enumerate(groups):
        epochs = sorted(g["epoch"].unique())
        best = g.loc[g.groupby("epoch")["value"].idxmax()].sort_values("epoch")
        last = g[g["layer"] == g["depth"] - 1].sort_values("epoch")
        ax = axes[0, j]
        ax.plot(best["epoch"], best["value"], "o-", color="C0", label="best layer")
        if best["ci_low"].notna().any():
            ax.fill_between(
                best["epoch"], best["ci_low"], best["ci_high"], color="C0", alpha=0.2, lw=0
            )
        ax.plot(last["epoch"], last["value"], "s--", color="C1", label="last layer")
        for e, v, layer in zip(best["epoch"], best["value"], best["layer"], strict=True):
            ax.annotate(
                f"{int(layer) + 1}",
                (e, v),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
            )
        ax.set_title(f"{name}: {metric} — {ds}", fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        grid = g.pivot_table(index="layer", columns="epoch", values="value").reindex(columns=epochs)
        ax2 = axes[1, j]
        im = ax2.imshow(grid.to_numpy(dtype=float), aspect="auto", origin="lower", cmap="viridis")
        ax2.set_xticks(range(len(epochs)), [str(e) for e in epochs], fontsize=7)
        ax2.set_yticks(range(len(grid)), [str(int(i) + 1) for i in grid.index], fontsize=7)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("block")
        fig.colorbar(im, ax=ax2, shrink=0.8)
    save_figure(fig, outputs, dpi)


def series_from_files(
    paths: Sequence[str], series: Mapping[str, Sequence[Sequence[int | str]]]
) -> pd.DataFrame:
    """:func:`series_table` of the tables at ``paths`` (``series`` as the workflow passes it:
    lists of ``[epoch, model]``)."""
    s = {k: [(int(e), str(m)) for e, m in v] for k, v in series.items()}
    return series_table([pd.read_csv(p) for p in paths], s)
