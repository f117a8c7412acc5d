"""The synthetic world: generated data in the real datasets' on-disk formats.

One small world of ten object classes, written in the layout and annotation format of every
dataset the workflow reads, so the real readers (:mod:`vitlib.data.readers`) read it unchanged:

=================  ==========================================================================
part               files under ``out``
=================  ==========================================================================
``imagenet``       ``imagenet/{train,val}/<class>/<nnnn>.png`` (ImageNet class folders)
``coco``           ``coco/images/val2017/<id:012d>.jpg``, ``coco/annotations/instances_
                   val2017.json`` (polygons, a few crowd RLEs, one image without annotations)
``partimagenet``   ``partimagenet/{train,val,test}.json``, ``partimagenet/<split>/<wnid>/
                   <wnid>_<n>.JPEG``, ``partimagenet/imagenet_class_index.json``
``retrieval``      ``rsynth/gnd_rsynth.pkl``, ``rsynth/jpg/<name>.jpg`` (Revisited Oxford/Paris)
``davis``          ``davis/ImageSets/2017/{train,val}.txt``, ``davis/JPEGImages/480p/<seq>/
                   <nnnnn>.jpg``, ``davis/Annotations/480p/<seq>/<nnnnn>.png`` (palette PNGs)
``spair``          ``spair/JPEGImages/<cat>/<im>.jpg``, ``spair/ImageAnnotation/<cat>/<im>.json``,
                   ``spair/PairAnnotation/{trn,val,test}/<id>-<src>-<trg>:<cat>.json``,
                   ``spair/Layout/large/{trn,val,test}.txt``
=================  ==========================================================================

and ``world.json`` (seed, size and what each part holds).

Every object is a polygon in its own frame (unit radius, head towards +x): discs are
32-gons, the ring a C-shaped annulus, the crescent an outer arc plus an inner arc.  It has
three named parts (:data:`PART_NAMES`, bands across the object along its own x axis, each
drawn in its own colour of the class palette) and nine semantic keypoints
(:data:`KEYPOINTS`).  The band cuts are inserted into the object polygon as vertices, and each
part is the object polygon clipped to its band (Sutherland–Hodgman against the two
half-planes; pieces cut apart by a band are separate polygons), so the part polygons share
their edges with the object polygon exactly.  Every mask is rasterised by pycocotools from
the very polygon (or RLE) written to the annotation file: the drawn pixels are what
``COCO.annToMask`` decodes, and the part masks of an object tile its mask.  A class differs
from the others by shape, texture (stripes, dots, checks, ... modulating the fill) and
palette; instances vary in colour, scale, rotation and position, over backgrounds of
gradients, smooth noise and thin clutter lines.

Deterministic by seed: every image draws from its own ``np.random.default_rng([seed, part,
...])`` stream (no global random state), PNGs and JPEGs (quality 90) are written with fixed
settings and JSON with fixed formatting, so the same arguments give byte-identical files.

Command line: ``python -m vitlib.data.synthetic --out DIR --seed N --size {tiny,demo}``
(``--parts coco,davis`` for some parts only; ``--examples DIR`` renders the example figures of
an existing world).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

CLASSES = (
    "disc",
    "square",
    "triangle",
    "cross",
    "ring",
    "bar",
    "diamond",
    "star",
    "crescent",
    "checker",
)

#: ImageNet part presets (``generate``'s ``classes``/``per_class``/``image_size`` override them).
SIZES = {
    "tiny": {"classes": 4, "per_class": 8, "image_size": 64},
    "demo": {"classes": 10, "per_class": 60, "image_size": 96},
}

#: Presets of the other parts (and of the ImageNet validation folder).
PART_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "imagenet": {"per_class_val": 4},
        "coco": {"images": 12, "width": 96, "height": 72},
        "partimagenet": {"per_class": 3, "width": 80, "height": 64},
        "retrieval": {
            "landmarks": 4,
            "easy": 3,
            "hard": 2,
            "junk": 1,
            "distractors": 8,
            "queries_per_landmark": 1,
            "width": 96,
            "height": 72,
        },
        "davis": {"val": 2, "train": 1, "frames": 8, "width": 112, "height": 64},
        "spair": {
            "categories": 3,
            "per_category": 5,
            "pairs": {"trn": 2, "val": 2, "test": 8},
            "min_side": 64,
            "max_side": 96,
        },
    },
    "demo": {
        "imagenet": {"per_class_val": 20},
        "coco": {"images": 300, "width": 160, "height": 120},
        "partimagenet": {"per_class": 20, "width": 128, "height": 96},
        "retrieval": {
            "landmarks": 12,
            "easy": 5,
            "hard": 3,
            "junk": 2,
            "distractors": 60,
            "queries_per_landmark": 2,
            "width": 160,
            "height": 120,
        },
        "davis": {"val": 6, "train": 2, "frames": 16, "width": 192, "height": 108},
        "spair": {
            "categories": 6,
            "per_category": 20,
            "pairs": {"trn": 10, "val": 6, "test": 40},
            "min_side": 96,
            "max_side": 160,
        },
    },
}

#: The parts of the world, in generation order.  Reader kinds are accepted as aliases.
PARTS = ("imagenet", "coco", "partimagenet", "retrieval", "davis", "spair")
PART_ALIASES = {
    "imagefolder": "imagenet",
    "imagenet50": "imagenet",
    "revisited": "retrieval",
    "rsynth": "retrieval",
}
_STREAM = {p: i + 1 for i, p in enumerate(PARTS)}  # second entry of every seed sequence

#: Object parts: bands across the object along its own x axis, head at +x.
PART_NAMES = ("Head", "Body", "Tail")
#: Semantic keypoints in the object frame (image convention, y down: "left" is -y when the
#: head points to +x).  All but the centre lie just inside the outline.
KEYPOINTS = (
    "head_tip",
    "head_right",
    "right",
    "tail_right",
    "tail_tip",
    "tail_left",
    "left",
    "head_left",
    "centre",
)
#: PartImageNet super-categories: consecutive pairs of classes.
SUPERCATEGORIES = tuple(
    f"{CLASSES[2 * s].capitalize()}-{CLASSES[2 * s + 1].capitalize()}"
    for s in range(len(CLASSES) // 2)
)
#: PartImageNet split of each class (round robin; train gets most).
PIN_SPLIT_CYCLE = ("train", "train", "val", "train", "test")
#: SPair categories, in order: shapes with no rotational symmetry within SPair's ±60° and
#: all keypoints on the object, so every keypoint is semantically stable.
SPAIR_CLASSES = ("triangle", "star", "cross", "diamond", "bar", "checker")
LANDMARK_NAMES = (
    "arch",
    "bridge",
    "castle",
    "dome",
    "fountain",
    "gate",
    "harbour",
    "lighthouse",
    "mill",
    "palace",
    "spire",
    "tower",
)
MOTIONS = ("dance", "drift", "spin", "glide", "roll", "sway", "hop", "float", "loop", "wander")

_PNG = {"optimize": False, "compress_level": 6}
_JPEG = {"quality": 90, "optimize": False, "subsampling": 0, "progressive": False}


def wnid(k: int) -> str:
    """The synthetic WordNet id of class ``k`` (``n9000000k``)."""
    return f"n{90000000 + k}"


# ====================================================================================== shapes
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


def _clip_half_plane(poly: list[int], pts: np.ndarray, keep) -> list[int]:
    """Sutherland–Hodgman against one half-plane, on vertex indices.

    The cut lines' crossings are vertices of ``pts`` already (see :func:`_shape`), so no
    edge crosses a cut strictly and clipping only keeps the vertices on the kept side
    (cut vertices count as kept); no new coordinates arise."""
    out = []
    for i in poly:
        if keep(pts[i]):
            out.append(i)
    return out


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
        for t, li, v in sorted(hits, key=lambda h: h[0]):
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
        if not partner:  # no crossing: the whole outline lies in one band
            inside = _clip_half_plane(list(range(m)), pts, lambda v: lo <= v[0] <= hi)
            parts.append((np.arange(m),) if len(inside) == m else ())
            continue
        # Chains: runs of edges of this band from one crossing to the next.
        chains: dict[int, list[int]] = {}
        for s in np.nonzero(lines >= 0)[0]:
            s = int(s)
            if band_of_edge(s) != band:
                continue
            seq, j = [s], s
            while True:
                j = (j + 1) % m
                seq.append(j)
                if lines[j] >= 0:
                    break
            chains[s] = seq
        loops, used = [], set()
        for s in sorted(chains):
            if s in used:
                continue
            loop, c = [], s
            while c not in used:
                used.add(c)
                seq = chains[c]
                loop.extend(seq)
                c = partner[seq[-1]]
                assert c in chains, (CLASSES[k], band)
            assert c == s
            # Sutherland–Hodgman on the piece: the identity here, as a check.
            kept = _clip_half_plane(loop, pts, lambda v: lo <= v[0] <= hi)
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


# ===================================================================================== colours
def _hsv(h, s, v) -> np.ndarray:
    """HSV in [0, 1] (broadcast) to RGB in [0, 255]."""
    h, s, v = np.broadcast_arrays(
        np.asarray(h, float) % 1.0, np.asarray(s, float), np.asarray(v, float)
    )
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], -1) * 255.0


def _class_hue(k: int) -> float:
    return (0.03 + k * 0.1) % 1.0


def _part_colours(rng: np.random.Generator, k: int, jitter: float = 1.0) -> np.ndarray:
    """[3, 3] RGB of Head, Body, Tail: the class palette with per-instance jitter."""
    h = _class_hue(k) + jitter * rng.uniform(-0.025, 0.025)
    s = np.clip(np.array([0.5, 0.8, 0.85]) + jitter * rng.uniform(-0.1, 0.1), 0, 1)
    v = np.clip(np.array([1.0, 0.8, 0.52]) + jitter * rng.uniform(-0.1, 0.08), 0, 1)
    return _hsv(h + np.array([0.07, 0.0, -0.07]), s, v)


def _pattern(k: int, u: np.ndarray, v: np.ndarray, f: float, ph: float) -> np.ndarray:
    """Class ``k``'s texture (0/1) at object-frame coordinates ``u, v``."""
    tau = 2 * np.pi
    kind = k % 10
    if kind == 0:  # concentric rings
        return np.sin(tau * f * np.hypot(u, v) + ph) > 0
    if kind == 1:  # zigzag
        return np.sin(tau * f * (u + 0.6 * np.abs((v * f + ph) % 1.0 - 0.5))) > 0
    if kind == 2:  # stripes across the axis
        return np.sin(tau * f * u + ph) > 0
    if kind == 3:  # dots
        return ((u * f + ph) % 1.0 - 0.5) ** 2 + ((v * f) % 1.0 - 0.5) ** 2 < 0.08
    if kind == 4:  # sectors
        return np.sin(7 * np.arctan2(v, u) + ph) > 0
    if kind == 5:  # stripes along the axis
        return np.sin(tau * f * 1.4 * v + ph) > 0
    if kind == 6:  # diagonal stripes
        return np.sin(tau * f * (u + v) * 0.7071 + ph) > 0
    if kind == 7:  # grid lines
        return ((u * f + ph) % 1.0 < 0.28) | ((v * f) % 1.0 < 0.28)
    if kind == 8:  # waves
        return np.sin(tau * f * u + 1.6 * np.sin(tau * f * v) + ph) > 0
    return (np.floor(u * f * 1.2 + ph) + np.floor(v * f * 1.2)) % 2 == 1  # checks


