"""Head taxonomy on any token grid: radii and masses scaled from the 14×14 reference
(:func:`vitlib.attention.analyses.effective_taxonomy`), the reference itself unchanged
(against a copy of the original fixed-threshold rule), hand-built heads of known class on
square and non-square grids, and the per-class counts in the taxonomy figure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vitlib.attention import aligned_aggregate  # noqa: E402
from vitlib.attention.analyses import (  # noqa: E402
    TAXONOMY_CLASSES,
    TaxonomySettings,
    classify_head,
    classify_heads,
    effective_taxonomy,
    uniform_aligned,
)
from vitlib.plots.attention_maps import taxonomy_figure  # noqa: E402
from vitlib.tables import tidy  # noqa: E402

GRIDS = [(8, 8), (14, 14), (16, 16), (28, 28), (6, 10)]

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


def reference_classify_head(
    aligned: np.ndarray,
    strict_mass: float = 0.7,
    local_mass: float = 0.5,
    axial_mass: float = 0.6,
    soft_radius: int = 3,
    soft_mass: float = 0.6,
) -> dict[str, Any]:
    """The taxonomy before grid scaling (fixed masses and radii), copied verbatim."""
    a = np.asarray(aligned, dtype=np.float64)
    tot = a.sum()
    Mr, Mc = a.shape
    cr, cc = (Mr - 1) // 2, (Mc - 1) // 2
    if tot <= 0:
        return {"class": "global", "direction": "", "offset_rows": 0, "offset_cols": 0}
    a = a / tot

    def window(r: int, c: int, rad: int) -> float:
        return float(a[max(r - rad, 0) : r + rad + 1, max(c - rad, 0) : c + rad + 1].sum())

    peak = np.unravel_index(int(np.argmax(a)), a.shape)
    pr, pc = int(peak[0]), int(peak[1])
    dr, dc = pr - cr, pc - cc
    out = {"direction": "", "offset_rows": dr, "offset_cols": dc}
    if (dr, dc) == (0, 0) and window(cr, cc, 1) >= strict_mass:
        return {**out, "class": "strict-local"}
    if (dr, dc) != (0, 0) and window(pr, pc, 1) >= local_mass:
        direction = _DIRECTIONS[(int(np.sign(dr)), int(np.sign(dc)))]
        return {**out, "class": "offset-local", "direction": direction}
    if a[cr, :].sum() >= axial_mass:
        return {**out, "class": "axial-horizontal"}
    if a[:, cc].sum() >= axial_mass:
        return {**out, "class": "axial-vertical"}
    if window(cr, cc, soft_radius) >= soft_mass:
        return {**out, "class": "soft-local"}
    return {**out, "class": "global"}


# ----------------------------------------------------------------- synthetic heads
Target = Callable[[int, int, int, int], np.ndarray]  # (r, c, h, w) -> [h, w] key weights


def aligned_of(target: Target, h: int, w: int) -> np.ndarray:
    """The aligned map ``[2h−1, 2w−1]`` of one head where query (r, c) attends by target."""
    N = 1 + h * w
    A = np.zeros((N, N))
    A[0, 0] = 1
    for q in range(h * w):
        r, c = divmod(q, w)
        m = target(r, c, h, w)
        A[1 + q, 1:] = m.ravel() / m.sum()
    return aligned_aggregate(A[None], (h, w), 1)[0]


def shift(dr: int, dc: int) -> Target:
    def t(r: int, c: int, h: int, w: int) -> np.ndarray:
        m = np.zeros((h, w))
        m[min(max(r + dr, 0), h - 1), min(max(c + dc, 0), w - 1)] = 1
        return m

    return t


def row(r: int, c: int, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w))
    m[r, :] = 1
    return m


def col(r: int, c: int, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w))
    m[:, c] = 1
    return m


def uniform(r: int, c: int, h: int, w: int) -> np.ndarray:
    return np.ones((h, w))


def gaussian(sigma: float) -> Target:
    def t(r: int, c: int, h: int, w: int) -> np.ndarray:
        rr, cc = np.mgrid[0:h, 0:w]
        return np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2))

    return t


def random_maps(h: int, w: int, n: int, seed: int) -> list[np.ndarray]:
    """Aligned-map-shaped arrays of every kind: uniform backgrounds mixed with blobs of random
    width at random offsets, row/column bands and Dirichlet noise of random concentration."""
    rng = np.random.default_rng(seed)
    M, K = 2 * h - 1, 2 * w - 1
    rr, cc = np.mgrid[0:M, 0:K]
    u = uniform_aligned(h, w)
    out = []
    for _ in range(n):
        pr = h - 1 + rng.integers(-2, 3) * rng.integers(0, 2)
        pc = w - 1 + rng.integers(-2, 3) * rng.integers(0, 2)
        sigma = rng.uniform(0.3, 4.0)
        blob = np.exp(-((rr - pr) ** 2 + (cc - pc) ** 2) / (2 * sigma**2))
        band = np.zeros((M, K))
        if rng.random() < 0.5:
            band[h - 1, :] = u[h - 1, :]
        else:
            band[:, w - 1] = u[:, w - 1]
        noise = rng.dirichlet(np.full(M * K, rng.uniform(0.05, 5.0))).reshape(M, K)
        wts = rng.dirichlet(np.full(4, 0.5))
        parts = [u, blob / blob.sum(), band / band.sum(), noise]
        out.append(sum(wi * p for wi, p in zip(wts, parts)) * rng.uniform(0.1, 10))
    return out


# ----------------------------------------------------------------- the rule
def test_uniform_aligned_is_the_aligned_map_of_uniform_attention():
    for h, w in [(2, 2), (6, 10), (8, 8)]:
        got = aligned_of(uniform, h, w)
        np.testing.assert_allclose(uniform_aligned(h, w), got, rtol=1e-6, atol=1e-12)
        assert uniform_aligned(h, w).sum() == pytest.approx(1.0)


def test_reference_grid_thresholds_are_the_settings():
    s = TaxonomySettings(strict_mass=0.8, local_mass=0.45, axial_mass=0.5, soft_radius=2)
    e = effective_taxonomy((14, 14), s)
    assert (e.local_radius_rows, e.local_radius_cols) == (1, 1)
    assert (e.soft_radius_rows, e.soft_radius_cols) == (2, 2)
    assert (e.strict_mass, e.local_mass, e.soft_mass) == (0.8, 0.45, s.soft_mass)
    assert e.axial_h_mass == e.axial_v_mass == 0.5


def test_radii_scale_with_the_grid_side():
    assert (
        effective_taxonomy((8, 8)).soft_radius_rows,
        effective_taxonomy((8, 8)).soft_radius_cols,
    ) == (2, 2)  # 24/14
    e = effective_taxonomy((28, 28))
    assert (e.local_radius_rows, e.soft_radius_rows) == (2, 6)
    e = effective_taxonomy((6, 10))  # per axis: 18/14 → 1 row, 30/14 → 2 columns
    assert (e.local_radius_rows, e.local_radius_cols) == (1, 1)
    assert (e.soft_radius_rows, e.soft_radius_cols) == (1, 2)
    assert effective_taxonomy((2, 2)).soft_radius_rows == 1  # at least 1


@pytest.mark.parametrize("grid", GRIDS)
def test_thresholds_keep_their_distance_from_uniform(grid):
    """(t_eff − u)/(1 − u) is the same on every grid: the reference's share of the way from
    uniform attention to all mass in the window."""
    h, w = grid
    e, r = effective_taxonomy(grid), effective_taxonomy((14, 14))
    u, u0 = uniform_aligned(h, w), uniform_aligned(14, 14)

    def win(a: np.ndarray, rr: int, rc: int) -> float:
        ch, cw = (a.shape[0] - 1) // 2, (a.shape[1] - 1) // 2
        return float(a[ch - rr : ch + rr + 1, cw - rc : cw + rc + 1].sum())

    def excess(m: float, base: float) -> float:
        return (m - base) / (1 - base)

    pairs = [
        (
            e.strict_mass,
            win(u, e.local_radius_rows, e.local_radius_cols),
            r.strict_mass,
            win(u0, 1, 1),
        ),
        (
            e.local_mass,
            win(u, e.local_radius_rows, e.local_radius_cols),
            r.local_mass,
            win(u0, 1, 1),
        ),
        (e.soft_mass, win(u, e.soft_radius_rows, e.soft_radius_cols), r.soft_mass, win(u0, 3, 3)),
        (e.axial_h_mass, 1 / h, r.axial_h_mass, 1 / 14),
        (e.axial_v_mass, 1 / w, r.axial_v_mass, 1 / 14),
    ]
    for t, base, t0, base0 in pairs:
        assert excess(t, base) == pytest.approx(excess(t0, base0))
        assert base < t < 1


@pytest.mark.parametrize("seed", range(3))
def test_reference_grid_classifies_exactly_as_the_fixed_rule(seed):
    maps = random_maps(14, 14, 400, seed)
    maps += [aligned_of(t, 14, 14) for t in (shift(0, 0), shift(0, -1), shift(2, 1), row, col)]
    settings = [TaxonomySettings()]
    rng = np.random.default_rng(100 + seed)
    for _ in range(3):  # non-default thresholds too
        settings.append(
            TaxonomySettings(
                strict_mass=float(rng.uniform(0.3, 0.9)),
                local_mass=float(rng.uniform(0.2, 0.8)),
                axial_mass=float(rng.uniform(0.2, 0.8)),
                soft_radius=int(rng.integers(1, 6)),
                soft_mass=float(rng.uniform(0.2, 0.8)),
            )
        )
    seen = set()
    for s in settings:
        old = {k: v for k, v in vars(s).items() if k != "reference_grid"}
        for a in maps:
            got = classify_head(a, s)
            assert got == reference_classify_head(a, **old)
            seen.add(got["class"])
    assert seen == set(TAXONOMY_CLASSES)  # every rule was exercised


def test_no_reference_grid_applies_the_settings_unchanged():
    s = TaxonomySettings(reference_grid=None)
    for h, w in [(8, 8), (6, 10)]:
        for a in random_maps(h, w, 100, 7):
            assert classify_head(a, s) == reference_classify_head(a)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize(
    "target, cls, direction, offset",
    [
        (uniform, "global", "", None),
        (shift(0, 0), "strict-local", "", (0, 0)),
        (shift(0, -1), "offset-local", "left", (0, -1)),
        (shift(1, 0), "offset-local", "down", (1, 0)),
        (row, "axial-horizontal", "", None),
        (col, "axial-vertical", "", None),
    ],
)
def test_known_heads_on_every_grid(grid, target, cls, direction, offset):
    got = classify_head(aligned_of(target, *grid))
    assert got["class"] == cls
    assert got["direction"] == direction
    if offset is not None:
        assert (got["offset_rows"], got["offset_cols"]) == offset


def test_uniform_heads_are_global_on_many_grids():
    for h in range(2, 33, 3):
        for w in (h, h + 4):
            assert classify_head(uniform_aligned(h, w))["class"] == "global"


def test_a_blob_of_the_same_image_extent_is_soft_local_on_large_grids():
    """A Gaussian of σ = 1.5 tokens at 14×14 is soft-local; so is the same image extent on
    16×16 and 28×28 grids."""
    for g in (14, 16, 28):
        t = gaussian(1.5 * g / 14)
        a = aligned_of(t, g, g)
        assert classify_head(a)["class"] == "soft-local", g


# ----------------------------------------------------------------- figure
def test_taxonomy_figure_shows_per_class_counts(tmp_path, monkeypatch):
    kept: list[Any] = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    frames, expected = [], {}
    for model, grid, L, H in [("m8", (8, 8), 3, 4), ("m14", (14, 14), 2, 3)]:
        maps = np.stack(
            [
                np.stack([aligned_of(t, *grid) for t in (uniform, shift(0, 0), row, col)][:H])
                for _ in range(L)
            ]
        )
        t = classify_heads(maps)
        for k, v in effective_taxonomy(grid).columns().items():
            t[k] = v
        expected[model] = t["class"].value_counts().to_dict()
        ident = {"dataset": "s", "view": "center", "model": model, "family": "x", "depth": L}
        frames.append(
            tidy(
                t, analysis="head_taxonomy", metrics=("offset_rows", "offset_cols"), identity=ident
            )
        )
    png = tmp_path / "tax.png"
    taxonomy_figure(pd.concat(frames), [png], dpi=60)
    (fig,) = kept
    assert png.stat().st_size > 5000
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["m8", "m14"]
    for ax, grid in zip(axes, ["8×8", "14×14"]):
        lg = ax.get_legend()
        assert grid in lg.get_title().get_text()
        counts = dict(t.get_text().split(": ") for t in lg.get_texts())
        assert set(counts) == set(TAXONOMY_CLASSES)
        want = expected[ax.get_title()]
        assert {k: int(v) for k, v in counts.items()} == {k: want.get(k, 0) for k in counts}
    close(fig)
