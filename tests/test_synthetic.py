"""The synthetic world: determinism, and every part in its real dataset's format with
annotations that describe the drawn pixels exactly."""

from __future__ import annotations

import contextlib
import io
import json
import math
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitlib.data import synthetic as S

# pycocotools' decode under numpy 2 warns on every call (annToMask).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _coco(path: Path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    t = time.perf_counter()
    S.generate(out, seed=0, size="tiny")
    dt = time.perf_counter() - t
    n = len(_files(out))
    print(f"\ntiny synthetic world: {n} files in {dt:.2f} s")
    assert n > 200
    assert dt < 30  # ~2 s alone; generous for a loaded machine
    return out


def test_same_seed_is_byte_identical_other_seed_differs(world, tmp_path):
    a = _files(world)
    S.generate(tmp_path / "b", seed=0, size="tiny")
    b = _files(tmp_path / "b")
    assert len(a) > 200 and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    S.generate(tmp_path / "c", seed=1, size="tiny", parts=["coco", "imagenet"])
    c = _files(tmp_path / "c")
    common = [k for k in c if k in a and k.endswith((".png", ".jpg"))]
    assert len(common) > 50
    assert sum(a[k] != c[k] for k in common) >= 0.9 * len(common)


def test_imagenet_folders_and_overrides(world, tmp_path):
    train = world / "imagenet" / "train"
    assert sorted(p.name for p in train.iterdir()) == sorted(S.CLASSES[:4])
    for cdir in train.iterdir():
        files = sorted(p.name for p in cdir.iterdir())
        assert files == [f"{i:04d}.png" for i in range(8)]
        with Image.open(cdir / files[0]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    val = world / "imagenet" / "val"
    assert sum(1 for _ in val.rglob("*.png")) == 4 * 4
    # Different stream: no validation image equals a training one.
    assert {p.read_bytes() for p in val.rglob("*.png")}.isdisjoint(
        {p.read_bytes() for p in train.rglob("*.png")}
    )
    S.generate(tmp_path / "o", size="tiny", parts="imagenet", classes=3, per_class=2, image_size=40)
    files = sorted((tmp_path / "o" / "imagenet" / "train").rglob("*.png"))
    assert len(files) == 6 and {f.parent.name for f in files} == set(S.CLASSES[:3])
    with Image.open(files[0]) as im:
        assert im.size == (40, 40)
    w = json.loads((tmp_path / "o" / "world.json").read_text())
    assert (w["classes"], w["per_class"], w["image_size"]) == (3, 2, 40)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["imagenet", "world.json"]


def test_parts_argument_and_aliases(tmp_path):
    S.generate(tmp_path, size="tiny", parts="revisited,davis")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["davis", "rsynth", "world.json"]
    assert set(json.loads((tmp_path / "world.json").read_text())["parts"]) == {"retrieval", "davis"}
    with pytest.raises(ValueError):
        S.generate(tmp_path / "x", parts=["nope"])


def test_part_polygons_tile_the_object_mask_exactly():
    rng = np.random.default_rng(0)
    n = 0
    for k in range(len(S.CLASSES)):
        for _ in range(15):
            h, w = 50, 70
            o = S._new_obj(
                rng,
                k,
                rng.uniform(-5, 75),
                rng.uniform(-5, 55),
                rng.uniform(3, 30),
                rng.uniform(0, 7),
            )
            rgb, ids = np.zeros((h, w, 3)), np.zeros((h, w), np.int32)
            parts = S.paint(rgb, ids, o, 1)
            whole = S.rasterise([S.object_polygon(o)], h, w)
            stack = np.stack(parts).astype(int)
            assert stack.sum(0).max() <= 1  # disjoint
            np.testing.assert_array_equal(stack.sum(0) > 0, whole)  # tile the object
            np.testing.assert_array_equal(ids == 1, whole)  # = the painted pixels
            n += whole.any()
    assert n > 100
    for k in range(len(S.CLASSES)):
        sh = S._shape(k)
        assert len(sh.keypoints) == len(S.KEYPOINTS) >= 5
        assert all(len(loops) >= 1 for loops in sh.parts) and len(sh.parts) == 3
        assert np.abs(sh.verts).max() <= 1.0 + 1e-9


def test_coco(world):
    from pycocotools import mask as mask_utils

    root = world / "coco"
    d = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    assert set(d) >= {"info", "licenses", "images", "annotations", "categories"}
    assert d["licenses"] == []
    assert [c["id"] for c in d["categories"]] == [2 * k + 1 for k in range(len(S.CLASSES))]
    assert {c["supercategory"] for c in d["categories"]} == {"shape"}
    ids = [im["id"] for im in d["images"]]
    assert len(ids) == 12 and ids == sorted(ids) and ids[1] - ids[0] > 1
    coco = _coco(root / "annotations" / "instances_val2017.json")
    assert len(coco.getAnnIds()) > 12
    empty = [i for i in ids if not coco.getAnnIds(imgIds=[i])]
    assert len(empty) == 1
    crowd = 0
    for index, info in enumerate(d["images"]):
        assert info["file_name"] == f"{info['id']:012d}.jpg"
        assert (info["width"], info["height"]) == (96, 72)
        with Image.open(root / "images" / "val2017" / info["file_name"]) as im:
            assert im.size == (96, 72) and im.format == "JPEG"
        _, idmap, _ = S.coco_image(0, index, 96, 72, 12)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[info["id"]]))
        assert 1 <= len([a for a in anns if not a["iscrowd"]]) <= 3 or info["id"] in empty
        for j, a in enumerate(sorted(anns, key=lambda a: a["id"])):
            m = coco.annToMask(a)
            assert m.any() and m.sum() == a["area"] and isinstance(a["area"], float)
            np.testing.assert_array_equal(m > 0, idmap == j + 1)  # exactly the drawn pixels
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [
                float(xs.min()),
                float(ys.min()),
                float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1),
            ]
            if a["iscrowd"]:
                crowd += 1
                seg = a["segmentation"]
                assert isinstance(seg["counts"], list) and seg["size"] == [72, 96]
                assert sum(seg["counts"]) == 72 * 96
                rle = mask_utils.frPyObjects(seg, 72, 96)
                np.testing.assert_array_equal(mask_utils.decode(rle), m)
            else:
                assert all(len(p) >= 6 for p in a["segmentation"]) and a["segmentation"]
    assert crowd >= 1


