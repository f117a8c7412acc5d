"""One forward pass per (model, dataset, view) into a resumable Zarr store.

:func:`run_extraction` builds the model, reads the manifest's images through the view,
captures every block in one pass per batch (:class:`~vitlib.models.capture.Capture`),
reduces on the fly (:class:`~vitlib.reducers.StreamingReducer`) and writes batch by batch
(:class:`~vitlib.store.StoreWriter`).  Killed at any point, calling it again with the same
arguments continues after the last committed batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

import vitlib
from vitlib.data.manifest import Manifest
from vitlib.data.views import (
    TOKEN_VIEWS,
    DenseDataset,
    ManifestDataset,
    assemble_tiles,
    dense_geometry,
    image_sizes,
    make_transform,
)
from vitlib.models.build import build_model
from vitlib.models.capture import Capture
from vitlib.models.registry import ModelSpec
from vitlib.reducers import StreamingReducer
from vitlib.store import ArraySpec, StoreWriter

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def effective_batch_size(batch_size: int, cka_batch_size: int) -> int:
    """Extraction batches hold whole CKA minibatches: round up to a multiple."""
    if cka_batch_size <= 0:
        return batch_size
    return max(1, -(-batch_size // cka_batch_size)) * cka_batch_size


def _committed_batches(
    loader: Any,
    start: int,
    total: int,
    desc: str,
    progress: bool,
    on_batch: Callable[[int], None] | None,
) -> Iterator[tuple[int, Any]]:
    """``(batch index, batch)`` from ``start``; the caller writes and commits each batch
    before asking for the next, after which the progress bar moves and ``on_batch`` runs."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc=desc, unit="batch", mininterval=2.0)
    try:
        for b, batch in enumerate(loader, start=start):
            yield b, batch
            if bar is not None:
                bar.update(1)
            if on_batch is not None:
                on_batch(b)
    finally:
        if bar is not None:
            bar.close()


