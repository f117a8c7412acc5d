"""Saliency IoU, object clustering, retrieval, DAVIS and SPair tables on real stores of a toy
model, each checked against an independent computation from a direct forward pass."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from vitlib.data.annotations import annotation_masks, load_coco_api, token_masks
from vitlib.data.readers import read_coco, read_davis, read_revisited, read_spair
from vitlib.data.views import make_transform
from vitlib.downstream.summary import headline, summary_table
from vitlib.extract import run_extraction
from vitlib.models.build import build_model
from vitlib.models.capture import Capture
from vitlib.tables import tidy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _noise_image(path, size, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    images, anns = [], []
    rng = np.random.default_rng(0)
    for i in range(6):
        images.append({"id": 10 + i, "file_name": f"{i}.jpg", "width": 48, "height": 36})
        _noise_image(root / "images" / "val2017" / f"{i}.jpg", (48, 36), i)
        for j in range(2):
            x, y = int(rng.integers(0, 30)), int(rng.integers(0, 20))
            anns.append(
                {
                    "id": 100 + 2 * i + j,
                    "image_id": 10 + i,
                    "category_id": 1 + 2 * j,
                    "segmentation": [[x, y, x + 16, y, x + 16, y + 14, x, y + 14]],
                    "area": 224.0,
                    "bbox": [x, y, 16, 14],
                    "iscrowd": 0,
                }
            )
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
            }
        )
    )
    return root


def _attention(spec, model, x):
    c = Capture(model, points=("block",), attention=True).collect(x)
    return c.attention, c.tokens["block"]


def test_saliency_iou_matches_direct_computation(tmp_path, spec, coco):
    from vitlib.attention.saliency import saliency_table

    m = read_coco(coco, dataset="c")
    run_extraction(
        spec,
        m,
        "center",
        tmp_path / "c.zarr",
        batch_size=4,
        progress=False,
        feature_dtype="float32",
    )
    t = saliency_table(str(tmp_path / "c.zarr"), m, mass=0.6)
    model = build_model(spec, None)
    api = load_coco_api(coco / "annotations" / "instances_val2017.json")
    tf = make_transform("center", 32, spec.mean, spec.std)

    def iou60(rows, gt):
        rows = rows / rows.sum(-1, keepdims=True)
        # smallest set of top cells holding >= 60 % (descending order; no ties in float data)
        order = np.argsort(-rows, -1)
        srt = np.take_along_axis(rows, order, -1)
        n_keep = (np.cumsum(srt, -1) < 0.6).sum(-1) + 1
        pred = np.zeros_like(rows, bool)
        for idx in np.ndindex(rows.shape[:2]):
            pred[idx][order[idx][: n_keep[idx]]] = True
        return (pred & gt).sum(-1) / (pred | gt).sum(-1)

    ious, roll = [], []
    for it in m.items:
        x = tf(Image.open(m.abspath(it)).convert("RGB"))[None]
        attn, _ = _attention(spec, model, x)  # [L, 1, H, N, N]
        soft, _ = token_masks(annotation_masks(api, it.meta["image_id"]), (4, 4), crop=True)
        gt = soft.sum(0).ravel() > 0
        ious.append(iou60(attn[:, 0, :, 0, 1:].numpy(), gt))  # CLS query, spatial keys
        # attention rollout (vit-explain's formula), its CLS row at every block
        result, rows = torch.eye(attn.shape[-1]), []
        for layer in range(attn.shape[0]):
            a = (attn[layer, 0].mean(0) + torch.eye(attn.shape[-1])) / 2
            result = (a / a.sum(-1, keepdim=True)) @ result
            rows.append(result[0, 1:].numpy())
        roll.append(iou60(np.stack(rows)[:, None], gt)[:, 0])
    ious = np.stack(ious)  # [n, L, H]
    rc = t[(t["query"] == "rollout_cls") & (t.head_selection == "per_image")].sort_values("layer")
    np.testing.assert_allclose(rc["iou"].to_numpy(), np.stack(roll).mean(0), atol=1e-6)
    cls = t[(t["query"] == "cls")]
    per_head = cls[cls.head_selection == "head"].sort_values(["layer", "head"])
    np.testing.assert_allclose(per_head["iou"].to_numpy(), ious.mean(0).ravel(), atol=1e-6)
    best = cls[cls.head_selection == "per_image"].sort_values("layer")
    np.testing.assert_allclose(best["iou"].to_numpy(), ious.max(-1).mean(0), atol=1e-6)
    assert (t["n_images"] == len(m)).all() and len(m) == 6
    # intervals: a plain loop bootstrap over the 6 images with the same resample counts
    from vitlib.stats import resample_counts

    counts = np.concatenate(list(resample_counts(6, 1000, 0)))
    means = np.einsum("bn,nlh->blh", counts, ious) / 6
    lo, hi = np.quantile(means, [0.025, 0.975], axis=0)
    np.testing.assert_allclose(per_head["iou_ci_low"], lo.ravel(), atol=1e-6)
    np.testing.assert_allclose(per_head["iou_ci_high"], hi.ravel(), atol=1e-6)
    sel = cls[cls.head_selection == "per_layer"].sort_values("layer")  # head chosen per resample
    np.testing.assert_allclose(
        sel["iou_ci_low"], np.quantile(means.max(-1), 0.025, axis=0), atol=1e-6
    )


def test_pooled_object_features_match_manual_pooling(tmp_path, spec, coco):
    from vitlib.metrics.segfeat import pooled_features, segment_clustering_table

    m = read_coco(coco, dataset="c")
    run_extraction(
        spec,
        m,
        "patches",
        tmp_path / "p.zarr",
        batch_size=4,
        progress=False,
        feature_dtype="float32",
    )
    x, y = pooled_features(str(tmp_path / "p.zarr"), m)
    assert x.shape == (12, 2, 24) and sorted(set(y)) == [1, 3]
    model = build_model(spec, None)
    api = load_coco_api(coco / "annotations" / "instances_val2017.json")
    tf = make_transform("center", 32, spec.mean, spec.std)
    it = m.items[1]
    _, tok = _attention(spec, model, tf(Image.open(m.abspath(it)).convert("RGB"))[None])
    soft, cats = token_masks(annotation_masks(api, it.meta["image_id"]), (4, 4), crop=True)
    manual = np.stack(
        [(soft[a].reshape(-1, 1) * tok[1, 0, 1:].numpy()).sum(0) for a in range(len(soft))]
    )
    n0 = len(token_masks(annotation_masks(api, m.items[0].meta["image_id"]), (4, 4), crop=True)[0])
    np.testing.assert_allclose(x[n0 : n0 + len(soft), 1], manual, atol=1e-5)
    t = segment_clustering_table(str(tmp_path / "p.zarr"), m, n_init=2)
    assert set(t["metric"]) == {"purity", "nmi", "ari"} and (t["level"] == "object").all()
    assert t[t.feature == "pooled"]["layer"].nunique() == 2 and (t["k"] == 2).all()


def test_retrieval_table_ranks_identical_images_first(tmp_path, spec):
    base = tmp_path / "rtoy"
    names = [f"d{i}" for i in range(6)]
    for i, n in enumerate(names):
        _noise_image(base / "jpg" / f"{n}.jpg", (40, 30), i)
    for q, src in enumerate((2, 4)):  # queries are copies of d2, d4
        (base / "jpg" / f"q{q}.jpg").write_bytes((base / "jpg" / f"d{src}.jpg").read_bytes())
    gnd = {
        "imlist": names,
        "qimlist": ["q0", "q1"],
        "gnd": [
            {"bbx": [0, 0, 1, 1], "easy": [2], "hard": [], "junk": []},
            {"bbx": [0, 0, 1, 1], "easy": [], "hard": [4], "junk": [2]},
        ],
    }
    (base / "gnd_rtoy.pkl").write_bytes(pickle.dumps(gnd))
    m = read_revisited(tmp_path, dataset="r", name="rtoy")
    run_extraction(
        spec,
        m,
        "retrieval",
        tmp_path / "r.zarr",
        batch_size=4,
        progress=False,
        feature_dtype="float32",
    )
    from vitlib.downstream.tables import retrieval_table

    t = retrieval_table(str(tmp_path / "r.zarr"), m)
    # identical images have cosine 1: each query's positive is ranked first -> AP 100
    med = t[t.protocol == "medium"]
    np.testing.assert_allclose(med["map"], 100.0)
    np.testing.assert_allclose(t[t.protocol == "hard"]["map"], 100.0)  # only q1 has a hard positive
    assert list(med["mp@1"]) == [100.0, 100.0]
    # every query's AP is 100: the bootstrap interval over queries is the point 100
    np.testing.assert_allclose(t["map_ci_low"], 100.0)
    np.testing.assert_allclose(t["map_ci_high"], 100.0)


def test_davis_table_on_a_static_video_is_perfect(tmp_path, spec):
    """A video whose frames are all the same image: propagation returns the first mask."""
    from vitlib.downstream.tables import davis_table

    root = tmp_path / "davis"
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("still\n")
    mask = np.zeros((64, 96), np.uint8)
    mask[16:48, 24:72] = 1
    for f in range(4):
        _noise_image(root / "JPEGImages" / "480p" / "still" / f"{f:05d}.jpg", (96, 64), 0)
        p = root / "Annotations" / "480p" / "still" / f"{f:05d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask, "P").save(p)
    m = read_davis(root, dataset="d")
    run_extraction(
        spec, m, "dense", tmp_path / "d.zarr", batch_size=2, progress=False, feature_dtype="float32"
    )
    t = davis_table(str(tmp_path / "d.zarr"), m, topk=1)
    # identical features: each token's best source is itself in frame 0, so every frame's
    # prediction is the token-level first mask through DINO's upsampling (bilinear, argmax),
    # which loses only the half-token border: J = that round trip's IoU, not 100
    from vitlib.downstream.davis import region_similarity, soft_to_labels

    onehot = torch.from_numpy(np.eye(2, dtype=np.float32)[mask[4::8, 4::8]]).permute(2, 0, 1)
    back = soft_to_labels(onehot[None], 8, (64, 96))[0]
    expect = 100 * region_similarity(back == 1, mask == 1)
    assert 95 < expect < 100
    np.testing.assert_allclose(t["J"], expect)
    assert list(t["layer"]) == [0, 1] and (t["n_objects"] == 1).all()
    # one sequence: every resample is that sequence, the interval is the point
    np.testing.assert_allclose(t["J_ci_low"], expect)
    np.testing.assert_allclose(t["JF_ci_high"], t["JF"])


def test_spair_table_identity_pairs_are_exact(tmp_path, spec):
    """Pairs of an image with itself: every keypoint matches its own pixel (error < 1 px)."""
    from vitlib.downstream.tables import spair_table

    root = tmp_path / "spair"
    (root / "ImageAnnotation" / "cat").mkdir(parents=True)
    pdir = root / "PairAnnotation" / "test"
    pdir.mkdir(parents=True)
    for i in range(2):
        _noise_image(root / "JPEGImages" / "cat" / f"im{i}.jpg", (40, 30), 10 + i)
        d = {
            "category": "cat",
            "mirror": 0,
            "src_imname": f"im{i}.jpg",
            "trg_imname": f"im{i}.jpg",
            "src_bndbox": [0, 0, 40, 30],
            "trg_bndbox": [0, 0, 40, 30],
            "src_imsize": [40, 30, 3],
            "trg_imsize": [40, 30, 3],
            "kps_ids": [0, 1, 2],
            "src_kps": [[5, 5], [20, 12], [33, 25]],
            "trg_kps": [[5, 5], [20, 12], [33, 25]],
        }
        (pdir / f"{i:06d}-im{i}-im{i}:cat.json").write_text(json.dumps(d))
    m = read_spair(root, dataset="s")
    run_extraction(
        spec, m, "spair", tmp_path / "s.zarr", batch_size=2, progress=False, feature_dtype="float32"
    )
    t = spair_table(str(tmp_path / "s.zarr"), m)
    np.testing.assert_allclose(t[(t.alpha == 0.1) & (t.category == "all")]["pck"], 100.0)
    assert set(t["alpha"]) == {0.1, 0.05, 0.01}
    ok = t["pck_ci_low"].notna()
    assert ok.all()
    assert ((t["pck_ci_low"] <= t["pck"] + 1e-9) & (t["pck"] <= t["pck_ci_high"] + 1e-9)).all()
    full = t[(t.alpha == 0.1) & (t.category == "all")]  # every resample is perfect too
    np.testing.assert_allclose(full["pck_ci_low"], 100.0)


def test_summary_best_layer_from_hand_made_tables():
    knn = tidy(
        pd.DataFrame(
            {
                "model": ["a"] * 3 + ["b"] * 3,
                "family": "x",
                "depth": 3,
                "dataset": "val",
                "layer": [0, 1, 2] * 2,
                "k": 20,
                "top1": [10, 50, 40, 5, 6, 7],
                "top1_ci_low": [9, 48, 38, 4, 5, 6],
                "top1_ci_high": [11, 52, 42, 6, 7, 8],
                "top5": 0.0,
            }
        ),
        analysis="knn",
        metrics=("top1", "top5"),
    )
    dav = tidy(
        pd.DataFrame(
            {
                "model": ["a"] * 3,
                "family": "x",
                "depth": 3,
                "layer": [0, 1, 2],
                "JF": [1.0, 3.0, 2.0],
                "J": 0,
                "F": 0,
                "dataset": "davis",
            }
        ),
        analysis="davis",
        metrics=("J", "F", "JF"),
    )
    s = summary_table([knn, dav])
    a = s[(s.model == "a") & s.metric.str.startswith("k-NN")].iloc[0]
    assert (a.best_layer, a.of, a.best, a.last_layer) == (2, 3, 50, 40)
    b = s[(s.model == "b")].iloc[0]
    assert (b.best_layer, b.best) == (3, 7)
    assert (a.best_ci_low, a.best_ci_high) == (48, 52)  # the best layer's interval
    assert s[s.metric == "J&F"].iloc[0].best_layer == 2
    assert np.isnan(s[s.metric == "J&F"].iloc[0].best_ci_low)  # a table without intervals
    from vitlib.downstream.summary import _cells

    assert _cells(s[(s.model == "a") & s.metric.str.startswith("k-NN")].head(1)) == [
        "50.00 (2) [48.0, 52.0]"
    ]
    # the summary dispatches on the analysis: one without summary metrics is an error
    with pytest.raises(ValueError, match="declares no summary metric"):
        headline(knn.assign(analysis="clustering"))


def test_spair_table_with_more_images_than_its_cache(tmp_path, spec):
    """Pairs (0,1), (2,3), (0,4): the third needs image 0 while a fifth map is loaded
    (the descriptor cache holds four); the result must not depend on what was evicted."""
    from vitlib.downstream.tables import spair_table

    root = tmp_path / "spair"
    (root / "ImageAnnotation" / "cat").mkdir(parents=True)
    pdir = root / "PairAnnotation" / "test"
    pdir.mkdir(parents=True)
    for i in range(5):
        _noise_image(root / "JPEGImages" / "cat" / f"im{i}.jpg", (40, 30), 20 + i)
    kps = [[5, 5], [20, 12], [33, 25]]
    for k, (a, b) in enumerate([(0, 1), (2, 3), (0, 4), (4, 4)]):
        d = {
            "category": "cat",
            "mirror": 0,
            "src_imname": f"im{a}.jpg",
            "trg_imname": f"im{b}.jpg",
            "src_bndbox": [0, 0, 40, 30],
            "trg_bndbox": [0, 0, 40, 30],
            "src_imsize": [40, 30, 3],
            "trg_imsize": [40, 30, 3],
            "kps_ids": [0, 1, 2],
            "src_kps": kps,
            "trg_kps": kps,
        }
        (pdir / f"{k:06d}-im{a}-im{b}:cat.json").write_text(json.dumps(d))
    m = read_spair(root, dataset="s", pairs_per_category=4)
    run_extraction(spec, m, "spair", tmp_path / "s.zarr", batch_size=8, progress=False)
    t = spair_table(str(tmp_path / "s.zarr"), m)
    # layers × alphas × (the mean "all" + the one category)
    assert len(t) == 2 * 3 * 2 and t["pck"].between(0, 100).all() and (t["n_pairs"] == 4).all()
    assert set(t["category"]) == {"all", "cat"}


def test_segments_pooled_in_the_pass_equal_pooling_the_stored_tokens(tmp_path, spec, coco):
    """need segment_pool: the pass pools every annotation (no tokens stored) exactly as
    pooled_features pools a token store; the clustering tables are equal."""
    from vitlib.metrics.segfeat import (
        pool,
        pooled_features,
        segment_clustering_table,
        segment_masks,
    )
    from vitlib.store import Store

    m = read_coco(coco, dataset="c")
    kw = dict(batch_size=4, progress=False)
    run_extraction(spec, m, "dense", tmp_path / "t.zarr", needs=["tokens"], **kw)
    run_extraction(spec, m, "dense", tmp_path / "s.zarr", needs=["segment_pool"], **kw)
    tok, seg = Store(tmp_path / "t.zarr"), Store(tmp_path / "s.zarr")
    assert not seg.has("tokens") and seg.read("seg/offsets")[-1] == len(seg.read("seg/category"))
    x, y = pooled_features(seg, m)
    x_ref, y_ref = pooled_features(tok, m)
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)
    # and by hand for one image: its masks at its grid pool its stored tokens
    masks = segment_masks(m, tok.read("grid"), crop=False)
    off, s_off = tok.read("offsets"), seg.read("seg/offsets")
    i = 1
    manual = pool(masks[i][0], np.asarray(tok.array("tokens")[off[i] : off[i + 1]]))
    np.testing.assert_array_equal(seg.read("seg/pooled")[s_off[i] : s_off[i + 1]], manual)
    a = segment_clustering_table(seg, m, n_init=2)
    b = segment_clustering_table(tok, m, n_init=2)
    pd.testing.assert_frame_equal(a, b)
    # the store is a fraction of the token store
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())  # noqa: E731
    assert size(tmp_path / "s.zarr") < size(tmp_path / "t.zarr") / 3


def _moving_davis(root, seqs=(("a", 5, 2), ("b", 4, 3))):
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{s}\n" for s, _, _ in seqs))
    rng = np.random.default_rng(3)
    for name, frames, objects in seqs:
        bg = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
        for f in range(frames):
            img, mask = np.roll(bg, 3 * f, axis=1), np.zeros((64, 96), np.uint8)
            for o in range(1, objects):
                x0 = 8 + 30 * (o - 1) + 2 * f
                mask[10 + 8 * o : 30 + 8 * o, x0 : x0 + 20] = o
                img[10 + 8 * o : 30 + 8 * o, x0 : x0 + 20] = 40 * o
            p = root / "JPEGImages" / "480p" / name / f"{f:05d}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(p)
            a = root / "Annotations" / "480p" / name / f"{f:05d}.png"
            a.parent.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(mask, "P")
            im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)  # DAVIS-like palette
            im.save(a)


def test_davis_propagated_in_the_pass_equals_propagating_the_stored_tokens(tmp_path, spec):
    """need davis_propagation: one sequence per batch, labels propagated at every block in
    the pass; the J&F table equals the one from a full token store, also after a kill."""
    from vitlib.downstream.tables import davis_table
    from vitlib.store import Store

    _moving_davis(tmp_path / "davis")
    m = read_davis(tmp_path / "davis", dataset="d")
    settings = dict(n_last=2, radius=3, topk=3, temperature=0.2)
    need = "davis_propagation@" + ",".join(f"{k}={v}" for k, v in settings.items())
    kw = dict(batch_size=2, progress=False)
    run_extraction(spec, m, "dense", tmp_path / "t.zarr", needs=["tokens"], **kw)

    class Killed(Exception):
        pass

    def boom(b):
        raise Killed

    with pytest.raises(Killed):  # killed after the first sequence
        run_extraction(
            spec, m, "dense", tmp_path / "p.zarr", needs=[need], on_batch=boom, shard_mb=0, **kw
        )
    s = run_extraction(spec, m, "dense", tmp_path / "p.zarr", needs=[need], shard_mb=0, **kw)
    assert s["resumed_from_batch"] == 1 and s["batches"] == 2  # one batch per sequence
    p = Store(tmp_path / "p.zarr")
    assert not p.has("tokens") and p.array("davis/soft").shape[2] == 3
    a = davis_table(p, m, **settings)
    b = davis_table(Store(tmp_path / "t.zarr"), m, **settings)
    pd.testing.assert_frame_equal(a, b)
    assert a["JF"].between(0, 100).all() and a["n_objects"].iloc[0] == 3
    with pytest.raises(ValueError, match="re-extract"):
        davis_table(p, m, **{**settings, "topk": 5})


def _spair_world(root, cats=("cat", "dog"), n_img=4, n_pairs=5):
    rng = np.random.default_rng(7)
    for cat in cats:
        for i in range(n_img):
            _noise_image(root / "JPEGImages" / cat / f"im{i}.jpg", (40 + 4 * i, 30), i)
        (root / "ImageAnnotation" / cat).mkdir(parents=True)
        pdir = root / "PairAnnotation" / "test"
        pdir.mkdir(parents=True, exist_ok=True)
        for k in range(n_pairs):
            s, t = k % n_img, (k + 1) % n_img
            d = {
                "category": cat,
                "mirror": 0,
                "src_imname": f"im{s}.jpg",
                "trg_imname": f"im{t}.jpg",
                "src_bndbox": [0, 0, 30, 20],
                "trg_bndbox": [2, 1, 36, 25],
                "src_imsize": [40 + 4 * s, 30, 3],
                "trg_imsize": [40 + 4 * t, 30, 3],
                "kps_ids": [0, 1, 2],
                "src_kps": rng.integers(0, 30, (3, 2)).tolist(),
                "trg_kps": rng.integers(0, 30, (3, 2)).tolist(),
            }
            (pdir / f"{k:06d}-im{s}-im{t}:{cat}.json").write_text(json.dumps(d))


def test_spair_transferred_in_the_pass_equals_transfer_from_stored_tokens(tmp_path, spec):
    """need spair_transfer: one category per batch, keypoints transferred at every block in
    the pass (no tokens stored); the PCK table equals the one from the token store."""
    from vitlib.downstream.tables import spair_table
    from vitlib.store import Store

    _spair_world(tmp_path / "spair")
    m = read_spair(tmp_path / "spair", dataset="s", pairs_per_category=4)
    kw = dict(batch_size=3, progress=False)
    run_extraction(spec, m, "spair", tmp_path / "t.zarr", needs=["tokens"], **kw)
    s = run_extraction(spec, m, "spair", tmp_path / "p.zarr", needs=["spair_transfer"], **kw)
    assert s["batches"] == 2  # one per category
    p = Store(tmp_path / "p.zarr")
    assert not p.has("tokens") and p.array("spair/pred").shape == (8 * 3, 2, 2)
    a, b = spair_table(p, m), spair_table(Store(tmp_path / "t.zarr"), m)
    pd.testing.assert_frame_equal(a, b)
    assert set(a["category"]) == {"all", "cat", "dog"} and a["pck"].between(0, 100).all()
    # rounding=nearest: the in-pass and token routes agree again; a store transferred with
    # one rounding refuses a table asked for the other
    need = ["spair_transfer@rounding=nearest"]
    run_extraction(spec, m, "spair", tmp_path / "n.zarr", needs=need, **kw)
    n = spair_table(Store(tmp_path / "n.zarr"), m, rounding="nearest")
    pd.testing.assert_frame_equal(n, spair_table(Store(tmp_path / "t.zarr"), m, rounding="nearest"))
    with pytest.raises(ValueError, match="rounding 'nearest'"):
        spair_table(Store(tmp_path / "n.zarr"), m)


def test_spair_rounding_reads_the_descriptor_pixel():
    """A source keypoint at (2.7, 1.6) on a 4×4 view: faithful reads pixel (x 2, y 2), as the
    original's (int(x), round(y)); nearest reads (3, 2). Each pixel's descriptor is one-hot,
    so the prediction is the pixel read."""
    import torch

    from vitlib.downstream.tables import spair_transfer

    eye = torch.eye(16)  # [D = 16, S·S]: pixel k has descriptor e_k
    kp = np.array([[2.7, 1.6]])
    assert spair_transfer(eye, eye, kp, 4).tolist() == [[2.0, 2.0]]
    assert spair_transfer(eye, eye, kp, 4, "nearest").tolist() == [[3.0, 2.0]]
    with pytest.raises(ValueError, match="rounding"):
        spair_transfer(eye, eye, kp, 4, "floor")


def _davis(analysis: str, view: str, model: str, family: str, jf: list[float]) -> pd.DataFrame:
    n = len(jf)
    return tidy(
        pd.DataFrame(
            {
                "model": model,
                "family": family,
                "depth": n,
                "layer": range(n),
                "view": view,
                "JF": jf,
                "J": 0.0,
                "F": 0.0,
                "dataset": "davis",
            }
        ),
        analysis=analysis,
        metrics=("J", "F", "JF"),
    )


def test_table4_sets_the_non_dense_view_against_the_dense_one():
    """The paper's Table 4: best J&F per model, 'Normal' (squash) then 'Dense', the noise
    row (mean over blocks) last; Table 5 keeps the dense view only."""
    from vitlib.downstream.summary import paper_table, table4

    s = summary_table(
        [
            _davis("davis", "dense", "a", "fs", [50.0, 60.0, 55.0]),
            _davis("davis_normal", "squash", "a", "fs", [30.0, 20.0, 34.0]),
            _davis("davis", "dense", "nz", "noise", [3.0, 5.0]),
            _davis("davis_normal", "squash", "nz", "noise", [2.0, 2.0]),
        ]
    )
    t4 = table4(s, order=["nz", "a"])
    assert list(t4.columns) == ["davis Normal", "davis Dense"]
    assert list(t4.index) == ["a", "nz"]
    assert t4.loc["a"].tolist() == ["34.00 (3)", "60.00 (2)"]
    assert t4.loc["nz"].tolist() == ["2.00", "4.00"]
    t5 = paper_table(s, main=False)
    assert list(t5.columns) == ["layers", "davis J Mean", "davis F Mean", "davis J&F"]
    assert t5.loc["a", "davis J&F"] == "60.00 (2)"
    assert table4(s[s.analysis == "knn"]).empty


def test_spair_category_order_listdir_follows_the_file_system(tmp_path):
    import os

    _spair_world(tmp_path / "spair")
    listed = [
        n
        for n in os.listdir(tmp_path / "spair" / "ImageAnnotation")
        if (tmp_path / "spair" / "ImageAnnotation" / n).is_dir()
    ]
    for order, want in (("sorted", sorted(listed)), ("listdir", listed)):
        m = read_spair(tmp_path / "spair", dataset="s", pairs_per_category=2, category_order=order)
        cats = list(dict.fromkeys(it.meta["category"] for it in m.items))
        assert cats == want, order
    with pytest.raises(ValueError, match="category_order"):
        read_spair(tmp_path / "spair", dataset="s", category_order="random")


def test_family_tests_relabel_models_exactly_and_read_curves_at_normalised_depth(tmp_path):
    """Three 'sup' models against three 'mae' models (k-NN top-1 per layer): the test at each
    depth bin is the exact relabelling test of the six models (scipy's), the adjusted p is
    the max statistic over the bins, a 6-block model is read at the same normalised depths
    as the 3-block ones, and noise models are left out."""
    from scipy import stats as st

    from vitlib.downstream.family_tests import depth_profile, family_tests
    from vitlib.plots.downstream import family_tests_figure

    rng = np.random.default_rng(0)
    rows = []
    curves = {}
    for i, (fam, shift) in enumerate([("sup", 20.0)] * 3 + [("mae", 0.0)] * 3):
        depth = 6 if i == 0 else 3
        vals = rng.normal(30, 1, depth) + shift * (np.arange(depth) + 1) / depth
        curves[f"m{i}"] = depth_profile(range(depth), depth, vals, 3)
        rows += [
            {"model": f"m{i}", "family": fam, "depth": depth, "layer": layer, "top1": v}
            for layer, v in enumerate(vals)
        ]
    rows += [
        {"model": "z", "family": "noise", "depth": 3, "layer": la, "top1": 1.0} for la in range(3)
    ]
    knn = tidy(
        pd.DataFrame(rows).assign(dataset="val", k=20, top5=0.0),
        analysis="knn",
        metrics=("top1", "top5"),
    )
    t = family_tests([knn], bins=3, permutations=1000)
    t = t[t.metric == t.metric.iloc[0]]
    assert set(zip(t.family_a, t.family_b)) == {("sup", "mae")}  # noise left out
    assert (t.n_a == 3).all() and (t.n_b == 3).all() and t.exact.all()
    assert t.min_p.iloc[0] == pytest.approx(2 / 20)  # mirrored relabellings: 2 of 20
    a = np.stack([curves[f"m{i}"] for i in range(3)])
    b = np.stack([curves[f"m{i}"] for i in range(3, 6)])
    np.testing.assert_allclose(t.difference, a.mean(0) - b.mean(0))
    for j in range(3):
        ref = st.permutation_test(
            (a[:, j], b[:, j]),
            lambda x, y: np.mean(x) - np.mean(y),
            permutation_type="independent",
            n_resamples=np.inf,
        ).pvalue
        assert t.p.iloc[j] == pytest.approx(ref, abs=1e-12)
    # the deepest bin: every sup model beats every mae model, the smallest p the design has
    assert t.p.iloc[-1] == pytest.approx(2 / 20) and (t.p_adjusted >= t.p).all()
    # the 6-block model's curve at depth 1/3 is its block 2 (normalised depth 2/6)
    six = knn[(knn.model == "m0") & (knn.metric == "top1")]
    assert curves["m0"][0] == pytest.approx(float(six.value.iloc[1]))
    with pytest.raises(ValueError, match="bins"):
        family_tests([knn], bins=0)
    family_tests_figure(t, [tmp_path / "f.png"])
    assert (tmp_path / "f.png").stat().st_size > 0


def test_family_tests_meet_models_from_per_model_tables():
    """The workflow writes one table per model: the tests pair families across files."""
    from vitlib.downstream.family_tests import family_tests

    def one(model, fam, vals):
        return tidy(
            pd.DataFrame(
                {"model": model, "family": fam, "depth": 3, "layer": [0, 1, 2], "top1": vals}
            ).assign(dataset="val", k=20, top5=0.0),
            analysis="knn",
            metrics=("top1", "top5"),
        )

    t = family_tests([one("a", "sup", [1.0, 2, 3]), one("b", "mae", [0.0, 0, 1])], bins=3)
    t = t[t.metric == t.metric.iloc[0]]
    assert list(t.difference) == [1.0, 2.0, 2.0] and (t.min_p == 1.0).all()
    assert not t.significant.any()  # one model against one: no test can reject