# ===================================================================================== objects
@dataclass
class Obj:
    """One object instance: class, pose in the image and appearance."""

    k: int
    cx: float
    cy: float
    r: float
    rot: float
    colours: np.ndarray  # [3, 3] Head, Body, Tail
    freq: float
    phase: float
    amp: float

    def moved(self, cx: float, cy: float, r: float, rot: float) -> Obj:
        return Obj(self.k, cx, cy, r, rot, self.colours, self.freq, self.phase, self.amp)


def _new_obj(
    rng: np.random.Generator,
    k: int,
    cx: float,
    cy: float,
    r: float,
    rot: float,
    jitter: float = 1.0,
) -> Obj:
    return Obj(
        k,
        float(cx),
        float(cy),
        float(r),
        float(rot),
        _part_colours(rng, k, jitter),
        float(2.2 * rng.uniform(0.85, 1.15)),
        float(rng.uniform(0, 2 * np.pi)),
        float(rng.uniform(0.3, 0.45)),
    )


def _points(o: Obj) -> np.ndarray:
    """The object's outline (with cut vertices) in image coordinates, rounded to 1/100 px:
    these coordinates are both written to annotations and rasterised."""
    c, s = math.cos(o.rot), math.sin(o.rot)
    v = _shape(o.k).verts
    x = o.cx + o.r * (c * v[:, 0] - s * v[:, 1])
    y = o.cy + o.r * (s * v[:, 0] + c * v[:, 1])
    return np.round(np.stack([x, y], 1), 2)


def _to_image(o: Obj, local: np.ndarray) -> np.ndarray:
    c, s = math.cos(o.rot), math.sin(o.rot)
    return np.stack(
        [
            o.cx + o.r * (c * local[:, 0] - s * local[:, 1]),
            o.cy + o.r * (s * local[:, 0] + c * local[:, 1]),
        ],
        1,
    )


def keypoints(o: Obj) -> np.ndarray:
    """[K, 2] image coordinates of the keypoints of ``o``."""
    return _to_image(o, _shape(o.k).keypoints)


def object_polygon(o: Obj) -> list[float]:
    """COCO polygon ``[x1, y1, x2, y2, ...]`` of the whole object."""
    return [float(v) for v in _points(o).ravel()]


def part_polygons(o: Obj) -> list[list[list[float]]]:
    """Per part (Head, Body, Tail): its COCO polygons (empty where the band is empty)."""
    pts = _points(o)
    return [
        [[float(v) for v in pts[loop].ravel()] for loop in loops] for loops in _shape(o.k).parts
    ]


