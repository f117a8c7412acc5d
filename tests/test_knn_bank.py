"""Streamed k-NN bank: the same neighbours and accuracies as k-NN over a stored bank (FAISS)."""

import numpy as np
import pandas as pd
import pytest
import torch

from vitlib import keys
from vitlib.data.manifest import read_imagefolder
from vitlib.downstream.knn import knn_topk_streaming, vote
from vitlib.downstream.knn_bank import (
    KnnBank,
    KnnBankConsumer,
    decode_keys,
    knn_bank_table,
    knn_from_neighbours,
    rank_keys,
    stream_knn_bank,
)
from vitlib.downstream.tables import knn_table
from vitlib.extract import run_extraction
from vitlib.store import Store

KS = (1, 5, 20, 100)  # 100 > n_train = 32: clamped
T = 0.07


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_spec, tiny_world):
    """The tiny world's ImageNet train (32 images) and val (16) extracted as the workflow does
    for k-NN (fp16 features), and the train manifest."""
    d = tmp_path_factory.mktemp("knn_bank")
    train = read_imagefolder(tiny_world / "imagenet" / "train", dataset="tiny_train")
    test = read_imagefolder(tiny_world / "imagenet" / "val", dataset="tiny_val")
    stores = []
    for name, man in (("train", train), ("test", test)):
        out = d / f"{name}.zarr"
        run_extraction(
            tiny_spec, man, "center", out, batch_size=8, progress=False, needs=("features",)
        )
        stores.append(str(out))
    return train, stores[0], stores[1]


def stream(spec, world, **kw):
    train, _, test = world
    kw = {"batch_size": 5, "device": "cpu", "progress": False, **kw}
    return stream_knn_bank(spec, train, test, **kw)


def faiss_neighbours(train_store, test_store, feature, k):
    """``[L, Q, k]`` sims and indices of the stored-bank path (what knn_table searches)."""
    gtr, gte = Store.open(train_store), Store.open(test_store)
    name = keys.feature("block", feature)
    out = [
        knn_topk_streaming(
            [np.asarray(gtr.array(name)[:, layer], dtype=np.float32)],
            np.asarray(gte.array(name)[:, layer], dtype=np.float32),
            k,
        )
        for layer in range(gtr.depth)
    ]
    return np.stack([s for s, _ in out]), np.stack([i for _, i in out])


def assert_same_neighbours(sims, idx, ref_sims, ref_idx, tol=1e-6):
    """Equal similarities; equal indices, as sets within runs of similarities tied within
    ``tol`` (a run cut by the k-th similarity: only its similarities must agree)."""
    assert idx.shape == ref_idx.shape
    np.testing.assert_allclose(sims, ref_sims, rtol=0, atol=tol)
    k = idx.shape[-1]
    for s, i, ri in zip(ref_sims.reshape(-1, k), idx.reshape(-1, k), ref_idx.reshape(-1, k)):
        cut = np.flatnonzero(np.abs(np.diff(s)) > tol) + 1
        bounds = [0, *cut, k]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            boundary = hi == k and k > 1 and abs(s[-1] - s[-2]) <= tol
            if hi - lo == 1:
                assert i[lo] == ri[lo]
            elif not boundary:
                assert set(i[lo:hi]) == set(ri[lo:hi])


