"""Plot styling shared by all figures (after the paper's plot_format, PROTOCOLS §2.7)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import cycle
from pathlib import Path
from typing import Any

FAMILY_COLORS = {
    "fs": "darkred",
    "clip": "red",
    "dino": "darkgreen",
    "moco": "limegreen",
    "mae": "blue",
    "beit": "darkturquoise",
    "random": "magenta",
    "dinov2": "olive",
    "siglip": "orange",
    "deit3": "saddlebrown",
}
FAMILY_MARKERS = {"beit": "o", "clip": "D", "dino": "^", "mae": "h", "fs": "s", "moco": "v"}
PATCH_LINESTYLE = {32: "--", 16: "-", 14: "-.", 8: ":"}
_FALLBACK = cycle(["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:gray"])
_assigned: dict[str, str] = {}


def model_style(model_id: str, family: str) -> dict[str, Any]:
    """Line colour (by family), marker (by family) and line style (by patch size)."""
    color = FAMILY_COLORS.get(family)
    if color is None:
        color = _assigned.setdefault(model_id, next(_FALLBACK))
    m = re.search(r"_[sblh](\d+)", model_id)
    ls = PATCH_LINESTYLE.get(int(m.group(1)), "-") if m else "-"
    return {
        "color": color,
        "marker": FAMILY_MARKERS.get(family, "o"),
        "linestyle": ls,
        "markersize": 4,
    }


def save_figure(fig: Any, outputs: Sequence[str | Path], dpi: int) -> None:
    """Write ``fig`` to every output path (format from the suffix), then close it."""
    import matplotlib.pyplot as plt

    for out in outputs:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi)
    plt.close(fig)
