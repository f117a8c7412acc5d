"""Figures of attention analyses; each reads result tables only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from vitlib.plots.style import model_style, save_figure  # noqa: E402
from vitlib.tables import wide  # noqa: E402


def attention_distance_figure(
    table: pd.DataFrame,
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """Average attention distance per layer (paper Figure 4 / 15).

    Left: per model, the mean over heads against layer (1-based), with every head as a dot.
    Right: the same curves against normalised depth (layer / L), so models of different
    depth compare (Figure 15).
    """
    if table.empty:
        raise ValueError("attention distance table is empty")
    units = table["units"].iloc[0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for model, t in table.groupby("model", sort=False):
        st = model_style(str(model), str(t["family"].iloc[0]))
        per_layer = t.groupby("layer")["value"].mean()
        L = int(t["depth"].iloc[0])
        x = per_layer.index.to_numpy() + 1
        ax1.scatter(t["layer"] + 1, t["value"], s=8, alpha=0.35, color=st["color"])
        ax1.plot(x, per_layer.to_numpy(), label=model, **st)
        ax2.plot(x / L, per_layer.to_numpy(), label=model, **st)
    ax1.set_xlabel("layer")
    ax2.set_xlabel("normalised depth (layer / L)")
    refs = sorted(table["uniform"].unique()) if "uniform" in table else []
    for ax in (ax1, ax2):
        ax.set_ylabel(f"attention distance ({units})")
        ax.grid(alpha=0.3)
        for i, u in enumerate(refs):  # uniform attention over each grid present
            label = "uniform attention" + (f" ({u:.3g})" if len(refs) > 1 else "")
            ax.axhline(float(u), color="0.5", ls=(0, (4, 2 + 2 * i)), lw=1, label=label)
    ax1.set_title("Average attention distance per layer (dots: heads)")
    ax2.set_title("Against normalised depth")
    ax2.legend(fontsize=8, loc="best")
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