def rasterise(polygons: Sequence[Sequence[float]], h: int, w: int) -> np.ndarray:
    """Union of the COCO polygons as an [h, w] bool mask, rasterised by pycocotools exactly
    as ``COCO.annToMask`` does."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects([list(p) for p in polygons], h, w)
    with warnings.catch_warnings():  # pycocotools' decode under numpy 2: DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def paint(rgb: np.ndarray, ids: np.ndarray, o: Obj, oid: int) -> list[np.ndarray]:
    """Paint ``o`` into ``rgb`` [H, W, 3] float and ``ids`` [H, W] (its pixels set to ``oid``);
    returns its part masks (Head, Body, Tail).  The pixels painted are exactly the union of
    the pycocotools rasterisations of the part polygons (= that of the object polygon)."""
    h, w = ids.shape
    c, s = math.cos(o.rot), math.sin(o.rot)
    masks = []
    for p, polys in enumerate(part_polygons(o)):
        m = rasterise(polys, h, w) if polys else np.zeros((h, w), bool)
        masks.append(m)
        ys, xs = np.nonzero(m)
        if not len(ys):
            continue
        dx, dy = xs + 0.5 - o.cx, ys + 0.5 - o.cy
        u, v = (c * dx + s * dy) / o.r, (-s * dx + c * dy) / o.r
        t = _pattern(o.k, u, v, o.freq, o.phase)
        rgb[ys, xs] = o.colours[p] * (1.0 - o.amp * t[:, None])
        ids[ys, xs] = oid
    return masks


def _polygon_obj(rng: np.random.Generator, cx: float, cy: float, r: float) -> np.ndarray:
    """A random blob-free occluder outline (an irregular quadrilateral), image coordinates."""
    a = np.sort(rng.uniform(0, 2 * np.pi, 4))
    rr = r * rng.uniform(0.7, 1.0, 4)
    return np.stack([cx + rr * np.cos(a), cy + rr * np.sin(a)], 1)


# ================================================================================= backgrounds
@dataclass
class Backdrop:
    """A background as a function of world coordinates (normalised: the reference image spans
    [0, 1]²): gradient + periodic smooth colour noise + stripes + thin clutter lines."""

    c0: np.ndarray
    c1: np.ndarray
    angle: float
    grid: np.ndarray  # [g, g, 3] colour offsets of the smooth noise (periodic)
    stripe: tuple[float, float, float, float]  # amplitude, frequency, angle, phase
    lines: list[tuple[np.ndarray, np.ndarray, tuple[int, int, int], int]]  # p0, p1, colour, width
    noise: float  # per-pixel noise sigma


def _backdrop(rng: np.random.Generator, clutter: int | None = None) -> Backdrop:
    hue = rng.uniform(0, 1)
    c0 = _hsv(hue, rng.uniform(0, 0.35), rng.uniform(0.3, 0.9))
    c1 = _hsv(hue + rng.uniform(-0.2, 0.2), rng.uniform(0, 0.35), rng.uniform(0.2, 0.9))
    g = int(rng.integers(3, 7))
    grid = rng.normal(0, rng.uniform(8, 30), size=(g, g, 3))
    stripe = (
        float(rng.uniform(0, 14)) * (rng.random() < 0.5),
        float(rng.uniform(3, 10)),
        float(rng.uniform(0, np.pi)),
        float(rng.uniform(0, 2 * np.pi)),
    )
    n = int(rng.integers(1, 6)) if clutter is None else clutter
    lines = []
    mean = (c0 + c1) / 2
    for _ in range(n):
        p0 = rng.uniform(-0.1, 1.1, 2)
        p1 = p0 + rng.normal(0, 0.35, 2)
        col = np.clip(mean + rng.normal(0, 45, 3), 0, 255)
        lines.append((p0, p1, tuple(int(x) for x in col), int(rng.integers(1, 3))))
    return Backdrop(
        c0, c1, float(rng.uniform(0, 2 * np.pi)), grid, stripe, lines, float(rng.uniform(3, 11))
    )


@dataclass
class Camera:
    """Similarity from world (pixels of the reference image of size ``ref``) to image:
    ``p = s R(phi) (w - ref/2) + size/2 + t``."""

    s: float = 1.0
    phi: float = 0.0
    tx: float = 0.0
    ty: float = 0.0

    def forward(self, ref: tuple[int, int], size: tuple[int, int], x, y):
        c, s = math.cos(self.phi), math.sin(self.phi)
        dx, dy = np.asarray(x) - ref[0] / 2, np.asarray(y) - ref[1] / 2
        return (
            self.s * (c * dx - s * dy) + size[0] / 2 + self.tx,
            self.s * (s * dx + c * dy) + size[1] / 2 + self.ty,
        )

    def inverse(self, ref: tuple[int, int], size: tuple[int, int], x, y):
        c, s = math.cos(self.phi), math.sin(self.phi)
        dx, dy = np.asarray(x) - size[0] / 2 - self.tx, np.asarray(y) - size[1] / 2 - self.ty
        return ((c * dx + s * dy) / self.s + ref[0] / 2, (-s * dx + c * dy) / self.s + ref[1] / 2)

    def obj(self, o: Obj, ref: tuple[int, int], size: tuple[int, int]) -> Obj:
        cx, cy = self.forward(ref, size, o.cx, o.cy)
        return o.moved(float(cx), float(cy), o.r * self.s, o.rot + self.phi)


def _bilinear_periodic(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    g = grid.shape[0]
    x, y = u * g, v * g
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.astype(int) % g, y0.astype(int) % g
    x1, y1 = (x0 + 1) % g, (y0 + 1) % g
    return (grid[y0, x0] * (1 - fx) + grid[y0, x1] * fx) * (1 - fy) + (
        grid[y1, x0] * (1 - fx) + grid[y1, x1] * fx
    ) * fy


def render_backdrop(
    b: Backdrop, w: int, h: int, cam: Camera | None = None, ref: tuple[int, int] | None = None
) -> np.ndarray:
    """[h, w, 3] float image of ``b`` seen through ``cam`` (identity: the reference view)."""
    ref = ref or (w, h)
    cam = cam or Camera()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    wx, wy = cam.inverse(ref, (w, h), xx, yy)
    u, v = wx / ref[0], wy / ref[1]
    t = np.clip((u - 0.5) * math.cos(b.angle) + (v - 0.5) * math.sin(b.angle) + 0.5, 0, 1)
    img = b.c0 * (1 - t[..., None]) + b.c1 * t[..., None] + _bilinear_periodic(b.grid, u, v)
    amp, f, a, ph = b.stripe
    if amp:
        img += amp * np.sin(2 * np.pi * f * (u * math.cos(a) + v * math.sin(a)) + ph)[..., None]
    if b.lines:
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
        d = ImageDraw.Draw(pil)
        for p0, p1, col, width in b.lines:
            x0, y0 = cam.forward(ref, (w, h), p0[0] * ref[0], p0[1] * ref[1])
            x1, y1 = cam.forward(ref, (w, h), p1[0] * ref[0], p1[1] * ref[1])
            d.line(
                [(float(x0), float(y0)), (float(x1), float(y1))],
                fill=col,
                width=max(1, int(round(width * cam.s))),
            )
        img = np.asarray(pil, dtype=np.float64)
    return img


def _finish(
    rgb: np.ndarray, rng: np.random.Generator, sigma: float, gain: np.ndarray | None = None
) -> Image.Image:
    if gain is not None:
        rgb = rgb * gain
    rgb = rgb + rng.normal(0, sigma, size=rgb.shape)
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")


def _save_jpeg(im: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, "JPEG", **_JPEG)


def _save_png(im: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, "PNG", **_PNG)


def _write_json(path: Path, obj: Any, indent: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if indent is None:
        path.write_text(json.dumps(obj, separators=(",", ":")))
    else:
        path.write_text(json.dumps(obj, indent=indent))


def _rng(seed: int, part: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _STREAM[part], *[int(k) for k in keys]])


# ==================================================================================== ImageNet
def render_image(rng: np.random.Generator, kind: str, k: int, size: int) -> Image.Image:
    """One ImageNet-style image of class ``k`` (``kind`` = its name), ``size`` px square."""
    assert CLASSES[k] == kind
    b = _backdrop(rng)
    rgb = render_backdrop(b, size, size)
    ids = np.zeros((size, size), np.int32)
    r = rng.uniform(0.24, 0.44) * size
    cx, cy = rng.uniform(0.85 * r, size - 0.85 * r, size=2)
    paint(rgb, ids, _new_obj(rng, k, cx, cy, r, rng.uniform(0, 2 * np.pi)), 1)
    return _finish(rgb, rng, b.noise)


def generate_imagefolder(
    out: str | os.PathLike,
    *,
    classes: int,
    per_class: int,
    image_size: int,
    seed: int = 0,
    stream: int = 0,
) -> Path:
    """Write ``out/<class>/<nnnn>.png``; returns ``out``.  Deterministic by ``seed``;
    ``stream`` separates the train (0) and val (1) draws."""
    if not 1 <= classes <= len(CLASSES):
        raise ValueError(f"classes must be in 1..{len(CLASSES)}, got {classes}")
    outp = Path(out)
    for k, kind in enumerate(CLASSES[:classes]):
        cdir = outp / kind
        cdir.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = _rng(seed, "imagenet", stream, k, i)
            _save_png(render_image(rng, kind, k, image_size), cdir / f"{i:04d}.png")
    return outp


def generate_imagenet(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    size: str = "tiny",
    classes: int | None = None,
    per_class: int | None = None,
    image_size: int | None = None,
    per_class_val: int | None = None,
) -> dict[str, Any]:
    """``out/imagenet/{train,val}/<class>/<nnnn>.png``; returns the parameters used."""
    p = {**SIZES[size], **PART_SIZES[size]["imagenet"]}
    for key, val in (
        ("classes", classes),
        ("per_class", per_class),
        ("image_size", image_size),
        ("per_class_val", per_class_val),
    ):
        if val is not None:
            p[key] = int(val)
    base = Path(out) / "imagenet"
    generate_imagefolder(
        base / "train",
        classes=p["classes"],
        per_class=p["per_class"],
        image_size=p["image_size"],
        seed=seed,
        stream=0,
    )
    if p["per_class_val"]:
        generate_imagefolder(
            base / "val",
            classes=p["classes"],
            per_class=p["per_class_val"],
            image_size=p["image_size"],
            seed=seed,
            stream=1,
        )
    return {
        **p,
        "class_names": list(CLASSES[: p["classes"]]),
        "images": p["classes"] * (p["per_class"] + p["per_class_val"]),
    }


# ======================================================================================== COCO
def coco_category_id(k: int) -> int:
    """COCO category id of class ``k`` (odd numbers: ids are not contiguous, as COCO's)."""
    return 2 * k + 1


def _cells(w: int, h: int) -> list[tuple[float, float, float, float]]:
    return [(x * w / 2, y * h / 2, w / 2, h / 2) for y in range(2) for x in range(2)]


def _place_in_cell(rng: np.random.Generator, cell, lo: float, hi: float):
    x, y, cw, ch = cell
    r = rng.uniform(lo, hi) * min(cw, ch) / 2
    cx = rng.uniform(x + r, x + cw - r)
    cy = rng.uniform(y + r, y + ch - r)
    return float(cx), float(cy), float(r)


def rle_uncompressed(m: np.ndarray) -> dict[str, Any]:
    """pycocotools' uncompressed RLE of a bool mask: column-major run lengths, first a run of
    zeros (possibly empty)."""
    flat = np.asarray(m, dtype=np.uint8).ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(m.shape[0]), int(m.shape[1])]}


