"""Drawing primitives of the synthetic world: colours, textures, objects and backgrounds.

Object instances (:class:`Obj`) in image coordinates, their COCO polygons and their painting
(every mask rasterised by pycocotools from the very polygon written to the annotations), their
colours and textures (nuisances drawn per object, independently of the class: only the
outline carries it), backgrounds (:class:`Backdrop`: gradients, smooth noise, stripes and
clutter lines) seen through a similarity :class:`Camera`, and object placement in the cells
of an image.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image, ImageDraw

from vitlib.data.synthetic.shapes import _shape


# ===================================================================================== colours
def _hsv(h: ArrayLike, s: ArrayLike, v: ArrayLike) -> np.ndarray:
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


def _part_colours(rng: np.random.Generator) -> np.ndarray:
    """[3, 3] RGB of Head, Body, Tail: a nuisance drawn independently of the class.

    One random hue, saturation and value per object, each part a random shade of it (no
    part is systematically brighter than another): neither the class nor the part can be
    read from colour, only from the outline."""
    h = rng.uniform(0, 1) + rng.uniform(-0.04, 0.04, 3)
    s = np.clip(rng.uniform(0.35, 0.9) + rng.uniform(-0.08, 0.08, 3), 0, 1)
    v = np.clip(rng.uniform(0.45, 1.0) + rng.uniform(-0.08, 0.08, 3), 0, 1)
    return _hsv(h, s, v)


#: How many texture kinds :func:`_pattern` draws (a nuisance: drawn per object).
N_TEXTURES = 10


def _pattern(kind: int, u: np.ndarray, v: np.ndarray, f: float, ph: float) -> np.ndarray:
    """Texture ``kind`` (0/1) at object-frame coordinates ``u, v``."""
    tau = 2 * np.pi
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
    """One object instance: class (the outline), pose in the image and appearance (colours
    and texture: nuisances drawn independently of the class)."""

    k: int
    cx: float
    cy: float
    r: float
    rot: float
    colours: np.ndarray  # [3, 3] Head, Body, Tail
    freq: float
    phase: float
    amp: float
    tex: int = 0  # texture kind of :func:`_pattern`

    def moved(self, cx: float, cy: float, r: float, rot: float) -> Obj:
        return replace(self, cx=cx, cy=cy, r=r, rot=rot)

    def redrawn(self, rng: np.random.Generator) -> Obj:
        """The same object (class and pose) under a new draw of its appearance."""
        look = _new_obj(rng, self.k, self.cx, self.cy, self.r, self.rot)
        return replace(
            self, colours=look.colours, freq=look.freq, phase=look.phase, amp=look.amp, tex=look.tex
        )


def _new_obj(
    rng: np.random.Generator,
    k: int,
    cx: float,
    cy: float,
    r: float,
    rot: float,
) -> Obj:
    return Obj(
        k,
        float(cx),
        float(cy),
        float(r),
        float(rot),
        _part_colours(rng),
        float(2.2 * rng.uniform(0.7, 1.3)),
        float(rng.uniform(0, 2 * np.pi)),
        float(rng.uniform(0.15, 0.35)),
        int(rng.integers(N_TEXTURES)),
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
        t = _pattern(o.tex, u, v, o.freq, o.phase)
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
    lines: list[tuple[np.ndarray, np.ndarray, tuple[int, int, int], int]] = []
    mean = (c0 + c1) / 2
    for _ in range(n):
        p0 = rng.uniform(-0.1, 1.1, 2)
        p1 = p0 + rng.normal(0, 0.35, 2)
        col = np.clip(mean + rng.normal(0, 45, 3), 0, 255)
        colour = (int(col[0]), int(col[1]), int(col[2]))
        lines.append((p0, p1, colour, int(rng.integers(1, 3))))
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

    def forward(
        self, ref: tuple[int, int], size: tuple[int, int], x: ArrayLike, y: ArrayLike
    ) -> tuple[Any, Any]:
        c, s = math.cos(self.phi), math.sin(self.phi)
        dx, dy = np.asarray(x) - ref[0] / 2, np.asarray(y) - ref[1] / 2
        return (
            self.s * (c * dx - s * dy) + size[0] / 2 + self.tx,
            self.s * (s * dx + c * dy) + size[1] / 2 + self.ty,
        )

    def inverse(
        self, ref: tuple[int, int], size: tuple[int, int], x: ArrayLike, y: ArrayLike
    ) -> tuple[Any, Any]:
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


# =================================================================================== placement
def _cells(w: int, h: int) -> list[tuple[float, float, float, float]]:
    return [(x * w / 2, y * h / 2, w / 2, h / 2) for y in range(2) for x in range(2)]


def _place_in_cell(
    rng: np.random.Generator, cell: tuple[float, float, float, float], lo: float, hi: float
) -> tuple[float, float, float]:
    x, y, cw, ch = cell
    r = rng.uniform(lo, hi) * min(cw, ch) / 2
    cx = rng.uniform(x + r, x + cw - r)
    cy = rng.uniform(y + r, y + ch - r)
    return float(cx), float(cy), float(r)
