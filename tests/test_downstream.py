"""Downstream metrics against hand-computed cases and independent formulations."""

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from vitlib.downstream.davis import (
    boundary_f,
    evaluate_sequence,
    propagate_labels,
    region_similarity,
    soft_to_labels,
)
from vitlib.downstream.keypoints import pck
from vitlib.downstream.knn import knn_accuracy, knn_predict, knn_topk_streaming
from vitlib.downstream.retrieval import revisited_map


# ------------------------------------------------------------------------------ k-NN
def test_knn_matches_brute_force_vote():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    ytr = rng.integers(0, 4, 300)
    xtr = centres[ytr] + 0.8 * rng.normal(size=(300, 16))
    yte = rng.integers(0, 4, 50)
    xte = centres[yte] + 0.8 * rng.normal(size=(50, 16))
    k, T = 10, 0.07
    # independent: cosine similarities, explicit top-k, weighted vote
    a = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    b = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    sim = b @ a.T
    nn = np.argsort(-sim, axis=1)[:, :k]
    ref = np.array(
        [
            np.bincount(ytr[nn[i]], weights=np.exp(sim[i, nn[i]] / T), minlength=4).argmax()
            for i in range(50)
        ]
    )
    got = knn_predict(xtr, ytr, xte, k=k, temperature=T, chunk_size=64)  # 5 streamed chunks
    np.testing.assert_array_equal(got, ref)
    assert (got == yte).mean() > 0.8
    top5 = knn_predict(xtr, ytr, xte, k=k, top5=True)
    assert top5.shape == (50, 4) and (top5[:, 0] == got).all()  # only 4 classes exist


def test_streaming_topk_equals_one_shot():
    rng = np.random.default_rng(1)
    xtr, xte = rng.normal(size=(1000, 8)), rng.normal(size=(20, 8))
    d1, i1 = knn_topk_streaming([xtr], xte, 7)
    chunks = [xtr[i : i + 97] for i in range(0, 1000, 97)]
    d2, i2 = knn_topk_streaming(chunks, xte, 7)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, rtol=1e-6)
    # banks smaller than the training set (3 chunks each, 1 chunk each, 10 chunks and a last
    # bank of 30 rows) merge to the same neighbours
    for bank in (3 * 97 * 8 * 4, 1, 970 * 8 * 4):
        d3, i3 = knn_topk_streaming(chunks, xte, 7, bank_bytes=bank)
        np.testing.assert_array_equal(i1, i3)
        np.testing.assert_allclose(d1, d3, rtol=1e-6)
    # brute force: the 7 largest cosine similarities
    xn = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    qn = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    ref = np.argsort(-(qn @ xn.T), axis=1)[:, :7]
    np.testing.assert_array_equal(i1, ref)


def test_knn_accuracy_uniform_weights_agree_with_sklearn():
    rng = np.random.default_rng(2)
    xtr, ytr = rng.normal(size=(200, 5)), rng.integers(0, 3, 200)
    xte, yte = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    sims, idx = knn_topk_streaming([xtr], xte, 15)
    acc = knn_accuracy(sims, ytr[idx], yte, [1, 15], num_classes=3, temperature=1e9)
    sk = KNeighborsClassifier(1, metric="cosine").fit(xtr, ytr).predict(xte)
    assert acc[1]["top1"] == pytest.approx((sk == yte).mean() * 100)


# ------------------------------------------------------------------------------ retrieval
def test_revisited_map_hand_case():
    # db of 6 images; one query; ranking 0..5
    ranks = np.arange(6)[:, None]
    gnd = [{"easy": [0, 3], "hard": [5], "junk": [1]}]
    m = revisited_map(ranks, gnd, "medium")
    # positives 0,3,5; junk 1 removed → adjusted ranks 0,2,4
    ap = ((1 + 1) / 2 + (1 / 2 + 2 / 3) / 2 + (2 / 4 + 3 / 5) / 2) / 3
    assert m["map"] == pytest.approx(ap * 100)
    h = revisited_map(ranks, gnd, "hard")
    # positive 5; ignored 1, 0, 3 ranked before → adjusted rank 2
    assert h["map"] == pytest.approx((0 + 1 / 3) / 2 * 100)


def test_revisited_map_skips_queries_without_positives():
    ranks = np.tile(np.arange(4)[:, None], (1, 2))
    gnd = [{"easy": [0], "hard": [], "junk": []}, {"easy": [], "hard": [], "junk": [1]}]
    m = revisited_map(ranks, gnd, "medium")
    assert m["map"] == 100.0 and np.isnan(m["aps"][1])