def coco_image(
    seed: int, index: int, width: int, height: int, images: int
) -> tuple[Image.Image, np.ndarray, list[dict[str, Any]]]:
    """Image ``index`` of the COCO part: the image, its id map (painted pixels of annotation
    ``j`` have value ``j + 1``) and its annotations (without ids)."""
    rng = _rng(seed, "coco", index)
    b = _backdrop(rng)
    rgb = render_backdrop(b, width, height)
    ids = np.zeros((height, width), np.int32)
    anns: list[dict[str, Any]] = []
    empty = index == images // 3
    crowd = (index % 8 == 5) and not empty
    from pycocotools import mask as mask_utils

    def add(seg, m, k, iscrowd):
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        anns.append(
            {
                "category_id": coco_category_id(k),
                "segmentation": seg,
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": iscrowd,
            }
        )

    if not empty:
        n = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
        cells = _cells(width, height)
        order = rng.permutation(4)
        if n == 1 and not crowd:
            chosen = [(0.0, 0.0, float(width), float(height))]
        else:
            chosen = [cells[i] for i in order[:n]]
        for cell in chosen:
            k = int(rng.integers(len(CLASSES)))
            cx, cy, r = _place_in_cell(rng, cell, 0.6, 0.98)
            o = _new_obj(rng, k, cx, cy, r, rng.uniform(0, 2 * np.pi))
            masks = paint(rgb, ids, o, len(anns) + 1)
            add([object_polygon(o)], np.logical_or.reduce(masks), k, 0)
        if crowd:
            cell = cells[order[3]]
            k = int(rng.integers(len(CLASSES)))
            oid = len(anns) + 1
            union = np.zeros((height, width), bool)
            for _ in range(int(rng.integers(4, 8))):
                cx, cy, r = _place_in_cell(rng, cell, 0.14, 0.24)
                o = _new_obj(rng, k, cx, cy, r, rng.uniform(0, 2 * np.pi))
                union |= np.logical_or.reduce(paint(rgb, ids, o, oid))
            add(rle_uncompressed(union), union, k, 1)
    return _finish(rgb, rng, b.noise), ids, anns


def generate_coco(out: str | os.PathLike, *, seed: int = 0, size: str = "tiny") -> dict[str, Any]:
    """``out/coco``: ``images/val2017/<id:012d>.jpg`` and ``annotations/instances_val2017.json``."""
    p = PART_SIZES[size]["coco"]
    base = Path(out) / "coco"
    images, anns = [], []
    for i in range(p["images"]):
        iid = 1000 + 7 * i
        im, _, a = coco_image(seed, i, p["width"], p["height"], p["images"])
        fn = f"{iid:012d}.jpg"
        _save_jpeg(im, base / "images" / "val2017" / fn)
        images.append({"id": iid, "file_name": fn, "width": p["width"], "height": p["height"]})
        for ann in a:
            anns.append({"id": len(anns) + 1, "image_id": iid, **ann})
    cats = [
        {"id": coco_category_id(k), "name": n, "supercategory": "shape"}
        for k, n in enumerate(CLASSES)
    ]
    _write_json(
        base / "annotations" / "instances_val2017.json",
        {
            "info": {
                "description": "vitlib synthetic world (COCO instances format)",
                "version": "1.0",
                "year": 2017,
                "contributor": "vitlib",
                "date_created": "",
            },
            "licenses": [],
            "images": images,
            "annotations": anns,
            "categories": cats,
        },
    )
    return {
        **p,
        "annotations": len(anns),
        "crowd": sum(a["iscrowd"] for a in anns),
        "empty_images": p["images"] - len({a["image_id"] for a in anns}),
    }


# ================================================================================ PartImageNet
def partimagenet_split(k: int) -> str:
    return PIN_SPLIT_CYCLE[k % len(PIN_SPLIT_CYCLE)]


def partimagenet_image(
    seed: int, k: int, n: int, width: int, height: int
) -> tuple[Image.Image, np.ndarray, list[tuple[int, list, np.ndarray]]]:
    """Image ``n`` of class ``k``: the image, its object's id map and ``(part index,
    polygons, mask)`` of every visible part."""
    rng = _rng(seed, "partimagenet", k, n)
    b = _backdrop(rng)
    rgb = render_backdrop(b, width, height)
    ids = np.zeros((height, width), np.int32)
    r = rng.uniform(0.6, 0.95) * min(width, height) / 2
    cx = rng.uniform(r, width - r)
    cy = rng.uniform(r, height - r)
    o = _new_obj(rng, k, cx, cy, r, rng.uniform(0, 2 * np.pi))
    masks = paint(rgb, ids, o, 1)
    parts = [
        (p, polys, m)
        for p, (polys, m) in enumerate(zip(part_polygons(o), masks))
        if polys and m.any()
    ]
    return _finish(rgb, rng, b.noise), ids, parts


