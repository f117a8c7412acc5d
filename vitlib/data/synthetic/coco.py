"""The ``coco`` part: COCO instances, ``coco/images/val2017/<id:012d>.jpg`` and
``coco/annotations/instances_val2017.json`` (polygons, a few crowd RLEs, one image without
annotations)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlib.data.synthetic.common import CLASSES, PART_SIZES, _rng, _save_jpeg, _write_json
from vitlib.data.synthetic.draw import (
    _backdrop,
    _cells,
    _finish,
    _new_obj,
    _place_in_cell,
    object_polygon,
    paint,
    render_backdrop,
)


def coco_category_id(k: int) -> int:
    """COCO category id of class ``k`` (odd numbers: ids are not contiguous, as COCO's)."""
    return 2 * k + 1


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

    def add(seg: list[list[float]] | dict[str, Any], m: np.ndarray, k: int, iscrowd: int) -> None:
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
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
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
