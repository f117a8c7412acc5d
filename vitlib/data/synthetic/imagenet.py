"""The ``imagenet`` part: ImageNet class folders ``imagenet/{train,val}/<class>/<nnnn>.png``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlib.data.synthetic.captions import caption
from vitlib.data.synthetic.common import CLASSES, PART_SIZES, SIZES, _rng, _save_png
from vitlib.data.synthetic.draw import _backdrop, _finish, _new_obj, paint, render_backdrop


def imagenet_sample(
    rng: np.random.Generator, k: int, size: int
) -> tuple[Image.Image, np.ndarray, str]:
    """One ImageNet-style image of class ``k``, ``size`` px square, its object's id map (1 on
    the object) and its caption (:func:`~vitlib.data.synthetic.captions.caption`): colours,
    texture, scale, position and background are drawn independently of the class; only the
    object's outline depends on it."""
    b = _backdrop(rng)
    rgb = render_backdrop(b, size, size)
    ids = np.zeros((size, size), np.int32)
    r = rng.uniform(0.28, 0.44) * size
    cx, cy = rng.uniform(0.85 * r, size - 0.85 * r, size=2)
    rot = rng.uniform(-MAX_TILT, MAX_TILT)
    o = _new_obj(rng, k, cx, cy, r, rot)
    paint(rgb, ids, o, 1)
    text = caption(k, o.colours[1], o.tex, rgb[ids == 0].mean(0))
    return _finish(rgb, rng, b.noise), ids, text


def imagenet_image(rng: np.random.Generator, k: int, size: int) -> tuple[Image.Image, np.ndarray]:
    """:func:`imagenet_sample` without the caption."""
    im, ids, _ = imagenet_sample(rng, k, size)
    return im, ids


#: Objects of the class-folder images are tilted by at most this (radians) from their upright
#: pose (head towards +x), like the mostly upright objects of ImageNet photos.
MAX_TILT = np.pi / 5


def render_image(rng: np.random.Generator, kind: str, k: int, size: int) -> Image.Image:
    """One ImageNet-style image of class ``k`` (``kind`` = its name), ``size`` px square."""
    assert CLASSES[k] == kind
    return imagenet_image(rng, k, size)[0]


def generate_imagefolder(
    out: str | os.PathLike,
    *,
    classes: int,
    per_class: int,
    image_size: int,
    seed: int = 0,
    stream: int = 0,
) -> Path:
    """Write ``out/<class>/<nnnn>.png`` and, beside the folder, the caption of every image
    (``captions_<out name>.tsv``: relative path, tab, caption; read by the CLIP-style
    trainer only); returns ``out``.  Deterministic by ``seed``; ``stream`` separates the
    train (0) and val (1) draws."""
    if not 1 <= classes <= len(CLASSES):
        raise ValueError(f"classes must be in 1..{len(CLASSES)}, got {classes}")
    outp = Path(out)
    rows = []
    for k, kind in enumerate(CLASSES[:classes]):
        cdir = outp / kind
        cdir.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = _rng(seed, "imagenet", stream, k, i)
            im, _, text = imagenet_sample(rng, k, image_size)
            _save_png(im, cdir / f"{i:04d}.png")
            rows.append(f"{kind}/{i:04d}.png\t{text}\n")
    (outp.parent / f"captions_{outp.name}.tsv").write_text("".join(rows))
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
