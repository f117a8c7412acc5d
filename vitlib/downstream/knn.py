"""Weighted k-NN classification (DINO protocol, docs/protocols.md §5.1) with FAISS.

Cosine similarity of L2-normalised features; the top-``k`` neighbours vote with weight
``exp(sim / T)``.  :func:`knn_predict` works on arrays; :func:`knn_topk_streaming` keeps only
a running top-k per query while the training features arrive chunk by chunk (from Zarr), so
memory stays bounded by the queries, whatever the size of the training set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


#: training features gathered into one index before it is searched (bytes of float32)
BANK_BYTES = 2 << 30


def knn_topk_streaming(
    train_chunks: Iterable[np.ndarray],
    test_feats: np.ndarray,
    k: int,
    *,
    bank_bytes: int = BANK_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine similarities and global train indices for every query.

    ``train_chunks`` yields ``[n_i, d]`` arrays in train order.  They are gathered into one
    FAISS index of up to ``bank_bytes`` and searched once: a training set that fits is one
    exact search with no merging at all; a larger one is searched bank by bank, the banks'
    results merged by FAISS's ``ResultHeap`` (memory stays bounded by one bank and the
    queries, whatever the size of the training set).  Uses a GPU index when FAISS has GPUs.
    """
    import faiss

    q = _normalise(test_feats)
    gpu = faiss.get_num_gpus() > 0 if hasattr(faiss, "get_num_gpus") else False
    res = faiss.StandardGpuResources() if gpu else None
    results: list[tuple[np.ndarray, np.ndarray]] = []
    index: faiss.Index | None = None
    base = offset = 0

    def search() -> None:
        nonlocal index, base
        if index is None or index.ntotal == 0:
            return
        kk = min(k, index.ntotal)
        if res is None and _bf16_pays(q.shape[0], index.ntotal, q.shape[1]):
            xb = index.get_xb()  # type: ignore[attr-defined]
            bank = faiss.rev_swig_ptr(xb, index.ntotal * index.d)
            D, I = certified_bf16_search(bank.reshape(index.ntotal, index.d), q, kk, index)
        else:
            D, I = index.search(q, kk)
        if kk < k:
            D = np.pad(D, ((0, 0), (0, k - kk)), constant_values=-np.inf)
            I = np.pad(I, ((0, 0), (0, k - kk)), constant_values=-1 - base)
        results.append((D, (I + base).astype(np.int64)))
        base, index = offset, None

    for chunk in train_chunks:
        x = _normalise(chunk)
        if index is None:
            index = faiss.IndexFlatIP(x.shape[1])
            if res is not None:  # FAISS has GPUs
                index = faiss.index_cpu_to_gpu(res, 0, index)
        index.add(x)
        offset += x.shape[0]
        if index.ntotal * x.shape[1] * 4 >= bank_bytes:
            search()
    search()
    if offset < k:
        raise ValueError(f"k = {k} neighbours asked for but only {offset} training examples")
    if len(results) == 1:
        return results[0]
    heap = faiss.ResultHeap(q.shape[0], k, keep_max=True)
    for D, I in results:
        heap.add_result(D, I)
    heap.finalize()
    return heap.D, heap.I


#: the bf16 pass pays from this many multiply-adds (queries × train × dims) on: below it the
#: torch import and the candidate re-ranking cost more than FAISS's fp32 search saves
BF16_MIN_MACS = 2 * 10**10


def _bf16_pays(n_queries: int, n_train: int, dim: int) -> bool:
    """Whether this CPU has native bf16 matrix products (AVX512-BF16 or AMX) and the search
    is large enough for :func:`certified_bf16_search` to beat FAISS's fp32 search."""
    if n_queries * n_train * dim < BF16_MIN_MACS or os.environ.get("VITLIB_KNN_FP32"):
        return False
    import torch

    # private torch probes: a build without them gets FAISS's fp32 search, never an error
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def bf16_error_bound(dim: int) -> float:
    """Largest ``|s̃ − s|`` between a bf16 matrix product's similarity ``s̃`` and the exact
    cosine similarity ``s`` of two unit vectors of ``dim`` entries: each input rounded to
    bf16 (relative 2⁻⁹, so the products by 2⁻⁸ + 2⁻¹⁸, and Σ|x_i q_i| ≤ 1 by
    Cauchy–Schwarz), float32 accumulation (≤ dim · 2⁻²⁴, doubled), the result rounded to
    bf16 (2⁻⁹), plus the float32 error of the exact re-ranking (dim · 2⁻²⁴)."""
    return 2**-8 + 2**-18 + 2**-9 + 3 * dim * 2**-24


