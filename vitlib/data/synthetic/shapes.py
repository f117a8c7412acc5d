"""Class outlines in the object frame: polygons, their part bands and keypoints.

Every object is a polygon in its own frame (unit radius, head towards +x).  :func:`_shape`
inserts the crossings of the two band cuts as vertices, so each part (Head, Body, Tail) is a
set of loops of vertex indices of the very outline, and places the nine keypoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from vitlib.data.synthetic.common import CLASSES


def _arc(cx: float, cy: float, rad: float, a0: float, a1: float, n: int) -> np.ndarray:
    a = np.linspace(a0, a1, n)
    return np.stack([cx + rad * np.cos(a), cy + rad * np.sin(a)], 1)


def _base_polygon(name: str) -> np.ndarray:
    """The outline of class ``name`` in its own frame (inside the unit disc, head at +x)."""
    if name == "disc":
        a = 2 * np.pi * (np.arange(32) + 0.5) / 32
        return np.stack([np.cos(a), np.sin(a)], 1)
    if name == "square":
        return np.array([[0.7, -0.7], [0.7, 0.7], [-0.7, 0.7], [-0.7, -0.7]])
    if name == "triangle":  # isosceles, apex at the head
        return np.array([[1, 0], [-0.7, 0.62], [-0.7, -0.62]])
    if name == "cross":  # a Latin cross, long arm at the tail
        w, hd, sd, tl = 0.24, 0.6, 0.62, 0.96
        return np.array(
            [
                [hd, -w],
                [hd, w],
                [w, w],
                [w, sd],
                [-w, sd],
                [-w, w],
                [-tl, w],
                [-tl, -w],
                [-w, -w],
                [-w, -sd],
                [w, -sd],
                [w, -w],
            ]
        )
    if name == "ring":  # a C: annulus open towards the head
        g = math.radians(32)
        return np.concatenate(
            [_arc(0, 0, 1.0, g, 2 * np.pi - g, 28), _arc(0, 0, 0.58, 2 * np.pi - g, g, 20)]
        )
    if name == "bar":
        return np.array([[0.96, -0.26], [0.96, 0.26], [-0.96, 0.26], [-0.96, -0.26]])
    if name == "diamond":
        return np.array([[1, 0], [0, 0.55], [-0.8, 0], [0, -0.55]], float)
    if name == "star":
        a = np.arange(10) * np.pi / 5
        rr = np.array([1.0, 0.42, 0.8, 0.42, 0.8, 0.42, 0.8, 0.42, 0.8, 0.42])  # longer head ray
        return np.stack([rr * np.cos(a), rr * np.sin(a)], 1)
    if name == "crescent":  # unit disc minus a disc of radius rho shifted by -d along y
        d, rho = 0.45, 0.85
        y = (rho**2 - 1 - d**2) / (2 * d)
        x = math.sqrt(1 - y * y)
        a0 = math.atan2(y, x)
        outer = _arc(0, 0, 1.0, a0, math.pi - a0, 26)
        b0 = math.atan2(y + d, -x) % (2 * math.pi)
        b1 = math.atan2(y + d, x)
        return np.concatenate([outer, _arc(0, -d, rho, b0, b1, 20)[1:-1]])
    if name == "checker":  # hexagon, elongated along the axis
        return np.array([[1, 0], [0.5, 0.72], [-0.5, 0.72], [-1, 0], [-0.5, -0.72], [0.5, -0.72]])
    raise ValueError(name)


def _clip_half_plane(
    poly: list[int], pts: np.ndarray, keep: Callable[[np.ndarray], bool]
) -> list[int]:
    """Sutherland–Hodgman against one half-plane, on vertex indices.

    The cut lines' crossings are vertices of ``pts`` already (see :func:`_shape`), so no
    edge crosses a cut strictly and clipping only keeps the vertices on the kept side
    (cut vertices count as kept); no new coordinates arise."""
    out = []
    for i in poly:
        if keep(pts[i]):
            out.append(i)
    return out


def _in_band(lo: float, hi: float) -> Callable[[np.ndarray], bool]:
    """The kept side of :func:`_clip_half_plane` for the band ``lo <= x <= hi``."""

    def keep(v: np.ndarray) -> bool:
        return bool(lo <= v[0] <= hi)

    return keep


@dataclass(frozen=True)
class Shape:
    name: str
    verts: np.ndarray  # [M, 2] object outline with the cut vertices
    parts: tuple[tuple[np.ndarray, ...], ...]  # per part (Head, Body, Tail): loops of indices
    cuts: tuple[float, float]  # band limits along x (tail | body | head)
    keypoints: np.ndarray  # [K, 2]


def _ray_hit(poly: np.ndarray, angle: float) -> float:
    """Distance from the origin to the outermost crossing of the ray at ``angle``."""
    d = np.array([math.cos(angle), math.sin(angle)])
    p, q = poly, np.roll(poly, -1, axis=0)
    e = q - p
    den = d[0] * e[:, 1] - d[1] * e[:, 0]
    ok = np.abs(den) > 1e-12
    den = np.where(ok, den, 1.0)
    t = (p[:, 0] * e[:, 1] - p[:, 1] * e[:, 0]) / den  # along the ray
    s = (p[:, 0] * d[1] - p[:, 1] * d[0]) / den  # along the edge
    hit = ok & (t > 0) & (s >= 0) & (s <= 1)
    if not hit.any():  # the ray leaves through a gap (ring): the vertex most along it
        return float(poly[np.argmax(poly @ d)] @ d)
    return float(t[hit].max())


@cache
def _shape(k: int) -> Shape:
    """Class ``k``'s outline with its band cuts inserted, its part loops and keypoints."""
    base = _base_polygon(CLASSES[k])
    x0, x1 = base[:, 0].min(), base[:, 0].max()
    cuts = []
    for f in (1 / 3, 2 / 3):
        c = x0 + f * (x1 - x0)
        while np.abs(base[:, 0] - c).min() < 1e-3:  # no vertex on a cut: crossings transversal
            c += 0.0137
        cuts.append(float(c))
    # Insert every crossing of a cut line as a vertex (computed once, from the original edge).
    verts, line, n = [], [], len(base)
    for i in range(n):
        p, q = base[i], base[(i + 1) % n]
        verts.append(p)
        line.append(-1)
        hits = []
        for li, c in enumerate(cuts):
            if (p[0] - c) * (q[0] - c) < 0:
                t = (c - p[0]) / (q[0] - p[0])
                hits.append((t, li, np.array([c, p[1] + t * (q[1] - p[1])])))
        for _t, li, v in sorted(hits, key=lambda h: h[0]):
            verts.append(v)
            line.append(li)
    pts = np.asarray(verts)
    m = len(pts)
    lines = np.asarray(line)

    def band_of_edge(i: int) -> int:  # 0 tail, 1 body, 2 head
        mx = 0.5 * (pts[i, 0] + pts[(i + 1) % m, 0])
        return int(mx > cuts[0]) + int(mx > cuts[1])

    # Partner of each crossing along its cut line: sorted crossings pair up as the intervals
    # of the line inside the object.
    partner: dict[int, int] = {}
    for li in (0, 1):
        idx = sorted(np.nonzero(lines == li)[0], key=lambda i: pts[i, 1])
        assert len(idx) % 2 == 0
        for a, b in zip(idx[0::2], idx[1::2]):
            partner[int(a)], partner[int(b)] = int(b), int(a)
    parts: list[tuple[np.ndarray, ...]] = []
    for band in (2, 1, 0):  # Head, Body, Tail
        lo = cuts[0] if band > 0 else -np.inf
        hi = cuts[1] if band < 2 else np.inf
        keep = _in_band(lo, hi)
        if not partner:  # no crossing: the whole outline lies in one band
            inside = _clip_half_plane(list(range(m)), pts, keep)
            parts.append((np.arange(m),) if len(inside) == m else ())
            continue
        # Chains: runs of edges of this band from one crossing to the next.
        chains: dict[int, list[int]] = {}
        for s in map(int, np.nonzero(lines >= 0)[0]):
            if band_of_edge(s) != band:
                continue
            seq, j = [s], s
            while True:
                j = (j + 1) % m
                seq.append(j)
                if lines[j] >= 0:
                    break
            chains[s] = seq
        loops: list[np.ndarray] = []
        used: set[int] = set()
        for s in sorted(chains):
            if s in used:
                continue
            loop: list[int] = []
            c = s
            while c not in used:
                used.add(c)
                seq = chains[c]
                loop.extend(seq)
                c = partner[seq[-1]]
                assert c in chains, (CLASSES[k], band)
            assert c == s
            # Sutherland–Hodgman on the piece: the identity here, as a check.
            kept = _clip_half_plane(loop, pts, keep)
            assert kept == loop and len(loop) >= 3
            loops.append(np.asarray(loop))
        parts.append(tuple(loops))
    angles = [0, 45, 90, 135, 180, 225, 270, 315]
    kps = [
        0.85
        * _ray_hit(base, math.radians(a))
        * np.array([math.cos(math.radians(a)), math.sin(math.radians(a))])
        for a in angles
    ]
    kps.append(np.zeros(2))
    return Shape(CLASSES[k], pts, tuple(parts), (cuts[0], cuts[1]), np.asarray(kps))
