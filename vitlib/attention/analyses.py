"""Attention analyses computed from a finished store (docs/protocols.md §2; no forward pass).

* :func:`average_maps` — dataset-average attention maps (§2.2) and aligned aggregated maps
  (§2.3) from the store's sums, with the AAAM normaliser as a faithful/fixed setting.
* :func:`attention_offset` — the average attention offset (§2.4) of aligned maps.
* :func:`head_metrics_table` — tidy per-head table: distance, offset, spatial→CLS attention
  (key index as a faithful/fixed setting), null-row fraction.
* :func:`classify_heads` — the automatic head taxonomy (beyond the paper).
* :func:`artifact_tokens_table` — high-norm outlier tokens and the CLS attention they draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from vitlib import keys
from vitlib.data.manifest import DataError, Manifest
from vitlib.store import Store

AAAM_NORMALISERS = ("per_image", "per_batch")


def average_maps(
    store: Store | str, *, aaam_normaliser: str = "per_image", faithful_batch_size: int = 2
) -> dict[str, np.ndarray]:
    """Dataset-average maps of a store.

    Returns ``all``, ``spatial``, ``spatial_pure`` and ``cls`` ``[L, H, N]`` (mean over images
    of the per-image mean over the mode's query rows, over all keys, docs/protocols.md §2.2) and
    ``aligned`` ``[L, H, 2h−1, 2w−1]`` (§2.3).  ``aaam_normaliser``: ``per_image`` divides the
    canvas by images × queries (what the paper describes); ``per_batch`` reproduces the
    original code, which counted batches × queries with its batch size
    ``faithful_batch_size`` (2), i.e. the true mean × that batch size.
    """
    if aaam_normaliser not in AAAM_NORMALISERS:
        raise ValueError(
            f"aaam_normaliser must be one of {AAAM_NORMALISERS}, got {aaam_normaliser!r}"
        )
    s = Store.open(store)
    n = int(s.read(keys.SUM_N_IMAGES))
    if n == 0:
        raise ValueError(f"{s.path}: the store holds no images")
    h, w = s.grid_hw
    out = {m: s.read(keys.map_sum(m)) / n for m in keys.MAP_MODES}
    aligned = s.read(keys.SUM_ALIGNED) / (n * h * w)
    if aaam_normaliser == "per_batch":
        aligned = aligned * faithful_batch_size
    out["aligned"] = aligned
    out["null_rows"] = s.read(keys.SUM_NULL_ROWS) / (n * h * w)
    return out


def attention_offset(aligned: np.ndarray) -> dict[str, np.ndarray]:
    """Average attention offset (docs/protocols.md §2.4) of aligned maps ``[..., M, M]``.

    Each map is normalised to sum 1 (all-zero maps give NaN); coordinates run from −1 to +1
    across the canvas (x along columns, y along rows).  Returns ``cx``, ``cy`` and the offset
    ``d = √(cx² + cy²)``, each ``[...]``.
    """
    Mr, Mc = aligned.shape[-2:]
    tot = aligned.sum((-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = aligned / tot[..., None, None]
    vy = 2 * np.arange(Mr) / (Mr - 1) - 1
    vx = 2 * np.arange(Mc) / (Mc - 1) - 1
    cx = (p * vx[None, :]).sum((-2, -1))
    cy = (p * vy[:, None]).sum((-2, -1))
    return {"cx": cx, "cy": cy, "d": np.sqrt(cx**2 + cy**2)}


def head_metrics_table(
    store: Store | str, *, aaam_normaliser: str = "per_image", spatial_cls_key: str = "cls"
) -> pd.DataFrame:
    """Tidy per-head attention metrics of one store.

    Metrics: ``attention_distance`` (§2.5, mean over images), ``offset``/``offset_x``/
    ``offset_y`` (§2.4), ``spatial_cls_attention`` (mean attention spatial queries pay to the
    CLS key; ``spatial_cls_key='first_patch'`` reproduces the original code's key index 1,
    §8.1.1) and ``null_row_fraction`` (spatial rows with no spatial mass).
    """
    if spatial_cls_key not in ("cls", "first_patch"):
        raise ValueError(f"spatial_cls_key must be 'cls' or 'first_patch', got {spatial_cls_key!r}")
    s = Store.open(store)
    meta = s.meta
    maps = average_maps(s, aaam_normaliser=aaam_normaliser)
    dist = s.array(keys.ATTN_DISTANCE)
    n = dist.shape[0]
    acc = np.zeros(dist.shape[1:])
    for lo in range(0, n, dist.chunks[0]):
        acc += np.asarray(dist[lo : lo + dist.chunks[0]], dtype=np.float64).sum(0)
    off = attention_offset(maps["aligned"])
    P = int(meta["num_prefix_tokens"])
    key = 0 if spatial_cls_key == "cls" else P  # index 1 for a model with one CLS token
    metrics = {
        "attention_distance": acc / n,
        "offset": off["d"],
        "offset_x": off["cx"],
        "offset_y": off["cy"],
        "spatial_cls_attention": (
            maps["spatial"][..., key] if P or key else np.full(acc.shape, np.nan)
        ),
        "null_row_fraction": maps["null_rows"],
    }
    L, H = acc.shape
    layer, head = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    frames = [
        pd.DataFrame(
            {
                "layer": layer.ravel(),
                "head": head.ravel(),
                "metric": m,
                "value": np.asarray(v, dtype=float).ravel(),
            }
        )
        for m, v in metrics.items()
    ]
    t = pd.concat(frames, ignore_index=True)
    for k, v in {
        "n_images": n,
        "aaam_normaliser": aaam_normaliser,
        "spatial_cls_key": spatial_cls_key,
    }.items():
        t[k] = v
    return t


# ---------------------------------------------------------------------------- taxonomy
@dataclass(frozen=True)
class TaxonomySettings:
    """Thresholds of the head taxonomy, stated for a ``reference_grid`` × ``reference_grid``
    token grid (all masses are fractions of a normalised aligned map; radii in tokens).

    On another grid the radii and masses are rescaled by :func:`effective_taxonomy` (the rule
    is documented there); ``reference_grid=None`` applies them unchanged on every grid.
    """

    strict_mass: float = 0.7  # mass within Chebyshev radius 1 of the query → strict-local
    local_mass: float = 0.5  # mass within radius 1 of an off-centre peak → offset-local
    axial_mass: float = 0.6  # mass on the query's row (or column) → axial
    soft_radius: int = 3  # Chebyshev radius of the soft-local window
    soft_mass: float = 0.6  # mass within soft_radius of the query → soft-local
    reference_grid: int | None = 14  # grid side the values above are stated for (the paper's)


@dataclass(frozen=True)
class EffectiveTaxonomy:
    """The radii and mass thresholds :func:`classify_head` applies on one ``grid_h × grid_w``
    token grid (the settings rescaled by :func:`effective_taxonomy`)."""

    grid_h: int
    grid_w: int
    local_radius_rows: int  # strict-local and offset-local window, rows
    local_radius_cols: int  # … and columns
    soft_radius_rows: int
    soft_radius_cols: int
    strict_mass: float
    local_mass: float
    axial_h_mass: float  # on the query's row
    axial_v_mass: float  # on the query's column
    soft_mass: float

    def columns(self) -> dict[str, int | float]:
        """The table columns that record what was applied: ``grid_h``, ``grid_w`` and
        ``eff_<name>`` for every radius and threshold."""
        return {k if k.startswith("grid_") else f"eff_{k}": v for k, v in asdict(self).items()}


TAXONOMY_CLASSES = (
    "strict-local",
    "offset-local",
    "axial-horizontal",
    "axial-vertical",
    "soft-local",
    "global",
)

_DIRECTIONS = {
    (-1, 0): "up",
    (1, 0): "down",
    (0, -1): "left",
    (0, 1): "right",
    (-1, -1): "up-left",
    (-1, 1): "up-right",
    (1, -1): "down-left",
    (1, 1): "down-right",
}


def uniform_aligned(h: int, w: int) -> np.ndarray:
    """The normalised aligned map ``[2h−1, 2w−1]`` of uniform attention over an ``h × w``
    grid: entry ``(dr, dc)`` is the number of queries whose key at that offset lies on the
    grid, ``(h − |dr|)(w − |dc|)`` (the autocorrelation of an all-ones ``h × w`` array),
    divided by its total ``h²w²``."""
    rows = h - np.abs(np.arange(-(h - 1), h, dtype=np.float64))
    cols = w - np.abs(np.arange(-(w - 1), w, dtype=np.float64))
    return np.outer(rows, cols) / float(h * h * w * w)


def _window(a: np.ndarray, r: int, c: int, rad_r: int, rad_c: int) -> float:
    """Mass of ``a`` within ``rad_r`` rows and ``rad_c`` columns of ``(r, c)`` (clipped)."""
    return float(a[max(r - rad_r, 0) : r + rad_r + 1, max(c - rad_c, 0) : c + rad_c + 1].sum())


def _scaled_radius(radius: int, side: int, reference: int) -> int:
    """``radius · side / reference`` rounded half up (integer arithmetic), at least 1."""
    return max(1, (2 * radius * side + reference) // (2 * reference))


def _relative(t: float, u: float, u_ref: float) -> float:
    """The mass that is as far from uniform (``u``) towards 1 as ``t`` is from ``u_ref``:
    ``u + (1 − u)(t − u_ref)/(1 − u_ref)``; exactly ``t`` when ``u == u_ref``; ``inf`` (the
    rule never fires) when the window holds all of uniform attention (``u = 1``: a window
    covering the whole grid separates nothing)."""
    if u == u_ref:
        return t
    if u >= 1.0 - 1e-12:
        return math.inf
    return u + (1.0 - u) * (t - u_ref) / (1.0 - u_ref)


@lru_cache(maxsize=256)
def effective_taxonomy(
    grid_hw: tuple[int, int], settings: TaxonomySettings = TaxonomySettings()
) -> EffectiveTaxonomy:
    """The radii and thresholds of the taxonomy on an ``h × w`` token grid.

    The settings are stated for the ``g₀ × g₀`` reference grid (``g₀ = reference_grid``, 14:
    ViT-B/16 at 224 px, where the paper saw these head types).  On another grid:

    * **Radii** cover the same fraction of the image: a radius ``r`` becomes
      ``round(r · h / g₀)`` rows and ``round(r · w / g₀)`` columns (half up, at least 1), so
      the strict/offset window (``r = 1``) and the soft window (``soft_radius``) are
      rectangles on non-square grids.  The axial band stays the query's own row / column.
    * **Masses** are defined relative to uniform attention.  With ``u`` the mass uniform
      attention puts in the same window on this grid (exactly, from :func:`uniform_aligned`)
      and ``u₀`` its mass in the reference window on the reference grid, a head passes
      threshold ``t`` when its window mass ``m`` satisfies
      ``(m − u)/(1 − u) ≥ (t − u₀)/(1 − u₀)``: the same share of the way from uniform to
      all-in-the-window.  A fixed mass cannot scale — a 3 × 3 window of an 8 × 8 grid holds
      12 % of uniform attention against 4 % on 14 × 14, a radius-3 window 47 % against 19 %
      — and a ratio ``m/u`` cannot either (the 14 × 14 strict ratio, 17×, is unreachable on
      8 × 8); the excess over uniform, normalised by its largest possible value, is 0 for
      uniform attention and 1 for a head entirely in the window on every grid.

    Offset-local uses the uniform mass of the *centred* local window (the largest any window
    of that size holds, so the rule is never laxer than centred); axial-horizontal uses the
    uniform row mass ``1/h``, axial-vertical ``1/w``.  On the reference grid every radius and
    threshold equals its setting, so classification there is unchanged.  On a grid so small
    that a window covers it whole (e.g. 2 × 2) uniform attention fills that window and its
    rule is switched off (threshold ``inf``).  With ``reference_grid=None`` the settings
    apply as given on every grid.
    """
    h, w = int(grid_hw[0]), int(grid_hw[1])
    s = settings
    if s.reference_grid is None:
        return EffectiveTaxonomy(
            h, w, 1, 1, s.soft_radius, s.soft_radius,
            s.strict_mass, s.local_mass, s.axial_mass, s.axial_mass, s.soft_mass,
        )  # fmt: skip
    g0 = int(s.reference_grid)
    lr, lc = _scaled_radius(1, h, g0), _scaled_radius(1, w, g0)
    sr, sc = _scaled_radius(s.soft_radius, h, g0), _scaled_radius(s.soft_radius, w, g0)
    u, u0 = uniform_aligned(h, w), uniform_aligned(g0, g0)
    ch, cw, c0 = h - 1, w - 1, g0 - 1  # centres
    u_loc, u0_loc = _window(u, ch, cw, lr, lc), _window(u0, c0, c0, 1, 1)
    u_soft = _window(u, ch, cw, sr, sc)
    u0_soft = _window(u0, c0, c0, s.soft_radius, s.soft_radius)
    return EffectiveTaxonomy(
        grid_h=h,
        grid_w=w,
        local_radius_rows=lr,
        local_radius_cols=lc,
        soft_radius_rows=sr,
        soft_radius_cols=sc,
        strict_mass=_relative(s.strict_mass, u_loc, u0_loc),
        local_mass=_relative(s.local_mass, u_loc, u0_loc),
        axial_h_mass=_relative(s.axial_mass, float(u[ch, :].sum()), float(u0[c0, :].sum())),
        axial_v_mass=_relative(s.axial_mass, float(u[:, cw].sum()), float(u0[:, c0].sum())),
        soft_mass=_relative(s.soft_mass, u_soft, u0_soft),
    )


def classify_head(
    aligned: np.ndarray, settings: TaxonomySettings = TaxonomySettings()
) -> dict[str, Any]:
    """Classify one head from its aligned map ``[2h−1, 2w−1]`` (query at the centre).

    Rules, first match wins: *strict-local* (≥ ``strict_mass`` within one token of the query);
    *offset-local* (the peak is off-centre and ≥ ``local_mass`` lies within one token of it;
    direction and offset in tokens from the peak, diagonals included); *axial-horizontal* /
    *axial-vertical* (≥ ``axial_mass`` on the query's own row / column); *soft-local*
    (≥ ``soft_mass`` within ``soft_radius`` tokens); otherwise *global*.  Radii and masses
    are those of the ``reference_grid``; on the map's own ``h × w`` grid they are rescaled
    by :func:`effective_taxonomy` (unchanged on the reference grid).
    """
    a = np.asarray(aligned, dtype=np.float64)
    tot = a.sum()
    Mr, Mc = a.shape
    cr, cc = (Mr - 1) // 2, (Mc - 1) // 2
    if tot <= 0:
        return {"class": "global", "direction": "", "offset_rows": 0, "offset_cols": 0}
    a = a / tot
    e = effective_taxonomy((cr + 1, cc + 1), settings)
    lr, lc = e.local_radius_rows, e.local_radius_cols

    peak = np.unravel_index(int(np.argmax(a)), a.shape)
    pr, pc = int(peak[0]), int(peak[1])
    dr, dc = pr - cr, pc - cc
    out = {"direction": "", "offset_rows": dr, "offset_cols": dc}
    if (dr, dc) == (0, 0) and _window(a, cr, cc, lr, lc) >= e.strict_mass:
        return {**out, "class": "strict-local"}
    if (dr, dc) != (0, 0) and _window(a, pr, pc, lr, lc) >= e.local_mass:
        direction = _DIRECTIONS[(int(np.sign(dr)), int(np.sign(dc)))]
        return {**out, "class": "offset-local", "direction": direction}
    if a[cr, :].sum() >= e.axial_h_mass:
        return {**out, "class": "axial-horizontal"}
    if a[:, cc].sum() >= e.axial_v_mass:
        return {**out, "class": "axial-vertical"}
    if _window(a, cr, cc, e.soft_radius_rows, e.soft_radius_cols) >= e.soft_mass:
        return {**out, "class": "soft-local"}
    return {**out, "class": "global"}


def classify_heads(
    aligned_lhmm: np.ndarray, settings: TaxonomySettings = TaxonomySettings()
) -> pd.DataFrame:
    """Classify every head of ``[L, H, M, M]`` aligned maps; one row per (layer, head)."""
    rows = []
    for layer in range(aligned_lhmm.shape[0]):
        for head in range(aligned_lhmm.shape[1]):
            rows.append(
                {"layer": layer, "head": head, **classify_head(aligned_lhmm[layer, head], settings)}
            )
    return pd.DataFrame(rows)


def head_taxonomy_table(
    store: Store | str, *, taxonomy: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """The taxonomy of every head of a store's model, with the settings as columns and the
    radii and thresholds applied on the store's grid (``grid_h``, ``grid_w``, ``eff_*``,
    :meth:`EffectiveTaxonomy.columns`)."""
    st = Store.open(store)
    s = TaxonomySettings(**(taxonomy or {}))
    aligned = average_maps(st)["aligned"]
    t = classify_heads(aligned, s)
    grid = ((aligned.shape[-2] + 1) // 2, (aligned.shape[-1] + 1) // 2)
    for k, v in {**asdict(s), **effective_taxonomy(grid, s).columns()}.items():
        t[k] = v
    return t


# ---------------------------------------------------------------------------- artifacts
#: Images whose token norms the quantiles pool (the first ones: a bounded memory).
NORM_QUANTILE_IMAGES = 4096
#: Bin edges of the token-norm histogram: log2(norm / the image's median spatial norm).
NORM_BINS = np.arange(-3.0, 6.0 + 1e-9, 0.25)


def artifact_tokens_table(
    store: Store | str, *, norm_factor: float = 3.0, emergence: float = 0.005
) -> pd.DataFrame:
    """High-norm "artifact" tokens and prefix (register) attention per layer (beyond the
    paper; Darcet et al., "Vision Transformers Need Registers", 2024). docs §D8.

    A spatial token of block ``l``'s output is an outlier when its norm exceeds
    ``norm_factor`` × the median spatial-token norm of that image and layer. Per layer
    (means over images, and heads where there are heads):

    * ``outlier_fraction``: share of spatial tokens that are outliers;
    * ``cls_attention_share`` / ``spatial_attention_share``: share of the CLS query's / the
      mean spatial query's spatial attention in block ``l + 1`` (which reads block ``l``'s
      output) that lands on those tokens (NaN for the last block);
    * ``norm_median``, ``norm_p99``, ``norm_max``: the spatial token norms (the first
      :data:`NORM_QUANTILE_IMAGES` images pooled);
    * ``norm_density``: the histogram of ``log2(norm / median)`` (coordinate ``bin``, its
      centre; bins of :data:`NORM_BINS`, the two ends open), a density over bins;
    * with prefix tokens (need ``prefix_attention``): ``cls_to_cls``, ``cls_to_registers``,
      ``spatial_to_cls``, ``spatial_to_registers`` — the attention mass of each query on
      the CLS key and on the register keys — and ``spatial_to_registers_max_head``, the
      largest per-head mean (registers are often read by a few heads);
    * ``emergence_layer`` (``layer = -1``): the first block (1-based) whose
      ``outlier_fraction`` reaches ``emergence``; NaN when none does.
    """
    s = Store.open(store)
    meta = s.meta
    P = int(meta["num_prefix_tokens"])
    norms = s.array(keys.TOKEN_NORM)
    cls_rows = s.array(keys.ATTN_CLS_ROW)
    sp_rows = s.array(keys.ATTN_SPATIAL_MEAN_ROW)
    n, L, S = norms.shape
    frac = np.zeros(L)
    share = np.zeros((2, L))
    nbins = len(NORM_BINS) - 1
    hist = np.zeros((L, nbins))
    pooled: list[np.ndarray] = []
    step = norms.chunks[0]
    for lo in range(0, n, step):
        nm = np.asarray(norms[lo : lo + step], dtype=np.float32)  # [b, L, S]
        med = np.median(nm, axis=-1, keepdims=True)
        out = nm > norm_factor * med
        frac += out.mean(-1).sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.log2(nm / np.maximum(med, 1e-30))
        idx = np.clip(np.searchsorted(NORM_BINS, ratio, side="right") - 1, 0, nbins - 1)
        for layer in range(L):
            hist[layer] += np.bincount(idx[:, layer].ravel(), minlength=nbins)
        if sum(len(x) for x in pooled) < NORM_QUANTILE_IMAGES:  # quantiles: the first images
            pooled.append(nm)
        for q, arr in enumerate((cls_rows, sp_rows)):
            cr = np.asarray(arr[lo : lo + step], dtype=np.float32)  # [b, L, H, S]
            tot = cr.sum(-1)  # [b, L, H]
            on = (cr[:, 1:] * out[:, :-1, None, :]).sum(-1)  # block l+1 reads l
            with np.errstate(invalid="ignore", divide="ignore"):
                sh = np.where(tot[:, 1:] > 0, on / tot[:, 1:], 0.0).mean(-1)  # [b, L-1]
            share[q, :-1] += sh.sum(0)
    share[:, -1] = np.nan
    allnorm = np.concatenate(pooled)  # [n, L, S]
    q50, q99 = np.quantile(allnorm, [0.5, 0.99], axis=(0, 2))
    per_layer: dict[str, np.ndarray] = {
        "outlier_fraction": frac / n,
        "cls_attention_share": share[0] / n,
        "spatial_attention_share": share[1] / n,
        "norm_median": q50,
        "norm_p99": q99,
        "norm_max": allnorm.max(axis=(0, 2)),
    }
    if P and s.has(keys.ATTN_PREFIX_MASS):
        pm = np.asarray(s.read(keys.ATTN_PREFIX_MASS), dtype=np.float64)  # [n, L, H, 2, P]
        head = pm.mean(0)  # [L, H, 2, P]
        per_layer["cls_to_cls"] = head[:, :, 0, 0].mean(1)
        per_layer["cls_to_registers"] = head[:, :, 0, 1:].sum(-1).mean(1)
        per_layer["spatial_to_cls"] = head[:, :, 1, 0].mean(1)
        per_layer["spatial_to_registers"] = head[:, :, 1, 1:].sum(-1).mean(1)
        per_layer["spatial_to_registers_max_head"] = head[:, :, 1, 1:].sum(-1).max(1)
    rows = [
        {"layer": layer, "metric": m, "value": float(v[layer])}
        for m, v in per_layer.items()
        for layer in range(L)
    ]
    centres = (NORM_BINS[:-1] + NORM_BINS[1:]) / 2
    dens = hist / np.maximum(hist.sum(1, keepdims=True), 1)
    rows += [
        {
            "layer": layer,
            "metric": "norm_density",
            "bin": float(centres[b]),
            "value": dens[layer, b],
        }
        for layer in range(L)
        for b in range(nbins)
    ]
    hit = np.flatnonzero(frac / n >= emergence)
    rows.append(
        {
            "layer": -1,
            "metric": "emergence_layer",
            "value": float(hit[0] + 1) if len(hit) else float("nan"),
        }
    )
    t = pd.DataFrame(rows)
    for k, v in {
        "num_prefix_tokens": P,
        "norm_factor": norm_factor,
        "emergence": emergence,
        "n_images": n,
    }.items():
        t[k] = v
    return t


# ---------------------------------------------------------------------------- single images
def image_attention_maps(store: Store | str, indices: list[int]) -> dict[str, np.ndarray]:
    """Per-image CLS and mean-spatial attention rows of chosen images (paper Figure 13).

    Returns ``cls`` and ``spatial`` ``[n, L, H, h, w]`` (float32) and ``index`` ``[n]``.
    """
    s = Store.open(store)
    h, w = s.grid_hw
    n = s.n_items
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise IndexError(f"{s.path}: image indices {bad} outside 0..{n - 1}")
    idx = np.asarray(list(indices), dtype=int)  # in the order asked for
    out = {}
    for name, key in (("cls", keys.ATTN_CLS_ROW), ("spatial", keys.ATTN_SPATIAL_MEAN_ROW)):
        arr = s.array(key)
        a = np.stack([np.asarray(arr[i], dtype=np.float32) for i in idx])
        out[name] = a.reshape(*a.shape[:-1], h, w)
    out["index"] = idx
    return out


def chosen_images(manifest: Manifest, images: int | Sequence[str]) -> list[int]:
    """Manifest indices of the single images: the first ``images``, or the items whose ids
    are listed (in that order; an unknown id is a :class:`DataError` naming it)."""
    if isinstance(images, int):
        return list(range(min(images, len(manifest))))
    where = {it.id: i for i, it in enumerate(manifest.items)}
    missing = [x for x in images if x not in where]
    if missing:
        some = ", ".join(repr(it.id) for it in manifest.items[:3])
        raise DataError(
            f"analyses.attention.images: {missing} not in dataset {manifest.dataset!r}"
            f" ({len(manifest)} items, ids like {some})"
        )
    return [where[x] for x in images]


def attention_images(
    store: Store | str,
    manifest: Manifest,
    *,
    images: int | Sequence[str],
    queries: Sequence[str] = (),
) -> dict[str, Any]:
    """The arrays of the single-image figures: the chosen images (:func:`chosen_images`) as
    the model sees them (``image``, centre view), their ids, their CLS and mean-spatial rows
    from the store (:func:`image_attention_maps`) and, for the query positions ``queries``
    (``top``/``left``/``center``/``right``/``bottom``/``diagonal``; empty: none), the rows of
    those query tokens from one small forward pass of the store's network
    (:func:`vitlib.attention.queries.query_rows`)."""
    from vitlib.data.views import view_image

    s = Store.open(store)
    idx = chosen_images(manifest, images)
    maps: dict[str, Any] = dict(image_attention_maps(s, idx))
    if queries:
        from vitlib.attention.queries import query_rows

        maps.update(query_rows(s, manifest, idx, queries))
    img_size = int(s.meta["spec"]["img_size"])
    maps["image"] = np.stack(
        [view_image(manifest.abspath(manifest.items[i]), img_size) for i in idx]
    )
    maps["ids"] = np.array([manifest.items[i].id for i in idx])
    maps["model"] = s.model
    return maps