# ------------------------------------------------------------------------------ DAVIS
def test_j_and_f_hand_cases():
    a = np.zeros((100, 100), bool)
    a[20:60, 20:60] = True
    assert region_similarity(a, a) == 1.0 and boundary_f(a, a) == 1.0
    assert region_similarity(np.zeros_like(a), np.zeros_like(a)) == 1.0
    b = np.zeros_like(a)
    b[40:80, 20:60] = True
    assert region_similarity(a, b) == pytest.approx(800 / 2400)
    shifted = np.roll(a, 1, axis=1)  # 1 px shift, tolerance ceil(0.008·141.4) = 2 px
    assert boundary_f(a, shifted) == 1.0
    far = np.roll(a, 10, axis=1)
    assert boundary_f(a, far) < 0.6
    assert boundary_f(a, np.zeros_like(a)) == 0.0


def test_propagation_with_perfect_features_recovers_masks():
    T, h, w = 6, 8, 10
    labels = np.zeros((T, h, w), int)
    for t in range(T):
        labels[t, 2:6, 1 + t : 4 + t] = 1  # a moving object
        labels[t, 0:2, 7:10] = 2  # a second, static one
    onehot = np.eye(3)[labels]  # [T, h, w, 3]
    feats = torch.tensor(onehot + 0.01 * np.random.default_rng(0).normal(size=onehot.shape))
    first = torch.tensor(onehot[0]).permute(2, 0, 1)
    soft = propagate_labels(feats, first, n_last=3, radius=4, topk=5)
    assert soft.shape == (T, 3, h, w)
    np.testing.assert_array_equal(soft.argmax(1).numpy(), labels)
    frames = soft_to_labels(soft, patch=4, out_hw=(h * 4, w * 4))
    gt = np.kron(labels, np.ones((4, 4), int))
    res = evaluate_sequence(frames, gt)
    assert set(res) == {1, 2} and all(v["J"] > 0.9 and v["F"] > 0.9 for v in res.values())


@pytest.mark.parametrize(("radius", "topk"), [(2, 5), (12, 5), (1, 1), (3, 40)])
def test_sparse_propagation_equals_dinos_dense_formula(radius, topk):
    """The top-k-only step equals DINO's dense formula (Propagator._dense: exp of every
    affinity, masked, zeroed below the k-th, normalised), frame after frame; with repeated
    frames (exact ties at the k-th weight) the step falls back to the dense formula."""
    from vitlib.downstream.davis import Propagator

    rng = np.random.default_rng(radius * 100 + topk)
    T, h, w, D, C = 9, 7, 9, 12, 3
    feats = torch.tensor(rng.normal(size=(T, h * w, D)), dtype=torch.float32)
    feats[4] = feats[3]  # frame 5 sees every source value of frames 3 and 4 twice: ties
    first = torch.tensor(np.eye(C, dtype=np.float32)[rng.integers(0, C, h * w)].T)
    fast = Propagator(feats[0], first, h, w, n_last=3, radius=radius, topk=topk)
    dense = Propagator(feats[0], first, h, w, n_last=3, radius=radius, topk=topk)
    dense._binary = False  # always the dense formula
    fallbacks = []
    sparse = fast._sparse
    fast._sparse = lambda *a: fallbacks.append(sparse(*a) is None) or sparse(*a)  # type: ignore[method-assign]
    for t in range(1, T):
        a, b = fast.step(feats[t]), dense.step(feats[t])
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.sum(0).numpy(), 1.0, rtol=1e-5)
    assert fallbacks[4]  # frame 5: the tie
    # before it, only where a neighbourhood holds fewer than k + 1 sources (zeros tie)
    assert any(fallbacks[:4]) == (topk == 40)


# ------------------------------------------------------------------------------ PCK
def test_pck_hand_case():
    gt = np.array([[0, 0], [10, 10], [5, 5]])
    pred = np.array([[1, 0], [10, 14], [5, 25]])
    assert pck(pred, gt, 20, 0.1) == pytest.approx(1 / 3)  # threshold 2 px
    assert pck(pred, gt, 20, 0.25) == pytest.approx(2 / 3)  # 5 px
    assert pck(pred, gt, np.array([20, 20, 300]), 0.1) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        pck(pred[:, :1], gt, 20, 0.1)


def test_knn_table_from_stores(tmp_path, tiny_spec, tiny_manifest):
    """Train = test: with k = 1 every query finds itself (100 %); k=20 equals knn_predict."""
    import zarr

    from vitlib.downstream.tables import knn_table
    from vitlib.extract import run_extraction

    s = str(tmp_path / "s.zarr")
    run_extraction(
        tiny_spec, tiny_manifest, "center", s, batch_size=8, progress=False, feature_dtype="float32"
    )
    t = knn_table(s, s, ks=(1, 20))
    assert len(t) == 3 * 2
    assert (t[t.k == 1]["top1"] == 100.0).all()
    g = zarr.open_group(s)
    x = np.asarray(g["feat/block_cls"][:, 2])
    y = np.asarray(g["labels"][:])
    pred = knn_predict(x, y, x, k=20)
    assert t[(t.k == 20) & (t.layer == 2)]["top1"].item() == pytest.approx((pred == y).mean() * 100)