def generate_partimagenet(
    out: str | os.PathLike, *, seed: int = 0, size: str = "tiny"
) -> dict[str, Any]:
    """``out/partimagenet``: ``{train,val,test}.json`` (part categories), images under
    ``<split>/<wnid>/`` and ``imagenet_class_index.json``."""
    from pycocotools import mask as mask_utils

    p = PART_SIZES[size]["partimagenet"]
    base = Path(out) / "partimagenet"
    cats = [
        {"id": 3 * s + j, "name": name, "supercategory": sup}
        for s, sup in enumerate(SUPERCATEGORIES)
        for j, name in enumerate(PART_NAMES)
    ]
    data = {
        sp: {"images": [], "annotations": [], "categories": cats} for sp in ("train", "val", "test")
    }
    iid, aid = 0, 0
    for k in range(len(CLASSES)):
        split, w_ = partimagenet_split(k), wnid(k)
        for n in range(p["per_class"]):
            iid += 1
            im, _, parts = partimagenet_image(seed, k, n, p["width"], p["height"])
            fn = f"{w_}/{w_}_{n}.JPEG"
            _save_jpeg(im, base / split / fn)
            data[split]["images"].append(
                {"id": iid, "file_name": fn, "width": p["width"], "height": p["height"]}
            )
            for j, polys, m in parts:
                aid += 1
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                data[split]["annotations"].append(
                    {
                        "id": aid,
                        "image_id": iid,
                        "category_id": 3 * (k // 2) + j,
                        "segmentation": polys,
                        "area": float(mask_utils.area(rle)),
                        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                        "iscrowd": 0,
                    }
                )
    for sp, d in data.items():
        _write_json(
            base / f"{sp}.json",
            {
                "info": {"description": f"vitlib synthetic world (PartImageNet {sp})"},
                "licenses": [],
                **d,
            },
        )
    _write_json(
        base / "imagenet_class_index.json", {str(k): [wnid(k), n] for k, n in enumerate(CLASSES)}
    )
    return {
        **p,
        "splits": {
            sp: {
                "images": len(d["images"]),
                "annotations": len(d["annotations"]),
                "wnids": sorted({i["file_name"].split("/")[0] for i in d["images"]}),
            }
            for sp, d in data.items()
        },
        "supercategories": list(SUPERCATEGORIES),
    }


# =================================================================================== retrieval
@dataclass
class Scene:
    backdrop: Backdrop
    objects: list[Obj]  # in world (reference image) coordinates


def _scene(rng: np.random.Generator, w: int, h: int) -> Scene:
    b = _backdrop(rng, clutter=int(rng.integers(2, 6)))
    cells = _cells(w, h)
    n = int(rng.integers(2, 4))
    objs = []
    for ci in rng.permutation(4)[:n]:
        cx, cy, r = _place_in_cell(rng, cells[ci], 0.65, 0.98)
        objs.append(
            _new_obj(rng, int(rng.integers(len(CLASSES))), cx, cy, r, rng.uniform(0, 2 * np.pi))
        )
    return Scene(b, objs)


def render_view(
    scene: Scene,
    cam: Camera,
    w: int,
    h: int,
    rng: np.random.Generator,
    *,
    gain_jitter: float = 0.05,
    occlude: float = 0.0,
) -> tuple[Image.Image, np.ndarray]:
    """``scene`` seen through ``cam``; ``occlude`` > 0 covers that fraction of the image
    width with a flat textured occluder.  Returns the image and the scene objects' id map."""
    rgb = render_backdrop(scene.backdrop, w, h, cam, (w, h))
    ids = np.zeros((h, w), np.int32)
    for j, o in enumerate(scene.objects):
        paint(rgb, ids, cam.obj(o, (w, h), (w, h)), j + 1)
    if occlude:
        ow, oh = occlude * w, occlude * h
        x0 = rng.uniform(-0.05 * w, w - ow + 0.05 * w)
        y0 = rng.uniform(-0.05 * h, h - oh + 0.05 * h)
        yy, xx = np.mgrid[0:h, 0:w]
        m = (xx >= x0) & (xx < x0 + ow) & (yy >= y0) & (yy < y0 + oh)
        col = _hsv(rng.uniform(), rng.uniform(0, 0.3), rng.uniform(0.2, 0.8))
        rgb[m] = col + 12 * np.sin(xx[m] * 0.9)[:, None] * np.sin(yy[m] * 0.7)[:, None]
        ids[m] = 0
    gain = 1 + rng.uniform(-gain_jitter, gain_jitter, 3)
    return _finish(rgb, rng, scene.backdrop.noise, gain), ids


def _view_camera(
    rng: np.random.Generator, kind: str, w: int, h: int, j: int, scene: Scene | None = None
) -> Camera:
    deg = math.radians
    if kind in ("easy", "query"):
        return Camera(
            rng.uniform(0.9, 1.1),
            rng.uniform(-deg(6), deg(6)),
            rng.uniform(-0.06, 0.06) * w,
            rng.uniform(-0.06, 0.06) * h,
        )
    if kind == "hard":
        sign = rng.choice([-1.0, 1.0])
        if j % 2 == 0:  # zoomed out and rotated
            return Camera(
                rng.uniform(0.5, 0.65),
                sign * rng.uniform(deg(20), deg(45)),
                rng.uniform(-0.1, 0.1) * w,
                rng.uniform(-0.1, 0.1) * h,
            )
        # zoomed in on one object of the scene: a partial crop
        cam = Camera(rng.uniform(1.6, 2.0), sign * rng.uniform(deg(5), deg(20)))
        o = scene.objects[int(rng.integers(len(scene.objects)))] if scene else None
        x, y = cam.forward((w, h), (w, h), o.cx, o.cy) if o else (w / 2, h / 2)
        cam.tx = float(w / 2 - x + rng.uniform(-0.2, 0.2) * w)
        cam.ty = float(h / 2 - y + rng.uniform(-0.2, 0.2) * h)
        return cam
    # junk: tiny (the occluded kind uses an easy camera)
    return Camera(
        rng.uniform(0.2, 0.28),
        rng.uniform(-deg(30), deg(30)),
        rng.uniform(-0.3, 0.3) * w,
        rng.uniform(-0.3, 0.3) * h,
    )


def generate_retrieval(
    out: str | os.PathLike, *, seed: int = 0, size: str = "tiny"
) -> dict[str, Any]:
    """``out/rsynth``: Revisited-Oxford-style ``gnd_rsynth.pkl`` and ``jpg/<name>.jpg``."""
    p = PART_SIZES[size]["retrieval"]
    w, h = p["width"], p["height"]
    base = Path(out) / "rsynth"
    db: list[tuple[str, int, str]] = []  # name, landmark (-1: distractor), role
    queries: list[tuple[str, int, list[float]]] = []
    for L in range(p["landmarks"]):
        name = LANDMARK_NAMES[L % len(LANDMARK_NAMES)] + (
            f"{L // len(LANDMARK_NAMES)}" if L >= len(LANDMARK_NAMES) else ""
        )
        scene = _scene(_rng(seed, "retrieval", 0, L), w, h)
        j = 0
        for role in ("easy", "hard", "junk"):
            for r_i in range(p[role]):
                rng = _rng(seed, "retrieval", 1, L, j)
                occ = 0.0
                if role == "junk" and r_i % 2 == 0:
                    cam, occ = _view_camera(rng, "easy", w, h, r_i), rng.uniform(0.8, 0.9)
                else:
                    cam = _view_camera(rng, role, w, h, r_i, scene)
                im, _ = render_view(
                    scene, cam, w, h, rng, gain_jitter=0.06 if role == "easy" else 0.15, occlude=occ
                )
                nm = f"{name}_{100 * L + j:06d}"
                _save_jpeg(im, base / "jpg" / f"{nm}.jpg")
                db.append((nm, L, role))
                j += 1
        for q in range(p["queries_per_landmark"]):
            rng = _rng(seed, "retrieval", 2, L, q)
            im, ids = render_view(
                scene, _view_camera(rng, "query", w, h, q), w, h, rng, gain_jitter=0.04
            )
            ys, xs = np.nonzero(ids)
            bbx = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
            nm = f"{name}_q{q:02d}"
            _save_jpeg(im, base / "jpg" / f"{nm}.jpg")
            queries.append((nm, L, bbx))
    for d in range(p["distractors"]):
        rng = _rng(seed, "retrieval", 3, d)
        scene = _scene(rng, w, h)
        im, _ = render_view(scene, _view_camera(rng, "easy", w, h, 0), w, h, rng)
        nm = f"distractor_{d:06d}"
        _save_jpeg(im, base / "jpg" / f"{nm}.jpg")
        db.append((nm, -1, "distractor"))
    order = _rng(seed, "retrieval", 4).permutation(len(db))
    db = [db[i] for i in order]
    gnd = []
    for nm, L, bbx in queries:
        g: dict[str, Any] = {"bbx": bbx}
        for role in ("easy", "hard", "junk"):
            g[role] = [i for i, (_, l2, r2) in enumerate(db) if l2 == L and r2 == role]
        gnd.append(g)
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "gnd_rsynth.pkl", "wb") as f:
        pickle.dump(
            {"imlist": [d[0] for d in db], "qimlist": [q[0] for q in queries], "gnd": gnd},
            f,
            protocol=4,
        )
    return {**p, "database": len(db), "queries": len(queries)}


