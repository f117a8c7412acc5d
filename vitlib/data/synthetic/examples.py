"""The example figures of a generated world (``example_{image,mask,parts,keypoints,
retrieval,davis}.png``), rendered from the written files only."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vitlib.data.synthetic.common import CLASSES
from vitlib.data.synthetic.davis import voc_palette


def _overlay(
    img: Image.Image, ids: np.ndarray, alpha: float = 0.5, palette: list[int] | None = None
) -> Image.Image:
    pal = np.asarray(palette or voc_palette(), dtype=np.float64).reshape(-1, 3)
    a = np.asarray(img.convert("RGB"), dtype=np.float64)
    m = ids > 0
    a[m] = (1 - alpha) * a[m] + alpha * pal[ids[m] % len(pal)]
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def _upscale(im: Image.Image, f: int) -> Image.Image:
    return im.resize((im.width * f, im.height * f), Image.Resampling.NEAREST)


def _hstack(
    ims: list[Image.Image], gap: int = 4, bg: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    w = sum(i.width for i in ims) + gap * (len(ims) - 1)
    h = max(i.height for i in ims)
    out = Image.new("RGB", (w, h), bg)
    x = 0
    for i in ims:
        out.paste(i, (x, 0))
        x += i.width + gap
    return out


def _vstack(
    ims: list[Image.Image], gap: int = 4, bg: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    w = max(i.width for i in ims)
    h = sum(i.height for i in ims) + gap * (len(ims) - 1)
    out = Image.new("RGB", (w, h), bg)
    y = 0
    for i in ims:
        out.paste(i, (0, y))
        y += i.height + gap
    return out


def render_examples(world_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Render the example figures of the world at ``world_dir`` (all parts) into ``out_dir``:
    ``example_{image,mask,parts,keypoints,retrieval,davis}.png``.  Reads only the written
    files."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    wd, od = Path(world_dir), Path(out_dir)
    od.mkdir(parents=True, exist_ok=True)
    written = []

    def save(im: Image.Image, name: str) -> None:
        p = od / name
        im = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        im.save(p, "PNG", optimize=True)
        written.append(p)

    # ImageNet: one per class, captioned.
    tiles = []
    for cdir in sorted((wd / "imagenet" / "train").iterdir(), key=lambda p: CLASSES.index(p.name)):
        im = _upscale(Image.open(sorted(cdir.iterdir())[0]).convert("RGB"), 2)
        cap = Image.new("RGB", (im.width, 14), (255, 255, 255))
        ImageDraw.Draw(cap).text((2, 1), cdir.name, fill=(0, 0, 0))
        tiles.append(_vstack([im, cap], gap=0))
    rows = [_hstack(tiles[i : i + 5]) for i in range(0, len(tiles), 5)]
    save(_vstack(rows), "example_image.png")

    def load(path: Path) -> Any:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))

    # COCO: images with most annotations, masks overlaid (crowd in white).
    coco = load(wd / "coco" / "annotations" / "instances_val2017.json")
    ids_sorted = sorted(coco.getImgIds(), key=lambda i: (-len(coco.getAnnIds(imgIds=[i])), i))
    shown = []
    for iid in ids_sorted[:3]:
        info = coco.loadImgs([iid])[0]
        im = Image.open(wd / "coco" / "images" / "val2017" / info["file_name"]).convert("RGB")
        idm = np.zeros((info["height"], info["width"]), np.int32)
        for j, a in enumerate(coco.loadAnns(coco.getAnnIds(imgIds=[iid]))):
            idm[coco.annToMask(a) > 0] = 255 if a["iscrowd"] else j + 1
        pal = voc_palette()
        pal[255 * 3 : 255 * 3 + 3] = [255, 255, 255]
        shown.append(_hstack([_upscale(im, 2), _upscale(_overlay(im, idm, 0.6, pal), 2)]))
    save(_vstack(shown), "example_mask.png")

    # PartImageNet: image and part map (Head red, Body green, Tail blue).
    shown = []
    for split in ("train", "val", "test"):
        pin = load(wd / "partimagenet" / f"{split}.json")
        iid = sorted(pin.getImgIds())[0]
        info = pin.loadImgs([iid])[0]
        im = Image.open(wd / "partimagenet" / split / info["file_name"]).convert("RGB")
        pm = np.zeros((info["height"], info["width"]), np.int32)
        for a in pin.loadAnns(pin.getAnnIds(imgIds=[iid])):
            pm[pin.annToMask(a) > 0] = a["category_id"] % 3 + 1
        pal = [0, 0, 0, 230, 40, 40, 40, 200, 40, 40, 80, 230]
        shown.append(_hstack([_upscale(im, 2), _upscale(_overlay(im, pm, 0.65, pal), 2)]))
    save(_vstack(shown), "example_parts.png")

    # SPair: a test pair with its matched keypoints.
    pdir = wd / "spair" / "PairAnnotation" / "test"
    pf = sorted(pdir.iterdir(), key=lambda p: p.name)
    pairs = [json.loads(p.read_text()) for p in pf[:30]]
    pair = max(
        pairs,
        key=lambda d: (
            len(d["kps_ids"]) - 3 * (d["truncation"] + d["occlusion"]),
            d["viewpoint_variation"],
        ),
    )
    f = 3
    src = _upscale(
        Image.open(wd / "spair" / "JPEGImages" / pair["category"] / pair["src_imname"]).convert(
            "RGB"
        ),
        f,
    )
    trg = _upscale(
        Image.open(wd / "spair" / "JPEGImages" / pair["category"] / pair["trg_imname"]).convert(
            "RGB"
        ),
        f,
    )
    gap = 12
    canvas = _hstack([src, trg], gap=gap)
    d = ImageDraw.Draw(canvas)
    kp_pal = np.asarray(voc_palette(), dtype=int).reshape(-1, 3)
    for j, (a, b) in enumerate(zip(pair["src_kps"], pair["trg_kps"])):
        col = tuple(int(v) for v in kp_pal[pair["kps_ids"][j] + 1])
        xa, ya = (a[0] + 0.5) * f, (a[1] + 0.5) * f
        xb, yb = (b[0] + 0.5) * f + src.width + gap, (b[1] + 0.5) * f
        d.line([(xa, ya), (xb, yb)], fill=col, width=1)
        for x, y in ((xa, ya), (xb, yb)):
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col, outline=(255, 255, 255))
    save(canvas, "example_keypoints.png")

    # Retrieval: per landmark of the first queries, the query and some of its easy, hard and
    # junk database images (same objects, every nuisance redrawn), captioned.
    with open(wd / "rsynth" / "gnd_rsynth.pkl", "rb") as fh:
        gnd = pickle.load(fh)
    rows, landmarks = [], set()
    for q, g in zip(gnd["qimlist"], gnd["gnd"]):
        lm = q.rsplit("_q", 1)[0]
        if lm in landmarks or len(rows) == 3:
            continue
        landmarks.add(lm)
        shown_ = [(q, "query")] + [
            (n, role)
            for role, k in (("easy", 3), ("hard", 2), ("junk", 1))
            for n in sorted(gnd["imlist"][i] for i in g[role])[:k]
        ]
        tiles = []
        for n, role in shown_:
            im = Image.open(wd / "rsynth" / "jpg" / f"{n}.jpg").convert("RGB")
            cap = Image.new("RGB", (im.width, 14), (255, 255, 255))
            ImageDraw.Draw(cap).text((2, 1), f"{lm} {role}", fill=(0, 0, 0))
            tiles.append(_vstack([im, cap], gap=0))
        rows.append(_hstack(tiles))
    save(_vstack(rows), "example_retrieval.png")

    # DAVIS: frames of the val sequence with most objects, masks overlaid below.
    def n_objects(seq: str) -> int:
        first = sorted((wd / "davis" / "Annotations" / "480p" / seq).iterdir())[0]
        return int(np.asarray(Image.open(first)).max())

    seqs = (wd / "davis" / "ImageSets" / "2017" / "val.txt").read_text().split()
    seq = max(seqs, key=lambda s: (n_objects(s), -seqs.index(s)))
    fdir = wd / "davis" / "JPEGImages" / "480p" / seq
    frames = sorted(fdir.iterdir())
    top, bot = [], []
    for fp in [frames[round(i * (len(frames) - 1) / 3)] for i in range(4)]:
        im = Image.open(fp).convert("RGB")
        m = np.asarray(Image.open(wd / "davis" / "Annotations" / "480p" / seq / (fp.stem + ".png")))
        top.append(im)
        bot.append(_overlay(im, m.astype(np.int32), 0.6))
    save(_vstack([_hstack(top, 2), _hstack(bot, 2)], 2), "example_davis.png")
    return written
