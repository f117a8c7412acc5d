"""Attention map figures (paper Figures 2–3, 11–14, 17–18, and the taxonomy / artifact /
offset summaries); each reads result tables or small array files only."""

from __future__ import annotations

import textwrap
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


#: colour-bar label of maps min–max scaled per cell (the paper's [PRE-SCALED] style)
PRESCALED_LABEL = "attention, min–max scaled per map (0 = map min, 1 = map max)"


def fit_suptitle(fig: plt.Figure, text: str, fontsize: float = 9, margin: float = 0.96) -> Any:
    """``fig.suptitle(text)``, wrapped onto more lines until it is at most ``margin`` of the
    figure's width (measured with the figure's renderer; a smaller font where one word is
    wider), so no title is cut at the edges."""
    title = fig.suptitle(text, fontsize=fontsize)
    room = margin * fig.bbox.width
    width = len(text)
    while width > 8 and title.get_window_extent().width > room:
        width = int(width * 0.85)
        title.set_text(textwrap.fill(text, width, break_long_words=False))
    over = title.get_window_extent().width / room
    if over > 1:  # a word longer than the figure is wide: a smaller font
        title.set_fontsize(fontsize / over)
    return title


def map_grid_figure(
    maps_lhxy: np.ndarray,
    outputs: Sequence[str | Path],
    *,
    title: str,
    dpi: int = 150,
    prescale: bool = True,
) -> None:
    """One row per layer (1-based), one column per head; each cell a map (min–max scaled per
    cell, the paper's [PRE-SCALED] style), one colour bar for all, the title wrapped to the
    figure's width."""
    L, H = maps_lhxy.shape[:2]
    m = _prescale(maps_lhxy) if prescale else maps_lhxy
    lo, hi = (0.0, 1.0) if prescale else (float(m.min()), float(m.max()))
    fig, axes = plt.subplots(
        L, H, figsize=(0.9 * H + 1.7, 0.9 * L + 1.0), squeeze=False, layout="constrained"
    )
    im = None
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
    fig.supylabel("layer (block, 1-based)", fontsize=8)
    fig.supxlabel("head (columns h0, h1, …)", fontsize=8)
    if im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=min(0.9, 4.0 / max(L, 1)), aspect=25)
        cb.set_label(PRESCALED_LABEL if prescale else "attention", fontsize=7)
        cb.ax.tick_params(labelsize=6)
    fit_suptitle(fig, title, fontsize=9)
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
    fig, axes = plt.subplots(
        n * L,
        2 * H + 1,
        figsize=(0.7 * (2 * H + 1) + 1.6, 0.7 * n * L + 1.0),
        squeeze=False,
        layout="constrained",
    )
    im = None
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
    fig.supylabel("layer (block, 1-based) of each image", fontsize=7)
    if im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=min(0.8, 6.0 / max(n * L, 1)), aspect=25)
        cb.set_label(PRESCALED_LABEL, fontsize=7)
        cb.ax.tick_params(labelsize=6)
    fit_suptitle(fig, title, fontsize=8)
    save_figure(fig, outputs, dpi)


