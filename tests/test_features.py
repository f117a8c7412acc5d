"""Clustering scores and the feature-analysis tables computed from stores."""

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans

from vitlib.extract import run_extraction
from vitlib.metrics.clustering import cluster_scores, kmeans_labels, noise_like, purity
from vitlib.metrics.tables import (
    cka_grids_table,
    cka_pair_table,
    clustering_table,
    last_layer_cka_table,
    residual_table,
    similarity_table,
)
from vitlib.store import Store

ALL_POINTS = ("block", "norm1", "norm2", "attn_skip", "attn_branch", "mlp_skip", "mlp_branch")


def test_purity_hand_cases():
    assert purity([0, 0, 1, 1], [5, 5, 7, 7]) == 1.0
    assert purity([0, 0, 1, 1], [3, 3, 3, 3]) == 0.5
    assert purity([0, 1, 1, 2, 2, 2], [0, 0, 0, 1, 1, 1]) == pytest.approx(5 / 6)
    with pytest.raises(ValueError):
        purity([], [])


def test_faiss_kmeans_finds_separated_clusters_like_sklearn():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 10
    y = np.repeat(np.arange(5), 40)
    x = centres[y] + rng.normal(size=(200, 16))
    s = cluster_scores(x, y, 5, seed=0)
    assert s == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0), "purity": 1.0}
    sk = KMeans(5, n_init=10, random_state=0).fit_predict(x)
    assert purity(sk, kmeans_labels(x, 5)) == 1.0  # the same partition
    np.testing.assert_array_equal(kmeans_labels(x, 5, seed=3), kmeans_labels(x, 5, seed=3))


def test_noise_baselines():
    g = noise_like((100, 8), "gaussian", 0)
    u = noise_like((100, 8), "uniform", 0)
    assert abs(g.mean()) < 0.3 and u.min() >= 0 and u.max() < 1
    np.testing.assert_array_equal(g, noise_like((100, 8), "gaussian", 0))


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_world):
    from conftest import TINY_ARCH

    from vitlib.data.manifest import read_imagefolder
    from vitlib.models import spec_from_config

    man = read_imagefolder(tiny_world / "imagenet" / "train", dataset="tiny", cka_batch_size=8)
    d = tmp_path_factory.mktemp("fs")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        spec = spec_from_config(name, {**TINY_ARCH, "init_seed": seed})
        out[name] = str(d / f"{name}.zarr")
        run_extraction(
            spec,
            man,
            "center",
            out[name],
            batch_size=16,
            progress=False,
            gram_points=ALL_POINTS,
            residual_norms=True,
            feature_dtype="float32",
        )
    return out


def test_self_cka_grid_is_symmetric_with_unit_diagonal(stores):
    t = cka_pair_table(stores["a"], stores["a"], points="norm")
    grid = t.pivot(index="row", columns="col", values="value").to_numpy()
    assert grid.shape == (6, 6)  # norm1, norm2 of 3 blocks
    np.testing.assert_allclose(np.diag(grid), 1.0, rtol=1e-9)
    np.testing.assert_allclose(grid, grid.T, rtol=1e-9)
    assert list(t["point_x"][:2]) == ["norm1", "norm1"] and t["layer_x"].max() == 2


def test_between_model_block_cka_equals_feature_cka(stores):
    """From stored Grams == from the features themselves (CLS tokens, one layer)."""
    import zarr

    t = cka_pair_table(stores["a"], stores["b"], points="block", kind="cls")
    ga, gb = zarr.open_group(stores["a"]), zarr.open_group(stores["b"])
    xa = np.asarray(ga["feat/block_cls"][:, 1], dtype=np.float64)
    xb = np.asarray(gb["feat/block_cls"][:, 2], dtype=np.float64)
    from vitlib.metrics.cka import minibatch_cka

    ref = minibatch_cka(list(xa.reshape(4, 8, -1)), list(xb.reshape(4, 8, -1)))
    got = t[(t.layer_x == 1) & (t.layer_y == 2)]["value"].item()
    assert got == pytest.approx(ref, rel=1e-6)
    assert 0 < got <= 1