@pytest.mark.parametrize("feature", ["cls", "spatial_mean"])
def test_bank_equals_stored_bank_knn(tiny_spec, world, feature):
    """k_max = 200 > n_train: every training image is kept, as the FAISS neighbours; the
    table equals knn_table's (k = 100 clamped to 32 in both)."""
    _, train_store, test_store = world
    bank = stream(tiny_spec, world, k_max=200, feature=feature)
    assert bank.indices.shape == (3, 16, 32) and bank.n_train == 32
    ref_sims, ref_idx = faiss_neighbours(train_store, test_store, feature, 32)
    assert_same_neighbours(bank.sims, bank.indices, ref_sims, ref_idx)
    ytr = Store.open(train_store).labels
    np.testing.assert_array_equal(bank.labels, ytr[bank.indices])
    # predictions equal, for every layer, k and temperature (the vote of both neighbour lists)
    for layer in range(3):
        for k in (1, 5, 20, 32):
            for temp in (T, 1.0):
                np.testing.assert_array_equal(
                    vote(bank.sims[layer], bank.labels[layer], 4, k, temp),
                    vote(ref_sims[layer], ytr[ref_idx[layer]], 4, k, temp),
                )
    got = knn_bank_table(bank, test_store, ks=KS, temperature=T)
    ref = knn_table(train_store, test_store, ks=KS, temperature=T, feature=feature)
    pd.testing.assert_frame_equal(got, ref)
    assert (got.feature == feature).all() and (got.train == "tiny_train").all()


def test_bank_keeps_k_max_and_refuses_more(tiny_spec, world, tmp_path):
    _, train_store, test_store = world
    bank = stream(tiny_spec, world, k_max=20, batch_size=3, out=tmp_path / "bank.npz")
    ref_sims, ref_idx = faiss_neighbours(train_store, test_store, "cls", 20)
    assert_same_neighbours(bank.sims, bank.indices, ref_sims, ref_idx)
    got = knn_bank_table(tmp_path / "bank.npz", test_store, ks=(1, 5, 20), temperature=0.1)
    ref = knn_table(train_store, test_store, ks=(1, 5, 20), temperature=0.1)
    pd.testing.assert_frame_equal(got, ref)
    with pytest.raises(ValueError, match="neighbours kept"):
        knn_bank_table(bank, test_store, ks=(50,))  # min(50, n_train = 32) > k_max = 20
    with pytest.raises(ValueError, match="neighbours kept"):
        knn_from_neighbours(bank.sims[0], bank.labels[0], np.zeros(16), [21], T, 4)


def test_resume_after_interruption_equals_uninterrupted(tiny_spec, world, tmp_path):
    whole = stream(tiny_spec, world, k_max=10, batch_size=4)  # 8 batches

    class Stop(Exception):
        pass

    def stop_after_2(b):
        if b == 2:
            raise Stop

    ckpt = tmp_path / "bank.ckpt.npz"
    kw = {"k_max": 10, "batch_size": 4, "checkpoint": ckpt, "checkpoint_every": 2}
    with pytest.raises(Stop):
        stream(tiny_spec, world, on_batch=stop_after_2, **kw)
    with np.load(ckpt) as z:  # saved after batch 1; batch 2 ran but was not saved
        assert int(z["next_batch"]) == 2 and int(z["n_seen"]) == 8
    out = tmp_path / "bank.npz"
    resumed = stream(tiny_spec, world, out=out, **kw)
    assert resumed.meta["resumed_from_batch"] == 2
    assert not ckpt.exists()  # removed once the bank is saved
    for b in (resumed, KnnBank.load(out)):
        np.testing.assert_array_equal(b.indices, whole.indices)
        np.testing.assert_array_equal(b.sims, whole.sims)
        np.testing.assert_array_equal(b.labels, whole.labels)
    # a checkpoint of other settings is not resumed
    with pytest.raises(Stop):
        stream(tiny_spec, world, on_batch=stop_after_2, **kw)
    other = stream(tiny_spec, world, **{**kw, "k_max": 5})
    assert other.meta["resumed_from_batch"] == 0
    np.testing.assert_array_equal(other.indices, whole.indices[..., :5])


