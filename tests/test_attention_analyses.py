"""Attention analyses: offsets, taxonomy on synthetic heads of known class, store-based tables."""

import numpy as np
import pytest

from vitlib.attention import aligned_aggregate
from vitlib.attention.analyses import (
    TaxonomySettings,
    artifact_tokens_table,
    attention_offset,
    average_maps,
    classify_head,
    effective_taxonomy,
    head_metrics_table,
    head_taxonomy_table,
)
from vitlib.extract import run_extraction
from vitlib.store import Store

K = 14


def head_from_target_fn(target):
    """Attention [N, N] (one CLS + K×K) where query (r, c) spreads mass by target(r, c)->[K, K]."""
    N = 1 + K * K
    A = np.zeros((N, N))
    A[0, 0] = 1
    for q in range(K * K):
        r, c = divmod(q, K)
        m = target(r, c)
        A[1 + q, 1:] = m.ravel() / m.sum()
    return A


def shift(dr, dc):
    def t(r, c):
        m = np.zeros((K, K))
        m[min(max(r + dr, 0), K - 1), min(max(c + dc, 0), K - 1)] = 1
        return m

    return t


def gaussian(sigma):
    rr, cc = np.mgrid[0:K, 0:K]

    def t(r, c):
        return np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2))

    return t


def row(r, c):
    m = np.zeros((K, K))
    m[r, :] = 1
    return m


def col(r, c):
    m = np.zeros((K, K))
    m[:, c] = 1
    return m


def uniform(r, c):
    return np.ones((K, K))


@pytest.mark.parametrize(
    "target, cls, direction, offset",
    [
        (shift(0, 0), "strict-local", "", (0, 0)),
        (shift(0, 1), "offset-local", "right", (0, 1)),
        (shift(0, -2), "offset-local", "left", (0, -2)),
        (shift(-1, 0), "offset-local", "up", (-1, 0)),
        (shift(1, 1), "offset-local", "down-right", (1, 1)),
        (shift(-1, -1), "offset-local", "up-left", (-1, -1)),
        (row, "axial-horizontal", "", None),
        (col, "axial-vertical", "", None),
        (gaussian(1.5), "soft-local", "", (0, 0)),
        (uniform, "global", "", None),
    ],
)
def test_taxonomy_recovers_known_heads(target, cls, direction, offset):
    aligned = aligned_aggregate(head_from_target_fn(target)[None], (K, K), 1)[0]
    got = classify_head(aligned)
    assert got["class"] == cls
    assert got["direction"] == direction
    if offset is not None:
        assert (got["offset_rows"], got["offset_cols"]) == offset


def test_taxonomy_thresholds_are_settings():
    aligned = aligned_aggregate(head_from_target_fn(gaussian(1.5))[None], (K, K), 1)[0]
    assert classify_head(aligned, TaxonomySettings(soft_mass=0.999))["class"] == "global"


def test_offset_of_a_right_attending_head():
    A = head_from_target_fn(shift(0, 1))
    aligned = aligned_aggregate(A[None], (K, K), 1)
    off = attention_offset(aligned)
    M = 2 * K - 1
    step = 2 / (M - 1)
    # (K-1)/K of the queries attend one cell right, the last column attends itself
    assert off["cx"][0] == pytest.approx(step * (K - 1) / K)
    assert off["cy"][0] == pytest.approx(0, abs=1e-12)
    assert off["d"][0] == pytest.approx(abs(off["cx"][0]))


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_spec, tiny_world):
    from vitlib.data.manifest import read_imagefolder

    man = read_imagefolder(tiny_world / "imagenet" / "train", dataset="tiny", cka_batch_size=4)
    out = tmp_path_factory.mktemp("s") / "center.zarr"
    run_extraction(tiny_spec, man, "center", out, batch_size=8, progress=False)
    return str(out)