def test_grids_table_holds_every_unordered_pair_as_the_pair_table(stores):
    """The per-dataset job's table: every pair (x not after y) equal to its pair table."""
    t = cka_grids_table([stores["a"], stores["b"]], points="norm", kind="spatial")
    models = [Store.open(stores[k]).model for k in ("a", "b")]
    want = [(models[0], models[0]), (models[0], models[1]), (models[1], models[1])]
    assert list(dict.fromkeys(zip(t.model_x, t.model_y))) == want
    for x, y in (("a", "a"), ("a", "b"), ("b", "b")):
        one = cka_pair_table(stores[x], stores[y], points="norm", kind="spatial")
        part = t[(t.model_x == one.model_x[0]) & (t.model_y == one.model_y[0])]
        pd.testing.assert_frame_equal(part.reset_index(drop=True), one)


def test_last_layer_and_residual_tables(stores):
    t = last_layer_cka_table([stores["a"], stores["b"]])
    assert set(t["kind"]) == {"all", "cls", "spatial"} and len(t) == 3 * 4
    diag = t[t.model_x == t.model_y]["value"]
    np.testing.assert_allclose(diag, 1.0, rtol=1e-9)
    r = residual_table(stores["a"])
    attn = r[(r.sub_block == "attn") & (r.metric == "cka")]
    assert len(attn) == 9 and attn["value"].between(-0.2, 1.0001).all()
    ratio = r[(r.sub_block == "mlp") & (r.metric == "norm_ratio_all")]["value"]
    assert len(ratio) == 3 and (ratio > 0).all()


def test_clustering_table(stores):
    t = clustering_table(stores["a"], seed=0, n_init=2)
    assert t["k"].iloc[0] == 4
    assert set(t["feature"]) == {"cls", "spatial", "noise"}
    assert t["value"].between(-1, 1).all() and len(t) == (2 * 3 + 1) * 3
    pur = t[(t.metric == "purity")]["value"]
    assert (pur >= 0.25).all()  # 4 balanced classes: purity is at least chance
    # every row has a bootstrap interval that holds its value (one run: the item bootstrap)
    assert t["ci_low"].notna().all() and (t["ci_low"] <= t["value"] + 1e-12).all()
    assert (t["value"] <= t["ci_high"] + 1e-12).all()


def test_clustering_seeds_average_runs_and_widen_the_interval(stores):
    """``seeds`` runs: the value is the mean of the single runs' scores (run j seeded from
    seed + j·n_init), and the interval resamples runs and images."""
    from sklearn.metrics import normalized_mutual_info_score

    from vitlib.metrics.clustering import kmeans_labels, seeded_cluster_scores

    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(4), 30)
    x = (rng.normal(size=(4, 6))[y] * 0.8 + rng.normal(size=(120, 6))).astype(np.float32)
    s = seeded_cluster_scores(x, y, 4, seed=5, seeds=3, n_init=1, statistics={"bootstrap": 400})
    runs = [kmeans_labels(x, 4, seed=5 + j, n_init=1) for j in range(3)]
    ref = np.mean([normalized_mutual_info_score(y, p) for p in runs])
    assert s["nmi"][0] == pytest.approx(ref, abs=1e-12)
    for m, (v, lo, hi) in s.items():
        assert lo <= v <= hi and hi - lo > 0, m
    none = seeded_cluster_scores(x, y, 4, seeds=1, n_init=1, statistics={"bootstrap": 0})
    assert np.isnan(none["ari"][1]) and np.isnan(none["ari"][2])
    with pytest.raises(ValueError, match="seeds"):
        seeded_cluster_scores(x, y, 4, seeds=0)


