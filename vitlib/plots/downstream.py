"""Downstream figures (paper Figures 9–10, 28–31); each reads result tables only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vitlib.plots.style import model_style, save_figure  # noqa: E402
from vitlib.tables import wide  # noqa: E402


def knn_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    k: int = 20,
) -> None:
    """k-NN top-1 and top-5 accuracy per layer (k = 20 as in the paper's plots), with the
    chance level."""
    table = wide(table)
    kk = k if (table["k"] == k).any() else int(table["k"].iloc[0])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for model, t in table[table.k == kk].groupby("model", sort=False):
        st = model_style(str(model), str(t["family"].iloc[0]))
        for ax, m in zip(axes, ("top1", "top5")):
            ax.plot(t["layer"] + 1, t[m], label=model, **st)
    for ax, m in zip(axes, ("top1", "top5")):
        ax.axhline(  # top-5 chance: 5 / C, certain (100 %) below five classes
            min(100.0, float(table["chance"].iloc[0]) * (1 if m == "top1" else 5)),
            color="0.5",
            ls="--",
            lw=1,
            label="chance",
        )
        ax.set_xlabel("layer")
        ax.set_ylabel(f"{m} accuracy (%)")
        ax.set_title(f"k-NN (k = {kk}) {m}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    save_figure(fig, outputs, dpi)


def probe_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """Linear-probe top-1 per layer: CLS / spatial features, without / with BatchNorm."""
    table = wide(table)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), constrained_layout=True, sharey=True)
    panels = [("cls", False), ("cls", True), ("spatial_mean", False), ("spatial_mean", True)]
    for ax, (feat, bn) in zip(axes, panels):
        for model, t in table.groupby("model", sort=False):
            st = model_style(str(model), str(t["family"].iloc[0]))
            g = t[(t.feature == feat) & (t.batchnorm == bn)]
            ax.plot(g["layer"] + 1, g["top1"], label=model, **st)
        ax.axhline(float(table["chance"].iloc[0]), color="0.5", ls="--", lw=1)
        ax.set_title(f"{'CLS' if feat == 'cls' else 'spatial'}{' + BN' if bn else ''}")
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("linear probe top-1 (%)")
    axes[-1].legend(fontsize=7)
    save_figure(fig, outputs, dpi)


#: Per task: panels of (row filter column, value, y column, panel title) and a y label.
_PANELS: dict[str, tuple[list[tuple[str | None, Any, str, str]], str]] = {
    "saliency": (
        [
            ("query", "cls", "iou", "CLS attention saliency"),
            ("query", "spatial", "iou", "Spatial attention saliency"),
        ],
        "IoU (best head)",
    ),
    "segments": (
        [
            ("metric", "purity", "value", "purity"),
            ("metric", "nmi", "value", "NMI"),
            ("metric", "ari", "value", "ARI"),
        ],
        "score",
    ),
    "retrieval": (
        [("protocol", "medium", "map", "Medium"), ("protocol", "hard", "map", "Hard")],
        "mAP (%)",
    ),
    "davis": (
        [
            (None, None, "JF", "J&F"),
            (None, None, "J", "J (region)"),
            (None, None, "F", "F (boundary)"),
        ],
        "score (%)",
    ),
    "spair": (
        [
            ("alpha", 0.1, "pck", "PCK@0.1"),
            ("alpha", 0.05, "pck", "PCK@0.05"),
            ("alpha", 0.01, "pck", "PCK@0.01"),
        ],
        "PCK (%)",
    ),
}


def task_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    task: str,
) -> None:
    """Per-layer curves of one task for every model (paper Figures 5, 8, 9–10, 16, 25–31);
    the clustering panels carry the noise baseline."""
    panels, ylabel = _PANELS[task]
    t = table if task == "segments" else wide(table)
    if "category" in t:  # SPair: the mean over categories
        t = t[t["category"] == "all"]
    if task == "saliency":
        t = t[t.head_selection == "per_image"]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.6 * len(panels), 3.6), constrained_layout=True, squeeze=False
    )
    for ax, (col, val, y, title) in zip(axes[0], panels):
        sub = (
            t
            if col is None
            else t[np.isclose(t[col], val) if isinstance(val, float) else t[col] == val]
        )
        noise = sub[sub.get("feature", pd.Series("", index=sub.index)) == "noise"]
        sub = sub[sub.get("feature", pd.Series("", index=sub.index)) != "noise"]
        for model, g in sub.groupby("model", sort=False):
            ax.plot(
                g["layer"] + 1,
                g[y],
                label=model,
                **model_style(str(model), str(g["family"].iloc[0])),
            )
        if len(noise):
            ax.axhline(float(noise[y].mean()), color="0.5", ls="--", lw=1, label="noise")
        ax.set_title(title)
        ax.set_xlabel("layer")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    save_figure(fig, outputs, dpi)


def best_layer_figure(
    summary: pd.DataFrame, outputs: Sequence[str | Path], *, dpi: int = 150
) -> None:
    """The best-layer table (paper Tables 1 and 5) rendered: one row per model, one column
    per (dataset, metric), cells "score (layer/of)"."""
    s = summary.assign(
        column=summary["dataset"] + "\n" + summary["metric"],
        cell=summary.apply(lambda r: f"{r.best:.1f} ({r.best_layer}/{r.of})", axis=1),
    )
    grid = s.pivot(index="model", columns="column", values="cell").reindex(
        list(dict.fromkeys(s["model"]))
    )
    fig, ax = plt.subplots(figsize=(1.2 + 1.9 * grid.shape[1], 0.6 + 0.35 * grid.shape[0]))
    ax.axis("off")
    tab = ax.table(
        cellText=grid.fillna("").values,
        rowLabels=list(grid.index),
        colLabels=list(grid.columns),
        loc="center",
        cellLoc="center",
    )
    tab.auto_set_font_size(False)
    tab.set_fontsize(7)
    tab.scale(1, 1.6)
    ax.set_title("Best layer per task: score (layer / depth)", fontsize=9)
    save_figure(fig, outputs, dpi)
