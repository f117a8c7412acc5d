"""The ``spair`` part: SPair-71k, ``spair/JPEGImages/<cat>/<im>.jpg``,
``spair/ImageAnnotation/<cat>/<im>.json``, ``spair/PairAnnotation/{trn,val,test}/<id>-<src>-
<trg>:<cat>.json`` and ``spair/Layout/large/{trn,val,test}.txt``."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlib.data.synthetic.common import (
    CLASSES,
    KEYPOINTS,
    PART_SIZES,
    SPAIR_CLASSES,
    _rng,
    _save_jpeg,
    _write_json,
)
from vitlib.data.synthetic.draw import (
    _backdrop,
    _finish,
    _hsv,
    _new_obj,
    _points,
    _polygon_obj,
    keypoints,
    paint,
    rasterise,
    render_backdrop,
)


def spair_image(
    seed: int, c: int, i: int, min_side: int, max_side: int
) -> tuple[Image.Image, dict[str, Any]]:
    """Image ``i`` of SPair category ``c``: the image and its ImageAnnotation fields."""
    rng = _rng(seed, "spair", 0, c, i)
    k = CLASSES.index(SPAIR_CLASSES[c])
    w, h = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
    b = _backdrop(rng)
    rgb = render_backdrop(b, w, h)
    ids = np.zeros((h, w), np.int32)
    r = rng.uniform(0.55, 0.9) * min(w, h) / 2
    truncate = rng.random() < 0.2
    if truncate:  # centre near an edge: part of the object leaves the image
        cx, cy = rng.uniform(0.15 * r, w - 0.15 * r), rng.uniform(0.15 * r, h - 0.15 * r)
        side = int(rng.integers(4))
        cx, cy = ((0.4 * r, cy), (w - 0.4 * r, cy), (cx, 0.4 * r), (cx, h - 0.4 * r))[side]
    else:
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    rot = rng.uniform(-math.pi / 3, math.pi / 3)
    o = _new_obj(rng, k, cx, cy, r, rot)
    paint(rgb, ids, o, 1)
    full = ids.sum()
    occluded = rng.random() < 0.2
    if occluded:  # a flat patch over part of the object
        ang = rng.uniform(0, 2 * np.pi)
        q = _polygon_obj(rng, cx + 0.9 * r * math.cos(ang), cy + 0.9 * r * math.sin(ang), 0.6 * r)
        m = rasterise([q.ravel().tolist()], h, w)
        rgb[m] = _hsv(rng.uniform(), rng.uniform(0, 0.25), rng.uniform(0.2, 0.7))
        ids[m] = 0
    kp = keypoints(o)
    kps: dict[str, Any] = {}
    for j, (x, y) in enumerate(kp):
        xi, yi = int(math.floor(x)), int(math.floor(y))
        vis = 0 <= xi < w and 0 <= yi < h and ids[yi, xi] == 1
        kps[str(j)] = [xi, yi] if vis else None
    ys, xs = np.nonzero(ids)
    trunc = int(any(not (0 <= x < w and 0 <= y < h) for x, y in _points(o)))
    occ = int(occluded and ids.sum() < full)
    azimuth = int((rot + math.pi) / (2 * math.pi) * 8) % 8
    ann = {
        "filename": "",
        "src_database": "synthetic",
        "anno_date": "",
        "image_width": w,
        "image_height": h,
        "image_depth": 3,
        "category": SPAIR_CLASSES[c],
        "pose": "Unspecified",
        "truncated": trunc,
        "occluded": occ,
        "difficult": 0,
        "bndbox": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())],
        "kps": kps,
        "azimuth_id": azimuth,
    }
    return _finish(rgb, rng, b.noise), ann


def spair_imname(c: int, i: int) -> str:
    return f"{2008 + (c + i) % 5}_{100 + 1000 * c + 37 * i:06d}"


def generate_spair(out: str | os.PathLike, *, seed: int = 0, size: str = "tiny") -> dict[str, Any]:
    """``out/spair``: SPair-71k layout (``:`` in pair file names, as the official release)."""
    p = PART_SIZES[size]["spair"]
    base = Path(out) / "spair"
    layout: dict[str, list[str]] = {"trn": [], "val": [], "test": []}
    pair_id = 0
    for c in range(p["categories"]):
        cat = SPAIR_CLASSES[c]
        anns = []
        for i in range(p["per_category"]):
            im, ann = spair_image(seed, c, i, p["min_side"], p["max_side"])
            nm = spair_imname(c, i)
            ann["filename"] = f"{nm}.jpg"
            _save_jpeg(im, base / "JPEGImages" / cat / f"{nm}.jpg")
            _write_json(base / "ImageAnnotation" / cat / f"{nm}.json", ann, indent=1)
            anns.append(ann)
        rng = _rng(seed, "spair", 1, c)
        seen: set[tuple[int, int]] = set()
        for split in ("trn", "val", "test"):
            made, tries = 0, 0
            while made < p["pairs"][split] and tries < 1000:
                tries += 1
                a, b = (int(v) for v in rng.choice(len(anns), 2, replace=False))
                if (a, b) in seen:
                    continue
                sa, ta = anns[a], anns[b]
                common = [
                    int(j)
                    for j in sa["kps"]
                    if sa["kps"][j] is not None and ta["kps"][j] is not None
                ]
                if len(common) < 3:
                    continue
                seen.add((a, b))
                made += 1
                pair_id += 1
                src, trg = sa["filename"][:-4], ta["filename"][:-4]
                fname = f"{pair_id:06d}-{src}-{trg}:{cat}"
                sb, tb = sa["bndbox"], ta["bndbox"]
                area = lambda bb: max(1, (bb[2] - bb[0]) * (bb[3] - bb[1]))  # noqa: E731
                ratio = max(area(sb), area(tb)) / min(area(sb), area(tb))
                daz = abs(sa["azimuth_id"] - ta["azimuth_id"])
                daz = min(daz, 8 - daz)
                pair = {
                    "pair_id": pair_id,
                    "filename": fname,
                    "src_imname": sa["filename"],
                    "trg_imname": ta["filename"],
                    "src_imsize": [sa["image_width"], sa["image_height"], 3],
                    "trg_imsize": [ta["image_width"], ta["image_height"], 3],
                    "src_bndbox": sb,
                    "trg_bndbox": tb,
                    "category": cat,
                    "src_pose": sa["pose"],
                    "trg_pose": ta["pose"],
                    "src_kps": [sa["kps"][str(j)] for j in common],
                    "trg_kps": [ta["kps"][str(j)] for j in common],
                    "kps_ids": common,
                    "mirror": 0,
                    "viewpoint_variation": min(2, daz),
                    "scale_variation": 0 if ratio < 1.5 else (1 if ratio < 2.5 else 2),
                    "truncation": sa["truncated"] + ta["truncated"],
                    "occlusion": sa["occluded"] + ta["occluded"],
                }
                _write_json(base / "PairAnnotation" / split / f"{fname}.json", pair, indent=1)
                layout[split].append(fname)
    ldir = base / "Layout" / "large"
    ldir.mkdir(parents=True, exist_ok=True)
    for split, lst in layout.items():
        (ldir / f"{split}.txt").write_text("".join(f"{x}\n" for x in lst))
    return {
        **{k: v for k, v in p.items()},
        "category_names": list(SPAIR_CLASSES[: p["categories"]]),
        "pair_counts": {s: len(v) for s, v in layout.items()},
        "keypoints": list(KEYPOINTS),
    }
