"""Figures of attention analyses; each reads result tables only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from vitlib.plots.downstream import Layout  # noqa: E402
from vitlib.plots.style import model_style, save_figure  # noqa: E402
from vitlib.tables import wide  # noqa: E402


def attention_distance_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    layout: Layout = "main",
) -> None:
    """Average attention distance per layer (paper Figure 4; appendix layout: Figure 15).

    ``main``: left, per model the mean over heads against the 1-based layer with every head
    as a dot; right, the same curves against normalised depth (layer / L).  ``appendix``:
    one panel per family, every model of it against normalised depth, heads as dots, so
    models of different depth compare (Figure 15).  The dashed line is uniform attention
    over the same grid.
    """
    if table.empty:
        raise ValueError("attention distance table is empty")
    units = table["units"].iloc[0]
    refs = sorted(table["uniform"].unique()) if "uniform" in table else []
    if layout == "appendix":
        families = list(dict.fromkeys(table["family"].astype(str)))
        fig, axes = plt.subplots(
            1,
            len(families),
            figsize=(3.4 * len(families), 3.6),
            constrained_layout=True,
            sharey=True,
            squeeze=False,
        )
        panels = [
            (ax, table[table["family"].astype(str) == f], f) for ax, f in zip(axes[0], families)
        ]
    else:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
        panels = [(ax1, table, ""), (ax2, table, "")]
    for i, (ax, sub, fam) in enumerate(panels):
        depth_axis = layout == "appendix" or i == 1
        for model, t in sub.groupby("model", sort=False):
            st = model_style(str(model), str(t["family"].iloc[0]))
            per_layer = t.groupby("layer")["value"].mean()
            L = int(t["depth"].iloc[0])
            x = per_layer.index.to_numpy() + 1
            if depth_axis:
                x = x / L
            if layout == "appendix" or i == 0:
                hx = (t["layer"] + 1) / L if depth_axis else t["layer"] + 1
                ax.scatter(hx, t["value"], s=6, alpha=0.3, color=st["color"])
            ax.plot(x, per_layer.to_numpy(), label=model, **st)
        for j, u in enumerate(refs):  # uniform attention over each grid present
            label = "uniform attention" + (f" ({u:.3g})" if len(refs) > 1 else "")
            ax.axhline(float(u), color="0.5", ls=(0, (4, 2 + 2 * j)), lw=1, label=label)
        ax.set_xlabel("normalised depth (layer / L)" if depth_axis else "layer")
        if depth_axis:
            ax.set_xlim(0, 1.02)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if i == 0 or layout == "main":
            ax.set_ylabel(f"attention distance ({units})")
        ax.grid(alpha=0.3)
        if layout == "appendix":
            ax.set_title(fam, fontsize=10)
            ax.legend(fontsize=6, loc="best")
    if layout == "appendix":
        fig.suptitle("Average attention distance against normalised depth (dots: heads)")
    else:
        panels[0][0].set_title("Average attention distance per layer (dots: heads)")
        panels[1][0].set_title("Against normalised depth")
        panels[1][0].legend(fontsize=8, loc="best")
    save_figure(fig, outputs, dpi)


def attention_entropy_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """Attention entropy per layer, CLS query (left) and spatial queries (right): heads as
    dots, the mean over heads as lines, uniform attention's entropy dashed."""
    t = wide(table)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True, sharey=True)
    for ax, query in zip(axes, ("cls", "spatial")):
        q = t[t["query"] == query]
        for model, m in q.groupby("model", sort=False):
            st = model_style(str(model), str(m["family"].iloc[0]))
            per_layer = m.groupby("layer")["entropy"].mean()
            ax.scatter(m["layer"] + 1, m["entropy"], s=8, alpha=0.35, color=st["color"])
            ax.plot(per_layer.index.to_numpy() + 1, per_layer.to_numpy(), label=model, **st)
        ax.axhline(
            float(q["uniform_entropy"].max()), color="0.5", ls="--", lw=1, label="uniform attention"
        )
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{'CLS' if query == 'cls' else 'spatial'} queries")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("attention entropy (nats)")
    axes[1].legend(fontsize=8, loc="best")
    save_figure(fig, outputs, dpi)
