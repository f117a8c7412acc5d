"""Attention map figures (paper Figures 2–3, 11–14, 17–18, and the taxonomy / artifact /
offset summaries); each reads result tables or small array files only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vitlib.plots.style import model_style, save_figure  # noqa: E402


def _prescale(m: np.ndarray) -> np.ndarray:
    lo = m.min(axis=(-2, -1), keepdims=True)
    hi = m.max(axis=(-2, -1), keepdims=True)
    return np.where(hi > lo, (m - lo) / np.where(hi > lo, hi - lo, 1), 0.0)


def map_grid_figure(
    maps_lhxy: np.ndarray,
    outputs: Sequence[str | Path],
    *,
    title: str,
    dpi: int = 150,
    prescale: bool = True,
) -> None:
    """One row per layer, one column per head; each cell a map (min–max scaled per cell,
    the paper's [PRE-SCALED] style)."""
    L, H = maps_lhxy.shape[:2]
    m = _prescale(maps_lhxy) if prescale else maps_lhxy
    fig, axes = plt.subplots(L, H, figsize=(0.9 * H + 0.8, 0.9 * L + 0.6), squeeze=False)
    for layer in range(L):
        for head in range(H):
            ax = axes[layer, head]
            ax.imshow(m[layer, head], cmap="viridis", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if head == 0:
                ax.set_ylabel(f"L{layer + 1}", fontsize=7)
            if layer == 0:
                ax.set_title(f"h{head}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, outputs, dpi)


def image_grid_figure(
    npz: dict, outputs: Sequence[str | Path], *, title: str, dpi: int = 150
) -> None:
    """Single-image attention (Figure 13): per image the crop, then layers × heads of its CLS
    and mean-spatial attention."""
    imgs = npz["image"]
    n, L, H = npz["cls"].shape[:3]
    fig, axes = plt.subplots(
        n * L, 2 * H + 1, figsize=(0.7 * (2 * H + 1), 0.7 * n * L + 0.5), squeeze=False
    )
    for i in range(n):
        for layer in range(L):
            r = i * L + layer
            ax = axes[r, 0]
            ax.axis("off")
            if layer == 0:
                ax.imshow(imgs[i])
            for k, kind in enumerate(("cls", "spatial")):
                for head in range(H):
                    ax = axes[r, 1 + k * H + head]
                    ax.imshow(_prescale(npz[kind][i, layer, head]), cmap="viridis")
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if r == 0:
                        ax.set_title(f"{kind} h{head}", fontsize=5)
                    if head == 0 and k == 0:
                        ax.set_ylabel(f"L{layer + 1}", fontsize=6)
    fig.suptitle(title, fontsize=8)
    save_figure(fig, outputs, dpi)


def offset_figure(table: pd.DataFrame, outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Average attention offset per head (PROTOCOLS §2.4): (cx, cy) coloured by layer."""
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        t = (
            table[table.model == model]
            .pivot_table(index=["layer", "head"], columns="metric", values="value")
            .reset_index()
        )
        sc = ax.scatter(t["offset_x"], t["offset_y"], c=t["layer"] + 1, cmap="viridis", s=12)
        ax.axhline(0, color="0.8", lw=0.5)
        ax.axvline(0, color="0.8", lw=0.5)
        ax.set_title(model, fontsize=8)
        ax.set_xlabel("x offset")
        ax.set_ylabel("y offset")
        fig.colorbar(sc, ax=ax, label="layer")
    fig.tight_layout()
    save_figure(fig, outputs, dpi)


CLASS_COLORS = {
    "strict-local": "#1b9e77",
    "offset-local": "#d95f02",
    "axial-horizontal": "#7570b3",
    "axial-vertical": "#e7298a",
    "soft-local": "#66a61e",
    "global": "#a6761d",
}


def taxonomy_figure(table: pd.DataFrame, outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Head taxonomy: per model, heads of each class per layer (stacked bars)."""
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 3.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        t = table[table.model == model]
        counts = pd.crosstab(t["layer"] + 1, t["class"])
        bottom = np.zeros(len(counts))
        for cls, color in CLASS_COLORS.items():
            if cls in counts:
                ax.bar(counts.index, counts[cls], bottom=bottom, color=color, label=cls)
                bottom += counts[cls].to_numpy()
        ax.set_title(model, fontsize=8)
        ax.set_xlabel("layer")
        ax.set_ylabel("heads")
    axes[0, -1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    save_figure(fig, outputs, dpi)


def artifact_figure(table: pd.DataFrame, outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """High-norm outlier tokens per layer, and the share of CLS attention they receive."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for model, t in table.groupby("model", sort=False):
        st = model_style(str(model), str(t["family"].iloc[0]))
        L = int(t["depth"].iloc[0])
        f = t[t.metric == "outlier_fraction"]
        s = t[t.metric == "cls_attention_share"]
        a1.plot((f["layer"] + 1) / L, f["value"], label=model, **st)
        a2.plot((s["layer"] + 1) / L, s["value"], label=model, **st)
    a1.set_ylabel("fraction of spatial tokens")
    a1.set_title(f"norm > {table['norm_factor'].iloc[0]:g} × median")
    a2.set_ylabel("share of next block's CLS attention")
    for ax in (a1, a2):
        ax.set_xlabel("normalised depth")
        ax.grid(alpha=0.3)
    a2.legend(fontsize=7)
    save_figure(fig, outputs, dpi)
