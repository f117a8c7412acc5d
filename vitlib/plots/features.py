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


# --------------------------------------------------------------------------- similarity suite

#: display names of the similarity suite's measures
MEASURE_LABELS = {
    "linear_cka": "linear CKA",
    "linear_cka_debiased": "linear CKA (debiased)",
    "rbf_cka": "RBF CKA",
    "mutual_knn": "mutual k-NN",
    "cknna": "CKNNA",
    "svcca": "SVCCA",
    "pwcca": "PWCCA",
    "procrustes_distance": "Procrustes angle",
    "rsa": "RSA",
}
_KIND_LABELS = {"cls": "CLS", "spatial_mean": "mean spatial"}


def _similarity_grid(t: pd.DataFrame, my: str, mx: str, kind: str) -> tuple[Any, Any] | None:
    """Values and significance of one kind with ``my``'s layers along y, ``mx``'s along x."""
    for a, b, flip in ((my, mx, False), (mx, my, True)):
        s = t[(t.model_x == a) & (t.model_y == b) & (t.kind == kind)]
        if s.empty:
            continue
        v = s.pivot(index="layer_x", columns="layer_y", values="value").to_numpy(dtype=float)
        sig = s.pivot(index="layer_x", columns="layer_y", values="significant")
        g = sig.to_numpy(dtype=bool) | s["p"].isna().all()  # no null: nothing to mark
        return (v.T, g.T) if flip else (v, g)
    return None


