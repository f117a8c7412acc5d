"""The certified bf16 k-NN search equals FAISS's exact fp32 search (docs/protocols.md §5.1)."""

import faiss
import numpy as np
import pytest
import torch

from vitlib.downstream import knn
from vitlib.downstream.knn import bf16_error_bound, certified_bf16_search, knn_topk_streaming


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _exact(bank, q, k):
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank)
    return index.search(q, k)


def _assert_same(got, ref):
    (D, I), (Dr, Ir) = got, ref
    for a, b in zip(I, Ir, strict=True):
        assert set(a.tolist()) == set(b.tolist())
    np.testing.assert_allclose(D, Dr, rtol=0, atol=2e-6)
    assert (np.diff(D, axis=1) <= 0).all()  # descending, as FAISS lists them


def test_the_bf16_error_bound_holds_and_is_not_vacuous():
    """|bf16 product − exact| of unit vectors stays below the bound (random and adversarial
    sign-aligned vectors), and the bound is within 30x of what is observed."""
    rng = np.random.default_rng(0)
    for d in (16, 384, 768):
        x = _unit(rng.standard_normal((2000, d)))
        q = _unit(rng.standard_normal((64, d)))
        aligned = _unit(np.abs(x[:64]) + 1e-3)  # positive parts: no cancellation
        for a, b in ((q, x), (aligned, _unit(np.abs(rng.standard_normal((2000, d)))))):
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            exact = (ta.double() @ tb.double().T).numpy()
            b16 = (ta.bfloat16() @ tb.bfloat16().T).float().numpy()
            err = np.abs(b16 - exact).max()
            assert err <= bf16_error_bound(d)
        assert err >= bf16_error_bound(d) / 30


@pytest.mark.parametrize("k", [1, 20, 200])
@pytest.mark.parametrize("n", [6000, 20003])  # one topk; two stages with a ragged tail
def test_certified_search_equals_faiss(k, n):
    rng = np.random.default_rng(k)
    bank = _unit(rng.standard_normal((n, 96)))
    q = _unit(rng.standard_normal((300, 96)))
    stats = {}
    got = certified_bf16_search(bank, q, k, query_block=128, stats=stats)
    _assert_same(got, _exact(bank, q, k))
    assert stats["queries"] == 300 and stats["redone"] < 300  # the bf16 pass did the work


def test_queries_without_the_certificate_are_searched_again_exactly():
    """A bank of near-duplicates (similarities closer than bf16 resolves): the certificate
    fails and FAISS redoes those queries; the result is still the exact top-k."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal(64)
    bank = _unit(base + 1e-3 * rng.standard_normal((3000, 64)))
    q = _unit(
        np.concatenate(
            [base[None] + 1e-3 * rng.standard_normal((40, 64)), rng.standard_normal((40, 64))]
        )
    )
    stats = {}
    got = certified_bf16_search(bank, q, 10, stats=stats)
    assert stats["redone"] >= 40
    _assert_same(got, _exact(bank, q, 10))


def test_streaming_knn_takes_the_bf16_path_with_equal_results(monkeypatch):
    """knn_topk_streaming over several banks: the bf16 path (forced) equals the fp32 one."""
    rng = np.random.default_rng(2)
    train = rng.standard_normal((5000, 48)).astype(np.float32)
    q = rng.standard_normal((200, 48)).astype(np.float32)
    chunks = lambda: (train[i : i + 700] for i in range(0, 5000, 700))  # noqa: E731
    monkeypatch.setattr(knn, "_bf16_pays", lambda *a: False)
    ref = knn_topk_streaming(chunks(), q, 30, bank_bytes=2000 * 48 * 4)
    calls = []
    real = knn.certified_bf16_search

    def spy(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(knn, "_bf16_pays", lambda *a: True)
    monkeypatch.setattr(knn, "certified_bf16_search", spy)
    got = knn_topk_streaming(chunks(), q, 30, bank_bytes=2000 * 48 * 4)
    assert len(calls) == 3  # three banks
    _assert_same(got, ref)


def test_two_stage_candidates_are_the_top_c():
    """The interleaved-slice preselection returns exactly the top-c set of every row."""
    from vitlib.downstream.knn import _top_candidates

    torch.manual_seed(0)
    s = torch.randn(7, 10_007).bfloat16()
    s[0, -3:] = 9.0  # the best entries in the ragged tail
    s[1, :] = 0.5  # all tied: any c of them
    v, i = _top_candidates(s, 50)
    ref = s.topk(50, dim=1).values
    torch.testing.assert_close(v.float().sort(1).values, ref.float().sort(1).values)
    torch.testing.assert_close(torch.gather(s, 1, i), v)
    assert len(set(i[0].tolist())) == 50 and {10_004, 10_005, 10_006} <= set(i[0].tolist())


def test_a_torch_without_the_bf16_probes_falls_back_to_fp32(monkeypatch):
    """The CPU probes are private torch API: without them the search is FAISS's fp32."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert knn._bf16_pays(10**4, 10**5, 768) is False
    assert knn._bf16_pays(1, 1, 1) is False  # small searches never ask
