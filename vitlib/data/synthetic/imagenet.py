"""The ``imagenet`` part: ImageNet class folders ``imagenet/{train,val}/<class>/<nnnn>.png``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlib.data.synthetic.common import CLASSES, PART_SIZES, SIZES, _rng, _save_png
from vitlib.data.synthetic.draw import _backdrop, _finish, _new_obj, paint, render_backdrop


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