def test_contingency_scores_equal_sklearn_on_the_repeated_labellings():
    """The bootstrap's scores of a weighted contingency table equal scikit-learn's NMI / ARI
    and :func:`purity` on the labellings with each item repeated by its weight, edge cases
    (a single class and cluster, no information, perfect agreement, absent labels) included."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from vitlib.metrics.clustering import contingency_scores

    rng = np.random.default_rng(0)
    cases = [
        (rng.integers(0, 5, 200), rng.integers(0, 7, 200), rng.integers(0, 4, 200)),
        (np.zeros(10, int), np.zeros(10, int), np.ones(10, int)),  # one class, one cluster
        (np.r_[0, 0, 1, 1], np.r_[0, 1, 0, 1], np.ones(4, int)),  # MI = 0
        (np.r_[0, 0, 1, 1, 2], np.r_[2, 2, 0, 0, 1], np.r_[1, 3, 0, 2, 1]),  # perfect, gaps
        (np.r_[0, 0, 0, 0], np.r_[0, 1, 2, 3], np.ones(4, int)),  # all split
    ]
    for yt, yp, w in cases:
        table = np.zeros((yt.max() + 1, yp.max() + 1))
        np.add.at(table, (yt, yp), w)
        got = contingency_scores(table[None])
        rt, rp = np.repeat(yt, w), np.repeat(yp, w)
        assert got["nmi"][0] == pytest.approx(normalized_mutual_info_score(rt, rp), abs=1e-12)
        assert got["ari"][0] == pytest.approx(adjusted_rand_score(rt, rp), abs=1e-12)
        assert got["purity"][0] == pytest.approx(purity(rt, rp), abs=1e-12)


def test_similarity_table_values_nulls_and_best_layers(stores):
    """Each row equals the single-pair measure on the stored features (the seeded subset),
    the null columns follow from the permutations, q is Benjamini–Hochberg, best flags are
    the grid's argmax / argmin."""
    import zarr
    from scipy.stats import false_discovery_control

    from vitlib.metrics.similarity import similarity

    t = similarity_table(
        [stores["a"], stores["b"]],
        measures=["linear_cka", "mutual_knn", "procrustes_distance"],
        null_measures=["linear_cka", "procrustes_distance"],
        max_images=24,
        permutations=20,
        k=3,
        seed=5,
    )
    pairs = set(zip(t.model_x, t.model_y))
    assert pairs == {("a", "a"), ("a", "b"), ("b", "b")}
    assert len(t) == 3 * 2 * 3 * 9  # pairs × kinds × measures × 3 × 3 blocks
    assert set(t.n_images) == {24}
    rows = np.sort(np.random.default_rng(5).choice(32, size=24, replace=False))
    ga, gb = zarr.open_group(stores["a"]), zarr.open_group(stores["b"])
    for kind in ("cls", "spatial_mean"):
        xa = np.asarray(ga[f"feat/block_{kind}"][...], dtype=np.float64)[rows]
        xb = np.asarray(gb[f"feat/block_{kind}"][...], dtype=np.float64)[rows]
        for measure, kw in (("linear_cka", {}), ("mutual_knn", {"k": 3})):
            r = t[(t.model_x == "a") & (t.model_y == "b") & (t.kind == kind)]
            r = r[(r.metric == measure) & (r.layer_x == 2) & (r.layer_y == 1)]
            want = similarity(xa[:, 2], xb[:, 1], measure, **kw)
            assert r["value"].item() == pytest.approx(want, abs=1e-9)
    grid = t[(t.model_x == "a") & (t.model_y == "b") & (t.kind == "cls")]
    lin = grid[grid.metric == "linear_cka"]
    assert (lin.permutations == 20).all() and lin["p"].between(1 / 21, 1).all()
    np.testing.assert_allclose(
        lin["q"], false_discovery_control(lin["p"].to_numpy(), method="bh"), rtol=1e-12
    )
    assert lin["significant"].equals(lin["q"] <= 0.05)
    knn = grid[grid.metric == "mutual_knn"]
    assert knn["p"].isna().all() and (knn.permutations == 0).all()
    for measure, pick in (("linear_cka", "idxmax"), ("procrustes_distance", "idxmin")):
        g = grid[grid.metric == measure]
        best = g.loc[getattr(g.groupby("layer_x")["value"], pick)()]
        assert set(best.index) == set(g.index[g.best_for_x])
    # within a model: the diagonal is the best match and significant
    self_ = t[(t.model_x == "a") & (t.model_y == "a") & (t.metric == "linear_cka")]
    diag = self_[self_.layer_x == self_.layer_y]
    assert diag.best_for_x.all()
    np.testing.assert_allclose(diag["value"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(diag["p"], 1 / 21)


def test_similarity_table_rejects_bad_settings(stores):
    with pytest.raises(ValueError, match="unknown similarity measures"):
        similarity_table([stores["a"]], measures=["cka"])
    with pytest.raises(ValueError, match="unknown feature kind"):
        similarity_table([stores["a"]], kinds=["mean"], measures=["linear_cka"])