# ======================================================================================= DAVIS
def voc_palette(n: int = 256) -> list[int]:
    """The Pascal VOC colour map (DAVIS's palette), flat ``[r, g, b, ...]`` of ``n`` colours."""
    pal = []
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def davis_sequence(
    seed: int, s: int, frames: int, width: int, height: int
) -> tuple[str, list[Image.Image], list[np.ndarray]]:
    """Sequence ``s``: its name, frames and id maps (0 background, 1..n objects)."""
    rng = _rng(seed, "davis", s)
    n = 1 + (s + 1) % 3
    b = _backdrop(rng)
    pan = rng.uniform(-0.06, 0.06, 2) * np.array([width, height])
    cells = _cells(width, height)
    objs, motion = [], []
    for ci in rng.permutation(4)[:n]:
        k = int(rng.integers(len(CLASSES)))
        cx, cy, r = _place_in_cell(rng, cells[ci], 0.75, 1.0)
        r *= 1.15
        o = _new_obj(rng, k, cx, cy, r, rng.uniform(0, 2 * np.pi))
        end = np.array([rng.uniform(0.2, 0.8) * width, rng.uniform(0.25, 0.75) * height])
        motion.append((end, rng.uniform(-0.06, 0.06), rng.uniform(-0.012, 0.012)))
        objs.append(o)
    name = f"{CLASSES[objs[0].k]}-{MOTIONS[s % len(MOTIONS)]}"
    if s >= len(MOTIONS):
        name += f"-{s // len(MOTIONS)}"
    ims, maps = [], []
    for t in range(frames):
        a = t / max(1, frames - 1)
        cam = Camera(1.0, 0.0, -pan[0] * a, -pan[1] * a)
        rgb = render_backdrop(b, width, height, cam)
        ids = np.zeros((height, width), np.uint8)
        for j, (o, (end, spin, grow)) in enumerate(zip(objs, motion)):
            paint(
                rgb,
                ids,
                o.moved(
                    o.cx + a * 0.6 * (end[0] - o.cx),
                    o.cy + a * 0.6 * (end[1] - o.cy),
                    o.r * (1 + grow * t),
                    o.rot + spin * t,
                ),
                j + 1,
            )
        ims.append(
            _finish(rgb, np.random.default_rng([seed, _STREAM["davis"], s, 1000 + t]), b.noise)
        )
        maps.append(ids)
        if t == 0 and len(np.unique(ids)) != n + 1:  # placement keeps them apart: never
            raise RuntimeError(f"DAVIS sequence {name}: an object is hidden in frame 0")
    return name, ims, maps


def generate_davis(out: str | os.PathLike, *, seed: int = 0, size: str = "tiny") -> dict[str, Any]:
    """``out/davis``: DAVIS-2017 layout, 480p folder names, palette PNG annotations."""
    p = PART_SIZES[size]["davis"]
    base = Path(out) / "davis"
    pal = voc_palette()
    names: dict[str, list[str]] = {"val": [], "train": []}
    n_seq = p["val"] + p["train"]
    for s in range(n_seq):
        name, ims, maps = davis_sequence(seed, s, p["frames"], p["width"], p["height"])
        names["val" if s < p["val"] else "train"].append(name)
        for t, (im, m) in enumerate(zip(ims, maps)):
            _save_jpeg(im, base / "JPEGImages" / "480p" / name / f"{t:05d}.jpg")
            a = Image.fromarray(m, "L")
            a.putpalette(pal)
            _save_png(a, base / "Annotations" / "480p" / name / f"{t:05d}.png")
    sets = base / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    for split, lst in names.items():
        (sets / f"{split}.txt").write_text("".join(f"{x}\n" for x in lst))
    return {**p, "sequences": names}


# ===================================================================================== SPair
def spair_image(
    seed: int, c: int, i: int, min_side: int, max_side: int
) -> tuple[Image.Image, dict[str, Any]]:
    """Image ``i`` of SPair category ``c``: the image and its ImageAnnotation fields."""
    rng = _rng(seed, "spair", 0, c, i)
    k = CLASSES.index(SPAIR_CLASSES[c])
    w, h = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
    b = _backdrop(rng)
    rgb = render_backdrop(b, w, h)
    ids = np.zeros((h, w), np.int32)
    r = rng.uniform(0.55, 0.9) * min(w, h) / 2
    truncate = rng.random() < 0.2
    if truncate:  # centre near an edge: part of the object leaves the image
        cx, cy = rng.uniform(0.15 * r, w - 0.15 * r), rng.uniform(0.15 * r, h - 0.15 * r)
        side = int(rng.integers(4))
        cx, cy = ((0.4 * r, cy), (w - 0.4 * r, cy), (cx, 0.4 * r), (cx, h - 0.4 * r))[side]
    else:
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    rot = rng.uniform(-math.pi / 3, math.pi / 3)
    o = _new_obj(rng, k, cx, cy, r, rot)
    paint(rgb, ids, o, 1)
    full = ids.sum()
    occluded = rng.random() < 0.2
    if occluded:  # a flat patch over part of the object
        ang = rng.uniform(0, 2 * np.pi)
        q = _polygon_obj(rng, cx + 0.9 * r * math.cos(ang), cy + 0.9 * r * math.sin(ang), 0.6 * r)
        m = rasterise([q.ravel().tolist()], h, w)
        rgb[m] = _hsv(rng.uniform(), rng.uniform(0, 0.25), rng.uniform(0.2, 0.7))
        ids[m] = 0
    kp = keypoints(o)
    kps: dict[str, Any] = {}
    for j, (x, y) in enumerate(kp):
        xi, yi = int(math.floor(x)), int(math.floor(y))
        vis = 0 <= xi < w and 0 <= yi < h and ids[yi, xi] == 1
        kps[str(j)] = [xi, yi] if vis else None
    ys, xs = np.nonzero(ids)
    trunc = int(any(not (0 <= x < w and 0 <= y < h) for x, y in _points(o)))
    occ = int(occluded and ids.sum() < full)
    azimuth = int((rot + math.pi) / (2 * math.pi) * 8) % 8
    ann = {
        "filename": "",
        "src_database": "synthetic",
        "anno_date": "",
        "image_width": w,
        "image_height": h,
        "image_depth": 3,
        "category": SPAIR_CLASSES[c],
        "pose": "Unspecified",
        "truncated": trunc,
        "occluded": occ,
        "difficult": 0,
        "bndbox": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())],
        "kps": kps,
        "azimuth_id": azimuth,
    }
    return _finish(rgb, rng, b.noise), ann


