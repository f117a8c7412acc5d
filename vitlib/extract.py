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
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

import vitlib
from vitlib.data.manifest import Manifest
from vitlib.data.views import ManifestDataset, make_transform
from vitlib.models.build import build_model
from vitlib.models.capture import Capture
from vitlib.models.registry import ModelSpec
from vitlib.reducers import StreamingReducer
from vitlib.store import StoreWriter

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
) -> dict[str, Any]:
    """Extract ``manifest`` through ``spec`` into the store ``out``; returns a summary.

    ``on_batch(i)`` is called after batch ``i`` is committed (used by tests to interrupt).
    """
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
        depth=spec.depth, num_heads=spec.num_heads, embed_dim=spec.embed_dim, grid_hw=grid,
        num_prefix_tokens=spec.num_prefix_tokens, token_points=("block",),
        gram_points=gram_points, residual_norms=residual_norms,
        cka_batch_size=manifest.cka_batch_size, feature_dtype=feature_dtype)
    writer = StoreWriter(out, meta, image_specs=reducer.image_specs(),
                         chunk_specs=reducer.chunk_specs(), sum_specs=reducer.sum_specs(),
                         labels=np.asarray(manifest.labels))
    start, sums = writer.load_progress()
    if sums is not None:
        reducer.sums = {k: v.copy() for k, v in sums.items()}
    if start:
        log.info("resuming %s at batch %d of %d", out, start, writer.n_batches)

    if start < writer.n_batches:
        model = build_model(spec, weights_path, device=dev)
        cap = Capture(model, points=reducer.capture_points(), attention=True,
                      dtype=dtype)  # type: ignore[arg-type]
        ds = ManifestDataset(manifest, make_transform(view, spec.img_size, spec.mean, spec.std))
        sub = Subset(ds, range(start * bs, len(ds)))
        loader = DataLoader(sub, batch_size=bs, shuffle=False, num_workers=num_workers,
                            pin_memory=dev.type == "cuda")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=writer.n_batches, initial=start, desc=f"extract {spec.id}",
                       unit="batch", mininterval=2.0)
        for b, (images, _idx) in enumerate(loader, start=start):
            cap(images.to(dev, non_blocking=True), reducer)
            reducer.accumulate()
            img, chk = reducer.batch_arrays()
            writer.write_batch(b, img, chk, reducer.sums)
            if bar is not None:
                bar.update(1)
            if on_batch is not None:
                on_batch(b)
        if bar is not None:
            bar.close()
    summary = {
        "model": spec.id, "dataset": manifest.dataset, "view": view, "n_items": len(manifest),
        "batches": writer.n_batches, "resumed_from_batch": start, "device": str(dev),
        "dtype": dtype, "seconds": round(time.perf_counter() - t0, 3),
    }
    writer.finalize(reducer.sums, summary)
    return summary


def store_path(results: str | os.PathLike, model: str, dataset: str, view: str) -> Path:
    return Path(results) / "features" / model / dataset / f"{view}.zarr"
