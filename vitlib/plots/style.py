"""Plot styling shared by all figures (after the paper's plot_format, docs/protocols.md §2.7).

One encoding per property, the same in every figure: **colour** is the supervision family
(and nothing else), **line style** the patch size, **marker** the model size.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Paul Tol's "muted" qualitative scheme (P. Tol, *Colour Schemes*, SRON/EPS/TN/09-002,
#: issue 3.2, 2021; https://personal.sron.nl/~pault/): nine colours designed to stay
#: distinct in deuteranopic, protanopic and tritanopic vision and against white.
TOL_MUTED = {
    "indigo": "#332288",
    "cyan": "#88CCEE",
    "teal": "#44AA99",
    "green": "#117733",
    "olive": "#999933",
    "sand": "#DDCC77",
    "rose": "#CC6677",
    "wine": "#882255",
    "purple": "#AA4499",
}
#: The project knows eleven families, so muted is extended by black and by the dark brown
#: of Tol's earlier 12-colour qualitative scheme (same technical note, 2012 issue).  Checked
#: by simulation (Machado et al. 2009 at full severity, CAM02-UCS ΔE): the closest two of
#: the eleven differ by ΔE 17 in normal, 12 in deuteranopic, 15 in protanopic and 12 in
#: tritanopic vision — as far apart as the closest pairs of Okabe–Ito's eight colours
#: (21 / 15 / 14 / 11); tests/test_plots.py keeps a guard on this.
TOL_EXTRA = {"black": "#000000", "brown": "#661100"}

#: One colour per family of :data:`vitlib.models.registry.FAMILIES`, with the paper's hues
#: kept where the palette allows (FS dark red, CLIP red, DINO dark green, MAE blue, BEiT
#: turquoise, random magenta).
FAMILY_COLORS = {
    "fs": TOL_MUTED["wine"],  # explicit supervision (the paper's AugReg ViTs)
    "timm": TOL_EXTRA["black"],  # custom timm-layout models (the demo's supervised ViT)
    "deit3": TOL_EXTRA["brown"],  # explicit supervision, DeiT-III recipe
    "clip": TOL_MUTED["rose"],  # image–text contrastive
    "siglip": TOL_MUTED["sand"],  # image–text sigmoid loss
    "dino": TOL_MUTED["green"],  # self-distillation
    "dinov2": TOL_MUTED["cyan"],  # self-distillation + masked modelling
    "moco": TOL_MUTED["olive"],  # contrastive (MoCo-v3)
    "mae": TOL_MUTED["indigo"],  # masked reconstruction
    "beit": TOL_MUTED["teal"],  # masked token prediction
    "random": TOL_MUTED["purple"],  # untrained baseline
}
#: Families that are references, not supervision: the noise baseline (the paper's Random
#: row) is drawn dashed in the grey of reference lines, never in a family colour.
REFERENCE_FAMILIES = frozenset({"noise"})
REFERENCE_COLOR = "#777777"

#: Families not in :data:`FAMILY_COLORS` (tables from elsewhere) get one of these, chosen
#: by a stable hash of the family name (the same in every figure, run and process): colours
#: of Tol's "vibrant" and "light" schemes far from every family colour above (and from the
#: grey of reference lines).
FALLBACK_COLORS = ("#0077BB", "#CC3311", "#EE8866", "#BBCC33", "#FFAABB")

#: Model size (the letter of ``<method>_<size><patch>`` ids) → marker.
SIZE_MARKERS = {"t": "v", "s": "^", "b": "o", "l": "s", "h": "D", "g": "P"}
#: Patch size → line style.
PATCH_LINESTYLE = {32: "--", 16: "-", 14: "-.", 8: ":"}
_SIZE_PATCH = re.compile(r"_([tsblhg])(\d+)(?=_|$)")


def family_color(family: str) -> str:
    """The colour of ``family`` (hex), the same in every figure."""
    if family in REFERENCE_FAMILIES:
        return REFERENCE_COLOR
    color = FAMILY_COLORS.get(family)
    if color is None:
        digest = hashlib.sha256(family.encode()).digest()
        color = FALLBACK_COLORS[int.from_bytes(digest[:4], "big") % len(FALLBACK_COLORS)]
    return color


def model_style(model_id: str, family: str) -> dict[str, Any]:
    """Line colour (by family), marker (by model size) and line style (by patch size),
    size and patch read from ids like ``fs_b16`` or ``clip_l14_336`` (others: ``o``, solid)."""
    m = _SIZE_PATCH.search(model_id)
    if family in REFERENCE_FAMILIES:
        return {"color": REFERENCE_COLOR, "marker": "", "linestyle": "--", "markersize": 4}
    return {
        "color": family_color(family),
        "marker": SIZE_MARKERS[m.group(1)] if m else "o",
        "linestyle": PATCH_LINESTYLE.get(int(m.group(2)), "-") if m else "-",
        "markersize": 4,
    }


def save_figure(fig: Any, outputs: Sequence[str | Path], dpi: int) -> None:
    """Write ``fig`` to every output path (format from the suffix), then close it.  Axes
    whose x label is a layer (1-based block index) get integer ticks only.

    The layout (constrained layout: most of a grid figure's drawing time) is solved once,
    by the first format written, a PNG where there is one (the report shows the PNG); the
    other formats reuse its positions instead of solving it again."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        if ax.get_xlabel() == "layer":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for i, out in enumerate(sorted(outputs, key=lambda o: Path(o).suffix.lower() != ".png")):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi)
        if i == 0 and fig.get_layout_engine() is not None:
            fig.set_layout_engine("none")  # keeps the positions just solved
    plt.close(fig)
