"""``results/explorer.html``: one static, server-free page over a whole run.

The page holds its data (a JSON block inside the HTML, arrays quantised to bytes and
base64-encoded) and its code (plain JavaScript, no library, no network): it opens from the
file system, offline, in any current browser. Views, linked by one selection (model A,
model B, a layer of each, a head):

* **per-layer curves** of every best-layer metric (the summary's headline metrics) against
  normalised depth, with their bootstrap intervals; clicking a point selects that model and
  layer;
* **similarity grids** (every measure and feature kind of the similarity suite, else the
  CKA grids): layers of model A × layers of model B; clicking a cell selects both layers;
* **attention maps**: the dataset-average CLS attention of every head of model A and model
  B at their selected layers (the attention-maps arrays), the selected head outlined.

Models are filtered by a search box (id or family). :func:`explorer_data` gathers the data
from the workflow's tables; :func:`write_explorer` writes the page. Sizes: the demo's page
is 0.12 MB (6 models, 378 grids); for the paper preset (21 models, 12–24 blocks, 231 model
pairs × 2 kinds × 9 measures ≈ 4,200 grids of 144–576 bytes, and 20 models' maps of 28–75 KB)
about 4 MB, estimated from that layout (docs §D9).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["explorer_data", "quantise", "write_explorer"]

#: the byte that stands for "no value" (NaN) in quantised arrays; values use 0 … 254
NAN_BYTE = 255


def quantise(values: np.ndarray, lo: float, hi: float) -> str:
    """``values`` as base64 bytes: ``round((v − lo) / (hi − lo) · 254)``, NaN → 255."""
    v = np.asarray(values, dtype=np.float64)
    span = hi - lo if hi > lo else 1.0
    q = np.clip(np.rint((v - lo) / span * 254.0), 0, 254)
    q = np.where(np.isfinite(v), q, NAN_BYTE).astype(np.uint8)
    return base64.b64encode(q.tobytes()).decode("ascii")


def _curves(tables: Sequence[pd.DataFrame]) -> list[dict[str, Any]]:
    from vitlib.downstream.summary import headline

    if not tables:
        return []
    every = pd.concat(list(tables), ignore_index=True)
    out = []
    for _, t in every.groupby("analysis", sort=False):
        h = headline(t)
        for (ds, metric), g in h.groupby(["dataset", "metric"], sort=False):
            series = {}
            for model, m in g.groupby("model", sort=False):
                m = m.sort_values("layer")
                series[str(model)] = {
                    "layer": m["layer"].astype(int).tolist(),
                    "value": _floats(m["value"]),
                    "lo": _floats(m["ci_low"]),
                    "hi": _floats(m["ci_high"]),
                }
            out.append(
                {"analysis": str(g["analysis"].iloc[0]), "dataset": ds, "metric": metric}
                | {"series": series}
            )
    return out


def _floats(s: pd.Series) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 5) for v in s.astype(float)]


def _grids(tables: Sequence[pd.DataFrame]) -> list[dict[str, Any]]:
    """Similarity (or CKA) grids, one entry per (dataset, measure, kind, model pair)."""
    out = []
    for t in tables:
        if t.empty:
            continue
        kind_col = "kind" if "kind" in t else None
        if "metric" in t and t["analysis"].iloc[0] == "cka":
            t = t[t["metric"] == "cka"].assign(metric="cka")
        for (ds, measure), g in t.groupby(["dataset", "metric"], sort=False):
            vals = g["value"].astype(float).to_numpy()
            finite = vals[np.isfinite(vals)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            keys = ["model_x", "model_y"] + ([kind_col] if kind_col else [])
            for key, cell in g.groupby(keys, sort=False):
                mx, my = str(key[0]), str(key[1])
                kind = str(key[2]) if kind_col else "all"
                lx = int(cell["layer_x"].max()) + 1
                ly = int(cell["layer_y"].max()) + 1
                grid = np.full((lx, ly), np.nan)
                grid[cell["layer_x"].astype(int), cell["layer_y"].astype(int)] = cell["value"]
                sig = np.zeros((lx, ly), bool)
                if "significant" in cell:
                    sig[cell["layer_x"].astype(int), cell["layer_y"].astype(int)] = cell[
                        "significant"
                    ].astype(bool)
                out.append(
                    {
                        "dataset": ds,
                        "measure": measure,
                        "kind": kind,
                        "x": mx,
                        "y": my,
                        "lx": lx,
                        "ly": ly,
                        "lo": lo,
                        "hi": hi,
                        "q": quantise(grid.ravel(), lo, hi),
                        "sig": base64.b64encode(np.packbits(sig.ravel()).tobytes()).decode(),
                    }
                )
    return out


def _maps(paths: Mapping[tuple[str, str], str | Path]) -> list[dict[str, Any]]:
    """Dataset-average CLS attention of every (dataset, model): ``[L, H, h·w]`` bytes, each
    map scaled to its own maximum (the page shows shapes, the tables hold the values)."""
    out = []
    for (ds, model), p in paths.items():
        with np.load(p) as z:
            if "cls" not in z or "aligned" not in z:
                continue
            cls = np.asarray(z["cls"], dtype=np.float64)  # [L, H, N]
            side = (int(z["aligned"].shape[-1]) + 1) // 2  # aligned maps are (2h − 1) wide
            hh = (int(z["aligned"].shape[-2]) + 1) // 2
        S = hh * side
        sp = cls[..., cls.shape[-1] - S :]
        mx = np.nanmax(sp, axis=-1, keepdims=True)
        scaled = np.where(mx > 0, sp / np.where(mx > 0, mx, 1.0), 0.0)
        L, H = sp.shape[:2]
        out.append(
            {
                "dataset": ds,
                "model": model,
                "L": L,
                "H": H,
                "h": hh,
                "w": side,
                "q": quantise(scaled.ravel(), 0.0, 1.0),
            }
        )
    return out


def explorer_data(
    *,
    summary_tables: Sequence[str | Path] = (),
    grid_tables: Sequence[str | Path] = (),
    attention_maps: Mapping[tuple[str, str], str | Path] | None = None,
    title: str = "vitlib explorer",
    models: Sequence[str] = (),
) -> dict[str, Any]:
    """The page's data from the workflow's outputs: the summary tables (per-layer curves),
    similarity / CKA tables (grids) and attention-maps arrays keyed by (dataset, model)."""
    summaries = [pd.read_csv(p) for p in summary_tables]
    grids = [pd.read_csv(p) for p in grid_tables]
    seen: dict[str, dict[str, Any]] = {}
    for t in summaries + grids:
        cols = [("model", "family")] if "model" in t else []
        cols += [("model_x", "family_x"), ("model_y", "family_y")] if "model_x" in t else []
        for mc, fc in cols:
            for m, f, d in zip(t[mc], t[fc], t.get("depth", pd.Series(0, t.index)), strict=False):
                e = seen.setdefault(str(m), {"id": str(m), "family": str(f), "depth": 0})
                e["depth"] = max(e["depth"], int(d) if np.isfinite(d) else 0)
    order = [m for m in models if m in seen] + [m for m in seen if m not in models]
    return {
        "title": title,
        "models": [seen[m] for m in order],
        "curves": _curves(summaries),
        "grids": _grids(grids),
        "maps": _maps(attention_maps or {}),
    }


def write_explorer(data: Mapping[str, Any], out: str | Path) -> int:
    """Write the page (the template with ``data`` inside); returns its size in bytes."""
    template = resources.files("vitlib").joinpath("explorer.html").read_text(encoding="utf-8")
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    payload = payload.replace("</", "<\\/")  # never close the script element early
    html = template.replace("/*__DATA__*/null", payload, 1)
    if html == template:
        raise RuntimeError("the explorer template lost its data placeholder")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{out}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return len(html.encode("utf-8"))
