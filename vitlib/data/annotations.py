"""Annotation masks of COCO-format datasets (COCO objects, PartImageNet parts) at token
resolution (docs/protocols.md §2.8 step 2, §3.6).

pycocotools rasterises every annotation (polygons, compressed or uncompressed RLE);
:func:`token_masks` turns the pixel masks into soft masks on a model's token grid: optional
centre crop to a square (the ``center`` view), resize of the 0/255 mask with bicubic
filtering, masks that vanish are dropped, each survivor normalised to sum 1.
"""

from __future__ import annotations

import contextlib
import io
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlib.data.manifest import DataError, Item, Manifest
from vitlib.data.readers import load_json


def load_coco_api(path: str | os.PathLike) -> Any:
    """A ``pycocotools.coco.COCO`` index of ``path`` (its progress prints silenced); a missing
    or truncated file is a :class:`DataError` naming it."""
    from pycocotools.coco import COCO

    d = load_json(path, "COCO-format annotation file")
    coco = COCO()
    coco.dataset = d
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


@lru_cache(maxsize=8)
def _cached_api(path: str) -> Any:
    return load_coco_api(path)


def coco_for_item(manifest: Manifest, item: Item) -> Any:
    """The COCO index holding ``item``'s annotations (PartImageNet: its split's file)."""
    files = manifest.extra.get("annotations")
    if not isinstance(files, dict) or not files:
        raise DataError(
            f"manifest of {manifest.dataset!r} ({manifest.kind}) has no annotation files"
        )
    key = item.meta.get("split") or next(iter(files))
    return _cached_api(str(Path(manifest.root) / files[key]))


def annotation_masks(
    coco: Any, image_id: int, *, min_polygon_coords: int = 5
) -> list[tuple[int, np.ndarray]]:
    """``(category_id, mask [H, W] uint8 0/1)`` of every annotation of ``image_id``.

    Non-crowd polygon annotations whose first polygon has fewer than ``min_polygon_coords``
    coordinates are skipped, as the original (≤ 4 coordinates); crowd RLEs are included.
    """
    out = []
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        seg = ann.get("segmentation")
        if (
            not ann.get("iscrowd", 0)
            and isinstance(seg, list)
            and (not seg or len(seg[0]) < min_polygon_coords)
        ):
            continue
        try:
            m = coco.annToMask(ann)
        except Exception as e:  # noqa: BLE001 - pycocotools raises bare errors
            raise DataError(
                f"annotation {ann.get('id')} of image {image_id}: cannot decode its"
                f" segmentation: {e}"
            ) from None
        out.append((int(ann["category_id"]), m.astype(np.uint8)))
    return out


def crop_square(mask: np.ndarray) -> np.ndarray:
    """Centre square of ``mask`` (offset ``int((long − short)/2)``), like a centre crop."""
    h, w = mask.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return mask[top : top + s, left : left + s]


def token_masks(
    masks: list[tuple[int, np.ndarray]], grid_hw: tuple[int, int], *, crop: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Soft token masks ``[A, gh, gw]`` (each summing to 1) and their category ids ``[A]``.

    Each 0/255 mask is centre-cropped to a square when ``crop`` (the ``center`` view),
    resized to the grid with bicubic filtering (PIL's default for 8-bit masks, as the
    original), clipped at 0; masks that become all zero are dropped.
    """
    gh, gw = grid_hw
    soft, cats = [], []
    for cat, m in masks:
        if crop:
            m = crop_square(m)
        small = np.asarray(
            Image.fromarray((m > 0).astype(np.uint8) * 255).resize(
                (gw, gh), Image.Resampling.BICUBIC
            ),
            dtype=np.float64,
        )
        s = small.sum()
        if s <= 0:
            continue
        soft.append(small / s)
        cats.append(cat)
    if not soft:
        return np.zeros((0, gh, gw)), np.zeros((0,), dtype=np.int64)
    return np.stack(soft), np.asarray(cats, dtype=np.int64)


def davis_mask(path: str | os.PathLike) -> np.ndarray:
    """A DAVIS annotation (palette PNG) as ``[H, W]`` object ids (0 = background)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DataError(f"DAVIS annotation {path} is mode {im.mode}, not a palette PNG")
            return np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(f"DAVIS annotation {path} does not exist") from None
