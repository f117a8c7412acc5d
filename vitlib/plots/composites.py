"""Composite figures across models (paper Figures 2, 3, 13, 14 and Table 4's curves): each
reads several analyses' outputs of one dataset, ``{analysis: data}`` (long tables, or for
array analyses the list of every model's arrays, each with its ``model``), as
:func:`vitlib.registry.draw_figure` hands them over."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vitlib.plots.attention_maps import PRESCALED_LABEL, _prescale, fit_suptitle  # noqa: E402
from vitlib.plots.style import REFERENCE_FAMILIES, model_style, save_figure  # noqa: E402
from vitlib.tables import wide  # noqa: E402

Arrays = Mapping[str, Any]

#: The four kinds of local heads of the paper's Figure 3, with the taxonomy classes each
#: takes its example from (vitlib.attention.analyses.TAXONOMY_CLASSES).
LOCAL_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("strict local", ("strict-local",)),
    ("soft local", ("soft-local",)),
    ("axial", ("axial-horizontal", "axial-vertical")),
    ("offset local", ("offset-local",)),
)


def grid_of(maps: Arrays) -> tuple[int, int]:
    """Token grid ``(h, w)`` of an ``attention_maps`` array set, from its aligned canvas
    ``[L, H, 2h-1, 2w-1]``."""
    a = np.asarray(maps["aligned"])
    return (a.shape[-2] + 1) // 2, (a.shape[-1] + 1) // 2


def cls_maps(maps: Arrays) -> np.ndarray:
    """The dataset-average CLS attention over the spatial keys, ``[L, H, h, w]``."""
    h, w = grid_of(maps)
    m = np.asarray(maps["cls"], dtype=np.float32)
    return m[..., m.shape[-1] - h * w :].reshape(*m.shape[:2], h, w)


def _resolve_block(block: int | None, depth: int, what: str) -> int:
    """0-based block of a 1-based ``block`` setting (``None``: the last)."""
    if block is None:
        return depth - 1
    if not 1 <= block <= depth:
        raise ValueError(f"{what}: block {block} outside 1..{depth}")
    return block - 1


def _resolve_head(head: int, heads: int, what: str) -> int:
    if not 1 <= head <= heads:
        raise ValueError(f"{what}: head {head} outside 1..{heads}")
    return head - 1


def _cell(ax: Any, m: np.ndarray, **kw: Any) -> Any:
    ax.set_xticks([])
    ax.set_yticks([])
    return ax.imshow(m, cmap="viridis", interpolation="nearest", vmin=0, vmax=1, **kw)


def _midlines(ax: Any, m: np.ndarray) -> None:
    """Red mid-lines through the query position of an aligned map (the paper's visual aid)."""
    ax.axhline((m.shape[0] - 1) / 2, color="red", lw=0.7)
    ax.axvline((m.shape[1] - 1) / 2, color="red", lw=0.7)


def _colorbar(fig: Any, im: Any, axes: Any, n_rows: int) -> None:
    """One colour bar for every cell: beside the grid, or below a grid of one or two rows
    (where a bar beside it would be too short for its label)."""
    if im is None:
        return
    if n_rows <= 2:
        cb = fig.colorbar(im, ax=axes, location="bottom", shrink=0.5, aspect=40, pad=0.02)
    else:
        cb = fig.colorbar(im, ax=axes, shrink=min(0.9, 4.0 / max(n_rows, 1)), aspect=25)
    cb.set_label(PRESCALED_LABEL, fontsize=7)
    cb.ax.tick_params(labelsize=6)


def sample_maps_figure(
    data: Mapping[str, Any],
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    layout: str = "main",
    block: int | None = None,
    head: int = 1,
) -> None:
    """The paper's Figure 13: for every model (columns) and chosen image (rows), the CLS
    attention of one head (``head``, 1-based) of one block (``block``, 1-based; ``None``:
    the last), the bottom row the dataset average of the same head; the images as the
    models see them in the first column."""
    samples = list(data["attention_images"])
    averages = {str(m["model"]): m for m in data["attention_maps"]}
    if not samples:
        raise ValueError("sample attention maps: no model with single-image maps")
    n = len(samples[0]["cls"])
    ids = [str(i) for i in samples[0]["ids"]]
    rows, cols = n + 1, len(samples) + 1
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(1.15 * cols + 1.2, 1.15 * rows + 0.9),
        squeeze=False,
        layout="constrained",
    )
    for r in range(n):
        axes[r, 0].imshow(np.asarray(samples[0]["image"][r]))
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        axes[r, 0].set_ylabel(ids[r], fontsize=6, rotation=0, ha="right", va="center")
    axes[n, 0].axis("off")
    axes[n, 0].text(
        0.95,
        0.5,
        "dataset\naverage",
        ha="right",
        va="center",
        fontsize=7,
        transform=axes[n, 0].transAxes,
    )
    axes[0, 0].set_title("image", fontsize=7)
    im = None
    for c, s in enumerate(samples, start=1):
        model = str(s["model"])
        cls = np.asarray(s["cls"], dtype=np.float32)  # [n, L, H, h, w]
        L, H = cls.shape[1:3]
        b = _resolve_block(block, L, model)
        hd = _resolve_head(head, H, model)
        for r in range(n):
            im = _cell(axes[r, c], _prescale(cls[r, b, hd]))
        if model in averages:
            im = _cell(axes[n, c], _prescale(cls_maps(averages[model])[b, hd]))
        else:
            axes[n, c].axis("off")
        axes[0, c].set_title(f"{model}\n[{b + 1}, {hd + 1}]", fontsize=6)
    _colorbar(fig, im, axes, rows)
    which = "the last block" if block is None else f"block {block}"
    fit_suptitle(
        fig,
        f"CLS attention of head {head} of {which} [block, head] for single images; bottom row:"
        " the dataset average",
        fontsize=9,
    )
    save_figure(fig, outputs, dpi)


