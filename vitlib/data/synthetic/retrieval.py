"""The ``retrieval`` part: Revisited Oxford/Paris, ``rsynth/gnd_rsynth.pkl`` and
``rsynth/jpg/<name>.jpg``.

A landmark is an arrangement of a few objects: their classes (outlines), positions, rotations
and sizes.  Every view of it (database image or query) is the same object instances under a
new draw of every nuisance (:func:`landmark_view`: a new background and clutter, each
object's colours and texture redrawn) seen through a camera of some difficulty (easy, hard:
zoomed out and rotated or a partial crop, junk: tiny or occluded), so only the shapes and
their arrangement tell the landmark apart from the distractors, random scenes of the same
classes.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlib.data.synthetic.common import CLASSES, LANDMARK_NAMES, PART_SIZES, _rng, _save_jpeg
from vitlib.data.synthetic.draw import (
    Backdrop,
    Camera,
    Obj,
    _backdrop,
    _cells,
    _finish,
    _hsv,
    _new_obj,
    _place_in_cell,
    paint,
    render_backdrop,
)


@dataclass
class Scene:
    backdrop: Backdrop
    objects: list[Obj]  # in world (reference image) coordinates


def _scene_backdrop(rng: np.random.Generator) -> Backdrop:
    return _backdrop(rng, clutter=int(rng.integers(2, 6)))


def _scene(rng: np.random.Generator, w: int, h: int) -> Scene:
    b = _scene_backdrop(rng)
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


def landmark_scene(seed: int, L: int, w: int, h: int) -> Scene:
    """Landmark ``L``: its objects' classes and poses (world coordinates) are what every view
    of it shares; its backdrop and the objects' appearance are redrawn in every view."""
    return _scene(_rng(seed, "retrieval", 0, L), w, h)


def landmark_view(
    seed: int, L: int, role: str, i: int, j: int, w: int, h: int
) -> tuple[Image.Image, np.ndarray, Scene, Camera]:
    """View ``j`` of landmark ``L``: database image number ``i`` of its ``role`` (``easy``,
    ``hard``, ``junk``; ``j`` counts its database images over the roles in that order), or
    query ``j`` (``role="query"``).  The landmark's objects (classes and poses) under a new
    backdrop and a new draw of every object's colours and texture, through a camera of that
    difficulty (odd junk: tiny, even junk: an easy camera with a large occluder).  Returns the
    image, the objects' id map (object ``n`` of the landmark is ``n + 1``), the scene drawn
    (world coordinates) and the camera."""
    base = landmark_scene(seed, L, w, h)
    rng = _rng(seed, "retrieval", 2 if role == "query" else 1, L, j)
    scene = Scene(_scene_backdrop(rng), [o.redrawn(rng) for o in base.objects])
    occ, gain = 0.0, 0.04
    if role == "query":
        cam = _view_camera(rng, "query", w, h, j)
    elif role == "junk" and i % 2 == 0:
        cam, occ, gain = _view_camera(rng, "easy", w, h, i), rng.uniform(0.8, 0.9), 0.15
    else:
        cam = _view_camera(rng, role, w, h, i, scene)
        gain = 0.06 if role == "easy" else 0.15
    im, ids = render_view(scene, cam, w, h, rng, gain_jitter=gain, occlude=occ)
    return im, ids, scene, cam


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
        j = 0
        for role in ("easy", "hard", "junk"):
            for r_i in range(p[role]):
                im, _, _, _ = landmark_view(seed, L, role, r_i, j, w, h)
                nm = f"{name}_{100 * L + j:06d}"
                _save_jpeg(im, base / "jpg" / f"{nm}.jpg")
                db.append((nm, L, role))
                j += 1
        for q in range(p["queries_per_landmark"]):
            im, ids, _, _ = landmark_view(seed, L, "query", q, q, w, h)
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
    for _nm, L, bbx in queries:
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
