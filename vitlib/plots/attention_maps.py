"""Attention map figures (paper Figures 2–3, 11–14, 17–18, and the taxonomy / artifact /
offset summaries); each reads result tables or small array files only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from vitlib.plots.style import model_style, save_figure  # noqa: E402
from vitlib.tables import wide  # noqa: E402


def _prescale(m: np.ndarray) -> np.ndarray:
    lo = m.min(axis=(-2, -1), keepdims=True)
    hi = m.max(axis=(-2, -1), keepdims=True)
    return np.where(hi > lo, (m - lo) / np.where(hi > lo, hi - lo, 1), 0.0)


_BAR_IN = 0.9  # inches kept at the right of map grids for their colour bar


def _grid_colorbar(fig: plt.Figure, im: Any, label: str) -> None:
    """A colour bar for a grid of maps in the strip ``_BAR_IN`` wide at the figure's right."""
    w = fig.get_figwidth()
    cax = fig.add_axes((1 - (_BAR_IN - 0.1) / w, 0.2, 0.12 / w, 0.6))
    fig.colorbar(im, cax=cax).set_label(label, fontsize=7)
    cax.tick_params(labelsize=6)


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
    lo, hi = (0.0, 1.0) if prescale else (float(m.min()), float(m.max()))
    w = 0.9 * H + 0.8 + _BAR_IN
    fig, axes = plt.subplots(L, H, figsize=(w, 0.9 * L + 0.6), squeeze=False)
    for layer in range(L):
        for head in range(H):
            ax = axes[layer, head]
            im = ax.imshow(
                m[layer, head], cmap="viridis", interpolation="nearest", vmin=lo, vmax=hi
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if head == 0:
                ax.set_ylabel(f"L{layer + 1}", fontsize=7)
            if layer == 0:
                ax.set_title(f"h{head}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1 - _BAR_IN / w, 1))
    _grid_colorbar(fig, im, "attention (min–max per map)" if prescale else "attention")
    save_figure(fig, outputs, dpi)


def average_map_figure(
    maps: dict,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    kind: str,
    model: str = "",
) -> None:
    """One model's dataset-average maps (``attention_maps`` arrays) of one ``kind``:
    ``cls`` (CLS query over spatial keys), ``spatial`` (spatial queries without the CLS key)
    or ``aligned`` (aligned aggregated maps), as a layers × heads grid."""
    if kind == "aligned":
        grid = np.asarray(maps["aligned"])
        title = "Average aligned spatial attention (query at the centre)"
    else:
        m = np.asarray(maps["cls" if kind == "cls" else "spatial_pure"])
        L, H, N = m.shape
        h = int(round((N - 1) ** 0.5))  # the figures use square grids
        grid = m[..., N - h * h :].reshape(L, H, h, h)
        title = "Average CLS attention" if kind == "cls" else "Average spatial attention"
    map_grid_figure(grid, outputs, title=f"{model}: {title}" if model else title, dpi=dpi)


def image_grid_figure(
    npz: dict,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    model: str = "",
) -> None:
    """Single-image attention (Figure 13): per image the crop, then layers × heads of its CLS
    and mean-spatial attention."""
    title = "CLS (left) and mean spatial (right) attention"
    title = f"{model}: {title}" if model else title
    imgs = npz["image"]
    n, L, H = npz["cls"].shape[:3]
    w = 0.7 * (2 * H + 1) + _BAR_IN
    fig, axes = plt.subplots(n * L, 2 * H + 1, figsize=(w, 0.7 * n * L + 0.5), squeeze=False)
    fig.subplots_adjust(right=1 - _BAR_IN / w)
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
                    m = _prescale(npz[kind][i, layer, head])
                    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1)
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if r == 0:
                        ax.set_title(f"{kind} h{head}", fontsize=5)
                    if head == 0 and k == 0:
                        ax.set_ylabel(f"L{layer + 1}", fontsize=6)
    fig.suptitle(title, fontsize=8)
    _grid_colorbar(fig, im, "attention (min–max per map)")
    save_figure(fig, outputs, dpi)


def offset_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """Average attention offset per head (docs/protocols.md §2.4): (cx, cy) coloured by layer."""
    models = [m for m in (models or dict.fromkeys(table["model"])) if m in set(table["model"])]
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


def taxonomy_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """Head taxonomy: per model, heads of each class per layer (stacked bars).

    Each panel has its own legend with the number of the model's heads in every class (zero
    included, so models compare at a glance), titled by the token grid the thresholds were
    scaled to when the table records it (``grid_h``, ``grid_w``).
    """
    table = wide(table)
    models = [m for m in (models or dict.fromkeys(table["model"])) if m in set(table["model"])]
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 4.0), squeeze=False)
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
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        totals = t["class"].value_counts()
        handles = [
            Patch(color=c, label=f"{k}: {int(totals.get(k, 0))}") for k, c in CLASS_COLORS.items()
        ]
        heading = f"heads per class (of {len(t)})"
        if {"grid_h", "grid_w"} <= set(t.columns) and t["grid_h"].notna().any():
            heading += f", {int(t['grid_h'].iloc[0])}×{int(t['grid_w'].iloc[0])} grid"
        ax.legend(
            handles=handles,
            title=heading,
            title_fontsize=6,
            fontsize=6,
            ncol=2,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            frameon=False,
        )
    fig.tight_layout()
    save_figure(fig, outputs, dpi)


def artifact_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
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
