"""The synthetic world: generated data in the real datasets' on-disk formats.

So far it writes the ImageNet-style class folder (``<out>/imagenet/train/<class>/<n>.png``):
each class is a shape with its own colour scheme and texture, drawn at a random position,
scale and rotation over a noisy background, so a small ViT can learn the classes.
Deterministic by seed: the same arguments give byte-identical files.

Command line: ``python -m vitlib.data.synthetic --out DIR --seed N --size {tiny,demo}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("disc", "square", "triangle", "cross", "ring", "bar", "diamond", "star",
           "crescent", "checker")

SIZES = {
    "tiny": {"classes": 4, "per_class": 8, "image_size": 64},
    "demo": {"classes": 10, "per_class": 60, "image_size": 96},
}


def _polygon(kind: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    if kind == "square":
        angles = [math.pi / 4 + k * math.pi / 2 for k in range(4)]
        radii = [r] * 4
    elif kind == "triangle":
        angles = [k * 2 * math.pi / 3 for k in range(3)]
        radii = [r] * 3
    elif kind == "diamond":
        angles = [k * math.pi / 2 for k in range(4)]
        radii = [r, 0.55 * r, r, 0.55 * r]
    elif kind == "star":
        angles = [k * math.pi / 5 for k in range(10)]
        radii = [r if k % 2 == 0 else 0.45 * r for k in range(10)]
    elif kind == "cross":
        pts = [(-.3, -1), (.3, -1), (.3, -.3), (1, -.3), (1, .3), (.3, .3), (.3, 1), (-.3, 1),
               (-.3, .3), (-1, .3), (-1, -.3), (-.3, -.3)]
        angles = [math.atan2(y, x) for x, y in pts]
        radii = [r * math.hypot(x, y) / math.sqrt(2) * 1.3 for x, y in pts]
    elif kind == "bar":
        pts = [(-1, -.25), (1, -.25), (1, .25), (-1, .25)]
        angles = [math.atan2(y, x) for x, y in pts]
        radii = [r * math.hypot(x, y) for x, y in pts]
    else:
        raise ValueError(kind)
    return [(cx + rr * math.cos(a + rot), cy + rr * math.sin(a + rot)) for a, rr in zip(angles, radii)]


def draw_object(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, rot: float,
                fill: tuple[int, int, int], accent: tuple[int, int, int]) -> None:
    """Draw one object of class ``kind`` (shape + class-specific texture)."""
    if kind == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        draw.ellipse([cx - r / 3, cy - r / 3, cx + r / 3, cy + r / 3], fill=accent)
    elif kind == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        draw.ellipse([cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2], fill=accent)
    elif kind == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        off = r * 0.5
        draw.ellipse([cx - r + off * math.cos(rot), cy - r + off * math.sin(rot),
                      cx + r + off * math.cos(rot), cy + r + off * math.sin(rot)], fill=accent)
    elif kind == "checker":
        s = r / 1.5
        for i in range(-2, 2):
            for j in range(-2, 2):
                col = fill if (i + j) % 2 == 0 else accent
                draw.rectangle([cx + i * s / 2 * 1.5, cy + j * s / 2 * 1.5,
                                cx + (i + 1) * s / 2 * 1.5, cy + (j + 1) * s / 2 * 1.5], fill=col)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, rot), fill=fill, outline=accent)


def _class_colours(k: int) -> tuple[np.ndarray, np.ndarray]:
    hue = (k * 0.61803) % 1.0
    base = np.array([math.sin(2 * math.pi * (hue + o)) * 0.5 + 0.5 for o in (0, 1 / 3, 2 / 3)])
    return base * 200 + 30, (1 - base) * 200 + 30


def render_image(rng: np.random.Generator, kind: str, k: int, size: int) -> Image.Image:
    bg = rng.uniform(40, 215, size=3)
    noise = rng.normal(0, 18, size=(size, size, 3))
    arr = np.clip(bg + noise, 0, 255).astype(np.uint8)
    im = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(im)
    fill, accent = _class_colours(k)
    jitter = rng.normal(0, 12, size=3)
    fill_c = tuple(int(v) for v in np.clip(fill + jitter, 0, 255))
    acc_c = tuple(int(v) for v in np.clip(accent + jitter, 0, 255))
    r = rng.uniform(0.18, 0.34) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    draw_object(draw, kind, cx, cy, r, rng.uniform(0, 2 * math.pi), fill_c, acc_c)
    return im


def generate_imagefolder(out: str | os.PathLike, *, classes: int, per_class: int, image_size: int,
                         seed: int = 0) -> Path:
    """Write ``out/<class>/<nnnn>.png``; returns ``out``.  Deterministic by ``seed``."""
    if not 1 <= classes <= len(CLASSES):
        raise ValueError(f"classes must be in 1..{len(CLASSES)}, got {classes}")
    outp = Path(out)
    for k, kind in enumerate(CLASSES[:classes]):
        cdir = outp / kind
        cdir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, k])
        for i in range(per_class):
            render_image(rng, kind, k, image_size).save(cdir / f"{i:04d}.png", optimize=False)
    return outp


def generate(out: str | os.PathLike, *, seed: int = 0, size: str = "tiny", **overrides: int) -> Path:
    """Generate the synthetic world of ``size`` under ``out`` and write ``out/world.json``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    params = {**SIZES[size], **{k: v for k, v in overrides.items() if v is not None}}
    outp = Path(out)
    generate_imagefolder(outp / "imagenet" / "train", seed=seed, **params)
    (outp / "world.json").write_text(json.dumps({"seed": seed, "size": size, **params}, indent=1))
    return outp


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", choices=list(SIZES), default="tiny")
    ap.add_argument("--classes", type=int)
    ap.add_argument("--per-class", type=int)
    ap.add_argument("--image-size", type=int)
    a = ap.parse_args(argv)
    generate(a.out, seed=a.seed, size=a.size, classes=a.classes, per_class=a.per_class,
             image_size=a.image_size)


if __name__ == "__main__":
    main()