def spair_imname(c: int, i: int) -> str:
    return f"{2008 + (c + i) % 5}_{100 + 1000 * c + 37 * i:06d}"


def generate_spair(out: str | os.PathLike, *, seed: int = 0, size: str = "tiny") -> dict[str, Any]:
    """``out/spair``: SPair-71k layout (``:`` in pair file names, as the official release)."""
    p = PART_SIZES[size]["spair"]
    base = Path(out) / "spair"
    layout: dict[str, list[str]] = {"trn": [], "val": [], "test": []}
    pair_id = 0
    for c in range(p["categories"]):
        cat = SPAIR_CLASSES[c]
        anns = []
        for i in range(p["per_category"]):
            im, ann = spair_image(seed, c, i, p["min_side"], p["max_side"])
            nm = spair_imname(c, i)
            ann["filename"] = f"{nm}.jpg"
            _save_jpeg(im, base / "JPEGImages" / cat / f"{nm}.jpg")
            _write_json(base / "ImageAnnotation" / cat / f"{nm}.json", ann, indent=1)
            anns.append(ann)
        rng = _rng(seed, "spair", 1, c)
        seen: set[tuple[int, int]] = set()
        for split in ("trn", "val", "test"):
            made, tries = 0, 0
            while made < p["pairs"][split] and tries < 1000:
                tries += 1
                a, b = (int(v) for v in rng.choice(len(anns), 2, replace=False))
                if (a, b) in seen:
                    continue
                sa, ta = anns[a], anns[b]
                common = [
                    int(j)
                    for j in sa["kps"]
                    if sa["kps"][j] is not None and ta["kps"][j] is not None
                ]
                if len(common) < 3:
                    continue
                seen.add((a, b))
                made += 1
                pair_id += 1
                src, trg = sa["filename"][:-4], ta["filename"][:-4]
                fname = f"{pair_id:06d}-{src}-{trg}:{cat}"
                sb, tb = sa["bndbox"], ta["bndbox"]
                area = lambda bb: max(1, (bb[2] - bb[0]) * (bb[3] - bb[1]))  # noqa: E731
                ratio = max(area(sb), area(tb)) / min(area(sb), area(tb))
                daz = abs(sa["azimuth_id"] - ta["azimuth_id"])
                daz = min(daz, 8 - daz)
                pair = {
                    "pair_id": pair_id,
                    "filename": fname,
                    "src_imname": sa["filename"],
                    "trg_imname": ta["filename"],
                    "src_imsize": [sa["image_width"], sa["image_height"], 3],
                    "trg_imsize": [ta["image_width"], ta["image_height"], 3],
                    "src_bndbox": sb,
                    "trg_bndbox": tb,
                    "category": cat,
                    "src_pose": sa["pose"],
                    "trg_pose": ta["pose"],
                    "src_kps": [sa["kps"][str(j)] for j in common],
                    "trg_kps": [ta["kps"][str(j)] for j in common],
                    "kps_ids": common,
                    "mirror": 0,
                    "viewpoint_variation": min(2, daz),
                    "scale_variation": 0 if ratio < 1.5 else (1 if ratio < 2.5 else 2),
                    "truncation": sa["truncated"] + ta["truncated"],
                    "occlusion": sa["occluded"] + ta["occluded"],
                }
                _write_json(base / "PairAnnotation" / split / f"{fname}.json", pair, indent=1)
                layout[split].append(fname)
    ldir = base / "Layout" / "large"
    ldir.mkdir(parents=True, exist_ok=True)
    for split, lst in layout.items():
        (ldir / f"{split}.txt").write_text("".join(f"{x}\n" for x in lst))
    return {
        **{k: v for k, v in p.items()},
        "category_names": list(SPAIR_CLASSES[: p["categories"]]),
        "pair_counts": {s: len(v) for s, v in layout.items()},
        "keypoints": list(KEYPOINTS),
    }


# ===================================================================================== world
def _parts(parts: str | Iterable[str] | None) -> list[str]:
    if parts is None:
        return list(PARTS)
    if isinstance(parts, str):
        parts = [x for x in parts.split(",") if x.strip()]
    out = []
    for x in parts:
        x = PART_ALIASES.get(x.strip(), x.strip())
        if x not in PARTS:
            raise ValueError(f"unknown part {x!r}; known: {', '.join(PARTS)}")
        if x not in out:
            out.append(x)
    return [x for x in PARTS if x in out]


