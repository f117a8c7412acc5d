"""k-NN at every layer without a stored memory bank (docs/protocols.md §5.1, DINO protocol).

The weighted k-NN of :func:`~vitlib.downstream.tables.knn_table` reads the training features of
every layer from an extraction store: for ImageNet that is 1.28 M images × L layers × D × 2
bytes × 2 feature kinds per model.  Here the training images instead stream through the
model once, against the stored *query* features, and only the running top-``k_max``
neighbours of every (layer, query) are kept:

* :class:`KnnBankConsumer` — a capture consumer (the protocol of
  :class:`~vitlib.reducers.StreamingReducer`) that turns every block output of a batch into the
  per-image feature the reducer would store (``feat/block_cls`` or
  ``feat/block_spatial_mean``, rounded to the store's feature dtype), L2-normalises it, computes
  the ``[Q, B]`` cosine similarities with one matrix product per layer and merges them into
  the running top-k;
* :func:`stream_knn_bank` — model, view and loader exactly as
  :func:`~vitlib.extract.run_extraction` builds them, resumable from an atomic checkpoint; it
  returns a :class:`KnnBank` (``indices``, ``sims``, ``labels``, each ``[L, Q, k]``);
* :func:`knn_from_neighbours` and :func:`knn_bank_table` — accuracies for any ``k ≤ k_max``
  and any temperature, in the format of :func:`~vitlib.downstream.tables.knn_table`.

The kept state is one int64 key per (layer, query, neighbour): 0.96 GB for ImageNet val
(Q = 50 000) at k_max = 200 and L = 12 (2.56 GB at L = 32), against 47 GB of stored train
features for a ViT-B (L = 12, D = 768, fp16, CLS + mean spatial).

Ties (equal similarities; they need identical features, i.e. duplicate images).  FAISS has no
single tie rule, so the bank cannot reproduce "what FAISS returns" on ties; it uses a simple
rule instead and equals FAISS everywhere else.  What FAISS (1.15, CPU ``IndexFlatIP``) does:

* ``k < 100`` (heap path): it scans the database in index order, admits a vector only if
  its similarity is *strictly* above the heap's minimum and evicts the minimum by
  (similarity, index).  The kept ties at the k-th similarity ``v*`` are therefore the
  *highest* indices among the tied vectors that are within the first ``k`` vectors
  scanned at or above ``v*`` — a rule that depends on where the ties sit in the scan;
* ``k ≥ 100`` (``distance_compute_min_k_reservoir``): a reservoir partitioned by
  ``partition_fuzzy``, whose tie outcome matches neither rule in general; few queries
  against ≥ 10 000 vectors take a database-parallel path that merges per-thread heaps;
* :func:`~vitlib.downstream.knn.knn_topk_streaming` (used by
  :func:`~vitlib.downstream.tables.knn_table`) searches one index of up to ``BANK_BYTES``
  of training features and merges the results of several such banks with ``ResultHeap``
  (strict admission, results listed highest index first among ties), so its ties follow
  FAISS's rule for a training set that fits one bank and depend on the bank size beyond;
  FAISS on GPU makes no promise;
* every path lists results by similarity descending and equal similarities by index
  descending.

The bank ranks every candidate by the int64 key (similarity, −train index) of
:func:`rank_keys`, unique per query, so ``torch.topk`` is deterministic and the result is
independent of batch size, query chunking and resumption (for given similarities; a GPU's
matrix products may differ from the CPU's in the last bit): among equal similarities
the **lowest train indices** are kept and listed first (``np.argsort(-sims,
kind="stable")[:k]``).  Slicing the first ``k`` of the ``k_max`` neighbours is then exactly
the top-``k`` under the same rule.  The vote (:func:`~vitlib.downstream.knn.vote`) sums
``exp(sim/T)`` per class, so the order within equal similarities never matters and a tie
changes a prediction only when tied neighbours straddle a ``k`` boundary with different
labels.  Similarities compare as float32 values (``-0.0 == 0.0``); a NaN similarity (a
feature that overflowed its storage dtype) ranks below every number.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import vitlib
from vitlib import keys
from vitlib.downstream.knn import _normalise, accuracy_rows, knn_accuracy, knn_hits
from vitlib.store import Store, fingerprint

if TYPE_CHECKING:
    import torch

    from vitlib.data.manifest import Manifest
    from vitlib.models.registry import ModelSpec

log = logging.getLogger(__name__)

#: Feature kinds a bank can be built from (the per-image features of the block outputs).
FEATURES = keys.FEATURE_KINDS
#: Train indices must fit the low 32 bits of a ranking key.
MAX_TRAIN = 1 << 32
_HIGH = 1 << 32
_LOW = _HIGH - 1


# ------------------------------------------------------------------------------ ranking keys
def rank_keys(sims: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """int64 keys that sort like ``(similarity, −index)``: larger key = better neighbour.

    The float32 similarity's bits, made order-preserving as a signed integer, fill the high
    32 bits; ``2³² − 1 − index`` the low 32 bits.  ``index`` broadcasts against ``sims``.
    ``-0.0`` becomes ``+0.0`` (FAISS compares values) and NaN becomes ``-inf``.
    """
    import torch

    s = sims.float()
    s = torch.where(torch.isnan(s), -torch.inf, s) + 0.0
    b = s.view(torch.int32)
    b = torch.where(b < 0, b ^ 0x7FFFFFFF, b)
    return b.to(torch.int64) * _HIGH + (_LOW - index.to(torch.int64))


def decode_keys(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sims float32, indices int64)`` of :func:`rank_keys` keys."""
    import torch

    hi64 = torch.div(k, _HIGH, rounding_mode="floor")
    hi = hi64.to(torch.int32)
    hi = torch.where(hi < 0, hi ^ 0x7FFFFFFF, hi)
    return hi.view(torch.float32), _LOW - (k - hi64 * _HIGH)