# ------------------------------------------------------------------------------ the merge
def test_rank_keys_order_and_round_trip():
    rng = np.random.default_rng(0)
    wide = rng.normal(size=2000) * 10.0 ** rng.uniform(-40, 30, 2000)
    special = [0.0, -0.0, np.inf, -np.inf, 1.0, 1.0]
    x = torch.tensor(np.concatenate([wide, special]), dtype=torch.float32)
    i = torch.from_numpy(rng.permutation(len(x)))
    k = rank_keys(x, i)
    s, j = decode_keys(k)
    assert torch.equal(s, x) and torch.equal(j, i)
    o = torch.argsort(k, descending=True)
    ref = np.lexsort((i.numpy(), -x.numpy()))  # similarity descending, index ascending
    np.testing.assert_array_equal(o.numpy(), ref)
    assert decode_keys(rank_keys(torch.tensor([float("nan")]), torch.tensor([3])))[0] == -np.inf


def feed(consumer, feats, sizes, prefix=1):
    """Hand ``feats`` ``[n, D]`` to the consumer as the CLS tokens of batches of ``sizes``."""
    pos = 0
    for B in sizes:
        x = torch.zeros(B, prefix + 2, feats.shape[1])
        x[:, 0] = torch.from_numpy(feats[pos : pos + B])
        x[:, prefix:] = torch.randn(B, 2, feats.shape[1])
        consumer.begin_batch(B)
        consumer.on_tokens("block", 0, x)
        consumer.end_batch()
        pos += B
    assert pos == len(feats)
    return consumer.neighbours()


def test_ties_lowest_index_whatever_the_batches():
    """±1 features (exact dot products) with duplicates: many exact ties.  The bank equals a
    stable sort (lowest index first among equal similarities) for every batching and query
    chunking, and FAISS' similarities exactly; FAISS' indices agree except among the ties
    at the k-th similarity (which FAISS resolves by its scan history)."""
    import faiss

    rng = np.random.default_rng(0)
    D = 16
    base = rng.choice([-1.0, 1.0], size=(5, D))
    signs = base[rng.integers(0, 5, 150)]  # duplicates of 5 rows ...
    signs[::4] = rng.choice([-1.0, 1.0], size=(38, D))  # ... and some others
    xtr = (3 * signs).astype(np.float32)  # ‖x‖ = 12: normalised entries ±0.25 exactly
    xn = (signs / 4).astype(np.float32)
    q = (rng.choice([-1.0, 1.0], size=(7, D)) / 4).astype(np.float32)
    S = q @ xn.T  # exact: multiples of 1/16
    for k in (1, 7, 40, 150):
        ref = np.argsort(-S, axis=1, kind="stable")[:, :k]
        for sizes, chunk in (([150], 16384), ([7, 13, 1, 30, 50, 49], 3), ([1] * 150, 2)):
            c = KnnBankConsumer(
                torch.from_numpy(q)[None], k, num_prefix_tokens=1, query_chunk=chunk
            )
            sims, idx = feed(c, xtr, sizes)
            np.testing.assert_array_equal(idx[0], ref)
            np.testing.assert_array_equal(sims[0], np.take_along_axis(S, ref, 1))
        index = faiss.IndexFlatIP(D)
        index.add(xn)
        fs, fi = index.search(q, k)
        np.testing.assert_array_equal(np.sort(sims[0], 1), np.sort(fs, 1))
        for r in range(len(q)):
            above = fs[r] > fs[r, -1]
            assert set(fi[r, above]) == set(idx[0, r][sims[0, r] > fs[r, -1]])


def test_feature_without_class_token_is_mean_spatial_rounded():
    """No class token: the CLS feature is the mean spatial token, rounded to fp16 like the
    stored feature, then normalised."""
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(4, 6, 8)).astype(np.float32))
    q = torch.nn.functional.normalize(torch.randn(1, 3, 8), dim=-1)
    for P, kind, ref in (
        (0, "cls", x.mean(1)),
        (1, "cls", x[:, 0]),
        (1, "spatial_mean", x[:, 1:].mean(1)),
    ):
        c = KnnBankConsumer(q, 2, num_prefix_tokens=P, feature=kind)
        r = ref.numpy().astype(np.float16).astype(np.float32)
        r /= np.linalg.norm(r, axis=1, keepdims=True)
        np.testing.assert_allclose(c.feature_of(x).numpy(), r, rtol=1e-6)