def query_grid_figure(
    npz: dict,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    model: str = "",
    head: int = 1,
    max_queries: int = 8,
) -> None:
    """Positional queries of single images (the original's position-by-block grids): per
    image a column group, the crop with the query tokens marked on top, then one row per
    block (1-based) and one column per query of head ``head`` (1-based; clamped to the
    model's heads), each map min–max scaled, the query's own token outlined in red.  The
    named positions are shown; diagonal queries only when no named one was asked for (at
    most ``max_queries``, evenly spaced)."""
    from matplotlib.patches import Rectangle

    q = np.asarray(npz["queries"])  # [n, L, H, P, h, w]
    names = [str(x) for x in npz["query_names"]]
    yx = np.asarray(npz["query_yx"]).reshape(-1, 2)
    n, L, H, _, gh, gw = q.shape
    cols = [i for i, nm in enumerate(names) if not nm.startswith("diagonal_")] or list(
        np.unique(np.linspace(0, len(names) - 1, min(max_queries, len(names))).round().astype(int))
    )
    hd = min(max(int(head), 1), H) - 1
    P = len(cols)
    fig, axes = plt.subplots(
        L + 1,
        n * P,
        figsize=(0.75 * n * P + 1.6, 0.75 * (L + 2) + 1.0),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"height_ratios": [2] + [1] * L},
    )
    img_size = np.asarray(npz["image"]).shape[1]
    cell = img_size / gh, img_size / gw
    im = None
    gs = axes[0, 0].get_gridspec()
    for i in range(n):
        for j in range(P):  # the crop spans its image's columns
            axes[0, i * P + j].remove()
        top = fig.add_subplot(gs[0, i * P : (i + 1) * P])
        top.imshow(np.asarray(npz["image"])[i])
        for j, c in enumerate(cols):
            y, x = yx[c]
            top.add_patch(
                Rectangle(
                    (x * cell[1], y * cell[0]), cell[1], cell[0], fill=False, ec="red", lw=0.8
                )
            )
            top.annotate(
                names[c][:1].upper() if not names[c].startswith("diagonal_") else str(j),
                ((x + 0.5) * cell[1], (y + 0.5) * cell[0]),
                color="white",
                fontsize=5,
                fontweight="bold",
                ha="center",
                va="center",
            )
        top.set_title(str(np.asarray(npz["ids"])[i])[-32:], fontsize=6)
        top.axis("off")
        for layer in range(L):
            for j, c in enumerate(cols):
                ax = axes[layer + 1, i * P + j]
                im = ax.imshow(
                    _prescale(q[i, layer, hd, c]),
                    cmap="viridis",
                    vmin=0,
                    vmax=1,
                    interpolation="nearest",
                )
                y, x = yx[c]
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, ec="red", lw=0.6))
                ax.set_xticks([])
                ax.set_yticks([])
                if layer == 0:
                    ax.set_title(names[c].replace("diagonal_", "diag "), fontsize=6)
                if j == 0 and i == 0:
                    ax.set_ylabel(f"L{layer + 1}", fontsize=6)
    fig.supylabel("layer (block, 1-based)", fontsize=7)
    fig.supxlabel("query token (column) of each image", fontsize=7)
    if im is not None:
        cb = fig.colorbar(
            im, ax=list(axes[1:].ravel()), shrink=min(0.8, 6.0 / max(L, 1)), aspect=25
        )
        cb.set_label(PRESCALED_LABEL, fontsize=7)
        cb.ax.tick_params(labelsize=6)
    title = f"Attention of query tokens over the spatial keys, head {hd + 1}"
    fit_suptitle(fig, f"{model}: {title}" if model else title, fontsize=8)
    save_figure(fig, outputs, dpi)