def _top_candidates(s16: Any, c: int, groups: int = 8) -> tuple[Any, Any]:
    """The ``c`` largest scores of every row of ``s16`` ``[m, n]`` and their columns (any
    order).  For long rows in two stages: the maxima of ``groups`` interleaved slices (one
    vectorised pass), the ``c`` best slice positions, then the top ``c`` among their
    ``c · groups`` entries (and the ragged tail) — the same set as one ``topk`` over the row
    (every entry outside the chosen positions is at most the ``c``-th best maximum), at a
    fraction of its cost."""
    import torch

    m, n = s16.shape
    G = n // groups
    if G < 4 * c:
        return s16.topk(c, dim=1, sorted=False)
    gmax = s16[:, : groups * G].view(m, groups, G).amax(1)  # [m, G]
    pos = gmax.topk(c, dim=1, sorted=False).indices
    idx = (pos[:, :, None] + G * torch.arange(groups)).reshape(m, c * groups)
    if n > groups * G:
        tail = torch.arange(groups * G, n).expand(m, n - groups * G)
        idx = torch.cat([idx, tail], 1)
    v, j = torch.gather(s16, 1, idx).topk(c, dim=1, sorted=False)
    return v, torch.gather(idx, 1, j)


def certified_bf16_search(
    bank: np.ndarray,
    q: np.ndarray,
    k: int,
    index: Any = None,
    *,
    query_block: int = 1024,
    stats: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of unit vectors ``q`` against ``bank``, with a bf16
    pass doing the heavy part.

    A bf16 matrix product ranks the bank for each query and keeps ``c = max(2k, k + 64)``
    candidates; their exact float32 similarities are computed by FAISS
    (``compute_distance_subset`` of ``index``, an ``IndexFlatIP`` over ``bank``; built here
    when not given) and ranked.  The result is *certified*: every vector outside the
    candidates has a bf16 similarity at most the smallest candidate's, so its exact
    similarity is at most that plus :func:`bf16_error_bound`; when the exact ``k``-th
    similarity lies above that bound, no outside vector can enter the top ``k``.  Queries
    without the certificate (dense similarities at the ``k``-th place) are searched again
    exactly by FAISS.  Results: similarities descending, float32, as FAISS returns them.
    ``stats``, when given, receives ``queries`` and ``redone`` (searched again by FAISS).
    """
    import faiss
    import torch

    n, d = bank.shape
    if index is None:
        index = faiss.IndexFlatIP(d)
        index.add(bank)
    c = min(n, max(2 * k, k + 64))
    eps = bf16_error_bound(d)
    X16 = torch.from_numpy(bank).bfloat16()
    q = np.ascontiguousarray(q, dtype=np.float32)
    Q = torch.from_numpy(q)
    D = np.empty((len(q), k), np.float32)
    I = np.empty((len(q), k), np.int64)
    redo: list[np.ndarray] = []
    # bf16 scores of one block of queries: at most ~512 MB
    block = max(16, min(query_block, (512 << 20) // (2 * n)))
    scores = torch.empty(min(block, len(q)), n, dtype=torch.bfloat16)
    exact = np.empty((block, c), np.float32)
    for q0 in range(0, len(q), block):
        m = min(block, len(q) - q0)
        s16 = torch.mm(Q[q0 : q0 + m].bfloat16(), X16.T, out=scores[:m])
        cand_s, cand_t = _top_candidates(s16, c)
        cand = np.ascontiguousarray(cand_t.numpy(), dtype=np.int64)
        qb = q[q0 : q0 + m]
        index.compute_distance_subset(
            m, faiss.swig_ptr(qb), c, faiss.swig_ptr(exact), faiss.swig_ptr(cand)
        )
        part = np.argpartition(-exact[:m], k - 1, axis=1)[:, :k] if k < c else None
        top = exact[:m] if part is None else np.take_along_axis(exact[:m], part, 1)
        ids = cand if part is None else np.take_along_axis(cand, part, 1)
        order = np.argsort(-top, axis=1, kind="stable")
        D[q0 : q0 + m] = np.take_along_axis(top, order, 1)
        I[q0 : q0 + m] = np.take_along_axis(ids, order, 1)
        if c < n:
            bound = cand_s.float().amin(1).numpy() + eps
            bad = np.flatnonzero(~(D[q0 : q0 + m, -1] > bound))
            if len(bad):
                redo.append(bad + q0)
    if stats is not None:
        stats["queries"] = len(q)
        stats["redone"] = int(sum(len(r) for r in redo))
    if redo:
        rows = np.concatenate(redo)
        D[rows], I[rows] = index.search(np.ascontiguousarray(q[rows]), k)
    return D, I


def vote(
    sims: np.ndarray,
    neighbour_labels: np.ndarray,
    num_classes: int,
    k: int,
    temperature: float = 0.07,
    top: int = 5,
) -> np.ndarray:
    """Class ranking from the first ``k`` neighbours: ``score_c = Σ exp(sim/T)·[y = c]``.

    Returns ``[n, top]`` predicted labels, best first (ties: lower class id first).
    """
    s = np.exp(sims[:, :k].astype(np.float64) / temperature)
    scores = np.zeros((sims.shape[0], num_classes))
    np.add.at(scores, (np.arange(sims.shape[0])[:, None], neighbour_labels[:, :k]), s)
    return np.argsort(-scores, axis=1, kind="stable")[:, :top]


def knn_predict(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    top5: bool = False,
    chunk_size: int = 65536,
) -> np.ndarray:
    """Predicted labels of ``test_feats`` by weighted k-NN over ``train_feats``.

    Returns ``[n_test]`` top-1 labels, or ``[n_test, 5]`` (best first) with ``top5=True``.
    """
    train_labels = np.asarray(train_labels)
    C = int(num_classes or train_labels.max() + 1)
    chunks = (train_feats[i : i + chunk_size] for i in range(0, len(train_feats), chunk_size))
    sims, idx = knn_topk_streaming(chunks, test_feats, k)
    pred = vote(sims, train_labels[idx], C, k, temperature, top=min(5, C) if top5 else 1)
    return pred if top5 else pred[:, 0]


def knn_hits(
    sims: np.ndarray,
    neighbour_labels: np.ndarray,
    test_labels: np.ndarray,
    ks: Iterable[int],
    num_classes: int,
    temperature: float = 0.07,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per query, whether the true class is the top-1 / among the top-5 predictions, for every
    ``k`` in ``ks`` (the items the accuracy averages and its bootstrap resamples)."""
    out = {}
    y = np.asarray(test_labels)
    for k in ks:
        pred = vote(sims, neighbour_labels, num_classes, k, temperature, top=min(5, k, num_classes))
        out[k] = (pred[:, 0] == y, (pred == y[:, None]).any(1))
    return out


def knn_accuracy(
    sims: np.ndarray,
    neighbour_labels: np.ndarray,
    test_labels: np.ndarray,
    ks: Iterable[int],
    num_classes: int,
    temperature: float = 0.07,
) -> dict[int, dict[str, float]]:
    """Top-1 / top-5 accuracy (%) for every ``k`` in ``ks`` from one top-max(ks) search."""
    hits = knn_hits(sims, neighbour_labels, test_labels, ks, num_classes, temperature)
    return {
        k: {"top1": float(h1.mean() * 100), "top5": float(h5.mean() * 100)}
        for k, (h1, h5) in hits.items()
    }


def accuracy_rows(
    hits: Sequence[Mapping[int, tuple[np.ndarray, np.ndarray]]],
    ks: Sequence[int],
    n_train: int,
    statistics: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The k-NN table's rows (``layer, k, k_effective, top1, top5``) from the per-query hits
    of every layer (:func:`knn_hits`, keyed by the effective ``k``), with percentile
    bootstrap intervals over the queries, the same resamples for every row
    (``top1_ci_low`` …; :mod:`vitlib.stats`; ``statistics["bootstrap"] == 0``: none)."""
    import pandas as pd

    from vitlib.stats import bootstrap_ci, settings_of

    rows, items = [], []
    for layer, h in enumerate(hits):
        for k in ks:
            h1, h5 = h[min(k, n_train)]
            items.append(np.stack([h1, h5], axis=1))
            rows.append(
                {
                    "layer": layer,
                    "k": k,
                    "k_effective": min(k, n_train),  # flagged: fewer neighbours than asked
                    "top1": float(h1.mean() * 100),
                    "top5": float(h5.mean() * 100),
                }
            )
    t = pd.DataFrame(rows)
    resamples, level, seed = settings_of(statistics)
    if resamples and items:
        values = np.stack(items, axis=1).astype(np.float64) * 100.0  # [Q, rows, 2]
        lo, hi = bootstrap_ci(values, resamples=resamples, level=level, seed=seed)
        for j, name in enumerate(("top1", "top5")):
            t[f"{name}_ci_low"], t[f"{name}_ci_high"] = lo[:, j], hi[:, j]
    return t
