"""The ``davis`` part: DAVIS-2017, ``davis/ImageSets/2017/{train,val}.txt``,
``davis/JPEGImages/480p/<seq>/<nnnnn>.jpg`` and ``davis/Annotations/480p/<seq>/<nnnnn>.png``
(palette PNGs).

Each sequence moves 1 to 3 annotated objects among 2 or 3 unannotated distractors: other
shapes with the very colours and texture of an annotated object, painted under the objects
and left as background (0) in the annotations."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlib.data.synthetic.common import (
    _STREAM,
    CLASSES,
    MOTIONS,
    PART_SIZES,
    _rng,
    _save_jpeg,
    _save_png,
)
from vitlib.data.synthetic.draw import (
    Backdrop,
    Camera,
    Obj,
    _backdrop,
    _cells,
    _finish,
    _new_obj,
    _place_in_cell,
    paint,
    render_backdrop,
)


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


#: A motion: end point of the path (pixels), spin (radians per frame), growth (per frame).
Motion = tuple[np.ndarray, float, float]


@dataclass
class DavisScene:
    """A DAVIS sequence before rendering: annotated objects and unannotated distractors (other
    shapes, each with the colours and texture of an annotated object), each with its motion,
    over a panning backdrop."""

    name: str
    backdrop: Backdrop
    pan: np.ndarray  # camera translation (pixels) over the whole sequence
    objects: list[Obj]
    motion: list[Motion]
    distractors: list[Obj]
    distractor_motion: list[Motion]
    twin: list[int]  # per distractor: the annotated object whose appearance it copies

    def frame(
        self, t: int, frames: int, width: int, height: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame ``t``: float RGB (before noise), the annotation's id map (0 background,
        1..n objects) and the distractors' id map (1..m where visible: they are painted under
        the objects)."""
        a = t / max(1, frames - 1)
        cam = Camera(1.0, 0.0, -self.pan[0] * a, -self.pan[1] * a)
        rgb = render_backdrop(self.backdrop, width, height, cam)
        ids = np.zeros((height, width), np.uint8)
        dids = np.zeros((height, width), np.uint8)

        def at(o: Obj, m: Motion) -> Obj:
            end, spin, grow = m
            return o.moved(
                o.cx + a * 0.6 * (end[0] - o.cx),
                o.cy + a * 0.6 * (end[1] - o.cy),
                o.r * (1 + grow * t),
                o.rot + spin * t,
            )

        for j, (o, m) in enumerate(zip(self.distractors, self.distractor_motion)):
            paint(rgb, dids, at(o, m), j + 1)
        for j, (o, m) in enumerate(zip(self.objects, self.motion)):
            paint(rgb, ids, at(o, m), j + 1)
        dids[ids > 0] = 0
        return rgb, ids, dids


def _motion(
    rng: np.random.Generator, width: int, height: int, start: tuple[float, float] | None = None
) -> Motion:
    """Towards a point in the middle of the frame, or (``start`` given: a distractor) a short
    path of its own around ``start``."""
    size = np.array([width, height])
    if start is None:
        end = np.array([rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.75)]) * size
    else:
        end = np.clip(np.asarray(start) + rng.uniform(-0.3, 0.3, 2) * size, 0.1 * size, 0.9 * size)
    return end, float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.012, 0.012))


def davis_scene(seed: int, s: int, width: int, height: int) -> DavisScene:
    """Sequence ``s``: 1 to 3 annotated objects in separate cells of the first frame, and 2 or
    3 unannotated distractors of other classes, each a twin in colours and texture of an
    annotated object, so colour alone does not track an object."""
    rng = _rng(seed, "davis", s)
    n = 1 + (s + 1) % 3
    b = _backdrop(rng)
    pan = rng.uniform(-0.06, 0.06, 2) * np.array([width, height])
    cells = _cells(width, height)
    objs, motion = [], []
    order = rng.permutation(4)
    for ci in order[:n]:
        k = int(rng.integers(len(CLASSES)))
        cx, cy, r = _place_in_cell(rng, cells[ci], 0.75, 1.0)
        r *= 1.15
        objs.append(_new_obj(rng, k, cx, cy, r, rng.uniform(0, 2 * np.pi)))
        motion.append(_motion(rng, width, height))
    others = [k for k in range(len(CLASSES)) if k not in {o.k for o in objs}]
    dists: list[Obj] = []
    dmotion, twin = [], []
    for d in range(int(rng.integers(2, 4))):
        i = d % n if d < n else int(rng.integers(n))
        # the clearest of a few random places: it starts mostly in the open, and drifts there
        best = None
        for _ in range(12):
            r = rng.uniform(0.5, 0.8) * min(width, height) / 4
            cx, cy = rng.uniform(0.7 * r, width - 0.7 * r), rng.uniform(0.7 * r, height - 0.7 * r)
            clear = min(math.hypot(cx - q.cx, cy - q.cy) - r - q.r for q in objs + dists)
            if best is None or clear > best[0]:
                best = (clear, cx, cy, r)
        assert best is not None
        _, cx, cy, r = best
        o = _new_obj(rng, int(rng.choice(others)), cx, cy, r, rng.uniform(0, 2 * np.pi))
        t = objs[i]
        dists.append(
            replace(o, colours=t.colours.copy(), tex=t.tex, freq=t.freq, phase=t.phase, amp=t.amp)
        )
        dmotion.append(_motion(rng, width, height, (cx, cy)))
        twin.append(i)
    name = f"{CLASSES[objs[0].k]}-{MOTIONS[s % len(MOTIONS)]}"
    if s >= len(MOTIONS):
        name += f"-{s // len(MOTIONS)}"
    return DavisScene(name, b, pan, objs, motion, dists, dmotion, twin)


def davis_sequence(
    seed: int, s: int, frames: int, width: int, height: int
) -> tuple[str, list[Image.Image], list[np.ndarray]]:
    """Sequence ``s``: its name, frames and id maps (0 background and distractors, 1..n
    objects)."""
    sc = davis_scene(seed, s, width, height)
    ims, maps = [], []
    for t in range(frames):
        rgb, ids, _ = sc.frame(t, frames, width, height)
        ims.append(
            _finish(
                rgb, np.random.default_rng([seed, _STREAM["davis"], s, 1000 + t]), sc.backdrop.noise
            )
        )
        maps.append(ids)
        if t == 0 and len(np.unique(ids)) != len(sc.objects) + 1:  # placement: never
            raise RuntimeError(f"DAVIS sequence {sc.name}: an object is hidden in frame 0")
    return sc.name, ims, maps


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