def offset_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """Average attention offset per head (docs/protocols.md §2.4): (cx, cy) coloured by layer.

    Every panel has the same axis range, symmetric around 0 and equal for x and y (the
    largest offset of any model plus a margin), so a model whose heads scatter by noise
    looks small next to one with real offsets; the origin (no offset) is marked, and one
    colour bar gives the layer (1-based) for all panels."""
    models = [m for m in (models or dict.fromkeys(table["model"])) if m in set(table["model"])]
    wide_t = {
        model: table[table.model == model]
        .pivot_table(index=["layer", "head"], columns="metric", values="value")
        .reset_index()
        for model in models
    }
    xy = np.concatenate([t[["offset_x", "offset_y"]].to_numpy(float) for t in wide_t.values()])
    xy = xy[np.isfinite(xy)]
    lim = 1.12 * float(np.abs(xy).max()) if xy.size and np.abs(xy).max() > 0 else 1.0
    top = max((int(t["layer"].max()) + 1 for t in wide_t.values()), default=1)
    fig, axes = plt.subplots(
        1,
        len(models),
        figsize=(2.6 * len(models) + 1.0, 3.2),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    sc = None
    for ax, model in zip(axes[0], models):
        t = wide_t[model]
        ax.axhline(0, color="0.75", lw=0.6, zorder=0)
        ax.axvline(0, color="0.75", lw=0.6, zorder=0)
        sc = ax.scatter(
            t["offset_x"],
            t["offset_y"],
            c=t["layer"] + 1,
            cmap="viridis",
            vmin=1,
            vmax=max(top, 2),
            s=14,
            zorder=2,
        )
        ax.plot([0], [0], marker="+", color="k", ms=10, mew=1.0, ls="none", zorder=3)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(model, fontsize=8)
        ax.set_xlabel("x offset", fontsize=8)
        if ax is axes[0, 0]:  # shared y: labelled once
            ax.set_ylabel("y offset", fontsize=8)
        ax.tick_params(labelsize=7)
    if sc is not None:
        cb = fig.colorbar(sc, ax=axes, shrink=0.8, aspect=20)
        cb.set_label("layer", fontsize=8)
        cb.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        cb.ax.tick_params(labelsize=7)
    fig.suptitle(
        "Average attention offset per head (centre of mass of the aligned map; map edge = ±1;"
        " + = no offset)",
        fontsize=8,
    )
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
    """The register / artifact-token suite (docs §D8). Top row against normalised depth: the
    fraction of high-norm outlier tokens (each model's emergence layer dotted), the share of
    the next block's CLS and mean spatial attention they draw, and (models with prefix
    tokens) the spatial queries' attention mass on register keys (solid) and on the CLS key
    (dashed). Bottom row: each model's token-norm histogram per block (log2 of norm / the
    image's median), models of one family side by side, so that a model without registers
    sits next to its register variant."""
    t = table
    metrics = set(t["metric"])
    top = [
        ("outlier_fraction", f"tokens with norm > {t['norm_factor'].iloc[0]:g} × median"),
        ("cls_attention_share", "share of next block's CLS attention on them"),
        ("spatial_attention_share", "share of next block's spatial attention on them"),
        ("spatial_to_registers", "spatial queries' mass on registers (—) / CLS (--)"),
    ]
    top = [(m, title) for m, title in top if m in metrics]
    firsts = t.drop_duplicates("model")
    prefix = (
        firsts["num_prefix_tokens"] if "num_prefix_tokens" in firsts else pd.Series(1, firsts.index)
    )
    order = firsts.assign(_p=prefix).sort_values(["family", "_p"], kind="stable")["model"].tolist()
    hist = "norm_density" in metrics and "bin" in t
    ncols = max(len(top), len(order) if hist else 0, 1)
    nrows = 2 if hist else 1
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.3 * ncols, 3.1 * nrows), constrained_layout=True, squeeze=False
    )
    for ax in axes.ravel():
        ax.set_visible(False)
    for j, (metric, title) in enumerate(top):
        ax = axes[0, j]
        ax.set_visible(True)
        for model, g in t.groupby("model", sort=False):
            m = g[g.metric == metric]
            if m.empty:
                continue
            st = model_style(str(model), str(g["family"].iloc[0]))
            L = int(g["depth"].iloc[0])
            (line,) = ax.plot((m["layer"] + 1) / L, m["value"], label=model, **st)
            if metric == "spatial_to_registers":
                c = g[g.metric == "spatial_to_cls"]
                ax.plot((c["layer"] + 1) / L, c["value"], color=line.get_color(), ls="--", lw=1)
            if metric == "outlier_fraction":
                em = g[g.metric == "emergence_layer"]["value"]
                if len(em) and np.isfinite(em.iloc[0]):
                    ax.axvline(float(em.iloc[0]) / L, color=line.get_color(), ls=":", lw=1)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("normalised depth")
        ax.set_ylabel(
            {
                "outlier_fraction": "fraction of spatial tokens",
                "spatial_to_registers": "attention mass",
            }.get(metric, "attention share")
        )
        ax.grid(alpha=0.3)
    if top:
        axes[0, len(top) - 1].legend(fontsize=6)
    if hist:
        im = None
        for j, model in enumerate(order):
            ax = axes[1, j]
            ax.set_visible(True)
            g = t[(t.model == model) & (t.metric == "norm_density")]
            grid = g.pivot_table(index="layer", columns="bin", values="value").sort_index()
            bins = grid.columns.to_numpy(dtype=float)
            step = float(bins[1] - bins[0]) if len(bins) > 1 else 1.0
            im = ax.imshow(
                np.log10(grid.to_numpy(dtype=float) + 1e-5),
                aspect="auto",
                origin="lower",
                cmap="magma",
                vmin=-5,
                vmax=0,
                extent=(bins[0] - step / 2, bins[-1] + step / 2, 0.5, len(grid) + 0.5),
            )
            ax.axvline(np.log2(float(t["norm_factor"].iloc[0])), color="w", ls=":", lw=1)
            p = int(g["num_prefix_tokens"].iloc[0]) if "num_prefix_tokens" in g else 1
            regs = f", {p - 1} registers" if p > 1 else ""
            ax.set_title(f"{model}{regs}", fontsize=8)
            ax.set_xlabel("log2(norm / median)", fontsize=8)
            ax.set_ylabel("block", fontsize=8)
        if im is not None:
            fig.colorbar(im, ax=axes[1, len(order) - 1], shrink=0.8, label="log10 density")
    save_figure(fig, outputs, dpi)
