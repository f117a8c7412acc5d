"""Downstream figures (paper Figures 9–10, 28–31); each reads result tables only."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from vitlib.plots.style import model_style, save_figure  # noqa: E402


def knn_figure(table: pd.DataFrame, outputs: Sequence[str | Path], *, k: int = 20,
               dpi: int = 150) -> None:
    """k-NN top-1 and top-5 accuracy per layer (k = 20 as in the paper's plots), with the
    chance level."""
    kk = k if (table["k"] == k).any() else int(table["k"].iloc[0])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for model, t in table[table.k == kk].groupby("model", sort=False):
        st = model_style(str(model), str(t["family"].iloc[0]))
        for ax, m in zip(axes, ("top1", "top5")):
            ax.plot(t["layer"] + 1, t[m], label=model, **st)
    for ax, m in zip(axes, ("top1", "top5")):
        ax.axhline(float(table["chance"].iloc[0]) * (1 if m == "top1" else 5), color="0.5",
                   ls="--", lw=1, label="chance")
        ax.set_xlabel("layer")
        ax.set_ylabel(f"{m} accuracy (%)")
        ax.set_title(f"k-NN (k = {kk}) {m}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    save_figure(fig, outputs, dpi)


def probe_figure(table: pd.DataFrame, outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Linear-probe top-1 per layer: CLS / spatial features, without / with BatchNorm."""
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
