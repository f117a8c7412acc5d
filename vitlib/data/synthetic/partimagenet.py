"""The ``partimagenet`` part: PartImageNet's ``partimagenet/{train,val,test}.json`` (part
categories), images ``partimagenet/<split>/<wnid>/<wnid>_<n>.JPEG`` and
``partimagenet/imagenet_class_index.json``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlib.data.synthetic.common import (
    CLASSES,
    PART_NAMES,
    PART_SIZES,
    PIN_SPLIT_CYCLE,
    SUPERCATEGORIES,
    _rng,
    _save_jpeg,
    _write_json,
    wnid,
)
from vitlib.data.synthetic.draw import (
    _backdrop,
    _finish,
    _new_obj,
    paint,
    part_polygons,
    render_backdrop,
)


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
    data: dict[str, dict[str, Any]] = {
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