def similarity_grids_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    measure: str = "linear_cka",
) -> None:
    """One measure of the similarity suite between every layer pair of every model pair: a
    models × models matrix of panels, CLS grids on and above the diagonal and mean-spatial
    grids below it (row model's blocks along y, column model's along x); cells whose
    similarity is not significantly above the permutation null (Benjamini–Hochberg q >
    alpha over the grid) carry a grey dot."""
    t = table[table.metric == measure]
    present = set(t["model_x"]) | set(t["model_y"])
    models = [m for m in (models or dict.fromkeys(t["model_x"])) if m in present]
    kinds = [k for k in keys_in_order(t["kind"])]
    distance = measure == "procrustes_distance"
    vmin, vmax = (0.0, np.pi / 2) if distance else (min(0.0, float(t["value"].min())), 1.0)
    cmap = "viridis_r" if distance else "viridis"
    n = len(models)
    side = 2.0 if n > 2 else 2.6
    fig, axes = plt.subplots(
        n,
        n,
        figsize=(side * n + 1.3, side * n + 0.7),
        squeeze=False,
        sharex="col",
        sharey="row",
        layout="constrained",
    )
    im = None
    for r, my in enumerate(models):
        for c, mx in enumerate(models):
            ax = axes[r, c]
            kind = kinds[0] if c >= r or len(kinds) < 2 else kinds[1]
            found = _similarity_grid(t, my, mx, kind)
            if found is None or (c < r and len(kinds) < 2):
                ax.axis("off")
                continue
            v, sig = found
            im = ax.imshow(v, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax)
            yy, xx = np.nonzero(~sig & np.isfinite(v))
            ax.scatter(xx, yy, s=3, c="0.6", marker="o", linewidths=0)
            ax.set_title(f"{my} × {mx} ({_KIND_LABELS.get(kind, kind)})", fontsize=6)
            for axis, size in ((ax.xaxis, v.shape[1]), (ax.yaxis, v.shape[0])):
                step = max(1, -(-size // 6))
                ticks = np.arange(0, size, step)
                axis.set_ticks(ticks, [str(i + 1) for i in ticks])
            ax.tick_params(labelsize=6)
            if c == 0:
                ax.set_ylabel(f"{my}: block", fontsize=7)
            if r == n - 1:
                ax.set_xlabel(f"{mx}: block", fontsize=7)
    label = MEASURE_LABELS.get(measure, measure) + (" (radians)" if distance else "")
    if im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=min(0.6, 2.4 / n), aspect=25, pad=0.02)
        cb.set_label(label, fontsize=8)
        cb.ax.tick_params(labelsize=7)
    perms = int(t["permutations"].max()) if len(t) else 0
    where = (
        f"{_KIND_LABELS.get(kinds[0], kinds[0])} on and above the diagonal, "
        f"{_KIND_LABELS.get(kinds[1], kinds[1])} below"
        if len(kinds) > 1
        else f"{_KIND_LABELS.get(kinds[0], kinds[0])} tokens"
    )
    null = (
        f"grey dot: not above its null ({perms} permutations, so p ≥ 1/{perms + 1};"
        " Benjamini–Hochberg over each grid)"
        if perms
        else "no permutation null"
    )
    nimg = int(t["n_images"].iloc[0]) if len(t) else 0
    fig.suptitle(f"{label} between blocks, {nimg} images: {where}\n{null}", fontsize=9)
    save_figure(fig, outputs, dpi)


def keys_in_order(values: Any) -> list[str]:
    """Feature kinds present, CLS first."""
    present = set(values)
    return [k for k in ("cls", "spatial_mean") if k in present] + sorted(
        present - {"cls", "spatial_mean"}
    )


def similarity_best_layer_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """Do corresponding depths match? For every pair of different models (rows) and measure
    (columns), each block of the first model is matched to the most similar block of the
    second (the table's ``best_for_x``); the cell shows the mean distance between the two in
    normalised depth (0: every block's best match sits at the same relative depth; 0.5:
    typical of unrelated layers), one panel per token kind. A cross marks pairs where fewer
    than half of those best matches are significant against the permutation null."""
    order = list(models or dict.fromkeys(table["model_x"]))
    t = table[(table.model_x != table.model_y) & table.best_for_x].copy()
    measures = [m for m in MEASURE_LABELS if m in set(t["metric"])]
    kinds = keys_in_order(t["kind"])
    depth_x = table.groupby("model_x")["layer_x"].max().clip(lower=1)
    depth_y = table.groupby("model_y")["layer_y"].max().clip(lower=1)
    t["dx"] = t["layer_x"] / t["model_x"].map(depth_x)
    t["dy"] = t["layer_y"] / t["model_y"].map(depth_y)
    t["gap"] = (t["dx"] - t["dy"]).abs()
    t["ok"] = t["significant"].astype(bool) | t["p"].isna()
    pairs = [
        (a, b)
        for i, a in enumerate(order)
        for b in order[i + 1 :]
        if ((t.model_x == a) & (t.model_y == b)).any()
    ]
    fig, axes = plt.subplots(
        1,
        len(kinds),
        figsize=(0.62 * len(measures) * len(kinds) + 3.2, 0.32 * len(pairs) + 2.0),
        squeeze=False,
        layout="constrained",
    )
    im = None
    for ax, kind in zip(axes[0], kinds):
        s = t[t.kind == kind]
        gap = s.groupby(["model_x", "model_y", "metric"])["gap"].mean()
        ok = s.groupby(["model_x", "model_y", "metric"])["ok"].mean()
        grid = np.full((len(pairs), len(measures)), np.nan)
        weak = np.zeros(grid.shape, bool)
        for r, (a, b) in enumerate(pairs):
            for c, m in enumerate(measures):
                if (a, b, m) in gap.index:
                    grid[r, c] = gap[(a, b, m)]
                    weak[r, c] = ok[(a, b, m)] < 0.5
        im = ax.imshow(grid, cmap="magma_r", vmin=0, vmax=0.5, aspect="auto")
        for r in range(grid.shape[0]):
            for c in range(grid.shape[1]):
                if np.isfinite(grid[r, c]):
                    txt = f"{grid[r, c]:.2f}" + (" ×" if weak[r, c] else "")
                    ax.text(
                        c,
                        r,
                        txt,
                        ha="center",
                        va="center",
                        fontsize=5.5,
                        color="white" if grid[r, c] > 0.3 else "black",
                    )
        ax.set_xticks(range(len(measures)), [MEASURE_LABELS[m] for m in measures], rotation=60)
        ax.set_yticks(range(len(pairs)), [f"{a} → {b}" for a, b in pairs])
        ax.set_xlabel("measure", fontsize=7)
        ax.set_ylabel("1st → 2nd model", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_title(f"{_KIND_LABELS.get(kind, kind)} tokens", fontsize=8)
    if im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=0.7, aspect=25, pad=0.02)
        cb.set_label("mean |depth − depth of best match|", fontsize=7)
        cb.ax.tick_params(labelsize=6)
    fig.suptitle(
        "Best-matching blocks between models (normalised depth; ×: most best matches not"
        " significant)",
        fontsize=9,
    )
    save_figure(fig, outputs, dpi)


# --------------------------------------------------------------------------- dense maps


def pca_maps_figure(
    npz: dict,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    model: str = "",
) -> None:
    """PCA feature maps of one model (docs §D10): rows are blocks, columns the fully kept
    images, each token's first three principal components as RGB (one basis per block,
    shared by the images)."""
    rgb = np.asarray(npz["rgb"], dtype=np.float32)  # [L, F, H, W, C]
    L, F = rgb.shape[:2]
    grids = np.asarray(npz["grid"])
    fig, axes = plt.subplots(
        L, F, figsize=(1.6 * F + 0.6, 1.25 * L + 0.6), squeeze=False, layout="constrained"
    )
    for layer in range(L):
        for k in range(F):
            ax = axes[layer, k]
            gh, gw = (int(v) for v in grids[k])
            img = rgb[layer, k, :gh, :gw]
            if img.shape[-1] < 3:  # fewer components: grey / two channels and zero blue
                img = np.concatenate([img, np.zeros((*img.shape[:2], 3 - img.shape[-1]))], -1)
            ax.imshow(np.nan_to_num(img), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(f"L{layer + 1}", fontsize=8)
            if layer == 0:
                ax.set_title(f"image {int(npz['index'][k])}", fontsize=8)
    fig.suptitle(
        f"{model}: PCA of block outputs (RGB = components 1–3)" if model else "PCA maps", fontsize=9
    )
    save_figure(fig, outputs, dpi)
