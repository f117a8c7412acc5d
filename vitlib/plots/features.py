"""Feature-analysis figures (paper Figures 6–8, 19–27); each reads result tables only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vitlib.plots.style import model_style, save_figure  # noqa: E402


def _layer_ticks(ax: plt.Axes, t: pd.DataFrame) -> None:
    """Grid ticks at the first capture point of a layer, labelled with the layer (1-based)."""
    for axis, pos, point, layer in (
        (ax.yaxis, "row", "point_x", "layer_x"),
        (ax.xaxis, "col", "point_y", "layer_y"),
    ):
        p = t.drop_duplicates(pos).sort_values(pos)
        p = p[p[point] == p[point].iloc[0]]
        step = -(-len(p) // 6)  # at most six ticks
        axis.set_ticks(p[pos].to_numpy()[::step], [str(v + 1) for v in p[layer].to_numpy()[::step]])


def cka_grids_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """Layer × layer CKA of every model pair (Figures 20–22): a models × models panel, the
    upper triangle from the pair tables (y = first model's layers, x = second's)."""
    models = list(models or dict.fromkeys(table["model_x"]))
    n = len(models)
    fig, axes = plt.subplots(
        n, n, figsize=(2.4 * n + 1, 2.2 * n + 0.5), squeeze=False, constrained_layout=True
    )
    im = None
    for a, mx in enumerate(models):
        for b, my in enumerate(models):
            ax = axes[a, b]
            t = table[(table.model_x == mx) & (table.model_y == my)]
            if t.empty:
                ax.axis("off")
                continue
            grid = t.pivot(index="row", columns="col", values="value").to_numpy()
            im = ax.imshow(grid, origin="lower", cmap="magma", vmin=0, vmax=1)
            ax.set_title(f"{mx} × {my}", fontsize=7)
            _layer_ticks(ax, t)
            ax.set_ylabel(f"{mx} layer", fontsize=6)
            ax.set_xlabel(f"{my} layer", fontsize=6)
            ax.tick_params(labelsize=5)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label="CKA")
    pts = table["points"].iloc[0]
    fig.suptitle(
        f"CKA between layers ({'norm1/norm2 of every block' if pts == 'norm' else 'block outputs'})",
        fontsize=9,
    )
    save_figure(fig, outputs, dpi)


def last_layer_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """Last-layer CKA across models for all, CLS and spatial tokens (Figures 6, 19)."""
    models = list(models or dict.fromkeys(table["model_x"]))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), constrained_layout=True)
    for ax, kind in zip(axes, ("all", "cls", "spatial")):
        t = table[table.kind == kind].pivot(index="model_x", columns="model_y", values="value")
        t = t.reindex(index=models, columns=models)
        im = ax.imshow(t.to_numpy(), cmap="hot", vmin=0, vmax=1)
        ax.set_xticks(range(len(models)), models, rotation=90, fontsize=7)
        ax.set_yticks(range(len(models)), models, fontsize=7)
        ax.set_title(f"CKA for {kind} tokens")
        ax.set_xlabel("model (last layer)")
        ax.set_ylabel("model (last layer)")
    fig.colorbar(im, ax=axes, shrink=0.8, label="CKA")
    save_figure(fig, outputs, dpi)


def residual_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """Residual connections (Figure 23): CKA skip vs branch for attention and MLP sub-blocks
    per model, and the skip/branch norm ratio per layer."""
    models = [m for m in (models or dict.fromkeys(table["model"])) if m in set(table["model"])]
    n = len(models)
    fig, axes = plt.subplots(3, n, figsize=(3 * n, 8.5), squeeze=False, constrained_layout=True)
    im = None
    for c, model in enumerate(models):
        t = table[table.model == model]
        for r, sub in enumerate(("attn", "mlp")):
            g = t[(t.sub_block == sub) & (t.metric == "cka")]
            grid = g.pivot(index="layer_x", columns="layer_y", values="value").to_numpy()
            ax = axes[r, c]
            im = ax.imshow(grid, origin="lower", cmap="magma", vmin=0, vmax=1)
            ax.set_title(f"{model}: {sub}", fontsize=8)
            ax.set_ylabel("skip connection (block)", fontsize=7)
            ax.set_xlabel("branch (block)", fontsize=7)
            # 1-based block indices, as on every layer axis; at most ~12 labels
            ticks = np.arange(0, grid.shape[0], max(1, grid.shape[0] // 12))
            ax.set_xticks(ticks, [str(i + 1) for i in ticks], fontsize=6)
            ax.set_yticks(ticks, [str(i + 1) for i in ticks], fontsize=6)
        ax = axes[2, c]
        for sub, ls in (("attn", "-"), ("mlp", "--")):
            for kind, col in (("cls", "tab:red"), ("spatial", "tab:blue")):
                g = t[(t.sub_block == sub) & (t.metric == f"norm_ratio_{kind}")]
                ax.plot(g["layer_x"] + 1, g["value"], ls, color=col, label=f"{sub} {kind}")
        ax.set_yscale("log")
        ax.set_xlabel("layer", fontsize=7)
        ax.set_ylabel("‖skip‖ / ‖branch‖", fontsize=7)
        ax.legend(fontsize=6)
    if im is not None:
        fig.colorbar(im, ax=axes[:2], shrink=0.6, label="CKA")
    save_figure(fig, outputs, dpi)


def clustering_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """k-means purity / NMI / ARI per layer, CLS and spatial features (Figures 7, 24–25); the
    dashed grey line is the noise baseline."""
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), constrained_layout=True)
    for r, feat in enumerate(("cls", "spatial")):
        for c, metric in enumerate(("purity", "nmi", "ari")):
            ax = axes[r, c]
            for model, t in table.groupby("model", sort=False):
                st = model_style(str(model), str(t["family"].iloc[0]))
                g = t[(t.feature == feat) & (t.metric == metric)]
                L = int(t["depth"].iloc[0])
                ax.plot((g["layer"] + 1) / L, g["value"], label=model, **st)
            base = table[(table.feature == "noise") & (table.metric == metric)]["value"]
            ax.axhline(float(np.mean(base)), color="0.5", ls="--", lw=1, label="noise")
            ax.set_title(f"{feat.upper() if feat == 'cls' else 'Spatial'} {metric.upper()}")
            ax.set_xlabel("normalised depth")
            ax.set_ylabel(metric if metric == "purity" else metric.upper())
            ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7)
    save_figure(fig, outputs, dpi)
