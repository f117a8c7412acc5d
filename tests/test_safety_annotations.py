"""Every annotation is checked for shape against its image when the manifest is built,
before any extraction (issue #17): DAVIS PNGs, COCO / PartImageNet image sizes and RLE
sizes, SPair image sizes; ``skip_bad_images`` drops standalone items; EXIF orientation is
respected."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vitlib.data.manifest import DataError
from vitlib.data.readers import build_manifest, read_coco


def _img(path, size=(40, 30), exif_orientation: int | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, (120, 30, 200))
    if exif_orientation is None:
        im.save(path)
    else:
        ex = Image.Exif()
        ex[0x0112] = exif_orientation
        im.save(path, exif=ex)


def _davis(tmp_path, ann_sizes):
    """One sequence 'cat' of 40×30 frames; ``ann_sizes[f]`` = size of frame f's annotation
    PNG (an object in the middle), or None for no annotation."""
    root = tmp_path / "davis"
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("cat\n")
    ann = root / "Annotations" / "480p" / "cat"
    ann.mkdir(parents=True)
    for f, size in enumerate(ann_sizes):
        _img(root / "JPEGImages" / "480p" / "cat" / f"{f:05d}.jpg")
        if size is not None:
            a = np.zeros((size[1], size[0]), np.uint8)
            a[10:20, 10:20] = 1
            Image.fromarray(a, mode="L").convert("P").save(ann / f"{f:05d}.png")
    return root


DAVIS_CFG = {"kind": "davis", "cka_batch_size": 0, "check_images": "decode"}


def test_davis_annotation_of_the_wrong_size_stops_the_manifest(tmp_path):
    root = _davis(tmp_path, [(40, 30), (40, 30), (41, 30)])
    with pytest.raises(DataError) as e:
        build_manifest("dv", DAVIS_CFG, root)
    assert str(e.value) == (
        f"dataset 'dv': DAVIS annotation {root.resolve()}/Annotations/480p/cat/00002.png is 41x30"
        f" (width x height), but its frame {root.resolve()}/JPEGImages/480p/cat/00002.jpg"
        " is 40x30"
    )
    # frames of a video cannot be skipped
    with pytest.raises(DataError) as e:
        build_manifest("dv", {**DAVIS_CFG, "skip_bad_images": True}, root)
    assert str(e.value).endswith(
        "is 40x30; skip_bad_images is not possible for kind 'davis' (its pairs/queries/videos"
        " would break)"
    )
    # the check reads headers only: it also runs with check_images: none
    with pytest.raises(DataError, match=r"00002\.png is 41x30"):
        build_manifest("dv", {**DAVIS_CFG, "check_images": "none"}, root)


def test_davis_matching_annotations_pass_and_empty_first_frame_stops(tmp_path):
    root = _davis(tmp_path, [(40, 30), None, (40, 30)])
    m, bad = build_manifest("dv", DAVIS_CFG, root)
    assert bad == [] and [it.meta["annotation"] != "" for it in m.items] == [True, False, True]
    Image.new("P", (40, 30)).save(root / "Annotations" / "480p" / "cat" / "00000.png")
    with pytest.raises(DataError) as e:
        build_manifest("dv", DAVIS_CFG, root)
    assert str(e.value) == (
        f"dataset 'dv': DAVIS sequence 'cat': first-frame annotation"
        f" {root.resolve()}/Annotations/480p/cat/00000.png marks no object (every pixel is 0): there is"
        " nothing to propagate and J&F would be empty"
    )


def _coco(tmp_path, sizes, *, rle_size=None):
    """Images 0..n-1 whose files have ``sizes[i]`` while the annotation file says 40×30."""
    root = tmp_path / "coco"
    images, anns = [], []
    for i, size in enumerate(sizes):
        orient = None
        if isinstance(size, tuple) and len(size) == 3:
            size, orient = size[:2], size[2]
        _img(root / "images" / "val2017" / f"{i}.jpg", size, orient)
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 40, "height": 30})
        anns.append(
            {
                "id": 100 + i,
                "image_id": i + 1,
                "category_id": 1,
                "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]],
                "area": 100.0,
                "bbox": [2, 2, 10, 10],
                "iscrowd": 0,
            }
        )
    if rle_size is not None:
        anns.append(
            {
                "id": 999,
                "image_id": 1,
                "category_id": 1,
                "segmentation": {"size": list(rle_size), "counts": [0, rle_size[0] * rle_size[1]]},
                "area": 1.0,
                "bbox": [0, 0, 1, 1],
                "iscrowd": 1,
            }
        )
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]})
    )
    return root


COCO_CFG = {"kind": "coco", "cka_batch_size": 0, "check_images": "header"}


def test_coco_image_of_another_size_stops_or_is_skipped(tmp_path):
    # image 2 is 44×30 on disk; image 3 is stored 30×40 with EXIF "rotate 90": seen as 40×30
    root = _coco(tmp_path, [(40, 30), (44, 30), (30, 40, 6), (40, 30)])
    with pytest.raises(DataError) as e:
        build_manifest("c", COCO_CFG, root)
    assert str(e.value) == (
        f"dataset 'c': annotation file {root.resolve()}/annotations/instances_val2017.json gives"
        f" image 2 the size 40x30 (width x height), but the image"
        f" {root.resolve()}/images/val2017/1.jpg is 44x30: its masks would not line up with the"
        " pixels (set skip_bad_images: true to skip such images)"
    )
    m, bad = build_manifest("c", {**COCO_CFG, "skip_bad_images": True}, root)
    assert [it.meta["image_id"] for it in m.items] == [1, 3, 4]  # the EXIF-rotated one kept
    assert [p.rsplit("/", 1)[-1] for p, _ in bad] == ["1.jpg"]
    assert "is 44x30" in bad[0][1]


def test_coco_rle_of_another_size_is_named(tmp_path):
    root = _coco(tmp_path, [(40, 30)], rle_size=(30, 41))
    with pytest.raises(DataError) as e:
        read_coco(root, dataset="c")
    assert str(e.value) == (
        f"{root}/annotations/instances_val2017.json: annotation 999 of image 1 is an RLE mask"
        " of 41x30 (width x height) but the image entry says 40x30"
    )
    root2 = _coco(tmp_path / "ok", [(40, 30)], rle_size=(30, 40))
    assert len(read_coco(root2, dataset="c")) == 1


def test_partimagenet_image_of_another_size_stops(tmp_path):
    root = tmp_path / "pin"
    cats = [{"id": 0, "name": "Head", "supercategory": "A"}]
    data = {
        s: {"images": [], "annotations": [], "categories": cats} for s in ("train", "val", "test")
    }
    for k, size in enumerate([(40, 30), (40, 31)]):
        fn = f"n00000001/n00000001_{k}.JPEG"
        _img(root / "val" / fn, size)
        data["val"]["images"].append({"id": k, "file_name": fn, "width": 40, "height": 30})
        data["val"]["annotations"].append(
            {
                "id": k,
                "image_id": k,
                "category_id": 0,
                "segmentation": [[1, 1, 9, 1, 9, 9, 1, 9]],
                "area": 64.0,
                "bbox": [1, 1, 8, 8],
                "iscrowd": 0,
            }
        )
    for s, d in data.items():
        (root / f"{s}.json").write_text(json.dumps(d))
    cfg = {"kind": "partimagenet", "cka_batch_size": 0, "check_images": "none"}
    with pytest.raises(DataError) as e:
        build_manifest("p", cfg, root)
    assert str(e.value) == (
        f"dataset 'p': annotation file {root.resolve()}/val.json gives image 1 the size 40x30"
        f" (width x height), but the image {root.resolve()}/val/n00000001/n00000001_1.JPEG is"
        " 40x31: its masks would not line up with the pixels (set skip_bad_images: true to"
        " skip such images)"
    )