def test_average_maps_and_faithful_normaliser(store):
    fixed = average_maps(store)
    faithful = average_maps(store, aaam_normaliser="per_batch", faithful_batch_size=2)
    np.testing.assert_allclose(faithful["aligned"], 2 * fixed["aligned"])
    # every query row sums to 1, so every average map sums to 1 over keys
    for m in ("all", "spatial", "spatial_pure", "cls"):
        np.testing.assert_allclose(fixed[m].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(fixed["aligned"].sum((-2, -1)), 1.0, rtol=1e-5)
    assert fixed["spatial_pure"][..., 0].max() == 0


def test_head_metrics_table_values(store):
    t = head_metrics_table(store)
    d = t[t.metric == "attention_distance"]
    assert len(d) == 3 * 2 and d["value"].between(0, np.sqrt(2)).all()
    sc = t[t.metric == "spatial_cls_attention"].set_index(["layer", "head"])["value"]
    sc_faithful = head_metrics_table(store, spatial_cls_key="first_patch")
    sf = sc_faithful[sc_faithful.metric == "spatial_cls_attention"].set_index(["layer", "head"])[
        "value"
    ]
    maps = average_maps(store)
    np.testing.assert_allclose(sc.to_numpy(), maps["spatial"][..., 0].ravel())
    np.testing.assert_allclose(sf.to_numpy(), maps["spatial"][..., 1].ravel())
    assert (sc_faithful["spatial_cls_key"] == "first_patch").all()


def test_taxonomy_table_and_artifacts(store):
    tax = head_taxonomy_table(store)
    assert len(tax) == 6 and set(tax["class"]) <= {
        "strict-local",
        "offset-local",
        "axial-horizontal",
        "axial-vertical",
        "soft-local",
        "global",
    }
    assert (tax["strict_mass"] == 0.7).all() and (tax["reference_grid"] == 14).all()
    # the radii and thresholds applied on the store's own grid are recorded
    h, w = Store.open(store).grid_hw
    eff = effective_taxonomy((h, w)).columns()
    assert (tax["grid_h"] == h).all() and (tax["grid_w"] == w).all()
    for k, v in eff.items():
        assert (tax[k] == v).all(), k
    assert set(eff) >= {"eff_strict_mass", "eff_soft_radius_rows", "eff_axial_h_mass"}
    art = artifact_tokens_table(store, norm_factor=1.0)
    frac = art[art.metric == "outlier_fraction"]["value"]
    assert frac.between(0.2, 0.8).all()  # factor 1: tokens above the median, about half
    share = art[art.metric == "cls_attention_share"]["value"].to_numpy()
    assert np.isnan(share[-1]) and np.all((share[:-1] > 0) & (share[:-1] < 1))
    none = artifact_tokens_table(store, norm_factor=100.0)
    assert (none[none.metric == "outlier_fraction"]["value"] == 0).all()
    assert np.isnan(none[none.metric == "emergence_layer"]["value"].iloc[0])


def test_artifact_suite_recomputed_from_the_store(store):
    """Every new metric of the artifact / register suite, recomputed independently from the
    store's arrays: the spatial-query share on outliers, norm quantiles, the histogram of
    log2(norm / median), the emergence layer and the prefix-key attention mass."""
    from vitlib import keys
    from vitlib.attention.analyses import NORM_BINS

    s = Store.open(store)
    nm = s.read(keys.TOKEN_NORM).astype(np.float32)  # [n, L, S]
    sp = s.read(keys.ATTN_SPATIAL_MEAN_ROW).astype(np.float32)  # [n, L, H, S]
    n, L, S = nm.shape
    out = nm > 1.2 * np.median(nm, axis=-1, keepdims=True)
    art = artifact_tokens_table(store, norm_factor=1.2, emergence=0.05)

    def metric(m):
        return art[art.metric == m].sort_values("layer")["value"].to_numpy()

    want = [
        np.mean(
            [
                np.mean(
                    [
                        sp[i, lay + 1, h][out[i, lay]].sum() / sp[i, lay + 1, h].sum()
                        for h in range(sp.shape[2])
                    ]
                )
                for i in range(n)
            ]
        )
        for lay in range(L - 1)
    ]
    np.testing.assert_allclose(metric("spatial_attention_share")[:-1], want, rtol=1e-5)
    np.testing.assert_allclose(
        metric("norm_median"), np.median(nm.transpose(1, 0, 2).reshape(L, -1), 1), rtol=1e-6
    )
    np.testing.assert_allclose(metric("norm_max"), nm.max(axis=(0, 2)), rtol=1e-6)
    dens = art[art.metric == "norm_density"]
    ratio = np.log2(nm / np.median(nm, axis=-1, keepdims=True))
    for lay in range(L):
        d = dens[dens.layer == lay].sort_values("bin")["value"].to_numpy()
        assert d.sum() == pytest.approx(1.0)
        ref, _ = np.histogram(np.clip(ratio[:, lay], NORM_BINS[0], NORM_BINS[-1] - 1e-9), NORM_BINS)
        np.testing.assert_allclose(d, ref / ref.sum(), atol=1e-12)
    frac = metric("outlier_fraction")
    first = np.flatnonzero(frac >= 0.05)
    assert len(first)  # the fixture's outliers reach 5 % somewhere
    assert metric("emergence_layer")[0] == first[0] + 1
    if s.has(keys.ATTN_PREFIX_MASS):  # one prefix token (CLS): mass on it, none on registers
        pm = s.read(keys.ATTN_PREFIX_MASS)  # [n, L, H, 2, 1]
        np.testing.assert_allclose(
            metric("spatial_to_cls"), pm[..., 1, 0].mean(axis=(0, 2)), rtol=1e-6
        )
        np.testing.assert_allclose(metric("cls_to_registers"), 0.0)


def test_attention_entropy_table_equals_entropy_of_directly_captured_attention(
    store, tiny_spec, tiny_world
):
    """Independent formulation: the captured attention of every image recomputed with a
    plain forward, its entropy by NumPy, averaged; the store's streaming value must agree."""
    import torch

    from vitlib.attention.entropy import attention_entropy_table
    from vitlib.data.manifest import read_imagefolder
    from vitlib.data.views import ManifestDataset, make_transform
    from vitlib.models.build import build_model
    from vitlib.models.capture import Capture
    from vitlib.registry import run_table

    man = read_imagefolder(tiny_world / "imagenet" / "train", dataset="tiny", cka_batch_size=4)
    ds = ManifestDataset(
        man, make_transform("center", tiny_spec.img_size, tiny_spec.mean, tiny_spec.std)
    )
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    c = Capture(build_model(tiny_spec, None), points=("block",), attention=True).collect(x)
    ref = {"cls": [], "spatial": []}
    for a in c.attention:  # per layer [B, H, N, N]
        a = a.double().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(a > 0, a * np.log(a), 0.0).sum(-1)  # [B, H, N]
        ref["cls"].append(ent[:, :, 0].mean(0))
        ref["spatial"].append(ent[:, :, 1:].mean(-1).mean(0))
    t = attention_entropy_table(store)
    for q in ("cls", "spatial"):
        got = t[(t.metric == "entropy") & (t["query"] == q)].sort_values(["layer", "head"])
        np.testing.assert_allclose(got["value"], np.ravel(ref[q]), rtol=1e-4)
    n_keys = 1 + tiny_spec.grid**2
    assert np.allclose(t[t.metric == "uniform_entropy"]["value"], np.log(n_keys))
    assert (t[t.metric == "entropy"]["value"] <= np.log(n_keys) + 1e-6).all()
    # through the registry: the long format, stamped with the analysis and the store identity
    long = run_table("attention_entropy", [store], settings={})
    assert (long["analysis"] == "attention_entropy").all() and set(long["view"]) == {"center"}


def test_attention_distance_table_units_and_mean(store, tiny_spec):
    from vitlib.attention.tables import attention_distance_table
    from vitlib.store import Store

    raw = Store(store).read("attn/distance").astype(np.float64)  # [n, L, H]
    t = attention_distance_table(store)
    np.testing.assert_allclose(t["value"], raw.mean(0).ravel(), rtol=1e-6)
    # the bootstrap interval over images: the same as vitlib.stats on the per-image values
    from vitlib.stats import bootstrap_ci

    lo, hi = bootstrap_ci(raw.astype(np.float32), resamples=1000, seed=0)
    np.testing.assert_allclose(t["ci_low"], lo.ravel(), rtol=1e-6)
    np.testing.assert_allclose(t["ci_high"], hi.ravel(), rtol=1e-6)
    assert (t["ci_low"] <= t["value"] + 1e-12).all() and (t["value"] <= t["ci_high"] + 1e-12).all()
    none = attention_distance_table(store, statistics={"bootstrap": 0})
    assert none["ci_low"].isna().all()
    tok = attention_distance_table(store, units="tokens")
    np.testing.assert_allclose(tok["value"], t["value"] * (tiny_spec.grid - 1), rtol=1e-6)
    px = attention_distance_table(store, units="pixels")
    np.testing.assert_allclose(px["value"], tok["value"] * tiny_spec.patch_size, rtol=1e-6)
    # the uniform-attention reference: mean distance of every spatial pair on the grid, by
    # brute force over cell coordinates on the unit square
    g = tiny_spec.grid
    rc = np.array([(r, c) for r in range(g) for c in range(g)], float) / (g - 1)
    brute = np.linalg.norm(rc[:, None] - rc[None], axis=-1).mean()
    np.testing.assert_allclose(t["uniform"], brute, rtol=1e-6)  # float32 template
    np.testing.assert_allclose(px["uniform"], brute * (g - 1) * tiny_spec.patch_size, rtol=1e-6)


def test_attention_images_arrays(store, tiny_world, tiny_spec):
    from vitlib.attention.analyses import attention_images
    from vitlib.data.manifest import DataError, read_imagefolder
    from vitlib.store import Store

    man = read_imagefolder(tiny_world / "imagenet" / "train", dataset="tiny", cka_batch_size=4)
    z = attention_images(store, man, images=2)
    g = tiny_spec.grid
    assert z["image"].shape[:3] == (2, tiny_spec.img_size, tiny_spec.img_size)
    assert z["cls"].shape[-2:] == (g, g) and list(z["ids"]) == [it.id for it in man.items[:2]]
    row = Store(store).array("attn/cls_row")[1]
    np.testing.assert_allclose(z["cls"][1].reshape(row.shape), row, rtol=1e-3)
    # chosen by id (the original's --vis_in), in the order asked for
    pick = [man.items[3].id, man.items[0].id]
    c = attention_images(store, man, images=pick)
    assert list(c["ids"]) == pick and list(c["index"]) == [3, 0]
    np.testing.assert_allclose(
        c["cls"][0].reshape(row.shape), Store(store).array("attn/cls_row")[3], rtol=1e-3
    )
    np.testing.assert_array_equal(c["image"][1], z["image"][0])
    with pytest.raises(DataError, match="no/such.jpg"):
        attention_images(store, man, images=["no/such.jpg"])


def test_query_positions_follow_the_original_select_positions():
    from vitlib.attention.queries import query_positions

    # the original's token indices (CLS = 0): m, (m-1)K+1, (m-1)K+m, mK, (K-1)K+m, with
    # m = K/2 (even K) or (K+1)/2 (odd K); diagonal (K+1)i+1
    for K in (14, 7, 28):
        m = K // 2 if K % 2 == 0 else (K + 1) // 2
        tokens = [m, (m - 1) * K + 1, (m - 1) * K + m, m * K, (K - 1) * K + m]
        pos = query_positions(K, K, ["top", "left", "center", "right", "bottom", "diagonal"])
        assert [1 + r * K + c for _, r, c in pos[:5]] == tokens
        assert [1 + r * K + c for _, r, c in pos[5:]] == [(K + 1) * i + 1 for i in range(K)]
        assert [n for n, _, _ in pos[:6]] == [
            "top",
            "left",
            "center",
            "right",
            "bottom",
            "diagonal_0",
        ]
    with pytest.raises(ValueError, match="middle"):
        query_positions(14, 14, ["middle"])


def test_query_rows_are_the_stores_network(store, tiny_world, tiny_spec, tiny_model):
    """The positional rows come from the network that made the store: the CLS row of the
    same pass equals the store's, and the centre query's row equals softmax(q·kᵀ) recomputed
    from the last block's own qkv weights on its input."""
    import torch

    from vitlib.attention.queries import query_rows
    from vitlib.data.manifest import read_imagefolder
    from vitlib.data.views import ManifestDataset, make_transform

    man = read_imagefolder(tiny_world / "imagenet" / "train", dataset="tiny", cka_batch_size=4)
    z = query_rows(store, man, [3, 1], ["center", "top"])
    g, L, H = tiny_spec.grid, tiny_spec.depth, tiny_spec.num_heads
    assert z["queries"].shape == (2, L, H, 2, g, g) and list(z["query_names"]) == ["center", "top"]
    cls_store = Store(store).array("attn/cls_row")
    for j, i in enumerate([3, 1]):
        np.testing.assert_allclose(
            z["query_cls"][j].reshape(L, H, -1), np.asarray(cls_store[i], np.float32), atol=2e-3
        )
    # independent: the last block's attention recomputed from its input
    ds = ManifestDataset(
        man, make_transform("center", tiny_spec.img_size, tiny_spec.mean, tiny_spec.std)
    )
    x = torch.stack([ds[3][0]])
    seen = {}
    blk = tiny_model.blocks[-1]
    hnd = blk.norm1.register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
    with torch.inference_mode():
        tiny_model.forward_features(x)
    hnd.remove()
    a = blk.attn
    B, N, D = seen["x"].shape
    with torch.inference_mode():
        qkv = a.qkv(seen["x"]).reshape(B, N, 3, H, D // H).permute(2, 0, 3, 1, 4)
        q, k = a.q_norm(qkv[0]), a.k_norm(qkv[1])
        att = ((q * a.scale) @ k.transpose(-2, -1)).softmax(-1)[0]  # [H, N, N]
    (_, r, c) = (None, *z["query_yx"][0])
    p0 = tiny_spec.num_prefix_tokens
    ref = att[:, p0 + r * g + c, p0:].reshape(H, g, g).numpy()
    np.testing.assert_allclose(z["queries"][0, -1, :, 0], ref, atol=1e-5)


def test_store_model_refuses_a_changed_checkpoint(tmp_path, tiny_spec, tiny_model, tiny_world):
    import dataclasses

    import torch

    from vitlib.attention.queries import store_model
    from vitlib.data.manifest import read_imagefolder
    from vitlib.models.weights import WeightsError

    man = read_imagefolder(tiny_world / "imagenet" / "train", dataset="tiny", cka_batch_size=4)
    man.items = man.items[:4]
    ck = tmp_path / "w.pth"
    torch.save(tiny_model.state_dict(), ck)
    spec = dataclasses.replace(tiny_spec, init_seed=None, weights={"path": str(ck)})
    out = tmp_path / "center.zarr"
    run_extraction(spec, man, "center", out, batch_size=4, progress=False, needs=["attention"])
    m = store_model(out)
    for p, r in zip(m.parameters(), tiny_model.parameters()):
        torch.testing.assert_close(p, r)
    sd = tiny_model.state_dict()
    sd["cls_token"] = sd["cls_token"] + 1
    torch.save(sd, ck)
    with pytest.raises(WeightsError, match="changed since the store was written"):
        store_model(out)
    ck.unlink()
    with pytest.raises(WeightsError, match="missing"):
        store_model(out)