def generate(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    size: str = "tiny",
    parts: str | Iterable[str] | None = None,
    **overrides: Any,
) -> Path:
    """Generate the synthetic world of ``size`` under ``out`` and write ``out/world.json``.

    ``parts`` (default all of :data:`PARTS`; reader kinds are accepted as aliases) limits
    what is written.  ``overrides`` ``classes``, ``per_class``, ``image_size`` and
    ``per_class_val`` apply to the ImageNet part; ``split`` (a reader option) is ignored.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    known = {"classes", "per_class", "image_size", "per_class_val", "split"}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"generate() got unknown overrides {sorted(unknown)}")
    inet = {k: v for k, v in overrides.items() if k != "split" and v is not None}
    params = {**SIZES[size], **{k: v for k, v in inet.items() if k in SIZES[size]}}
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    todo = _parts(parts)
    info: dict[str, Any] = {}
    fns = {
        "coco": generate_coco,
        "partimagenet": generate_partimagenet,
        "retrieval": generate_retrieval,
        "davis": generate_davis,
        "spair": generate_spair,
    }
    for part in todo:
        if part == "imagenet":
            info[part] = generate_imagenet(outp, seed=seed, size=size, **inet)
        else:
            info[part] = fns[part](outp, seed=seed, size=size)
    world = {
        "seed": seed,
        "size": size,
        **params,
        "parts": info,
        "class_names": list(CLASSES),
        "part_names": list(PART_NAMES),
        "keypoints": list(KEYPOINTS),
    }
    (outp / "world.json").write_text(json.dumps(world, indent=1))
    return outp


# ==================================================================================== examples
def _overlay(
    img: Image.Image, ids: np.ndarray, alpha: float = 0.5, palette: list[int] | None = None
) -> Image.Image:
    pal = np.asarray(palette or voc_palette(), dtype=np.float64).reshape(-1, 3)
    a = np.asarray(img.convert("RGB"), dtype=np.float64)
    m = ids > 0
    a[m] = (1 - alpha) * a[m] + alpha * pal[ids[m] % len(pal)]
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def _upscale(im: Image.Image, f: int) -> Image.Image:
    return im.resize((im.width * f, im.height * f), Image.Resampling.NEAREST)


def _hstack(ims: list[Image.Image], gap: int = 4, bg=(255, 255, 255)) -> Image.Image:
    w = sum(i.width for i in ims) + gap * (len(ims) - 1)
    h = max(i.height for i in ims)
    out = Image.new("RGB", (w, h), bg)
    x = 0
    for i in ims:
        out.paste(i, (x, 0))
        x += i.width + gap
    return out


def _vstack(ims: list[Image.Image], gap: int = 4, bg=(255, 255, 255)) -> Image.Image:
    w = max(i.width for i in ims)
    h = sum(i.height for i in ims) + gap * (len(ims) - 1)
    out = Image.new("RGB", (w, h), bg)
    y = 0
    for i in ims:
        out.paste(i, (0, y))
        y += i.height + gap
    return out


def render_examples(world_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Render the example figures of the world at ``world_dir`` (all parts) into ``out_dir``:
    ``example_{image,mask,parts,keypoints,davis}.png``.  Reads only the written files."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    wd, od = Path(world_dir), Path(out_dir)
    od.mkdir(parents=True, exist_ok=True)
    written = []

    def save(im: Image.Image, name: str) -> None:
        p = od / name
        im = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        im.save(p, "PNG", optimize=True)
        written.append(p)

    # ImageNet: one per class, captioned.
    tiles = []
    for cdir in sorted((wd / "imagenet" / "train").iterdir(), key=lambda p: CLASSES.index(p.name)):
        im = _upscale(Image.open(sorted(cdir.iterdir())[0]).convert("RGB"), 2)
        cap = Image.new("RGB", (im.width, 14), (255, 255, 255))
        ImageDraw.Draw(cap).text((2, 1), cdir.name, fill=(0, 0, 0))
        tiles.append(_vstack([im, cap], gap=0))
    rows = [_hstack(tiles[i : i + 5]) for i in range(0, len(tiles), 5)]
    save(_vstack(rows), "example_image.png")

    def load(path: Path) -> Any:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))

    # COCO: images with most annotations, masks overlaid (crowd in white).
    coco = load(wd / "coco" / "annotations" / "instances_val2017.json")
    ids_sorted = sorted(coco.getImgIds(), key=lambda i: (-len(coco.getAnnIds(imgIds=[i])), i))
    shown = []
    for iid in ids_sorted[:3]:
        info = coco.loadImgs([iid])[0]
        im = Image.open(wd / "coco" / "images" / "val2017" / info["file_name"]).convert("RGB")
        idm = np.zeros((info["height"], info["width"]), np.int32)
        for j, a in enumerate(coco.loadAnns(coco.getAnnIds(imgIds=[iid]))):
            idm[coco.annToMask(a) > 0] = 255 if a["iscrowd"] else j + 1
        pal = voc_palette()
        pal[255 * 3 : 255 * 3 + 3] = [255, 255, 255]
        shown.append(_hstack([_upscale(im, 2), _upscale(_overlay(im, idm, 0.6, pal), 2)]))
    save(_vstack(shown), "example_mask.png")

    # PartImageNet: image and part map (Head red, Body green, Tail blue).
    shown = []
    for split in ("train", "val", "test"):
        pin = load(wd / "partimagenet" / f"{split}.json")
        iid = sorted(pin.getImgIds())[0]
        info = pin.loadImgs([iid])[0]
        im = Image.open(wd / "partimagenet" / split / info["file_name"]).convert("RGB")
        pm = np.zeros((info["height"], info["width"]), np.int32)
        for a in pin.loadAnns(pin.getAnnIds(imgIds=[iid])):
            pm[pin.annToMask(a) > 0] = a["category_id"] % 3 + 1
        pal = [0, 0, 0, 230, 40, 40, 40, 200, 40, 40, 80, 230]
        shown.append(_hstack([_upscale(im, 2), _upscale(_overlay(im, pm, 0.65, pal), 2)]))
    save(_vstack(shown), "example_parts.png")

    # SPair: a test pair with its matched keypoints.
    pdir = wd / "spair" / "PairAnnotation" / "test"
    pf = sorted(pdir.iterdir(), key=lambda p: p.name)
    pairs = [json.loads(p.read_text()) for p in pf[:30]]
    pair = max(
        pairs,
        key=lambda d: (
            len(d["kps_ids"]) - 3 * (d["truncation"] + d["occlusion"]),
            d["viewpoint_variation"],
        ),
    )
    f = 3
    src = _upscale(
        Image.open(wd / "spair" / "JPEGImages" / pair["category"] / pair["src_imname"]).convert(
            "RGB"
        ),
        f,
    )
    trg = _upscale(
        Image.open(wd / "spair" / "JPEGImages" / pair["category"] / pair["trg_imname"]).convert(
            "RGB"
        ),
        f,
    )
    gap = 12
    canvas = _hstack([src, trg], gap=gap)
    d = ImageDraw.Draw(canvas)
    pal = np.asarray(voc_palette(), dtype=int).reshape(-1, 3)
    for j, (a, b) in enumerate(zip(pair["src_kps"], pair["trg_kps"])):
        col = tuple(int(v) for v in pal[pair["kps_ids"][j] + 1])
        xa, ya = (a[0] + 0.5) * f, (a[1] + 0.5) * f
        xb, yb = (b[0] + 0.5) * f + src.width + gap, (b[1] + 0.5) * f
        d.line([(xa, ya), (xb, yb)], fill=col, width=1)
        for x, y in ((xa, ya), (xb, yb)):
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col, outline=(255, 255, 255))
    save(canvas, "example_keypoints.png")

    # DAVIS: frames of the val sequence with most objects, masks overlaid below.
    def n_objects(seq: str) -> int:
        first = sorted((wd / "davis" / "Annotations" / "480p" / seq).iterdir())[0]
        return int(np.asarray(Image.open(first)).max())

    seqs = (wd / "davis" / "ImageSets" / "2017" / "val.txt").read_text().split()
    seq = max(seqs, key=lambda s: (n_objects(s), -seqs.index(s)))
    fdir = wd / "davis" / "JPEGImages" / "480p" / seq
    frames = sorted(fdir.iterdir())
    top, bot = [], []
    for fp in [frames[round(i * (len(frames) - 1) / 3)] for i in range(4)]:
        im = Image.open(fp).convert("RGB")
        m = np.asarray(Image.open(wd / "davis" / "Annotations" / "480p" / seq / (fp.stem + ".png")))
        top.append(im)
        bot.append(_overlay(im, m.astype(np.int32), 0.6))
    save(_vstack([_hstack(top, 2), _hstack(bot, 2)], 2), "example_davis.png")
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", choices=list(SIZES), default="tiny")
    ap.add_argument("--classes", type=int)
    ap.add_argument("--per-class", type=int)
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--parts", help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument(
        "--examples",
        help="render the example figures of --out into this folder instead of generating",
    )
    a = ap.parse_args(argv)
    if a.examples:
        render_examples(a.out, a.examples)
        return
    generate(
        a.out,
        seed=a.seed,
        size=a.size,
        parts=a.parts,
        classes=a.classes,
        per_class=a.per_class,
        image_size=a.image_size,
    )


if __name__ == "__main__":
    main()
