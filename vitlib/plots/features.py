"""Feature-analysis figures (paper Figures 6–8, 19–27); each reads result tables only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vitlib.plots.downstream import Layout, Panel, curve_figure  # noqa: E402
from vitlib.plots.style import save_figure  # noqa: E402

#: short names of capture points inside a block (the CKA tables' ``point_x`` / ``point_y``)
_POINT_SHORT = {"norm1": "n1", "norm2": "n2"}


def _block_ticks(axis: Any, positions: pd.DataFrame, max_labels: int = 8) -> str:
    """Ticks of a layer axis of a CKA grid whose cells are ``positions`` (columns ``pos``,
    ``layer``, ``point``, one row per grid index): a labelled major tick at the centre of
    every block (1-based block index; thinned to at most ``max_labels``) and, where a block
    has several capture points, a minor tick at each of them.  Returns the short names of
    those points in order ("n1, n2"; "" for one point per block)."""
    p = positions.drop_duplicates("pos").sort_values("pos")
    centres = p.groupby("layer", sort=True)["pos"].mean()
    step = max(1, -(-len(centres) // max_labels))
    shown = centres.iloc[::step]
    axis.set_ticks(shown.to_numpy(dtype=float), [str(int(v) + 1) for v in shown.index])
    points = list(dict.fromkeys(p["point"]))
    if len(points) < 2:
        axis.set_ticks([], minor=True)
        return ""
    axis.set_ticks(p["pos"].to_numpy(dtype=float), minor=True)
    return ", ".join(_POINT_SHORT.get(str(q), str(q)) for q in points)


def _pair_grid(
    table: pd.DataFrame, my: str, mx: str
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame] | None:
    """The CKA grid with ``my``'s layers along y and ``mx``'s along x (from the pair table of
    either order, transposed where needed), with the cells of its y and x axes."""
    for a, b, flip in ((my, mx, False), (mx, my, True)):
        t = table[(table.model_x == a) & (table.model_y == b)]
        if t.empty:
            continue
        grid = t.pivot(index="row", columns="col", values="value").to_numpy()
        rows = t[["row", "layer_x", "point_x"]].set_axis(["pos", "layer", "point"], axis=1)
        cols = t[["col", "layer_y", "point_y"]].set_axis(["pos", "layer", "point"], axis=1)
        return (grid.T, cols, rows) if flip else (grid, rows, cols)
    return None


def cka_grids_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """Layer × layer CKA of every model pair (Figures 20–22) as a models × models matrix of
    panels: row ``i`` has model ``i``'s layers along y, column ``j`` model ``j``'s along x
    (the diagonal the within-model grids; a pair table gives the panel above the diagonal
    and, transposed, its mirror below).  Layer axes are 1-based block indices, with a minor
    tick at every capture point inside a block; one colour bar (CKA, 0..1) for all."""
    present = set(table["model_x"]) | set(table["model_y"])
    models = [m for m in (models or dict.fromkeys(table["model_x"])) if m in present]
    n = len(models)
    side = 2.0 if n > 2 else 2.6
    fig, axes = plt.subplots(
        n,
        n,
        figsize=(side * n + 1.3, side * n + 0.5),
        squeeze=False,
        sharex="col",
        sharey="row",
        layout="constrained",
    )
    im = None
    sub = ""
    for a, my in enumerate(models):
        for b, mx in enumerate(models):
            ax = axes[a, b]
            found = _pair_grid(table, my, mx)
            if found is None:
                ax.axis("off")
                continue
            grid, ycells, xcells = found
            im = ax.imshow(grid, origin="lower", cmap="magma", vmin=0, vmax=1)
            ax.set_title(f"{my} × {mx}", fontsize=7)
            sub = _block_ticks(ax.yaxis, ycells)
            sub = _block_ticks(ax.xaxis, xcells) or sub
            ax.tick_params(labelsize=6)
            ax.tick_params(which="minor", length=2)
            if b == 0:
                ax.set_ylabel(f"{my}: block", fontsize=7)
            if a == n - 1:
                ax.set_xlabel(f"{mx}: block", fontsize=7)
    if im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=min(0.6, 2.4 / n), aspect=25, pad=0.02)
        cb.set_label("CKA", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    pts = table["points"].iloc[0] if "points" in table else ""
    what = "norm1 and norm2 of every block" if pts == "norm" else "block outputs"
    note = f"; minor ticks: {sub} of each block" if im is not None and sub else ""
    fig.suptitle(
        f"CKA between layers ({what}{note})\nrow model's blocks along y, column model's along x",
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
        if c:  # one norm-ratio scale for every model
            ax.sharey(axes[2, 0])
        for sub, ls in (("attn", "-"), ("mlp", "--")):
            for kind, col in (("cls", "tab:red"), ("spatial", "tab:blue")):
                g = t[(t.sub_block == sub) & (t.metric == f"norm_ratio_{kind}")]
                ax.plot(g["layer_x"] + 1, g["value"], ls, color=col, label=f"{sub} {kind}")
        ax.set_yscale("log")
        ax.set_xlabel("layer", fontsize=7)
        ax.set_ylabel("‖skip‖ / ‖branch‖", fontsize=7)
        ax.legend(fontsize=6)
    if im is not None:
        cb = fig.colorbar(im, ax=axes[:2], shrink=0.8, aspect=25)
        cb.set_label("CKA (skip vs branch)", fontsize=8)
    save_figure(fig, outputs, dpi)


def clustering_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    layout: Layout = "main",
) -> None:
    """k-means purity / NMI / ARI per layer, CLS (top row) and spatial (bottom row) features
    (paper Figure 7; appendix layout, one column per family against normalised depth:
    Figures 24 (CLS) and 25 (spatial)); the dashed grey line is the noise baseline."""
    t = table.copy()
    noise = t[t["feature"] == "noise"]
    # the noise baseline serves the CLS and the spatial panels alike
    t = pd.concat(
        [t[t["feature"] != "noise"]] + [noise.assign(panel_feature=f) for f in ("cls", "spatial")],
        ignore_index=True,
    )
    t["panel_feature"] = (
        t["panel_feature"].fillna(t["feature"]) if "panel_feature" in t else t["feature"]
    )
    t["panel"] = t["panel_feature"].astype(str) + ":" + t["metric"].astype(str)
    panels: list[Panel] = [
        (
            "panel",
            f"{feat}:{metric}",
            "value",
            f"{'CLS' if feat == 'cls' else 'Spatial'} {name}",
            None,
        )
        for feat in ("cls", "spatial")
        for metric, name in (("purity", "purity"), ("nmi", "NMI"), ("ari", "ARI"))
    ]
    curve_figure(t, panels, "score", outputs, dpi=dpi, layout=layout, wrap=3)