def test_partimagenet(world):
    root = world / "partimagenet"
    index = json.loads((root / "imagenet_class_index.json").read_text())
    assert {v[0] for v in index.values()} == {S.wnid(k) for k in range(len(S.CLASSES))}
    assert all(len(v[0]) == 9 and v[0][0] == "n" for v in index.values())
    split_of: dict[str, str] = {}
    checked = 0
    for split in ("train", "val", "test"):
        d = json.loads((root / f"{split}.json").read_text())
        cats = d["categories"]
        assert [c["id"] for c in cats] == list(range(3 * len(S.SUPERCATEGORIES)))
        assert len({c["supercategory"] for c in cats}) >= 3
        assert {c["name"] for c in cats} == {"Head", "Body", "Tail"}
        assert d["images"]
        coco = _coco(root / f"{split}.json")
        for info in d["images"]:
            w_, fn = info["file_name"].split("/")
            assert split_of.setdefault(w_, split) == split  # each class in one split
            assert fn.startswith(w_ + "_") and fn.endswith(".JPEG")
            assert (root / split / info["file_name"]).is_file()
            k, n = int(w_[1:]) - 90000000, int(fn[len(w_) + 1 : -5])
            _, idmap, _ = S.partimagenet_image(0, k, n, info["width"], info["height"])
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[info["id"]]))
            assert anns
            masks = []
            for a in anns:
                assert a["iscrowd"] == 0 and all(len(p) >= 6 for p in a["segmentation"])
                assert cats[a["category_id"]]["supercategory"] == S.SUPERCATEGORIES[k // 2]
                m = coco.annToMask(a)
                assert m.any() and m.sum() == a["area"]
                masks.append(m.astype(int))
            total = np.sum(masks, 0)
            assert total.max() == 1  # parts disjoint
            assert not (total.astype(bool) & (idmap == 0)).any()  # inside the object
            np.testing.assert_array_equal(total > 0, idmap == 1)  # and tile it
            checked += 1
    assert checked == 30
    assert {s for s in split_of.values()} == {"train", "val", "test"}
    assert list(split_of.values()).count("train") > list(split_of.values()).count("val")


def test_retrieval(world):
    root = world / "rsynth"
    raw = (root / "gnd_rsynth.pkl").read_bytes()
    assert raw[:2] == b"\x80\x04"  # protocol 4
    d = pickle.loads(raw)
    imlist, qimlist = d["imlist"], d["qimlist"]
    assert len(imlist) == 4 * 6 + 8 and len(qimlist) == 4 == len(d["gnd"])
    assert not set(imlist) & set(qimlist)
    for n in imlist + qimlist:
        with Image.open(root / "jpg" / f"{n}.jpg") as im:
            assert im.size == (96, 72)
    seen = set()
    for g in d["gnd"]:
        e, h, j = set(g["easy"]), set(g["hard"]), set(g["junk"])
        assert len(e) == 3 and len(h) == 2 and len(j) == 1
        assert not (e & h or e & j or h & j)
        assert all(0 <= i < len(imlist) for i in e | h | j)
        seen |= e | h | j
        x1, y1, x2, y2 = g["bbx"]
        assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 72
    assert len(seen) == 24  # the other 8 are distractors


def test_davis(world):
    root = world / "davis"
    val = (root / "ImageSets" / "2017" / "val.txt").read_text().split()
    train = (root / "ImageSets" / "2017" / "train.txt").read_text().split()
    assert len(val) == 2 and len(train) == 1 and not set(val) & set(train)
    pal = S.voc_palette()
    for seq in val + train:
        assert seq == seq.lower() and "-" in seq and " " not in seq
        frames = sorted((root / "JPEGImages" / "480p" / seq).iterdir())
        assert [f.name for f in frames] == [f"{t:05d}.jpg" for t in range(8)]
        n = None
        for f in frames:
            with Image.open(f) as im:
                assert im.size == (112, 64)
            with Image.open(root / "Annotations" / "480p" / seq / f"{f.stem}.png") as a:
                assert a.mode == "P" and a.size == (112, 64)
                assert a.getpalette()[:30] == pal[:30]
                m = np.asarray(a)
            if n is None:
                n = int(m.max())
                assert 1 <= n <= 3
                assert set(np.unique(m)) == set(range(n + 1))  # every object in frame 0
            assert m.max() <= n


def test_spair(world):
    root = world / "spair"
    cats = sorted(p.name for p in (root / "ImageAnnotation").iterdir())
    assert cats == sorted(S.SPAIR_CLASSES[:3])
    n_pairs = 0
    for split, want in (("trn", 2), ("val", 2), ("test", 8)):
        listed = (root / "Layout" / "large" / f"{split}.txt").read_text().split()
        files = sorted((root / "PairAnnotation" / split).iterdir())
        assert sorted(p.name[:-5] for p in files) == sorted(listed)
        assert len(files) == want * 3
        for p in files:
            assert ":" in p.name and p.name.endswith(".json")
            d = json.loads(p.read_text())
            cat = d["category"]
            assert p.name == f"{d['filename']}.json" and p.name.endswith(f":{cat}.json")
            assert p.name.startswith(
                f"{d['pair_id']:06d}-{d['src_imname'][:-4]}-{d['trg_imname'][:-4]}:"
            )
            assert len(d["src_kps"]) == len(d["trg_kps"]) == len(d["kps_ids"]) >= 3
            assert d["mirror"] == 0
            for side in ("src", "trg"):
                w, h, c = d[f"{side}_imsize"]
                assert c == 3 and 64 <= w <= 96 and 64 <= h <= 96
                x1, y1, x2, y2 = d[f"{side}_bndbox"]
                assert 0 <= x1 <= x2 < w and 0 <= y1 <= y2 < h
                ann = json.loads(
                    (
                        root / "ImageAnnotation" / cat / f"{d[side + '_imname'][:-4]}.json"
                    ).read_text()
                )
                assert ann["filename"] == d[f"{side}_imname"]
                assert (ann["image_width"], ann["image_height"]) == (w, h)
                with Image.open(root / "JPEGImages" / cat / d[f"{side}_imname"]) as im:
                    assert im.size == (w, h)
                for kid, (x, y) in zip(d["kps_ids"], d[f"{side}_kps"]):
                    assert 0 <= x < w and 0 <= y < h
                    assert ann["kps"][str(kid)] == [x, y]
            for key in ("viewpoint_variation", "scale_variation", "truncation", "occlusion"):
                assert d[key] in (0, 1, 2)
            n_pairs += 1
    assert n_pairs == 36
    ann = json.loads(next((root / "ImageAnnotation" / cats[0]).iterdir()).read_text())
    assert set(ann["kps"]) == {str(i) for i in range(len(S.KEYPOINTS))}
    assert len(ann["filename"]) == len("2008_000123.jpg")


def test_world_json(world):
    w = json.loads((world / "world.json").read_text())
    assert (w["seed"], w["size"]) == (0, "tiny")
    assert list(w["parts"]) == list(S.PARTS)
    assert w["parts"]["coco"]["images"] == 12 and w["parts"]["coco"]["empty_images"] == 1


# ------------------------------------------------- nuisances drawn independently of the class
def _nearest_centroid_accuracy(xtr, ytr, xte, yte) -> float:
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-9
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    centroids = np.stack([xtr[ytr == k].mean(0) for k in np.unique(ytr)])
    pred = ((xte[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    return float((pred == yte).mean())


def test_colour_does_not_tell_the_class_the_outline_does():
    """The ImageNet part's own draws (train stream: 40 per class; held out: the val stream,
    20 per class) of all ten classes: a nearest-centroid classifier on the object's mean
    colour, the image's mean colour or the object's colour spread (texture contrast) is near
    chance (0.1; the class-palette world scored 1.0 on the object's mean colour), the same
    classifier on the object mask's radial profile (the outline) is far above it."""
    from vitlib.data.synthetic.common import _rng

    def features(stream: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        colour, outline, y = [], [], []
        for k in range(len(S.CLASSES)):
            for i in range(n):
                im, ids = S.imagenet_image(_rng(0, "imagenet", stream, k, i), k, 64)
                a, m = np.asarray(im, dtype=np.float64), ids == 1
                colour.append([*a[m].mean(0), *a.reshape(-1, 3).mean(0), *a[m].std(0)])
                ys, xs = np.nonzero(m)
                d = np.hypot(xs - xs.mean(), ys - ys.mean())
                outline.append(np.histogram(d / d.max(), 8, (0, 1))[0] / len(d))
                y.append(k)
        return np.array(colour), np.array(outline), np.array(y)

    ctr, otr, ytr = features(0, 40)
    cte, ote, yte = features(1, 20)
    chance = 1 / len(S.CLASSES)
    acc = {
        name: _nearest_centroid_accuracy(ctr[:, cols], ytr, cte[:, cols], yte)
        for name, cols in (
            ("object colour", [0, 1, 2]),
            ("image colour", [3, 4, 5]),
            ("object colour spread", [6, 7, 8]),
            ("all colour", list(range(9))),
        )
    }
    acc["outline"] = _nearest_centroid_accuracy(otr, ytr, ote, yte)
    print(acc)
    for name in ("object colour", "image colour", "object colour spread", "all colour"):
        assert acc[name] <= 2 * chance, (name, acc[name])
    assert acc["outline"] >= 0.8


def test_retrieval_positives_are_the_same_objects_under_new_nuisances(world, tmp_path):
    """Views of a landmark share its objects' classes and world poses exactly (their pixels
    map back through each view's camera to the same world centroid), but draw a new
    backdrop and new object colours and textures; the files written are these views."""
    from vitlib.data.synthetic.common import _save_jpeg

    w, h = 96, 72
    obj_dist, bg_dist, centroid_err = [], [], []
    for L in range(4):
        base = S.landmark_scene(0, L, w, h)
        views = [S.landmark_view(0, L, "easy", i, i, w, h) for i in range(3)]
        views.append(S.landmark_view(0, L, "query", 0, 0, w, h))
        for _, ids, scene, _ in views:
            assert [(o.k, o.cx, o.cy, o.r, o.rot) for o in scene.objects] == [
                (o.k, o.cx, o.cy, o.r, o.rot) for o in base.objects
            ]
            assert set(np.unique(ids)) <= set(range(len(base.objects) + 1))
        for (im1, ids1, s1, c1), (im2, ids2, s2, c2) in zip(views, views[1:]):
            assert not np.allclose(s1.backdrop.c0, s2.backdrop.c0)
            a1, a2 = np.asarray(im1, dtype=np.float64), np.asarray(im2, dtype=np.float64)
            bg_dist.append(np.linalg.norm(a1[ids1 == 0].mean(0) - a2[ids2 == 0].mean(0)))
            for n, (o1, o2) in enumerate(zip(s1.objects, s2.objects)):
                assert not np.allclose(o1.colours, o2.colours)
                m1, m2 = ids1 == n + 1, ids2 == n + 1
                obj_dist.append(np.linalg.norm(a1[m1].mean(0) - a2[m2].mean(0)))
                wc = []
                for m, cam in ((m1, c1), (m2, c2)):
                    ys, xs = np.nonzero(m)
                    if xs.min() == 0 or ys.min() == 0 or xs.max() == w - 1 or ys.max() == h - 1:
                        break  # cut by the image border: its visible centroid moves
                    wx, wy = cam.inverse((w, h), (w, h), xs + 0.5, ys + 0.5)
                    wc.append((wx.mean(), wy.mean()))
                else:
                    centroid_err.append(math.dist(*wc))
        # the database files are these views (JPEG written with the same settings)
        name = S.LANDMARK_NAMES[L]
        for j in range(3):
            got = (world / "rsynth" / "jpg" / f"{name}_{100 * L + j:06d}.jpg").read_bytes()
            p = tmp_path / f"view{L}_{j}.jpg"
            _save_jpeg(views[j][0], p)
            assert p.read_bytes() == got
    print(
        f"object colour change {np.median(obj_dist):.0f} (min {min(obj_dist):.0f}), background "
        f"{np.median(bg_dist):.0f}, world centroid error max {max(centroid_err):.2f} px "
        f"over {len(centroid_err)} objects"
    )
    assert np.median(obj_dist) > 60 and np.mean(np.array(obj_dist) > 20) >= 0.9
    assert np.median(bg_dist) > 30
    assert len(centroid_err) >= 15 and max(centroid_err) < 1.0


def test_davis_distractors_share_colours_but_not_annotations(world):
    """Every sequence has 2 or 3 distractors of classes no annotated object has, each with
    the very colours and texture of an annotated object: drawn in the frames (under the
    objects) but background (0) in the annotation PNGs."""
    from vitlib.data.synthetic.draw import Camera, render_backdrop

    root = world / "davis"
    seqs = (root / "ImageSets" / "2017" / "val.txt").read_text().split()
    seqs += (root / "ImageSets" / "2017" / "train.txt").read_text().split()
    w, h, frames = 112, 64, 8
    for s, seq in enumerate(seqs):
        sc = S.davis_scene(0, s, w, h)
        assert sc.name == seq and 2 <= len(sc.distractors) <= 3
        classes = {o.k for o in sc.objects}
        assert len(set(sc.twin)) == min(len(sc.objects), len(sc.distractors))
        for d, i in zip(sc.distractors, sc.twin):
            tw = sc.objects[i]
            assert d.k not in classes
            np.testing.assert_array_equal(d.colours, tw.colours)
            assert (d.tex, d.freq, d.phase, d.amp) == (tw.tex, tw.freq, tw.phase, tw.amp)
        visible = np.zeros((frames, len(sc.distractors)), int)
        for t in range(frames):
            rgb, ids, dids = sc.frame(t, frames, w, h)
            with Image.open(root / "Annotations" / "480p" / seq / f"{t:05d}.png") as a:
                ann = np.asarray(a)
            np.testing.assert_array_equal(ann, ids)
            assert not (ann[dids > 0]).any()  # distractors are background
            with Image.open(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg") as im:
                frame = np.asarray(im.convert("RGB"), dtype=np.float64)
            pan = -sc.pan * t / (frames - 1)
            bare = render_backdrop(sc.backdrop, w, h, Camera(1.0, 0.0, pan[0], pan[1]))
            for j in range(len(sc.distractors)):
                m = dids == j + 1
                visible[t, j] = m.sum()
                if m.sum() >= 30:  # in the frame: not the backdrop, its twin's very colours
                    assert np.abs(frame[m] - bare[m]).mean() > 20
                    assert np.abs(frame[m].mean(0) - rgb[m].mean(0)).max() < 8  # as drawn
                    o = sc.objects[sc.twin[j]]
                    shades = np.concatenate([o.colours, o.colours * (1 - o.amp)])
                    gap = np.abs(rgb[m][:, None] - shades[None]).max(-1).min(1)
                    assert gap.max() < 1e-9
        assert (visible[0] >= 30).all()  # every distractor starts in view
        assert (visible >= 10).mean() >= 0.8
