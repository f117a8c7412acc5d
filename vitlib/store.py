"""The Zarr store of one extraction: ``results/features/{model}/{dataset}/{view}.zarr``.

Layout (Zarr v3 group; every array is written by one process, batch by batch)::

    {view}.zarr/
      zarr.json              group attributes: "vitlib" = {format, fingerprint, model, dataset,
                             view, n_items, batch_size, n_batches, cka_batch_size, n_chunks,
                             depth, num_heads, embed_dim, grid_hw, num_prefix_tokens, dtype,
                             points, settings}
      labels                 [n] int64, the manifest's labels in manifest order
      feat/<point>_cls       [n, L, D]       token 0 of capture point <point> (e.g. block output)
      feat/<point>_spatial_mean [n, L, D]    mean over spatial tokens
      feat/block_token_norm  [n, L, h·w]     norm of every spatial block output token
      attn/cls_row           [n, L, H, h·w]  CLS query over spatial keys
      attn/spatial_mean_row  [n, L, H, h·w]  mean spatial query over spatial keys
      attn/distance          [n, L, H]       mean attention distance (docs/protocols.md §2.5)
      gram/<point>_{cls,spatial,all} [C, L, b, b]  Gram matrix per CKA minibatch
      sums/...               dataset sums (see :mod:`vitlib.reducers`), written when complete

    Token views (``patches``, ``squash``, ``spair``, ``dense``; see :mod:`vitlib.data.views`)
    keep every spatial token instead, ragged (one grid per image)::

      labels, grid [n, 2]    token grid (rows, cols) of each image
      offsets [n + 1]        image i's tokens are rows offsets[i]:offsets[i+1], row-major
      tokens [T, L, D]       block outputs of every spatial token, chunked (4096, 1, D)
      cls [n, L, D]          the CLS token (not for ``dense``, whose tiles each have one)
      seg/pooled [A, L, D], seg/category [A], seg/offsets [n + 1]
                             annotation-pooled features (need ``segment_pool``)
      davis/soft [T, L, C]   DAVIS soft masks per token (need ``davis_propagation``)
    {view}.progress.npz      beside the store: resume state, i.e. the next batch and the
                             running sums (replaced atomically after each batch)
    {view}.complete.json     beside the store, written last: a summary of the run; without
                             it the store is partial (it is the workflow's output file)

Per-image arrays are chunked ``(batch_size, 1, ...)`` so one layer reads without the others,
inside Zarr v3 *shards* of ``shard_batches`` batches × every layer (one file each; ragged
token arrays: ``TOKEN_CHUNK`` rows × every layer): a paper-scale run writes hundreds of
thousands of files, not tens of millions.  The writer buffers a shard's batches and writes
them at once (no read-modify-write of a shard per batch), then commits: a run that is killed
resumes from ``progress.npz`` at the last committed shard, rows past it are rewritten
identically, sums are restored from the same file, so the finished arrays equal those of an
uninterrupted run.  :func:`shard_batches` sizes shards (about :data:`SHARD_BYTES` of buffered
rows per commit); the plan (:mod:`vitlib.plan`) counts files with the same function.
:func:`open_store` refuses a store without its ``complete.json``.  (The two files sit
beside the store, not inside, so Zarr tools see a clean hierarchy.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from vitlib import keys


@dataclass(frozen=True)
class ArraySpec:
    """One array of a store: name, trailing shape (after the item axis), storage dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: Any
    #: ragged arrays: the offsets array (``[n + 1]``) whose rows index this one per item
    offsets: str = keys.OFFSETS


# 5: prefix-key attention mass and attention rollout (needs prefix_attention, rollout)
FORMAT = 5  # 4: sharded arrays; 3: needs-driven arrays, EXIF-oriented 16-bit-scaled input
#: Rows (tokens) per chunk of the ragged token arrays of token views (one shard: every layer).
TOKEN_CHUNK = 4096
#: Buffered bytes per commit that size a store's shards (:func:`shard_batches`).
SHARD_BYTES = 256 << 20