def run_extraction(
    spec: ModelSpec,
    manifest: Manifest,
    view: str,
    out: str | os.PathLike,
    *,
    batch_size: int = 32,
    dtype: str = "fp32",
    device: str = "auto",
    num_workers: int = 0,
    gram_points: tuple[str, ...] = ("block",),
    residual_norms: bool = False,
    feature_dtype: str = "float16",
    weights_path: str | None = None,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    tile_factor: int = 2,
) -> dict[str, Any]:
    """Extract ``manifest`` through ``spec`` into the store ``out``; returns a summary.

    ``on_batch(i)`` is called after batch ``i`` is committed (used by tests to interrupt).
    Token views (:data:`~vitlib.data.views.TOKEN_VIEWS`) go to :func:`run_token_extraction`.
    """
    if view in TOKEN_VIEWS:
        return run_token_extraction(
            spec,
            manifest,
            view,
            out,
            batch_size=batch_size,
            dtype=dtype,
            device=device,
            num_workers=num_workers,
            feature_dtype=feature_dtype,
            weights_path=weights_path,
            progress=progress,
            on_batch=on_batch,
            tile_factor=tile_factor,
        )
    t0 = time.perf_counter()
    dev = resolve_device(device)
    bs = effective_batch_size(batch_size, manifest.cka_batch_size)
    grid = (spec.grid, spec.grid)
    meta = {
        "vitlib_version": vitlib.__version__,
        "model": spec.id,
        "spec": {k: v for k, v in asdict(spec).items() if k != "paper"},
        "dataset": manifest.dataset,
        "manifest_digest": manifest.digest(),
        "view": view,
        "n_items": len(manifest),
        "batch_size": bs,
        "cka_batch_size": manifest.cka_batch_size,
        "dtype": dtype,
        "feature_dtype": feature_dtype,
        "gram_points": list(gram_points),
        "residual_norms": residual_norms,
        "depth": spec.depth,
        "num_heads": spec.num_heads,
        "embed_dim": spec.embed_dim,
        "grid_hw": list(grid),
        "num_prefix_tokens": spec.num_prefix_tokens,
        "weights": str(weights_path or (spec.weights or {}).get("path") or ""),
    }
    reducer = StreamingReducer(
        depth=spec.depth,
        num_heads=spec.num_heads,
        embed_dim=spec.embed_dim,
        grid_hw=grid,
        num_prefix_tokens=spec.num_prefix_tokens,
        token_points=("block",),
        gram_points=gram_points,
        residual_norms=residual_norms,
        cka_batch_size=manifest.cka_batch_size,
        feature_dtype=feature_dtype,
    )
    writer = StoreWriter(
        out,
        meta,
        image_specs=reducer.image_specs(),
        chunk_specs=reducer.chunk_specs(),
        sum_specs=reducer.sum_specs(),
        labels=np.asarray(manifest.labels),
    )
    start, sums = writer.load_progress()
    if sums is not None:
        reducer.sums = {k: v.copy() for k, v in sums.items()}
    if start:
        log.info("resuming %s at batch %d of %d", out, start, writer.n_batches)

    if start < writer.n_batches:
        model = build_model(spec, weights_path, device=dev)
        cap = Capture(model, points=reducer.capture_points(), attention=True, dtype=dtype)  # type: ignore[arg-type]
        ds = ManifestDataset(manifest, make_transform(view, spec.img_size, spec.mean, spec.std))
        sub = Subset(ds, range(start * bs, len(ds)))
        loader = DataLoader(
            sub,
            batch_size=bs,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=dev.type == "cuda",
        )
        for b, (images, _idx) in _committed_batches(
            loader, start, writer.n_batches, f"extract {spec.id}", progress, on_batch
        ):
            cap(images.to(dev, non_blocking=True), reducer)
            reducer.accumulate()
            img, chk = reducer.batch_arrays()
            writer.write_batch(b, img, chk, reducer.sums)
    summary = {
        "model": spec.id,
        "dataset": manifest.dataset,
        "view": view,
        "n_items": len(manifest),
        "batches": writer.n_batches,
        "resumed_from_batch": start,
        "device": str(dev),
        "dtype": dtype,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    writer.finalize(reducer.sums, summary)
    return summary


class TokenConsumer:
    """Keeps the block output of every layer: spatial tokens and the CLS token."""

    def __init__(self, depth: int, num_prefix_tokens: int, dtype: torch.dtype) -> None:
        self.depth, self.P, self.dtype = depth, num_prefix_tokens, dtype
        self.spatial: list[torch.Tensor | None] = []
        self.cls: list[torch.Tensor | None] = []

    def begin_batch(self, batch_size: int) -> None:
        self.spatial = [None] * self.depth
        self.cls = [None] * self.depth

    def on_tokens(self, point: str, layer: int, x_bnd: torch.Tensor) -> None:
        self.spatial[layer] = x_bnd[:, self.P :].to("cpu", self.dtype)
        self.cls[layer] = (x_bnd[:, 0] if self.P else x_bnd.mean(1)).to("cpu", self.dtype)

    def on_attention(self, layer: int, attn_bhnn: torch.Tensor) -> None:  # pragma: no cover
        pass

    def end_batch(self) -> None:
        pass

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L, N_spatial, D]`` and ``[B, L, D]``."""
        return (torch.stack(self.spatial, 1), torch.stack(self.cls, 1))  # type: ignore[arg-type]


def _token_layout(
    spec: ModelSpec, manifest: Manifest, view: str, tile_factor: int
) -> tuple[list[Any] | None, np.ndarray]:
    """Dense geometries (or None) and the ``[n, 2]`` token grid of every image."""
    if view != "dense":
        return None, np.tile(np.array([spec.grid, spec.grid], dtype=np.int32), (len(manifest), 1))
    sizes = image_sizes(manifest)
    geoms = [
        dense_geometry(int(h), int(w), spec.img_size, spec.patch_size, tile_factor)
        for h, w in sizes
    ]
    return geoms, np.array([g.grid for g in geoms], dtype=np.int32).reshape(-1, 2)


def run_token_extraction(
    spec: ModelSpec,
    manifest: Manifest,
    view: str,
    out: str | os.PathLike,
    *,
    batch_size: int = 32,
    tile_batch: int | None = None,
    tile_factor: int = 2,
    dtype: str = "fp32",
    device: str = "auto",
    num_workers: int = 0,
    feature_dtype: str = "float16",
    weights_path: str | None = None,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Extract the spatial tokens of every block of a token view into a ragged store.

    ``dense``: each image is tiled (PROTOCOLS §4, window = the model's image size, short
    side ``tile_factor`` windows); the tiles of ``batch_size`` images run together in
    forwards of ``tile_batch`` tiles (default ``batch_size``) and are re-assembled into
    one grid per image.  Other token views run ``batch_size`` images per forward.
    """
    t0 = time.perf_counter()
    dev = resolve_device(device)
    geoms, grid = _token_layout(spec, manifest, view, tile_factor)
    counts = grid[:, 0].astype(np.int64) * grid[:, 1]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    fdt = np.dtype(feature_dtype)
    meta = {
        "vitlib_version": vitlib.__version__,
        "kind": "tokens",
        "model": spec.id,
        "spec": {k: v for k, v in asdict(spec).items() if k != "paper"},
        "dataset": manifest.dataset,
        "manifest_digest": manifest.digest(),
        "view": view,
        "n_items": len(manifest),
        "batch_size": batch_size,
        "cka_batch_size": 0,
        "dtype": dtype,
        "feature_dtype": feature_dtype,
        "tile_factor": tile_factor,
        "depth": spec.depth,
        "num_heads": spec.num_heads,
        "embed_dim": spec.embed_dim,
        "grid_hw": [spec.grid, spec.grid],
        "num_prefix_tokens": spec.num_prefix_tokens,
        "n_tokens": int(offsets[-1]),
        "weights": str(weights_path or (spec.weights or {}).get("path") or ""),
    }
    L, D = spec.depth, spec.embed_dim
    image_specs = [] if view == "dense" else [ArraySpec("cls", (L, D), fdt)]
    writer = StoreWriter(
        out,
        meta,
        image_specs=image_specs,
        chunk_specs=[],
        sum_specs=[],
        labels=np.asarray(manifest.labels),
        token_specs=[ArraySpec("tokens", (L, D), fdt)],
        offsets=offsets,
        extra_arrays={"grid": grid},
    )
    start, _ = writer.load_progress()
    if start:
        log.info("resuming %s at batch %d of %d", out, start, writer.n_batches)
    if start < writer.n_batches:
        model = build_model(spec, weights_path, device=dev)
        cap = Capture(model, points=("block",), attention=False, dtype=dtype)  # type: ignore[arg-type]
        consumer = TokenConsumer(L, spec.num_prefix_tokens, getattr(torch, feature_dtype))
        if geoms is not None:
            ds: Any = DenseDataset(manifest, geoms, spec.mean, spec.std)
            collate: Any = lambda b: ([t for t, _ in b], [i for _, i in b])  # noqa: E731
        else:
            ds = ManifestDataset(manifest, make_transform(view, spec.img_size, spec.mean, spec.std))
            collate = None
        loader = DataLoader(
            Subset(ds, range(start * batch_size, len(ds))),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=collate,
        )
        tb = tile_batch or batch_size
        for b, (images, idx) in _committed_batches(
            loader, start, writer.n_batches, f"extract {spec.id} {view}", progress, on_batch
        ):
            if geoms is None:
                cap(images.to(dev), consumer)
                tokens, cls = consumer.stacked()
                per_image = {"cls": cls.numpy()}
                flat = tokens.permute(0, 2, 1, 3).reshape(-1, L, D)
            else:
                tiles = torch.cat(images)
                parts = []
                for lo in range(0, len(tiles), tb):
                    cap(tiles[lo : lo + tb].to(dev), consumer)
                    parts.append(consumer.stacked()[0])
                t = geoms[0].window // spec.patch_size
                tt = torch.cat(parts).reshape(len(tiles), L, t, t, D)
                grids, k = [], 0
                for i, im_tiles in zip(idx, images):
                    g = assemble_tiles(tt[k : k + len(im_tiles)], geoms[i])
                    k += len(im_tiles)
                    grids.append(g.permute(1, 2, 0, 3).reshape(-1, L, D))
                per_image = {}
                flat = torch.cat(grids)
            writer.write_batch(b, per_image, {}, {}, per_token={"tokens": flat.numpy()})
    summary = {
        "model": spec.id,
        "dataset": manifest.dataset,
        "view": view,
        "n_items": len(manifest),
        "n_tokens": int(offsets[-1]),
        "batches": writer.n_batches,
        "resumed_from_batch": start,
        "device": str(dev),
        "dtype": dtype,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    writer.finalize({}, summary)
    return summary


def store_path(results: str | os.PathLike, model: str, dataset: str, view: str) -> Path:
    return Path(results) / "features" / model / dataset / f"{view}.zarr"
