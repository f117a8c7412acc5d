"""Degenerate results are errors or flagged, never a silent NaN (issue #17): clustering with
fewer than two classes or an impossible k, saliency with empty mask sets, CKA of a constant
representation."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from vitlib.data.manifest import DataError
from vitlib.data.readers import read_coco
from vitlib.metrics.cka import cka_grid_from_grams
from vitlib.metrics.clustering import check_clusterable, cluster_scores, kmeans_labels

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _blobs(n_per: int = 6, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(10 * c, 0.1, (n_per, 3)) for c in range(classes)])
    return x.astype(np.float32), np.repeat(np.arange(classes), n_per)


def test_one_class_is_a_data_error_not_a_constant_score():
    x, _ = _blobs()
    y = np.full(len(x), 7)
    with pytest.raises(DataError) as e:
        cluster_scores(x, y, 2, what="dataset 'pin', layer 3")
    assert str(e.value) == (
        "dataset 'pin', layer 3: clustering scores need at least two classes, got 1 ([7])"
        " among 12 samples: NMI, ARI and purity would be constant whatever the features; use"
        " a dataset (or subset) with two or more classes, or leave this analysis out"
    )


def test_k_outside_two_to_n_and_nan_features_are_data_errors():
    x, y = _blobs()
    with pytest.raises(DataError) as e:
        cluster_scores(x, y, 13)
    assert str(e.value) == (
        "clustering: k-means needs 2 <= k <= 12 (the number of samples), got k = 13"
        " (more clusters than samples)"
    )
    with pytest.raises(DataError, match=r"got k = 1 \(a single cluster\)"):
        cluster_scores(x, y, 1)
    x[3, 1] = np.nan
    x[5, 0] = np.inf
    with pytest.raises(DataError) as e:
        check_clusterable(x, y, 2, what="store s.zarr")
    assert str(e.value) == (
        "store s.zarr: the features hold 2 non-finite values (NaN or inf); k-means on them"
        " would be meaningless"
    )
    with pytest.raises(DataError, match=r"k must be in 1\.\.12 \(the number of points\), got 20"):
        kmeans_labels(x, 20)


def test_two_separated_classes_still_score_perfectly():
    x, y = _blobs()
    s = cluster_scores(x, y, 2, n_init=2)
    assert s == {"nmi": 1.0, "ari": 1.0, "purity": 1.0}


def test_cka_of_a_constant_layer_is_nan_and_warned(caplog):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, 6, 4))  # [C, n, d]
    k = np.einsum("cnd,cmd->cnm", f, f)
    gx = np.stack([k, np.ones_like(k)], 1)  # layer 1: a constant representation
    gy = k[:, None]
    with caplog.at_level(logging.WARNING, logger="vitlib.metrics.cka"):
        out = cka_grid_from_grams(gx, gy)
    assert out.shape == (2, 1) and out[0, 0] == pytest.approx(1.0) and np.isnan(out[1, 0])
    assert "CKA undefined (NaN) for layers [1] of x and [] of y" in caplog.text


# ---------------------------------------------------------------------------------- saliency
def _coco(root, boxes):
    """4 noise images 48×36; ``boxes[i]`` = the one annotation box (x, y, w, h) of image i."""
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i, (x, y, w, h) in enumerate(boxes):
        p = root / "images" / "val2017" / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (36, 48, 3), dtype=np.uint8)).save(p)
        images.append({"id": 10 + i, "file_name": f"{i}.png", "width": 48, "height": 36})
        anns.append(
            {
                "id": 100 + i,
                "image_id": 10 + i,
                "category_id": 1,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                "area": float(w * h),
                "bbox": [x, y, w, h],
                "iscrowd": 0,
            }
        )
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]})
    )
    return read_coco(root, dataset="sal")


def test_saliency_flags_images_without_mask_and_stops_on_an_empty_set(tmp_path, spec, caplog):
    from vitlib.attention.saliency import saliency_table
    from vitlib.extract import run_extraction

    # images 1 and 3: the box lies in the 6-pixel strip the centre crop removes
    strip = (0, 4, 5, 20)
    m = _coco(tmp_path / "c1", [(10, 5, 20, 20), strip, (20, 10, 18, 16), strip])
    run_extraction(spec, m, "center", tmp_path / "s1.zarr", batch_size=4, progress=False)
    with caplog.at_level(logging.WARNING, logger="vitlib.attention.saliency"):
        t = saliency_table(str(tmp_path / "s1.zarr"), m)
    assert set(t["n_images"]) == {2} and set(t["n_images_no_mask"]) == {2}
    assert t["iou"].notna().all() and t["iou"].between(0, 1).all()
    assert (
        "dataset 'sal': 2 of 4 images have no annotation mask at the 4x4 token grid and take"
        " no part in saliency IoU (first: 000000000011, 000000000013)"
    ) in caplog.text

    m = _coco(tmp_path / "c2", [strip] * 4)
    run_extraction(spec, m, "center", tmp_path / "s2.zarr", batch_size=4, progress=False)
    with pytest.raises(DataError) as e:
        saliency_table(str(tmp_path / "s2.zarr"), m)
    assert str(e.value).startswith(
        "dataset 'sal': none of its 4 images has an annotation mask that survives at the 4x4"
        " token grid of "
    )
    assert str(e.value).endswith("s2.zarr (empty mask set): saliency IoU is undefined")