def test_degenerate_settings_are_errors_or_flagged():
    """A CKA minibatch larger than the dataset is an error naming the key (it would make every
    CKA value NaN)."""
    import pytest

    from vitlib.data.manifest import DataError, Item, Manifest

    items = [Item(id=str(i), path=f"{i}.png", label=0) for i in range(5)]
    with pytest.raises(DataError, match=r"datasets\.small\.cka_batch_size.*8.*5 items"):
        Manifest(
            dataset="small",
            kind="imagefolder",
            root=".",
            classes=["a"],
            items=items,
            cka_batch_size=8,
        )


def _boundary_f_by_dilation(pred, gt, bound_th=0.008):
    """The official davis2017-evaluation formulation: both boundary maps dilated by a disk
    of radius ceil(bound_th · diagonal) (skimage.morphology.disk), matches counted."""
    import math

    from scipy import ndimage

    from vitlib.downstream.davis import seg2bmap

    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    r = bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(p.shape))
    y, x = np.mgrid[-int(r) : int(r) + 1, -int(r) : int(r) + 1]
    disk = x * x + y * y <= int(r) ** 2
    fb, gb = seg2bmap(p), seg2bmap(g)
    f_dil = ndimage.binary_dilation(fb, structure=disk)
    g_dil = ndimage.binary_dilation(gb, structure=disk)
    n_f, n_g = fb.sum(), gb.sum()
    if n_f == 0 and n_g == 0:
        return 1.0
    if n_f == 0 or n_g == 0:
        return 0.0
    prec, rec = (fb & g_dil).sum() / n_f, (gb & f_dil).sum() / n_g
    return 0.0 if prec + rec == 0 else float(2 * prec * rec / (prec + rec))


def test_boundary_f_equals_the_dilation_formulation_on_random_masks():
    """boundary_f counts matches with distance transforms on a cropped window; it must give
    exactly the official dilation-based value (blobs, shifts, noise, empty masks, borders)."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for t in range(150):
        h, w = rng.integers(5, 100, 2)
        g = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 4)) > rng.uniform(
            0.45, 0.55
        )
        p = np.roll(g, rng.integers(-6, 6, 2), (0, 1)) ^ (rng.random((h, w)) < rng.uniform(0, 0.05))
        if t % 10 == 0:
            p[:] = False
        if t % 15 == 0:
            g[:] = False
        th = (0.008, 0.05, 3)[t % 3]
        assert boundary_f(p, g, th) == _boundary_f_by_dilation(p, g, th), t


def test_void_pixels_count_in_neither_j_nor_f():
    """The official evaluator removes void pixels (annotation 255) from both masks."""
    from vitlib.downstream.davis import evaluate_sequence, region_similarity

    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    pred = np.zeros_like(gt)
    pred[5:15, 5:18] = True  # 30 pixels too many, 20 of them void
    void = np.zeros_like(gt)
    void[:, 16:] = True
    assert region_similarity(pred, gt) == 100 / 130
    assert region_similarity(pred, gt, void) == 100 / 110
    # boundaries of the masks with void removed, as the dilation formulation sees them
    assert boundary_f(pred, gt, void=void) == _boundary_f_by_dilation(pred & ~void, gt & ~void)
    assert boundary_f(pred, gt, void=void) != boundary_f(pred, gt)
    lab_gt = np.stack([gt.astype(np.uint8)] * 3)
    lab_gt[:, void] = 255
    lab_pred = np.stack([pred.astype(np.uint8)] * 3)
    r = evaluate_sequence(lab_pred, lab_gt)
    assert list(r) == [1] and r[1]["J"] == 100 / 110


def test_spair_maps_are_computed_once_and_equal_per_pair_maps():
    """The map cache of the SPair transfer: bitwise the maps of spair_dense_map, each
    (image, layer) computed once while it fits, least recently used dropped beyond the
    budget (the latest map always kept)."""
    from vitlib.downstream.tables import SpairMaps, spair_dense_map

    rng = np.random.default_rng(0)
    toks = {i: torch.tensor(rng.normal(size=(12, 2, 8)), dtype=torch.float32) for i in range(3)}
    grid = {0: (3, 4), 1: (4, 3), 2: (2, 6)}
    maps = SpairMaps(lambda i, layer: toks[i][:, layer], grid.__getitem__, 16)
    for i, layer in [(0, 0), (1, 0), (0, 0), (2, 1), (1, 0)]:
        ref = spair_dense_map(toks[i][:, layer], grid[i], 16)
        assert torch.equal(maps(i, layer), ref)
    assert maps.computed == 3
    one = 8 * 16 * 16 * 4  # bytes of one [D, S·S] float32 map
    small = SpairMaps(lambda i, layer: toks[i][:, layer], grid.__getitem__, 16, budget=one)
    for i in (0, 1, 0, 0):
        small(i, 0)
    assert small.computed == 3  # 0, 1, 0 again (dropped for 1), then kept