# ------------------------------------------------------------------------------ the consumer
class KnnBankConsumer:
    """Running top-``k`` training neighbours of fixed queries, at every layer.

    Parameters
    ----------
    queries:
        ``[L, Q, D]`` query features, L2-normalised, float32, on the compute device.
    k:
        Neighbours kept per (layer, query) (``k_max``); fewer while fewer images were seen.
    num_prefix_tokens:
        CLS (+ registers) at the start of the sequence; without a class token the CLS
        feature is the mean spatial token, as the reducer stores it.
    feature:
        ``"cls"`` (``feat/block_cls``) or ``"spatial_mean"`` (``feat/block_spatial_mean``).
    feature_dtype:
        Storage dtype the reducer would round the feature to (``"float16"``), so that the
        neighbours equal those of the stored bank; ``None`` or ``"float32"``: no rounding.
    query_chunk:
        Queries merged at once: bounds the ``[chunk, B]`` similarities and ``[chunk, k + B]``
        int64 candidates (≈ 0.7 GB at the default, k = 200, B = 256); every chunk costs one
        host synchronisation, so on a GPU one chunk for all queries is fastest.
    n_seen:
        Training images already merged (a resumed run); the next batch starts at this index.

    The state is one int64 :func:`rank_keys` tensor ``[Q, m]`` per layer, unordered,
    ``m = min(k, n_seen)``: 8 bytes per kept neighbour.
    """

    def __init__(
        self,
        queries: torch.Tensor,
        k: int,
        *,
        num_prefix_tokens: int,
        feature: str = "cls",
        feature_dtype: str | None = "float16",
        query_chunk: int = 65536,
        n_seen: int = 0,
    ) -> None:
        import torch

        if queries.ndim != 3:
            raise ValueError(f"queries must be [L, Q, D], got shape {tuple(queries.shape)}")
        if feature not in FEATURES:
            raise ValueError(f"feature must be one of {FEATURES}, not {feature!r}")
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        self.queries = queries.float()
        self.L, self.Q, self.D = (int(s) for s in queries.shape)
        self.k = int(k)
        self.P = int(num_prefix_tokens)
        self.feature = feature
        fd = None if feature_dtype in (None, "float32") else getattr(torch, str(feature_dtype))
        self.round_to: torch.dtype | None = fd
        self.query_chunk = max(1, int(query_chunk))
        self.n_seen = int(n_seen)
        dev = queries.device
        self.state: list[torch.Tensor] = [
            torch.empty(self.Q, 0, dtype=torch.int64, device=dev) for _ in range(self.L)
        ]
        self._batch = 0
        self._done: list[bool] = []

    # ------------------------------------------------------------------ consumer API
    def begin_batch(self, batch_size: int) -> None:
        if self.n_seen + batch_size > MAX_TRAIN:
            raise ValueError(f"more than {MAX_TRAIN} training images")
        self._batch = int(batch_size)
        self._done = [False] * self.L

    def feature_of(self, x_bnd: torch.Tensor) -> torch.Tensor:
        """The per-image feature ``[B, D]`` the reducer stores, L2-normalised (float32)."""
        x = x_bnd.float()
        spatial = x[:, self.P :]
        f = x[:, 0] if self.feature == "cls" and self.P else spatial.mean(1)
        if self.round_to is not None:
            f = f.to(self.round_to).float()
        return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def on_tokens(self, point: str, layer: int, x_bnd: torch.Tensor) -> None:
        import torch

        if point != "block":
            return
        f = self.feature_of(x_bnd)
        idx = torch.arange(self.n_seen, self.n_seen + f.shape[0], device=f.device)
        self.state[layer] = self.merge(self.state[layer], self.queries[layer], f, idx)
        self._done[layer] = True

    def merge(
        self, state: torch.Tensor, q: torch.Tensor, f: torch.Tensor, idx: torch.Tensor
    ) -> torch.Tensor:
        """New ``[Q, min(k, m + B)]`` keys: the best of ``state`` and of the batch ``f``
        (train indices ``idx``), by :func:`rank_keys` (unique per query, so deterministic).

        Once ``k`` are kept, only batch images more similar than a query's worst kept
        neighbour can enter (an equal one has a higher index, so it loses): only the queries
        that admit one are merged, each with the ``n`` most similar images of the batch
        (``n``: the most any of them admits), so late in the stream the ``topk`` runs over a
        few rows of ``k + n`` rather than every row of ``k + B``.
        """
        import torch

        m, B = state.shape[1], f.shape[0]
        width = min(self.k, m + B)
        if width < m + B and m < self.k:  # filling up: every row, every image
            out = torch.empty(self.Q, width, dtype=torch.int64, device=f.device)
        elif m < self.k:  # still room for the whole batch
            return torch.cat([state, rank_keys(self._sims(q, f), idx)], 1)
        else:
            out = state
        for lo in range(0, self.Q, self.query_chunk):
            hi = min(lo + self.query_chunk, self.Q)
            s = q[lo:hi] @ f.T
            if m < self.k:
                cand = torch.cat([state[lo:hi], rank_keys(s, idx)], 1)
                out[lo:hi] = cand.topk(width, dim=1, sorted=False).values
                continue
            kept = state[lo:hi]
            worst = decode_keys(kept.min(1).values)[0]
            admits = (s > worst[:, None]).sum(1).cpu()  # one synchronisation per chunk
            rows_cpu = admits.nonzero()[:, 0]
            if not len(rows_cpu):
                continue
            n = int(admits.max())
            rows = rows_cpu.to(f.device, non_blocking=True)
            s_r, j = s[rows], idx
            if n < B:
                s_r, top = s_r.topk(n, dim=1, sorted=False)
                j = idx[top]
            cand = torch.cat([kept[rows], rank_keys(s_r, j)], 1)
            kept[rows] = cand.topk(width, dim=1, sorted=False).values
        return out

    def _sims(self, q: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.cat(
            [q[lo : lo + self.query_chunk] @ f.T for lo in range(0, self.Q, self.query_chunk)]
        )

    def on_attention(self, layer: int, attn_bhnn: torch.Tensor) -> None:  # pragma: no cover
        pass

    def end_batch(self) -> None:
        missing = [i for i, d in enumerate(self._done) if not d]
        if missing:
            raise RuntimeError(f"capture did not deliver blocks {missing}")
        self.n_seen += self._batch

    # ------------------------------------------------------------------ state and result
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The running state as arrays (for a checkpoint)."""
        import torch

        return {
            "keys": torch.stack([t.cpu() for t in self.state]).numpy(),
            "n_seen": np.int64(self.n_seen),
        }

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_arrays`."""
        import torch

        k = torch.from_numpy(np.asarray(arrays["keys"], dtype=np.int64))
        if k.shape[:2] != (self.L, self.Q) or k.shape[2] > self.k:
            raise ValueError(f"checkpoint state {tuple(k.shape)} does not fit this consumer")
        dev = self.queries.device
        self.state = [t.to(dev).contiguous() for t in k]
        self.n_seen = int(arrays["n_seen"])

    def neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sims [L, Q, m] float32, indices [L, Q, m] int64)``, best first: similarity
        descending, equal similarities by train index ascending."""
        import torch

        sims, idx = [], []
        for st in self.state:
            s, i = decode_keys(torch.sort(st, dim=1, descending=True).values)
            sims.append(s.cpu())
            idx.append(i.cpu())
        return torch.stack(sims).numpy(), torch.stack(idx).numpy()


# ------------------------------------------------------------------------------ the bank
@dataclass
class KnnBank:
    """Kept neighbours of every (layer, query): ``[L, Q, k]`` arrays, ``k = min(k_max, n_train)``.

    ``labels`` are the training labels of ``indices``; ``train_classes`` is the largest train
    label + 1 (with the queries' labels it gives the number of classes of the vote).
    ``meta``: model, train dataset and manifest digest, query store (dataset, fingerprint),
    view, feature, k_max, ....
    """

    indices: np.ndarray
    sims: np.ndarray
    labels: np.ndarray
    n_train: int
    train_classes: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.indices.shape[-1])

    def save(self, path: str | os.PathLike) -> None:
        """One ``.npz`` (written atomically): int32 indices, float32 similarities, labels
        in the smallest integer type that holds them (10 bytes per neighbour for ImageNet)."""
        _atomic_savez(
            path,
            indices=self.indices.astype(np.int32 if self.n_train < 2**31 else np.int64),
            sims=self.sims.astype(np.float32),
            labels=self.labels.astype(np.min_scalar_type(-max(int(self.train_classes), 1))),
            n_train=np.int64(self.n_train),
            train_classes=np.int64(self.train_classes),
            meta=np.array(json.dumps(self.meta, default=str)),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> KnnBank:
        with np.load(path) as z:
            return cls(
                indices=z["indices"].astype(np.int64),
                sims=z["sims"],
                labels=z["labels"].astype(np.int64),
                n_train=int(z["n_train"]),
                train_classes=int(z["train_classes"]),
                meta=json.loads(str(z["meta"])),
            )


def query_features(store: Store, feature: str = "cls") -> torch.Tensor:
    """``[L, Q, D]`` float32 L2-normalised query features of a store, normalised exactly as
    :func:`~vitlib.downstream.knn.knn_topk_streaming` normalises them."""
    import torch

    name = keys.feature("block", feature)
    return torch.from_numpy(
        np.stack([_normalise(store.layer(name, layer)) for layer in range(store.depth)])
    )


def _atomic_savez(path: str | os.PathLike, **arrays: Any) -> None:
    """``np.savez`` to a temporary file beside ``path``, then rename it there (atomic)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load_checkpoint(path: Path, fp: str) -> tuple[int, dict[str, np.ndarray]] | None:
    """``(next_batch, state)`` of a checkpoint of the same run, else ``None``."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            if str(z["fingerprint"]) != fp:
                log.warning("%s belongs to another k-NN bank run: starting afresh", path)
                return None
            return int(z["next_batch"]), {k: z[k] for k in ("keys", "n_seen")}
    except (OSError, ValueError, KeyError):  # unreadable: start afresh
        log.warning("%s is unreadable: starting afresh", path)
        return None


def stream_knn_bank(
    spec: ModelSpec,
    train_manifest: Manifest,
    query_store: Store | str | os.PathLike,
    *,
    view: str = "center",
    k_max: int = 200,
    feature: str = "cls",
    batch_size: int = 256,
    dtype: str = "fp32",
    device: str = "auto",
    num_workers: int = 0,
    weights_path: str | None = None,
    feature_dtype: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    out: str | os.PathLike | None = None,
    query_chunk: int = 65536,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> KnnBank:
    """Stream ``train_manifest`` through ``spec`` once; keep the top-``k_max`` neighbours of
    every query of ``query_store`` at every layer (see module docstring).

    The model, transform and loader are those of :func:`~vitlib.extract.run_extraction` for a
    reduced view.  ``feature_dtype``: the dtype the train features are rounded to before
    normalisation (default: the query store's, i.e. what a train store extracted with the
    same settings would hold; ``"float32"``: none).  ``checkpoint``: a ``.npz`` path where
    the running top-k and the next batch are saved atomically every ``checkpoint_every``
    batches and after the last; a rerun with the same arguments resumes there and ends
    identical to an uninterrupted run (a checkpoint of other arguments is ignored).  ``out``:
    save the bank there (:meth:`KnnBank.save`), then remove the checkpoint.  ``on_batch(i)``
    runs after batch ``i`` (and its checkpoint); tests use it to interrupt.  The similarities
    are float32 matrix products: leave TF32 off (PyTorch's default) for FAISS-equal values.
    """

    from vitlib.data.views import TOKEN_VIEWS
    from vitlib.extract import (
        _committed_batches,
        _weights_digest,
        resolve_device,
        tune_malloc,
        view_loader,
    )
    from vitlib.models.build import build_model
    from vitlib.models.capture import Capture

    t0 = time.perf_counter()
    tune_malloc()  # the allocator of extraction jobs
    if view in TOKEN_VIEWS:
        raise ValueError(f"k-NN banks need a reduced view, not the token view {view!r}")
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, not {feature!r}")
    qs = Store.open(query_store)
    if qs.model != spec.id:
        raise ValueError(f"query store {qs.path} comes from model {qs.model!r}, not {spec.id!r}")
    ytr = np.asarray(train_manifest.labels, dtype=np.int64)
    n_train = len(ytr)
    if not n_train:
        raise ValueError(f"train manifest {train_manifest.dataset!r} is empty")
    fdt = feature_dtype or str(qs.meta.get("feature_dtype", "float16"))
    k = min(int(k_max), n_train)
    dev = resolve_device(device)
    meta: dict[str, Any] = {
        "vitlib_version": vitlib.__version__,
        "model": spec.id,
        "spec": {k_: v for k_, v in asdict(spec).items() if k_ != "paper"},
        "train": train_manifest.dataset,
        "train_digest": train_manifest.digest(),
        "test": qs.dataset,
        "query_fingerprint": qs.meta.get("fingerprint"),
        "view": view,
        "feature": feature,
        "feature_dtype": fdt,
        "k_max": int(k_max),
        "batch_size": int(batch_size),
        "dtype": dtype,
        "weights": str(weights_path or (spec.weights or {}).get("path") or ""),
        "weights_sha256": _weights_digest(weights_path or (spec.weights or {}).get("path")),
    }
    fp = fingerprint(meta)
    meta["fingerprint"] = fp
    consumer = KnnBankConsumer(
        query_features(qs, feature).to(dev),
        k,
        num_prefix_tokens=spec.num_prefix_tokens,
        feature=feature,
        feature_dtype=fdt,
        query_chunk=query_chunk,
    )
    n_batches = -(-n_train // batch_size)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    start = 0
    if ckpt is not None and (saved := _load_checkpoint(ckpt, fp)) is not None:
        start, state = saved
        consumer.load_state(state)
        log.info("resuming the k-NN bank of %s at batch %d of %d", spec.id, start, n_batches)
    if start < n_batches:
        model = build_model(spec, weights_path, device=dev)
        cap = Capture(model, points=("block",), attention=False, dtype=dtype)  # type: ignore[arg-type]
        loader = view_loader(spec, train_manifest, view, start, batch_size, num_workers, dev)
        every = max(1, int(checkpoint_every))
        for b, (images, _idx) in _committed_batches(
            loader, start, n_batches, f"k-NN bank {spec.id}", progress, on_batch
        ):
            cap(images.to(dev, non_blocking=True), consumer)
            if ckpt is not None and ((b + 1) % every == 0 or b + 1 == n_batches):
                state = consumer.state_arrays()
                _atomic_savez(ckpt, fingerprint=np.array(fp), next_batch=np.int64(b + 1), **state)
    if consumer.n_seen != n_train:
        raise RuntimeError(f"k-NN bank saw {consumer.n_seen} of {n_train} training images")
    sims, idx = consumer.neighbours()
    meta["seconds"] = round(time.perf_counter() - t0, 3)
    meta["resumed_from_batch"] = start
    bank = KnnBank(
        indices=idx,
        sims=sims,
        labels=ytr[idx],
        n_train=n_train,
        train_classes=int(ytr.max()) + 1,
        meta=meta,
    )
    if out is not None:
        bank.save(out)
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)
    return bank


# ------------------------------------------------------------------------------ accuracies
def knn_from_neighbours(
    sims: np.ndarray,
    labels: np.ndarray,
    test_labels: np.ndarray,
    ks: Iterable[int],
    temperature: float,
    n_classes: int,
) -> dict[int, dict[str, float]]:
    """Top-1 / top-5 accuracy (%) per ``k`` from kept neighbours ``[Q, k_max]`` (best
    first), exactly :func:`~vitlib.downstream.knn.knn_accuracy`; ``k`` must be ≤ ``k_max``."""
    ks = list(ks)
    too_many = [k for k in ks if k > sims.shape[-1]]
    if too_many:
        raise ValueError(f"k = {too_many} > the {sims.shape[-1]} neighbours kept")
    return knn_accuracy(sims, labels, test_labels, ks, n_classes, temperature)


def knn_bank_table(
    bank: KnnBank | str | os.PathLike,
    test_store: Store | str | os.PathLike,
    *,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    statistics: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """k-NN accuracy of every layer from a :class:`KnnBank`, in the format of
    :func:`~vitlib.downstream.tables.knn_table` (``k`` > ``n_train`` is clamped as there;
    a ``k`` above the bank's ``k_max`` raises), with bootstrap intervals over the test
    queries (:func:`~vitlib.downstream.knn.accuracy_rows`)."""
    b = bank if isinstance(bank, KnnBank) else KnnBank.load(bank)
    gte = Store.open(test_store)
    if b.meta.get("model") != gte.model:
        raise ValueError(f"bank of {b.meta.get('model')!r}, test store of {gte.model!r}")
    if b.meta.get("query_fingerprint") != gte.meta.get("fingerprint"):
        raise ValueError(f"the bank's queries are not the features of {gte.path}")
    yte = gte.labels
    n_train = b.n_train
    C = int(max(b.train_classes - 1, int(yte.max())) + 1)
    ks_eff = sorted({min(k, n_train) for k in ks})
    too_many = [k for k in ks_eff if k > b.sims.shape[-1]]
    if too_many:
        raise ValueError(f"k = {too_many} > the {b.sims.shape[-1]} neighbours kept")
    hits = [
        knn_hits(b.sims[layer], b.labels[layer], yte, ks_eff, C, temperature)
        for layer in range(b.indices.shape[0])
    ]
    t = accuracy_rows(hits, ks, n_train, statistics)
    for col, v in {
        "train": b.meta.get("train"),
        "test": gte.dataset,
        "feature": b.meta.get("feature"),
        "temperature": temperature,
        "n_train": n_train,
        "n_test": len(yte),
        "chance": 100.0 / C,
    }.items():
        t[col] = v
    return t


def bank_bytes(layers: int, queries: int, k: int) -> int:
    """Bytes of the kept state: one int64 key per (layer, query, neighbour)."""
    return 8 * layers * queries * k


def bank_file_bytes(layers: int, queries: int, k: int, n_train: int, n_classes: int) -> int:
    """Bytes of a saved bank (:meth:`KnnBank.save`): indices, similarities and labels."""
    idx = 4 if n_train < 2**31 else 8
    lab = np.min_scalar_type(-max(n_classes, 1)).itemsize
    return layers * queries * k * (idx + 4 + lab)