def cls_heads_figure(
    data: Mapping[str, Any],
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    heads: Sequence[int] = (1, 2, 3),
) -> None:
    """The paper's Figure 2: the dataset-average CLS attention of a few heads (``heads``,
    1-based) of every layer (rows), side by side for the models (column groups); a head or
    layer a model does not have is left empty."""
    maps = list(data["attention_maps"])
    if not maps:
        raise ValueError("CLS heads figure: no model")
    grids = [(str(m["model"]), cls_maps(m)) for m in maps]
    depth = max(g.shape[0] for _, g in grids)
    cols = len(grids) * len(heads)
    fig, axes = plt.subplots(
        depth,
        cols,
        figsize=(0.75 * cols + 1.6, 0.75 * depth + 1.2),
        squeeze=False,
        layout="constrained",
    )
    im = None
    for k, (model, g) in enumerate(grids):
        for j, head in enumerate(heads):
            c = k * len(heads) + j
            hd = int(head) - 1  # a head the model does not have: an empty column
            for layer in range(depth):
                ax = axes[layer, c]
                if layer < g.shape[0] and 0 <= hd < g.shape[1]:
                    im = _cell(ax, _prescale(g[layer, hd]))
                else:
                    ax.axis("off")
                if c == 0:
                    ax.set_ylabel(f"L{layer + 1}", fontsize=7)
            axes[0, c].set_title(f"{model}\nh{hd + 1}" if j == 0 else f"\nh{hd + 1}", fontsize=6)
    fig.supylabel("layer (block, 1-based)", fontsize=8)
    _colorbar(fig, im, axes, depth)
    fit_suptitle(
        fig,
        f"Average CLS attention, heads {', '.join(str(h) for h in heads)} of every layer",
        fontsize=9,
    )
    save_figure(fig, outputs, dpi)


