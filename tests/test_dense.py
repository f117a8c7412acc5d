"""Dense feature quality (docs §D10): the tokens sampled in the pass equal the stored tokens
at their positions, labels follow the masks, the probe's scores equal scikit-learn's on the
same predictions, the PCA maps are scikit-learn's PCA of the kept tokens."""

from __future__ import annotations

import numpy as np
import pytest
from test_tasks import coco  # noqa: F401  (the COCO-format fixture)

from vitlib import keys
from vitlib.data.readers import read_coco
from vitlib.extract import run_token_extraction
from vitlib.metrics.dense import (
    confusion_scores,
    coverage_masks,
    dense_probe_table,
    dense_sample_plan,
    pca_maps,
    token_labels,
)
from vitlib.store import Store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
NEED = "dense_sample@per_image=5,full_images=2,seed=3,threshold=0.5"


@pytest.fixture(scope="module")
def dense_store(tmp_path_factory, spec, coco):  # noqa: F811
    m = read_coco(coco, dataset="c")
    out = tmp_path_factory.mktemp("dense") / "d.zarr"
    run_token_extraction(
        spec,
        m,
        "dense",
        out,
        batch_size=2,
        progress=False,
        feature_dtype="float32",
        needs=["tokens", NEED],
    )
    return out, m


def test_sampled_tokens_are_the_stored_tokens_with_mask_labels(dense_store):
    out, m = dense_store
    s = Store.open(out)
    grid = s.read(keys.GRID)
    toks, offs = s.array(keys.TOKENS), s.read(keys.OFFSETS)
    d_off = s.read(keys.DENSE_OFFSETS)
    d_tok, d_lab, d_pos = (
        s.read(keys.DENSE_TOKENS),
        s.read(keys.DENSE_LABEL),
        s.read(keys.DENSE_POS),
    )
    masks = coverage_masks(m, grid, crop=False)
    pos, lab = dense_sample_plan(
        m, grid, crop=False, per_image=5, full_images=2, seed=3, threshold=0.5
    )
    for i in range(len(m)):
        mi = int(grid[i][0] * grid[i][1])
        sl = slice(d_off[i], d_off[i + 1])
        want = np.arange(mi) if i < 2 else pos[i]
        assert len(want) == (mi if i < 2 else 5)
        np.testing.assert_array_equal(d_pos[sl], want)
        np.testing.assert_array_equal(d_tok[sl], np.asarray(toks[offs[i] : offs[i + 1]])[want])
        np.testing.assert_array_equal(d_lab[sl], token_labels(*masks[i], 0.5, mi)[want])
    assert set(np.unique(d_lab)) <= {-1, 1, 3} and (d_lab != -1).any()
    # coverage: the box filter's area fraction — a token fully inside an annotation is 1
    cov, _ = masks[0]
    assert cov.max() == pytest.approx(1.0) and cov.min() >= 0


def test_confusion_scores_equal_sklearn():
    from sklearn.metrics import accuracy_score, jaccard_score

    rng = np.random.default_rng(0)
    yt, yp = rng.integers(0, 4, 300), rng.integers(0, 5, 300)
    yt[yt == 2] = 1  # class 2 absent from the truth, present in predictions
    conf = np.zeros((5, 5))
    np.add.at(conf, (yt, yp), 1)
    s = confusion_scores(conf, background=0)
    present = np.unique(np.r_[yt, yp])
    per = jaccard_score(yt, yp, labels=present, average=None, zero_division=0)
    assert s["miou"] == pytest.approx(per.mean())
    assert s["miou_fg"] == pytest.approx(per[present != 0].mean())
    assert s["acc"] == pytest.approx(accuracy_score(yt, yp))


def test_dense_probe_table_and_pca_maps(dense_store):
    from sklearn.decomposition import PCA

    out, m = dense_store
    t = dense_probe_table(out, m, epochs=2, test_fraction=0.5, statistics={"bootstrap": 50})
    assert list(t["layer"]) == [0, 1] and (t["classes"] == 3).all() and t["background"].all()
    for k in ("miou", "miou_fg", "acc"):
        assert t[k].between(0, 1).all()
        assert (t[f"{k}_ci_low"] <= t[k] + 1e-12).all() and (
            t[k] <= t[f"{k}_ci_high"] + 1e-12
        ).all()
    # the full images enter the probe with per_image tokens, like the others
    assert t["n_train_tokens"].iloc[0] + t["n_test_tokens"].iloc[0] <= 6 * 5
    p = pca_maps(out, m, fit_tokens=10_000, seed=0)
    s = Store.open(out)
    x = s.read(keys.DENSE_TOKENS)[:, 1].astype(np.float32)
    off, grid = s.read(keys.DENSE_OFFSETS), s.read(keys.GRID)
    pca = PCA(3, random_state=0).fit(x)  # fit_tokens > tokens: every token
    proj = [pca.transform(x[off[i] : off[i + 1]]) for i in (0, 1)]
    lo, hi = np.percentile(np.concatenate(proj), [1, 99], axis=0)
    gh, gw = (int(v) for v in grid[1])
    want = np.clip((proj[1] - lo) / (hi - lo), 0, 1).reshape(gh, gw, 3)
    np.testing.assert_allclose(p["rgb"][1, 1, :gh, :gw], want, atol=1e-5)
    assert p["rgb"].shape[:2] == (2, 2) and list(p["index"]) == [0, 1]


def test_artifact_locality(dense_store):
    """The artifact split recomputed from the sampled tokens' norms; the regression's
    errors are mean Euclidean distances in tokens; no artifact → NaN, not a number."""
    from vitlib.metrics.dense import artifact_locality_table

    out, m = dense_store
    t = artifact_locality_table(out, m, norm_factor=1.1, test_fraction=0.5)
    s = Store.open(out)
    x = s.read(keys.DENSE_TOKENS)[:, 1].astype(np.float32)
    off = s.read(keys.DENSE_OFFSETS)
    norm = np.linalg.norm(x, axis=1)
    img = np.repeat(np.arange(len(off) - 1), np.diff(off))
    med = np.array([np.median(norm[off[i] : off[i + 1]]) for i in range(len(off) - 1)])
    frac = (norm > 1.1 * med[img]).mean()
    got = t[(t.layer == 1) & (t.metric == "artifact_fraction")]["value"].iloc[0]
    assert got == pytest.approx(frac)
    err = t[(t.metric == "position_error_normal")]["value"]
    assert err.notna().all() and (err >= 0).all()
    none = artifact_locality_table(out, m, norm_factor=100.0, test_fraction=0.5)
    assert (none[none.metric == "n_artifact"]["value"] == 0).all()
    assert none[none.metric == "position_error_artifact"]["value"].isna().all()
