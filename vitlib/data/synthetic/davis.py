"""The ``davis`` part: DAVIS-2017, ``davis/ImageSets/2017/{train,val}.txt``,
``davis/JPEGImages/480p/<seq>/<nnnnn>.jpg`` and ``davis/Annotations/480p/<seq>/<nnnnn>.png``
(palette PNGs)."""

from __future__ import annotations

import os
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
    Camera,
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
