"""Downstream figures (paper Figures 9–10, 28–31); each reads result tables only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vitlib.plots.style import (  # noqa: E402
    REFERENCE_COLOR,
    REFERENCE_FAMILIES,
    model_style,
    save_figure,
)
from vitlib.tables import wide  # noqa: E402


def knn_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    k: int = 20,
    layout: Layout = "main",
) -> None:
    """k-NN top-1 and top-5 accuracy per layer (k = 20 as in the paper's plots), with the
    chance level (main: paper Figure 9; appendix: Figure 28)."""
    table = wide(table)
    kk = k if (table["k"] == k).any() else int(table["k"].iloc[0])
    chance = float(table["chance"].iloc[0])
    panels: list[Panel] = [
        ("k", kk, "top1", f"k-NN (k = {kk}) top-1", chance),
        ("k", kk, "top5", f"k-NN (k = {kk}) top-5", min(100.0, 5 * chance)),
    ]
    curve_figure(table, panels, "accuracy (%)", outputs, dpi=dpi, layout=layout)


def probe_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """Linear-probe top-1 per layer: CLS / spatial features, without / with BatchNorm."""
    table = wide(table)
    feats = [f for f in ("cls", "spatial_mean", "cls+spatial_mean") if f in set(table.feature)]
    bns = [b for b in (False, True) if b in set(table.batchnorm.astype(bool))]
    panels = [(f, b) for f in feats for b in bns]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.8 * len(panels), 3.6), constrained_layout=True, sharey=True
    )
    axes = np.atleast_1d(axes)
    names = {"cls": "CLS", "spatial_mean": "spatial", "cls+spatial_mean": "CLS + spatial"}
    for ax, (feat, bn) in zip(axes, panels):
        for model, t in table.groupby("model", sort=False):
            st = model_style(str(model), str(t["family"].iloc[0]))
            g = t[(t.feature == feat) & (t.batchnorm == bn)]
            (line,) = ax.plot(g["layer"] + 1, g["top1"], label=model, **st)
            if "top1_ci_low" in g and g["top1_ci_low"].notna().any():  # seeds × test images
                ax.fill_between(
                    g["layer"] + 1,
                    g["top1_ci_low"],
                    g["top1_ci_high"],
                    color=line.get_color(),
                    alpha=0.18,
                    lw=0,
                    zorder=1,
                )
        ax.axhline(float(table["chance"].iloc[0]), color="0.5", ls="--", lw=1)
        ax.set_title(f"{names[feat]}{' + BN' if bn else ''}")
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("linear probe top-1 (%)")
    axes[-1].legend(fontsize=7)
    save_figure(fig, outputs, dpi)


#: Figure layouts: ``main`` (paper main text: every model on one axis per panel, x = the
#: 1-based layer) and ``appendix`` (one column per family, x = normalised depth).
Layout = Literal["main", "appendix"]

#: One panel: (row filter column, value, y column, title, chance level or None).
Panel = tuple[str | None, Any, str, str, float | None]

#: Per task: its panels and the y label.
_PANELS: dict[str, tuple[list[Panel], str]] = {
    "saliency": (
        [
            ("query", "cls", "iou", "CLS attention saliency", None),
            ("query", "spatial", "iou", "Spatial attention saliency", None),
        ],
        "IoU (best head)",
    ),
    "artifact_locality": (
        [
            ("metric", "position_error_normal", "value", "position error, normal tokens", None),
            ("metric", "position_error_artifact", "value", "position error, artifact tokens", None),
            ("metric", "artifact_fraction", "value", "share of artifact tokens", None),
        ],
        "error (tokens) · share",
    ),
    "dense_probe": (
        [
            (None, None, "miou", "mIoU (background included)", None),
            (None, None, "miou_fg", "foreground mIoU", None),
            (None, None, "acc", "token accuracy", None),
        ],
        "score",
    ),
    "segments": (
        [
            ("metric", "purity", "value", "purity", None),
            ("metric", "nmi", "value", "NMI", None),
            ("metric", "ari", "value", "ARI", None),
        ],
        "score",
    ),
    "retrieval": (
        [
            ("protocol", "medium", "map", "Medium", None),
            ("protocol", "hard", "map", "Hard", None),
        ],
        "mAP (%)",
    ),
    "davis": (
        [
            (None, None, "JF", "J&F", None),
            (None, None, "J", "J (region)", None),
            (None, None, "F", "F (boundary)", None),
        ],
        "score (%)",
    ),
    "spair": (
        [
            ("alpha", 0.1, "pck", "PCK@0.1", None),
            ("alpha", 0.05, "pck", "PCK@0.05", None),
            ("alpha", 0.01, "pck", "PCK@0.01", None),
        ],
        "PCK (%)",
    ),
}

_NOISE: dict[str, Any] = {"color": REFERENCE_COLOR, "ls": "--", "lw": 1}


def task_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    task: str,
    layout: Layout = "main",
    head_selection: str = "per_image",
) -> None:
    """Per-layer curves of one task for every model (paper Figures 5, 8, 9–10; appendix
    layout: 16, 25–31); the clustering panels carry the noise baseline; ``head_selection``
    (saliency): the rows of ``per_image`` or ``per_layer`` best heads."""
    panels, ylabel = _PANELS[task]
    t = table if task in ("segments", "artifact_locality") else wide(table)
    if "category" in t:  # SPair: the mean over categories
        t = t[t["category"] == "all"]
    if task == "saliency":  # the best head per image (the paper's) or per layer
        t = t[t.head_selection == head_selection]
        if t.empty:
            raise ValueError(f"saliency: no rows with head_selection {head_selection!r}")
        # the attention rollout beside the raw attention, where the stores hold it
        panels = list(panels) + [
            ("query", q, "iou", title, None)
            for q, title in (
                ("rollout_cls", "CLS attention rollout"),
                ("rollout_spatial", "Spatial attention rollout"),
            )
            if (t["query"] == q).any()
        ]
    curve_figure(t, panels, ylabel, outputs, dpi=dpi, layout=layout)


def _select(t: pd.DataFrame, col: str | None, val: Any) -> pd.DataFrame:
    if col is None:
        return t
    return t[np.isclose(t[col], val) if isinstance(val, float) else t[col] == val]


def curve_figure(
    t: pd.DataFrame,
    panels: list[Panel],
    ylabel: str,
    outputs: Sequence[str | Path],
    *,
    dpi: int,
    layout: Layout,
    wrap: int | None = None,
) -> None:
    """Panels of per-layer curves.  ``main``: every model on each panel against the
    1-based layer, ``wrap`` panels a row (``None``: one row); ``appendix``: one row per
    panel and one column per family, against normalised depth (layer / depth), as the
    paper's appendix figures.  Noise rows (a ``feature == "noise"`` baseline of the table,
    or a model of a reference family) are a dashed line at their mean over blocks; chance
    levels a dotted line."""
    feature = t.get("feature", pd.Series("", index=t.index))
    noise_rows = t[(feature == "noise") | t["family"].isin(REFERENCE_FAMILIES)]
    t = t[(feature != "noise") & ~t["family"].isin(REFERENCE_FAMILIES)]
    families = list(dict.fromkeys(t["family"].astype(str))) or [""]
    columns = families if layout == "appendix" else [None]
    per_row = min(wrap or len(panels), len(panels))
    rows = len(panels) if layout == "appendix" else -(-len(panels) // per_row)
    ncols = len(columns) if layout == "appendix" else per_row
    fig, axes = plt.subplots(
        rows,
        ncols,
        figsize=(3.4 * ncols if layout == "appendix" else 4.6 * ncols, 3.0 * rows + 0.6),
        constrained_layout=True,
        squeeze=False,
        sharey="row" if layout == "appendix" else False,
    )
    for p, (col, val, y, title, chance) in enumerate(panels):
        for c, fam in enumerate(columns):
            ax = axes[p, c] if layout == "appendix" else axes[p // per_row, p % per_row]
            sub = _select(t, col, val)
            if fam is not None:
                sub = sub[sub["family"].astype(str) == fam]
            for model, g in sub.groupby("model", sort=False):
                x = (g["layer"] + 1) / g["depth"] if fam is not None else g["layer"] + 1
                st = model_style(str(model), str(g["family"].iloc[0]))
                (line,) = ax.plot(x, g[y], label=model, **st)
                lo, hi = ("ci_low", "ci_high") if y == "value" else (f"{y}_ci_low", f"{y}_ci_high")
                if lo in g and hi in g and g[lo].notna().any():  # the bootstrap interval
                    ax.fill_between(
                        x, g[lo], g[hi], color=line.get_color(), alpha=0.18, lw=0, zorder=1
                    )
            nz = _select(noise_rows, col, val)
            nz_feature = nz.get("feature", pd.Series("", index=nz.index)) == "noise"
            if nz_feature.any():  # the table's own noise baseline (clustering): one line
                ax.axhline(
                    float(nz.loc[nz_feature, y].mean()),
                    **{**_NOISE, "ls": "-."},  # told apart from a noise model's dashed line
                    label="noise features (this table's baseline)",
                )
            for name, g in nz[~nz_feature].groupby("model", sort=False):
                ax.axhline(float(g[y].mean()), **_NOISE, label=f"noise ({name})")
            if chance is not None:
                ax.axhline(chance, color="0.6", ls=":", lw=1, label="chance")
            ax.set_title(f"{title} — {fam}" if fam is not None else title, fontsize=9)
            ax.set_xlabel("normalised depth" if fam is not None else "layer")
            if fam is not None:
                ax.set_xlim(0, 1.02)
            if c == 0 or layout == "main":
                ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if layout == "appendix" or p == per_row - 1:
                ax.legend(fontsize=6)
    save_figure(fig, outputs, dpi)


def best_layer_figure(
    summary: pd.DataFrame, outputs: Sequence[str | Path], *, dpi: int = 150
) -> None:
    """The best-layer table in the layout of the paper's Table 5, rendered: one row per model
    (the noise row last), one column per (dataset, metric), cells "score (layer)"."""
    from vitlib.downstream.summary import paper_table

    grid = paper_table(summary, main=False)
    columns = [c.replace(" ", "\n", 1) for c in grid.columns]
    fig, ax = plt.subplots(figsize=(1.4 + 1.25 * grid.shape[1], 0.7 + 0.35 * grid.shape[0]))
    ax.axis("off")
    tab = ax.table(
        cellText=grid.values,
        rowLabels=list(grid.index),
        colLabels=columns,
        loc="center",
        cellLoc="center",
    )
    tab.auto_set_font_size(False)
    tab.set_fontsize(7)
    tab.scale(1, 1.9)
    ax.set_title(
        "Best score per task, best layer (1-based) in parentheses; noise: mean over blocks",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, outputs, dpi)


def family_tests_figure(
    table: pd.DataFrame, outputs: Sequence[str | Path], *, dpi: int = 150, wrap: int = 3
) -> None:
    """Family × family differences of every best-layer metric against normalised depth
    (:mod:`vitlib.downstream.family_tests`): one panel per (dataset, metric), one row per
    family pair ``a − b``, colour the difference of the family means (a diverging scale
    symmetric about 0 per panel), ``*`` where the permutation test rejects at the
    family-wise level over the depth bins; the panel title gives the smallest p-value the
    design can reach (few models: the test cannot reject at all)."""
    groups = list(table.groupby(["dataset", "metric"], sort=False)) if len(table) else []
    if not groups:
        fig, ax = plt.subplots(figsize=(5, 1.6))
        ax.axis("off")
        ax.text(0.5, 0.5, "no two families with a best-layer metric", ha="center", va="center")
        save_figure(fig, outputs, dpi)
        return
    per_row = min(wrap, len(groups))
    rows = -(-len(groups) // per_row)
    npairs = max(len(g.drop_duplicates(["family_a", "family_b"])) for _, g in groups)
    fig, axes = plt.subplots(
        rows,
        per_row,
        figsize=(4.4 * per_row, 0.9 + 0.28 * npairs * rows + 0.9 * rows),
        constrained_layout=True,
        squeeze=False,
    )
    for ax in axes.ravel()[len(groups) :]:
        ax.axis("off")
    for ax, ((ds, metric), g) in zip(axes.ravel(), groups):
        pairs = list(dict.fromkeys(zip(g["family_a"].astype(str), g["family_b"].astype(str))))
        depths = np.sort(g["depth"].unique())
        diff = np.full((len(pairs), len(depths)), np.nan)
        sig = np.zeros_like(diff, dtype=bool)
        for i, (fa, fb) in enumerate(pairs):
            sel = g[(g["family_a"].astype(str) == fa) & (g["family_b"].astype(str) == fb)]
            j = np.searchsorted(depths, sel["depth"].to_numpy())
            diff[i, j] = sel["difference"].to_numpy(dtype=float)
            sig[i, j] = sel["significant"].astype(bool).to_numpy()
        vmax = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 1.0
        im = ax.imshow(diff, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        for i, j in zip(*np.nonzero(sig)):
            ax.text(j, i, "*", ha="center", va="center", fontsize=9, color="k")
        ax.set_yticks(range(len(pairs)), [f"{a} − {b}" for a, b in pairs], fontsize=7)
        step = max(1, len(depths) // 6)
        ticks = list(range(0, len(depths), step))
        ax.set_xticks(ticks, [f"{depths[k]:.2f}" for k in ticks], fontsize=7)
        ax.set_xlabel("normalised depth", fontsize=8)
        min_p = float(g["min_p"].min())
        ax.set_title(
            f"{metric} — {ds}\n(smallest attainable p: {min_p:.3g})",
            fontsize=8,
        )
        fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    fig.suptitle(
        "Family differences (mean a − mean b); * : significant after max-statistic"
        " correction over depth",
        fontsize=9,
    )
    save_figure(fig, outputs, dpi)