def shard_batches(
    batch_size: int,
    image_specs: Iterable[ArraySpec],
    chunk_specs: Iterable[ArraySpec] = (),
    cka_batch_size: int = 0,
    shard_bytes: float = SHARD_BYTES,
    token_specs: Iterable[ArraySpec] = (),
    tokens_per_item: float = 0.0,
) -> int:
    """Batches per shard (and per commit): as many as fit ``shard_bytes`` of the per-image,
    per-minibatch and (ragged, ``tokens_per_item`` on average) per-token rows of one batch,
    at least 1 (``shard_bytes=0``: one batch).

    >>> shard_batches(64, [ArraySpec("f", (12, 768), "float16")], shard_bytes=256 << 20)
    227
    """
    per_batch = sum(
        batch_size * int(np.prod(s.shape, dtype=np.int64)) * np.dtype(s.dtype).itemsize
        for s in image_specs
    )
    if cka_batch_size:
        per_batch += sum(
            (batch_size // cka_batch_size)
            * int(np.prod(s.shape, dtype=np.int64))
            * np.dtype(s.dtype).itemsize
            for s in chunk_specs
        )
    per_batch += sum(
        int(batch_size * tokens_per_item * np.prod(s.shape, dtype=np.int64))
        * np.dtype(s.dtype).itemsize
        for s in token_specs
    )
    return max(1, int(shard_bytes // max(per_batch, 1)))


def progress_path(store: str | os.PathLike) -> Path:
    """``x/center.zarr`` → ``x/center.progress.npz``."""
    p = Path(store)
    return p.with_name(p.name.removesuffix(".zarr") + ".progress.npz")


def complete_path(store: str | os.PathLike) -> Path:
    """``x/center.zarr`` → ``x/center.complete.json`` (the completion marker)."""
    p = Path(store)
    return p.with_name(p.name.removesuffix(".zarr") + ".complete.json")


class IncompleteStoreError(RuntimeError):
    """Raised when a store is opened for reading before its extraction finished."""


def fingerprint(settings: Mapping[str, Any]) -> str:
    """Stable hash of everything that determines a store's content."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StoreWriter:
    """Create or resume a store and write it batch by batch (single writer).

    ``meta`` must contain ``n_items`` and ``batch_size`` and everything that defines the
    content; its fingerprint decides whether an existing partial store is resumed (same
    fingerprint) or discarded (anything else).  ``shard_bytes``: see :func:`shard_batches`
    (the resulting ``shard_batches`` is part of the fingerprint).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        meta: Mapping[str, Any],
        *,
        image_specs: Iterable[ArraySpec],
        chunk_specs: Iterable[ArraySpec],
        sum_specs: Iterable[ArraySpec],
        labels: np.ndarray,
        token_specs: Iterable[ArraySpec] = (),
        offsets: np.ndarray | Mapping[str, np.ndarray] | None = None,
        extra_arrays: Mapping[str, np.ndarray] | None = None,
        shard_bytes: float = SHARD_BYTES,
        bounds: Sequence[int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.meta = dict(meta)
        self.meta["format"] = FORMAT
        self.n = int(self.meta["n_items"])
        self.bs = int(self.meta["batch_size"])
        #: batch b holds items bounds[b]:bounds[b + 1] (default: batch_size items each)
        self.bounds = np.asarray(
            list(range(0, self.n, self.bs)) + [self.n] if bounds is None else bounds,
            dtype=np.int64,
        )
        if self.bounds[0] != 0 or self.bounds[-1] != self.n or np.any(np.diff(self.bounds) <= 0):
            raise ValueError(f"batch bounds must rise from 0 to n_items={self.n}")
        self.n_batches = len(self.bounds) - 1
        if bounds is not None:
            self.meta["bounds"] = [int(b) for b in self.bounds]
        # ragged arrays, each indexed per item by its offsets array
        if offsets is None or isinstance(offsets, Mapping):
            self.offsets_by_key = {
                k: np.asarray(v, dtype=np.int64) for k, v in (offsets or {}).items()
            }
        else:
            self.offsets_by_key = {keys.OFFSETS: np.asarray(offsets, dtype=np.int64)}
        image_specs, chunk_specs = list(image_specs), list(chunk_specs)
        token_specs = list(token_specs)
        for t in token_specs:
            off = self.offsets_by_key.get(t.offsets)
            if off is None or len(off) != self.n + 1:
                raise ValueError(
                    f"ragged array {t.name} needs offsets {t.offsets!r} of n_items + 1"
                )
        mean_rows = max(
            (float(v[-1]) / max(self.n, 1) for v in self.offsets_by_key.values()), default=0.0
        )
        self.k = shard_batches(
            int(np.diff(self.bounds).max()) if self.n_batches else self.bs,
            image_specs,
            chunk_specs,
            int(self.meta.get("cka_batch_size", 0)),
            shard_bytes,
            token_specs,
            mean_rows,
        )
        self.k = min(self.k, max(self.n_batches, 1))
        self.meta["shard_batches"] = self.k
        self.meta["fingerprint"] = fingerprint(
            {k: v for k, v in self.meta.items() if k != "fingerprint"}
        )
        self.cka_b = int(self.meta.get("cka_batch_size", 0))
        self.image_specs = list(image_specs)
        self.chunk_specs = list(chunk_specs)
        self.sum_specs = list(sum_specs)
        self.token_specs = list(token_specs)
        self._ragged = {t.name: self.offsets_by_key[t.offsets] for t in self.token_specs}
        self.extra_arrays = dict(extra_arrays or {})
        if self.cka_b and bounds is not None:
            raise ValueError("per-minibatch arrays need batches of batch_size items")
        if self.cka_b and self.bs % self.cka_b:
            raise ValueError(
                f"batch_size {self.bs} must be a multiple of cka_batch_size {self.cka_b}"
            )
        self.n_chunks = self.n // self.cka_b if self.cka_b else 0
        self.meta.update(n_batches=self.n_batches, n_chunks=self.n_chunks)
        self.resumed_from = 0
        #: buffered batches of the current shard: (batch, {"image"|"chunk"|"token": arrays})
        self._pending: list[tuple[int, dict[str, dict[str, np.ndarray]]]] = []
        #: the last batch taken by this writer (a batch may only follow its predecessor:
        #: a commit never skips a batch whose write failed)
        self._taken: int | None = None
        self._open(labels)

    # ------------------------------------------------------------------ set-up
    def _existing_ok(self) -> bool:
        try:
            g = zarr.open_group(str(self.path), mode="r")
            attrs = g.attrs.get("vitlib", {})
            return isinstance(attrs, dict) and attrs.get("fingerprint") == self.meta["fingerprint"]
        except Exception:  # noqa: BLE001 - unreadable means start over
            return False

    def _open(self, labels: np.ndarray) -> None:
        if self.path.exists() and not self._existing_ok():
            shutil.rmtree(self.path)
            progress_path(self.path).unlink(missing_ok=True)
        complete_path(self.path).unlink(missing_ok=True)
        if self.path.exists():
            self.group = zarr.open_group(str(self.path), mode="r+")
            return
        progress_path(self.path).unlink(missing_ok=True)  # belongs to a store that is gone
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".creating")
        shutil.rmtree(tmp, ignore_errors=True)
        g = zarr.open_group(str(tmp), mode="w")
        g.create_array(keys.LABELS, data=np.asarray(labels, dtype=np.int64))
        for name, arr in self.extra_arrays.items():
            g.create_array(name, data=np.asarray(arr))
        for key, off in self.offsets_by_key.items():
            g.create_array(key, data=off)
        for s in self.token_specs:
            total = int(self._ragged[s.name][-1])
            rows = max(1, min(total, TOKEN_CHUNK))
            g.create_array(
                s.name,
                shape=(total, *s.shape),
                dtype=s.dtype,
                chunks=(rows, *((1,) + s.shape[1:] if s.shape else ())),
                shards=(rows, *s.shape),
                fill_value=0,
                compressors=None,
            )
        for s in self.image_specs:
            rows = min(self.bs, max(self.n, 1))
            g.create_array(
                s.name,
                shape=(self.n, *s.shape),
                dtype=s.dtype,
                chunks=(rows, *((1,) + s.shape[1:] if s.shape else ())),
                shards=(rows * self.k, *s.shape),
                fill_value=0,
                compressors=None,
            )
        for s in self.chunk_specs:
            # Grams are small (n × n per minibatch and layer) and always read whole (a CKA
            # job reads every minibatch of every layer): one chunk per commit holds all
            # layers, so a read is a few large reads (24× faster than per-layer inner chunks
            # of a shard at 625 minibatches; benchmarks/run.py --only cka)
            per_batch = max(self.bs // self.cka_b, 1)
            g.create_array(
                s.name,
                shape=(self.n_chunks, *s.shape),
                dtype=s.dtype,
                chunks=(per_batch * self.k, *s.shape),
                fill_value=0,
                compressors=None,
            )
        g.attrs["vitlib"] = self.meta
        tmp.rename(self.path)  # the group appears complete-with-layout or not at all
        self.group = zarr.open_group(str(self.path), mode="r+")

    # ------------------------------------------------------------------ progress
    def load_progress(self) -> tuple[int, dict[str, np.ndarray] | None]:
        """``(next_batch, sums)`` of the last committed batch (``(0, None)`` if none)."""
        p = progress_path(self.path)
        if not p.exists():
            return 0, None
        with np.load(p) as z:
            nb = int(z["__next_batch__"])
            sums = {s.name: z[s.name.replace("/", "__")] for s in self.sum_specs}
        self.resumed_from = nb
        return nb, sums

    def _array(self, name: str) -> zarr.Array:
        arr = self.group[name]
        assert isinstance(arr, zarr.Array), f"{self.path}/{name} is not an array"
        return arr

    def write_batch(
        self,
        batch: int,
        per_image: Mapping[str, np.ndarray],
        per_chunk: Mapping[str, np.ndarray],
        sums: Mapping[str, np.ndarray],
        per_token: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Take batch ``batch``'s rows; at the end of a shard (or of the store) write the
        buffered batches, then commit the running sums and progress atomically."""
        lo, hi = int(self.bounds[batch]), int(self.bounds[batch + 1])
        if self._taken is not None and batch != self._taken + 1:
            raise RuntimeError(f"{self.path}: batch {batch} after batch {self._taken}")
        if per_token:
            for name, arr in per_token.items():
                n_tok = int(self._ragged[name][hi]) - int(self._ragged[name][lo])
                if arr.shape[0] != n_tok:
                    raise ValueError(
                        f"{name}: batch {batch} has {arr.shape[0]} tokens, expected {n_tok}"
                    )
        for name, arr in per_image.items():
            if arr.shape[0] != hi - lo:
                raise ValueError(
                    f"{name}: batch {batch} has {arr.shape[0]} rows, expected {hi - lo}"
                )
        rows = {"image": per_image, "chunk": per_chunk, "token": per_token or {}}
        self._pending.append(
            (batch, {kind: {k: np.array(v) for k, v in a.items()} for kind, a in rows.items()})
        )
        self._taken = batch
        if (batch + 1) % self.k == 0 or batch + 1 == self.n_batches:
            self._flush(sums)

    def _flush(self, sums: Mapping[str, np.ndarray]) -> None:
        first, last = self._pending[0][0], self._pending[-1][0]
        lo, hi = int(self.bounds[first]), int(self.bounds[last + 1])

        def joined(kind: str) -> dict[str, np.ndarray]:
            # a batch without a whole CKA minibatch (the dataset's last) has no chunk rows
            names = dict.fromkeys(k for p in self._pending for k in p[1][kind])
            return {
                k: np.concatenate([p[1][kind][k] for p in self._pending if k in p[1][kind]])
                for k in names
            }

        for name, arr in joined("token").items():
            t_lo, t_hi = int(self._ragged[name][lo]), int(self._ragged[name][hi])
            self._array(name)[t_lo:t_hi] = arr
        for name, arr in joined("image").items():
            self._array(name)[lo:hi] = arr
        if self.cka_b:
            c_lo = lo // self.cka_b
            for name, arr in joined("chunk").items():
                c_hi = min(c_lo + arr.shape[0], self.n_chunks)
                if c_hi > c_lo:
                    self._array(name)[c_lo:c_hi] = arr[: c_hi - c_lo]
        self._pending.clear()
        import io

        buf = io.BytesIO()
        arrays: dict[str, Any] = {k.replace("/", "__"): np.asarray(v) for k, v in sums.items()}
        np.savez(buf, __next_batch__=np.int64(last + 1), **arrays)
        _atomic_write_bytes(progress_path(self.path), buf.getvalue())

    def finalize(self, sums: Mapping[str, np.ndarray], summary: Mapping[str, Any]) -> None:
        """Write the dataset sums, then the completion marker (last); drop the resume state."""
        nb, _ = self.load_progress()
        if nb < self.n_batches:
            raise RuntimeError(f"{self.path}: only {nb} of {self.n_batches} batches committed")
        for k, v in sums.items():
            self.group.create_array(k, data=np.asarray(v), overwrite=True)
        _atomic_write_bytes(
            complete_path(self.path),
            json.dumps(
                {**summary, "fingerprint": self.meta["fingerprint"]}, indent=1, default=str
            ).encode(),
        )
        # A finished store is never resumed: a rerun of its extraction (its inputs changed
        # under the same names, or it was forced) starts again from batch 0.
        progress_path(self.path).unlink(missing_ok=True)


class BackgroundWriter:
    """Hands batches to a :class:`StoreWriter` in one background thread, in order, so that
    the next batch's forward runs while this one is compressed and written (a GPU
    extraction otherwise idles through every write).

    At most ``depth`` batches wait (their rows are the caller's arrays; the running sums are
    copied when handed over).  Leaving the ``with`` block waits for every handed batch,
    also when the block raises, so a crash of the caller leaves exactly the committed state a
    synchronous writer leaves after the same batches; an error of the thread is raised at
    the next hand-over or on leaving."""

    def __init__(self, writer: StoreWriter, depth: int = 2) -> None:
        from collections import deque
        from concurrent.futures import Future, ThreadPoolExecutor

        self.writer = writer
        self.depth = max(1, depth)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._queued: deque[Future[None]] = deque()
        self._failed = False  # set by the thread: no batch after a failed one is written

    def _write(self, *args: Any, **kwargs: Any) -> None:
        if self._failed:
            raise RuntimeError(f"{self.writer.path}: not written, an earlier batch failed")
        try:
            self.writer.write_batch(*args, **kwargs)
        except BaseException:
            self._failed = True
            raise

    def write_batch(
        self,
        batch: int,
        per_image: Mapping[str, np.ndarray],
        per_chunk: Mapping[str, np.ndarray],
        sums: Mapping[str, np.ndarray],
        per_token: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """:meth:`StoreWriter.write_batch`, run in the background."""
        while self._queued and (len(self._queued) >= self.depth or self._queued[0].done()):
            self._queued.popleft().result()  # raises the thread's error, if any
        snapshot = {k: np.array(v, copy=True) for k, v in sums.items()}
        tokens = {} if per_token is None else {"per_token": per_token}
        self._queued.append(
            self._pool.submit(self._write, batch, per_image, per_chunk, snapshot, **tokens)
        )

    def wait(self) -> None:
        """Wait until every handed batch is written (raise the first error)."""
        try:
            while self._queued:
                self._queued.popleft().result()
        finally:
            self._queued.clear()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self.wait()
            else:  # the caller's error wins; the handed batches still land
                for f in self._queued:
                    f.exception()
                self._queued.clear()
        finally:
            self._pool.shutdown(wait=True)


def store_from_marker(marker: str | os.PathLike) -> Path:
    """``x/center.complete.json`` → ``x/center.zarr`` (workflow rules name the marker)."""
    p = Path(marker)
    if not p.name.endswith(".complete.json"):
        raise ValueError(f"{p} is not a store completion marker (*.complete.json)")
    return p.with_name(p.name.removesuffix(".complete.json") + ".zarr")


def is_complete(path: str | os.PathLike) -> bool:
    return complete_path(path).exists()


def open_store(path: str | os.PathLike) -> zarr.Group:
    """Open a finished store read-only; raise :class:`IncompleteStoreError` otherwise."""
    p = Path(path)
    if not is_complete(p):
        raise IncompleteStoreError(
            f"{p} is not a complete vitlib store (no {complete_path(p).name}): its extraction"
            " has not finished; run the workflow to resume it"
        )
    return zarr.open_group(str(p), mode="r")


def store_meta(group: zarr.Group) -> dict[str, Any]:
    """The ``vitlib`` attributes of a store (see module docstring)."""
    return dict(group.attrs["vitlib"])  # type: ignore[arg-type]


class Store:
    """A finished store, opened once per job, with named accessors.

    Key names are the constants of :mod:`vitlib.keys` (the ones the reducers write).  A key
    the store does not hold raises :class:`KeyError` naming the store and the key (the
    extraction did not capture that need).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.group = open_store(self.path)
        self.meta = store_meta(self.group)

    @classmethod
    def open(cls, store: Store | str | os.PathLike) -> Store:
        """``store`` itself if already open, else the finished store at that path."""
        return store if isinstance(store, Store) else cls(store)

    # ------------------------------------------------------------------ identity
    @property
    def model(self) -> str:
        return str(self.meta["model"])

    @property
    def dataset(self) -> str:
        return str(self.meta["dataset"])

    @property
    def view(self) -> str:
        return str(self.meta["view"])

    @property
    def family(self) -> str:
        return str(self.meta["spec"]["family"])

    @property
    def depth(self) -> int:
        return int(self.meta["depth"])

    @property
    def num_heads(self) -> int:
        return int(self.meta["num_heads"])

    @property
    def grid_hw(self) -> tuple[int, int]:
        h, w = self.meta["grid_hw"]
        return int(h), int(w)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.meta["num_prefix_tokens"])

    @property
    def patch_size(self) -> int:
        return int(self.meta["spec"]["patch_size"])

    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])

    @property
    def is_token_view(self) -> bool:
        """Whether the store keeps every spatial token (a token view) rather than reductions."""
        return self.meta.get("kind") == "tokens"

    def identity(self) -> dict[str, Any]:
        """The columns every table of this store starts with."""
        return {
            "dataset": self.dataset,
            "view": self.view,
            "model": self.model,
            "family": self.family,
            "depth": self.depth,
        }

    # ------------------------------------------------------------------ arrays
    def has(self, key: str) -> bool:
        return key in self.group

    def array(self, key: str) -> zarr.Array:
        """The array ``key`` (lazy: index it to read)."""
        try:
            arr = self.group[key]
        except KeyError:
            raise KeyError(
                f"{self.path}: the store has no array {key!r}; it was extracted without the"
                " capture need that writes it (rerun the workflow: the extraction plan adds it)"
            ) from None
        assert isinstance(arr, zarr.Array), f"{self.path}/{key} is a group, not an array"
        return arr

    def read(self, key: str) -> np.ndarray:
        """The whole array ``key`` in memory (for small arrays: labels, sums, grids)."""
        return np.asarray(self.array(key)[...])

    @property
    def labels(self) -> np.ndarray:
        return self.read(keys.LABELS)

    def layers_of(self, key: str) -> list[int]:
        """The 0-based blocks along axis 1 of ``key``: a feature array may hold only the
        blocks its analyses read (``feature_layers`` in the store's attributes)."""
        for kind, blocks in (self.meta.get("feature_layers") or {}).items():
            if key == keys.feature("block", kind):
                return [int(b) for b in blocks]
        return list(range(self.depth))

    def _position(self, key: str, layer: int) -> int:
        blocks = self.layers_of(key)
        try:
            return blocks.index(layer)
        except ValueError:
            raise KeyError(
                f"{self.path}: {key!r} holds blocks {[b + 1 for b in blocks]} (1-based), not"
                f" block {layer + 1}: its analyses did not ask for it (e.g. probe.layers)"
            ) from None

    def layer(self, key: str, layer: int) -> np.ndarray:
        """``key`` at 0-based block ``layer`` for every item: ``[n, ...]``."""
        return np.asarray(self.array(key)[:, self._position(key, layer)])

    def chunks(self, key: str, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, rows)`` of ``key`` in row chunks (default: its chunk size)."""
        arr = self.array(key)
        step = rows or int(arr.chunks[0])
        for lo in range(0, arr.shape[0], step):
            yield lo, np.asarray(arr[lo : lo + step])

    def layer_chunks(self, key: str, layer: int, rows: int | None = None) -> Iterator[np.ndarray]:
        """``key`` at 0-based block ``layer`` in row chunks (default: the store's batch size)."""
        arr = self.array(key)
        pos = self._position(key, layer)
        step = rows or int(arr.chunks[0])
        for lo in range(0, arr.shape[0], step):
            yield np.asarray(arr[lo : lo + step, pos])

    def gram(self, point: str, kind: str) -> zarr.Array:
        """Per-minibatch Grams ``[C, L, b, b]`` of capture point ``point``."""
        return self.array(keys.gram(point, kind))

    def token_grid(self, index: int, layer: int | slice = slice(None)) -> np.ndarray:
        """Token grid of image ``index`` of a token view: ``[gh, gw, D]`` for one layer,
        ``[gh, gw, L, D]`` for a slice of layers."""
        off = np.asarray(self.array(keys.OFFSETS)[index : index + 2])
        lo, hi = int(off[0]), int(off[1])
        gh, gw = (int(v) for v in np.asarray(self.array(keys.GRID)[index]))
        x = np.asarray(self.array(keys.TOKENS)[lo:hi, layer])
        return x.reshape(gh, gw, *x.shape[1:])