def local_heads_figure(
    data: Mapping[str, Any],
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """The paper's Figure 3: one example of each kind of local head (strict, soft, axial,
    offset; the head taxonomy's classes) per model, as its aligned aggregated map with red
    mid-lines through the query position; the example is the kind's first head in depth
    order, titled ``[layer, head]`` (1-based); "none" where the model has no such head."""
    maps = {str(m["model"]): m for m in data["attention_maps"]}
    tax = data["head_taxonomy"].drop_duplicates(["model", "layer", "head"])
    names = [
        m for m in (models or dict.fromkeys(tax["model"])) if m in maps and m in set(tax["model"])
    ]
    if not names:
        raise ValueError("local heads figure: no model with both aligned maps and a taxonomy")
    fig, axes = plt.subplots(
        len(names),
        len(LOCAL_KINDS),
        figsize=(1.5 * len(LOCAL_KINDS) + 1.8, 1.5 * len(names) + 0.8),
        squeeze=False,
        layout="constrained",
    )
    im = None
    for r, model in enumerate(names):
        aligned = np.asarray(maps[model]["aligned"], dtype=np.float32)
        t = tax[tax["model"] == model].sort_values(["layer", "head"])
        for c, (kind, classes) in enumerate(LOCAL_KINDS):
            ax = axes[r, c]
            pick = t[t["class"].isin(classes)]
            if pick.empty:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.text(
                    0.5,
                    0.5,
                    "none",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="0.4",
                    transform=ax.transAxes,
                )
            else:
                layer, head = int(pick["layer"].iloc[0]), int(pick["head"].iloc[0])
                m = _prescale(aligned[layer, head])
                im = _cell(ax, m)
                _midlines(ax, m)
                ax.set_title(f"[{layer + 1}, {head + 1}]", fontsize=6)
            if c == 0:
                ax.set_ylabel(model, fontsize=7)
            if r == 0:  # the kind heads its column, above the first cell's [layer, head]
                ax.set_title(f"{kind}\n{ax.get_title()}".rstrip(), fontsize=7)
    _colorbar(fig, im, axes, len(names))
    fit_suptitle(
        fig,
        "Kinds of local attention heads: aligned aggregated maps [layer, head], red mid-lines"
        " through the query",
        fontsize=9,
    )
    save_figure(fig, outputs, dpi)


def offset_heads_figure(
    data: Mapping[str, Any],
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
    layout: str = "main",
) -> None:
    """The paper's Figure 14: per model, its most offset local head — among the heads the
    taxonomy calls offset-local, the one with the largest attention offset (head metrics);
    a model without one shows its most offset head of any kind, said in its title — as an
    aligned aggregated map with red mid-lines, titled with the model, ``[layer, head]``
    (1-based) and the offset in tokens."""
    maps = {str(m["model"]): m for m in data["attention_maps"]}
    t = wide(data["head_metrics"])
    t = t[t["model"].isin(list(maps))]
    if t.empty:
        raise ValueError("offset heads figure: no model with both aligned maps and head metrics")
    tax = data["head_taxonomy"].drop_duplicates(["model", "layer", "head"])
    kind = tax.set_index(["model", "layer", "head"])["class"]
    t = t.assign(
        offset_local=[
            kind.get((m, int(la), int(h))) == "offset-local"
            for m, la, h in zip(t["model"], t["layer"], t["head"], strict=True)
        ]
    )
    # per model: the offset-local heads first, then the largest offset
    ranked = t.sort_values(["offset_local", "offset"], ascending=False, kind="stable")
    present = set(t["model"])
    order = [m for m in (models or dict.fromkeys(t["model"])) if m in present]
    picks = ranked.drop_duplicates("model").set_index("model").reindex(order).reset_index()
    n = len(picks)
    ncols = min(n, 6)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(1.7 * ncols + 1.2, 1.8 * nrows + 0.7),
        squeeze=False,
        layout="constrained",
    )
    im = None
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (_, p) in zip(axes.flat, picks.iterrows()):
        layer, head = int(p["layer"]), int(p["head"])
        m = _prescale(np.asarray(maps[str(p["model"])]["aligned"], dtype=np.float32)[layer, head])
        im = _cell(ax, m)
        _midlines(ax, m)
        note = "" if p["offset_local"] else " (not offset-local)"
        ax.set_title(
            f"{p['model']}\n[{layer + 1}, {head + 1}] offset {p['offset']:.2f}{note}", fontsize=6
        )
    _colorbar(fig, im, axes, nrows)
    fit_suptitle(
        fig,
        "The most offset local head of every model: aligned aggregated map [layer, head],"
        " red mid-lines through the query",
        fontsize=9,
    )
    save_figure(fig, outputs, dpi)


def davis_views_figure(
    data: Mapping[str, Any],
    outputs: Sequence[str | Path],
    *,
    dpi: int = 150,
    models: Sequence[str] | None = None,
) -> None:
    """Table 4 per layer: DAVIS J&F of every model with dense extraction (solid) and without
    ('Normal', frames squashed to the input size; dotted), noise models as grey references."""
    frames = [
        wide(data[a]).assign(kind=k) for a, k in (("davis", "dense"), ("davis_normal", "normal"))
    ]
    t = pd.concat(frames, ignore_index=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for (model, kind), g in t.groupby(["model", "kind"], sort=False):
        family = str(g["family"].iloc[0])
        st = model_style(str(model), family)
        st["linestyle"] = "-" if kind == "dense" else ":"
        if family in REFERENCE_FAMILIES:
            ax.axhline(
                float(g["JF"].mean()),
                color=st["color"],
                ls=st["linestyle"],
                lw=1,
                label=f"{model} ({kind})",
            )
            continue
        ax.plot(g["layer"] + 1, g["JF"], label=f"{model} ({kind})", **st)
    ax.set_xlabel("layer")
    ax.set_ylabel("J&F (%)")
    ax.set_title("DAVIS J&F: dense (solid) against normal (dotted) extraction", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    save_figure(fig, outputs, dpi)
