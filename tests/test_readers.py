"""Readers on small hand-written fixtures in each dataset's format: ordering, sampling,
labels, and bad input (the error names the file, key or value; skip_bad_images)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from vitlib.data.annotations import annotation_masks, load_coco_api, token_masks
from vitlib.data.manifest import DataError, Manifest
from vitlib.data.readers import (
    build_manifest,
    imagenet50_classes,
    read_coco,
    read_davis,
    read_imagenet50,
    read_partimagenet,
    read_revisited,
    read_spair,
)


def _img(path, size=(40, 30), colour=(120, 30, 200)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _poly(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _coco(tmp_path):
    root = tmp_path / "coco"
    images = [
        {"id": 42, "file_name": "b.jpg", "width": 40, "height": 30},
        {"id": 7, "file_name": "a.jpg", "width": 40, "height": 30},
        {"id": 9, "file_name": "c.jpg", "width": 40, "height": 30},
    ]  # no annotation
    anns = [
        {
            "id": 1,
            "image_id": 42,
            "category_id": 5,
            "segmentation": _poly(2, 2, 10, 10),
            "area": 100.0,
            "bbox": [2, 2, 10, 10],
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 42,
            "category_id": 3,
            "segmentation": _poly(20, 5, 15, 20),
            "area": 300.0,
            "bbox": [20, 5, 15, 20],
            "iscrowd": 0,
        },
        {
            "id": 3,
            "image_id": 7,
            "category_id": 5,
            "segmentation": [[1, 1, 5, 1]],
            "area": 1.0,
            "bbox": [1, 1, 4, 0],
            "iscrowd": 0,
        },  # 4 coords: skipped
        {
            "id": 4,
            "image_id": 7,
            "category_id": 3,
            "segmentation": _poly(0, 0, 40, 30),
            "area": 1200.0,
            "bbox": [0, 0, 40, 30],
            "iscrowd": 0,
        },
    ]
    cats = [
        {"id": 5, "name": "five", "supercategory": "x"},
        {"id": 3, "name": "three", "supercategory": "x"},
    ]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    for im in images:
        _img(root / "images" / "val2017" / im["file_name"])
    return root


def test_coco_reader_order_labels_and_masks(tmp_path):
    root = _coco(tmp_path)
    m = read_coco(root, dataset="c", cka_batch_size=0)
    assert [it.meta["image_id"] for it in m.items] == [7, 42]  # ascending, 9 skipped
    assert m.classes == ["three", "five"]  # sorted category ids 3, 5
    assert [it.label for it in m.items] == [0, 0]  # largest annotation: cat 3
    coco = load_coco_api(root / "annotations" / "instances_val2017.json")
    masks = annotation_masks(coco, 7)
    assert [c for c, _ in masks] == [3]  # the 4-coordinate one dropped
    masks = annotation_masks(coco, 42)
    assert [int(mk.sum()) for _, mk in masks] == [100, 300]  # = the polygon areas
    assert len(read_coco(root, dataset="c", limit=1)) == 1


def test_token_masks_crop_resize_normalise():
    m = np.zeros((30, 40), np.uint8)
    m[:, :5] = 1  # only in the strip a centre crop removes
    m2 = np.zeros((30, 40), np.uint8)
    m2[10:20, 15:25] = 1
    soft, cats = token_masks([(1, m), (2, m2)], (3, 3), crop=True)
    assert list(cats) == [2] and soft.shape == (1, 3, 3)
    np.testing.assert_allclose(soft.sum(), 1.0)
    assert soft[0, 1, 1] == soft[0].max()
    soft, cats = token_masks([(1, m), (2, m2)], (3, 4), crop=False)  # dense: no crop
    assert list(cats) == [1, 2] and soft.shape == (2, 3, 4)
    np.testing.assert_allclose(soft.sum((1, 2)), 1.0)


def test_partimagenet_round_robin_sampling(tmp_path):
    root = tmp_path / "pin"
    split_of = {"n00000001": "train", "n00000002": "train", "n00000003": "val"}
    files = {"n00000001": 4, "n00000002": 1, "n00000003": 3}
    cats = [
        {"id": 0, "name": "Head", "supercategory": "A"},
        {"id": 1, "name": "Head", "supercategory": "B"},
    ]
    data = {
        s: {"images": [], "annotations": [], "categories": cats} for s in ("train", "val", "test")
    }
    iid = 0
    for w, n in files.items():
        for k in reversed(range(n)):  # listed out of order on purpose
            fn = f"{w}/{w}_{k}.JPEG"
            _img(root / split_of[w] / fn)
            d = data[split_of[w]]
            d["images"].append({"id": iid, "file_name": fn, "width": 40, "height": 30})
            d["annotations"].append(
                {
                    "id": iid,
                    "image_id": iid,
                    "category_id": 1 if w == "n00000003" else 0,
                    "segmentation": _poly(1, 1, 8, 8),
                    "area": 64.0,
                    "bbox": [1, 1, 8, 8],
                    "iscrowd": 0,
                }
            )
            iid += 1
    for s, d in data.items():
        (root / f"{s}.json").write_text(json.dumps(d))
    m = read_partimagenet(root, dataset="p", per_super=3)
    # super-category A: round robin n1, n2, n1 (n2 exhausted) -> per wnid: n1_0, n1_1, n2_0
    assert [it.path for it in m.items] == [
        "train/n00000001/n00000001_0.JPEG",
        "train/n00000001/n00000001_1.JPEG",
        "train/n00000002/n00000002_0.JPEG",
        "val/n00000003/n00000003_0.JPEG",
        "val/n00000003/n00000003_1.JPEG",
        "val/n00000003/n00000003_2.JPEG",
    ]
    assert m.classes == ["A", "B"] and [it.label for it in m.items] == [0, 0, 0, 1, 1, 1]
    (root / "test.json").write_text('{"images": [')
    with pytest.raises(DataError, match=r"test\.json is not valid JSON"):
        read_partimagenet(root, dataset="p")
    (root / "test.json").unlink()
    with pytest.raises(DataError, match=r"test\.json does not exist"):
        read_partimagenet(root, dataset="p")


def test_revisited_reader_and_bad_indices(tmp_path):
    base = tmp_path / "roxford5k"
    for n in ("d0", "d1", "d2", "q0"):
        _img(base / "jpg" / f"{n}.jpg")
    gnd = {
        "imlist": ["d0", "d1", "d2"],
        "qimlist": ["q0"],
        "gnd": [{"bbx": [0, 0, 5, 5], "easy": [1], "hard": [2], "junk": []}],
    }
    (base / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(gnd))
    m = read_revisited(tmp_path, dataset="r", name="roxford5k")
    assert [it.meta["role"] for it in m.items] == ["db", "db", "db", "query"]
    assert m.extra["gnd"][0]["hard"] == [2] and m.extra["n_db"] == 3
    gnd["gnd"][0]["junk"] = [3]
    (base / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(gnd))
    with pytest.raises(DataError, match=r"gnd\[0\]\['junk'\] has database index 3"):
        read_revisited(tmp_path, dataset="r", name="roxford5k")


def test_davis_reader(tmp_path):
    root = tmp_path / "davis"
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("cat\n")
    for f in range(3):
        _img(root / "JPEGImages" / "480p" / "cat" / f"{f:05d}.jpg")
    ann = root / "Annotations" / "480p" / "cat"
    ann.mkdir(parents=True)
    Image.new("P", (40, 30)).save(ann / "00000.png")
    m = read_davis(root, dataset="d")
    assert [it.id for it in m.items] == ["cat/00000", "cat/00001", "cat/00002"]
    assert (
        m.items[0].meta["annotation"].endswith("00000.png") and m.items[1].meta["annotation"] == ""
    )
    (ann / "00000.png").unlink()
    with pytest.raises(DataError, match="first-frame annotation"):
        read_davis(root, dataset="d")


def _spair(tmp_path, n_pairs=5):
    root = tmp_path / "spair"
    for i in range(4):
        _img(root / "JPEGImages" / "cat" / f"im{i}.jpg")
    (root / "ImageAnnotation" / "cat").mkdir(parents=True)
    pdir = root / "PairAnnotation" / "test"
    pdir.mkdir(parents=True)
    for k in range(n_pairs):
        d = {
            "category": "cat",
            "mirror": 0,
            "src_imname": f"im{k % 4}.jpg",
            "trg_imname": f"im{(k + 1) % 4}.jpg",
            "src_bndbox": [0, 0, 10, 10],
            "trg_bndbox": [1, 1, 20, 9],
            "src_imsize": [40, 30, 3],
            "trg_imsize": [40, 30, 3],
            "kps_ids": [0, 2],
            "src_kps": [[1, 2], [3, 4]],
            "trg_kps": [[5, 6], [7, 8]],
        }
        (pdir / f"{k:06d}-im{k % 4}-im{(k + 1) % 4}:cat.json").write_text(json.dumps(d))
    return root


def test_spair_sampling_fixed_and_faithful(tmp_path):
    root = _spair(tmp_path)
    m = read_spair(root, dataset="s", pairs_per_category=3)
    files = [p["file"] for p in m.extra["pairs"]]
    assert len(set(files)) == 3 and all(f.endswith(":cat.json") for f in files)  # no repeats
    assert m == read_spair(root, dataset="s", pairs_per_category=3)  # seeded
    # faithful: np.random.seed(42); np.random.choice(n, 20) with replacement
    f = read_spair(root, dataset="s", pairs_per_category=20, sampling="faithful")
    expect = np.random.RandomState(42).choice(5, size=20, replace=True)
    names = sorted(p.name for p in (root / "PairAnnotation" / "test").iterdir())
    assert [p["file"] for p in f.extra["pairs"]] == [names[i] for i in expect]
    p = m.extra["pairs"][0]
    assert m.items[p["src"]].meta["category"] == "cat" and p["trg_bndbox"] == [1, 1, 20, 9]


def test_imagenet50_list_and_reader(tmp_path):
    cls = imagenet50_classes()
    assert len(cls) == 50 and cls[0] == ("n01601694", "Dipper") and cls[-1][1] == "Banana"
    for w, _ in cls:
        for f in ("b.JPEG", "a.JPEG", "c.txt"):
            p = tmp_path / w / f
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x")
    (tmp_path / "n99999999").mkdir()  # not in the 50
    m = read_imagenet50(tmp_path, dataset="i", per_class=1)
    assert len(m) == 50 and m.items[0].path == "n01601694/a.JPEG" and m.items[-1].label == 49


def test_bad_images_stop_or_are_skipped(tmp_path):
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        for i in range(3):
            _img(root / c / f"{i}.png")
    (root / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    good = root / "a" / "2.png"
    good.write_bytes(good.read_bytes()[:60])  # truncated
    cfg = {"kind": "imagefolder", "cka_batch_size": 2, "check_images": "decode"}
    with pytest.raises(DataError, match=r"a/2\.png"):
        build_manifest("x", cfg, root)
    m, bad = build_manifest("x", {**cfg, "skip_bad_images": True}, root)
    assert sorted(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p, _ in bad) == [
        "a/2.png",
        "b/1.png",
    ]
    assert [it.id for it in m.items] == ["a/0", "a/1", "b/0", "b/2"]
    assert [it.cka_batch for it in m.items] == [0, 0, 1, 1]
    (root / "c").mkdir()
    with pytest.raises(DataError, match=r"class folder .*/c contains no images"):
        build_manifest("x", cfg, root)


def test_manifest_round_trip_and_refusal(tmp_path):
    root = _coco(tmp_path)
    m = read_coco(root, dataset="c", cka_batch_size=1)
    m.save(tmp_path / "m.json")
    back = Manifest.load(tmp_path / "m.json")
    assert back == m and back.digest() == m.digest()
    (tmp_path / "bad.json").write_text('{"items": [')
    with pytest.raises(DataError, match="bad.json is not valid JSON"):
        Manifest.load(tmp_path / "bad.json")
    (tmp_path / "annot.json").write_text("{}")
    with pytest.raises(DataError, match="not a vitlib manifest"):
        Manifest.load(tmp_path / "annot.json")


def test_every_reader_reads_the_tiny_world(tiny_world):
    """The generated world in every format, through the real readers and pycocotools."""
    from vitlib.data.readers import WORLD_LAYOUT, generated_root

    counts = {}
    for kind in WORLD_LAYOUT:
        cfg = {"kind": kind, "generate": {"size": "tiny"}, "cka_batch_size": 4}
        m, bad = build_manifest(kind, cfg, generated_root(tiny_world, kind, cfg["generate"]))
        assert not bad and len(m) > 0
        counts[kind] = len(m)
        if kind in ("coco", "partimagenet"):
            from vitlib.data.annotations import coco_for_item

            n_masks = 0
            for it in m.items:
                masks = annotation_masks(coco_for_item(m, it), it.meta["image_id"])
                assert masks and all(mk.any() for _, mk in masks)
                n_masks += len(masks)
            assert n_masks >= len(m)
    assert counts["imagefolder"] == 32 and counts["davis"] >= 16
    m, _ = build_manifest(
        "s", {"kind": "spair", "generate": {}, "cka_batch_size": 0}, tiny_world / "spair"
    )
    assert len(m.extra["pairs"]) > 0 and all(
        len(p["src_kps"]) == len(p["trg_kps"]) > 0 for p in m.extra["pairs"]
    )


def test_listing_fingerprint_sees_added_removed_and_replaced_files(tmp_path):
    import os
    import time

    from vitlib.data.manifest import listing_fingerprint

    (tmp_path / "a").mkdir()
    for n in ("x.png", "y.png"):
        (tmp_path / "a" / n).write_bytes(b"1")
    f0 = listing_fingerprint(tmp_path)
    assert listing_fingerprint(tmp_path) == f0  # stable
    (tmp_path / "a" / "z.png").write_bytes(b"1")
    f1 = listing_fingerprint(tmp_path)
    assert f1 != f0  # added
    (tmp_path / "a" / "z.png").unlink()
    time.sleep(0.01)
    new = tmp_path / "new.png"
    new.write_bytes(b"22")
    os.replace(new, tmp_path / "a" / "x.png")  # replaced by a new file moved into place
    assert listing_fingerprint(tmp_path) not in (f0, f1)
    assert listing_fingerprint(tmp_path / "missing") == "missing"


def test_revisited_ground_truth_pickle_cannot_run_code(tmp_path):
    """A gnd_*.pkl whose unpickling would call os.system is refused, with no side effect;
    NumPy index arrays (the official files' layout) still load."""
    import os
    import pickle

    import numpy as np

    from vitlib.data.readers import DataError, read_revisited

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    base = tmp_path / "rx"
    (base / "jpg").mkdir(parents=True)
    (base / "gnd_rx.pkl").write_bytes(pickle.dumps({"imlist": Payload()}))
    with pytest.raises(DataError, match="refuses to load global .*system"):
        read_revisited(tmp_path, dataset="rx", name="rx")
    assert not (tmp_path / "pwned").exists()

    from PIL import Image

    for n in ("a", "b", "q"):
        Image.new("RGB", (8, 8)).save(base / "jpg" / f"{n}.jpg")
    gnd = {
        "imlist": ["a", "b"],
        "qimlist": ["q"],
        "gnd": [
            {
                "easy": np.array([0]),
                "hard": np.array([1]),
                "junk": np.array([], int),
                "bbx": np.array([0.0, 0.0, 4.0, 4.0]),
            }
        ],
    }
    (base / "gnd_rx.pkl").write_bytes(pickle.dumps(gnd, protocol=2))
    m = read_revisited(tmp_path, dataset="rx", name="rx")
    assert m.extra["gnd"][0]["easy"] == [0] and m.extra["gnd"][0]["hard"] == [1]


def test_listing_fingerprint_survives_dangling_links(tmp_path):
    from vitlib.data.manifest import listing_fingerprint

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"1")
    (tmp_path / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "stray.png").symlink_to(tmp_path / "nowhere.png")
    assert len(listing_fingerprint(tmp_path)) == 16  # no FileNotFoundError at DAG build
