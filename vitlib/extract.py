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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

import vitlib
from vitlib import keys
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
from vitlib.reducers import StreamingReducer, TokenReducer
from vitlib.registry import NEEDS, feature_layout, parse_need
from vitlib.store import ArraySpec, BackgroundWriter, StoreWriter

#: What a reduced (non-token) view holds when no needs are given.
REDUCED_NEEDS = tuple(n for n in NEEDS if n != "tokens")

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


def view_loader(
    spec: ModelSpec,
    manifest: Manifest,
    view: str,
    start_batch: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> DataLoader[Any]:
    """The images of a reduced view from batch ``start_batch`` on, in manifest order."""
    ds = ManifestDataset(manifest, make_transform(view, spec.img_size, spec.mean, spec.std))
    sub: Subset[Any] = Subset(ds, range(start_batch * batch_size, len(ds)))  # type: ignore[arg-type]
    return DataLoader(
        sub,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )


def _weights_digest(path: str | os.PathLike | None) -> str:
    from vitlib.models.weights import sha256_cached

    return sha256_cached(path) if path and os.path.isfile(path) else ""


def _store_meta(
    spec: ModelSpec,
    manifest: Manifest,
    view: str,
    *,
    batch_size: int,
    dtype: str,
    feature_dtype: str,
    weights_path: str | None,
    **extra: Any,
) -> dict[str, Any]:
    """What defines a store's content (its fingerprint), for reduced and token views alike."""
    return {
        "vitlib_version": vitlib.__version__,
        "model": spec.id,
        "spec": {k: v for k, v in asdict(spec).items() if k != "paper"},
        "dataset": manifest.dataset,
        "manifest_digest": manifest.digest(),
        "view": view,
        "n_items": len(manifest),
        "batch_size": batch_size,
        "dtype": dtype,
        "feature_dtype": feature_dtype,
        "depth": spec.depth,
        "num_heads": spec.num_heads,
        "embed_dim": spec.embed_dim,
        "grid_hw": [spec.grid, spec.grid],
        "num_prefix_tokens": spec.num_prefix_tokens,
        "weights": str(weights_path or (spec.weights or {}).get("path") or ""),
        # content, not name: a checkpoint replaced under the same path is another store
        "weights_sha256": _weights_digest(weights_path or (spec.weights or {}).get("path")),
        **extra,
    }


def _summary(
    spec: ModelSpec,
    manifest: Manifest,
    view: str,
    writer: StoreWriter,
    start: int,
    dev: torch.device,
    dtype: str,
    t0: float,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "model": spec.id,
        "dataset": manifest.dataset,
        "view": view,
        "n_items": len(manifest),
        **extra,
        "batches": writer.n_batches,
        "resumed_from_batch": start,
        "device": str(dev),
        "dtype": dtype,
        "seconds": round(time.perf_counter() - t0, 3),
    }


@dataclass(frozen=True)
class ReducedPlan:
    """What a reduced view's pass computes: the capture needs, the blocks of each feature
    kind, the Gram points and whether residual norm ratios are kept."""

    needs: list[str]
    feature_layers: dict[str, list[int]]
    gram_points: tuple[str, ...]
    residual_norms: bool


def reduced_plan(
    spec: ModelSpec,
    needs: Sequence[str] | None,
    *,
    gram_points: Sequence[str],
    residual_norms: bool,
) -> ReducedPlan:
    """The plan of a reduced view for ``needs`` (default: everything a reduced view can
    hold); Gram points only where an analysis reads Grams."""
    need = set(REDUCED_NEEDS if needs is None else needs)
    unknown = sorted(n for n in need if parse_need(n)[0] not in NEEDS)
    if unknown:
        raise ValueError(f"unknown capture needs {unknown}; known: {', '.join(NEEDS)}")
    return ReducedPlan(
        needs=sorted(need),
        feature_layers=feature_layout(sorted(need), spec.depth, spec.family),
        gram_points=tuple(gram_points) if need & {"grams", "residual"} else (),
        residual_norms=residual_norms and "residual" in need,
    )


def make_reducer(
    spec: ModelSpec,
    plan: ReducedPlan,
    *,
    cka_batch_size: int,
    feature_dtype: str,
    compile: bool = False,
) -> StreamingReducer:
    """The streaming reducer an extraction of ``plan`` runs (the benchmark times this one);
    ``compile``: its attention reductions compiled (:func:`compile_reductions`)."""
    need = set(plan.needs)
    return StreamingReducer(
        depth=spec.depth,
        num_heads=spec.num_heads,
        embed_dim=spec.embed_dim,
        grid_hw=(spec.grid, spec.grid),
        num_prefix_tokens=spec.num_prefix_tokens,
        token_points=("block",),
        gram_points=plan.gram_points,
        residual_norms=plan.residual_norms,
        attention="attention" in need,
        entropy="attention_entropy" in need,
        token_norms="token_norms" in need,
        prefix_attention="prefix_attention" in need,
        rollout="rollout" in need,
        cka_batch_size=cka_batch_size,
        feature_dtype=feature_dtype,
        feature_layers=plan.feature_layers,
        compile=compile,
    )


#: ``compile: auto`` compiles the attention reductions of an extraction whose attention work,
#: images × blocks × heads × tokens², reaches this (about 3,600 ViT-S/16 images, 1,800
#: ViT-B/16 images or 115 ViT-B/8 ones): there compiling (~5 s once per job and block shape
#: on 2 cores, less with torch's on-disk cache) costs less than it saves (2 cores: 5.8 ms of
#: 11.9 per ViT-S/16 block of 32 images, 50 of 103 ms per ViT-B/8 block of 8)
COMPILE_AUTO_WORK = 1e10


def compile_reductions(
    setting: bool | str, spec: ModelSpec, images: int, needs: Sequence[str]
) -> bool:
    """Whether an extraction compiles its attention reductions: ``extract.compile`` true or
    false, or ``"auto"`` (only where the work reaches :data:`COMPILE_AUTO_WORK` and attention
    is reduced at all)."""
    if setting not in (True, False, "auto"):
        raise ValueError(f"extract.compile must be true, false or auto, not {setting!r}")
    if setting != "auto":
        return bool(setting)
    if not {"attention", "attention_entropy"} & set(needs):
        return False
    n = spec.num_prefix_tokens + spec.grid**2
    return images * spec.depth * spec.num_heads * n * n >= COMPILE_AUTO_WORK


#: glibc malloc settings of extraction processes: large blocks from the heap, never trimmed
#: (mallopt M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 2 GiB − 1): per-block tensors of tens of MB are
#: then reused instead of mapped and page-faulted afresh at every block
_MALLOPT = {-4: 0, -1: 2**31 - 1}


def streams_attention(dtype: str, device: torch.device) -> bool:
    """Whether the extraction computes timm attention block by block inside the module
    (:func:`~vitlib.models.capture._streamed_attention`) rather than whole and hooked: on a
    CPU in fp32, where it is faster (``python benchmarks/run.py --only capture``, 2026-11-25,
    2 cores: ViT-B/8 1.52× a plain forward instead of 1.57×, B/16 1.17× instead of 1.20×,
    S/16 1.29× instead of 1.31×) and never holds the ``[B, H, N, N]`` scores and
    probabilities.  Not in bf16 there, where the whole tensor's batched matrix products are
    the faster ones (B/8 2.42× hooked against 2.54× streamed), nor on a GPU (not measured)."""
    return dtype == "fp32" and device.type == "cpu"


def make_capture(
    model: Any, reducer: StreamingReducer, dtype: str, *, stream: bool | None = None
) -> Capture:
    """The one-pass capture that feeds ``reducer`` (its points, attention and scores);
    ``stream``: timm attention computed block by block inside the module, else hooked whole
    (default: :func:`streams_attention` for the model's device)."""
    if stream is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        stream = streams_attention(dtype, device)
    return Capture(
        model,
        points=reducer.capture_points(),
        attention=reducer.needs_attention,
        dtype=dtype,  # type: ignore[arg-type]
        logits=reducer.wants_logits,
        stream=stream,
    )


def tune_malloc() -> bool:
    """Apply :data:`_MALLOPT` to this process (glibc only; elsewhere a no-op); True if
    applied.  Extraction jobs and the benchmark call it, so both run the same allocator."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or os.environ.get("VITLIB_NO_MALLOPT"):
        return False
    try:
        libc = ctypes.CDLL(name)
        return all(libc.mallopt(k, v) == 1 for k, v in _MALLOPT.items())
    except (OSError, AttributeError):
        return False


def _checked(model: Any, spec: ModelSpec) -> None:
    """The capture check (:mod:`vitlib.models.check`) before the first batch: the captured
    attention and block outputs must equal what the network computes, else the run stops."""
    from vitlib.models.check import check_capture

    d = check_capture(model, img_size=spec.img_size, model_id=spec.id)
    if d["checked"]:
        log.info(
            "capture check %s: attention max |Δ| %.2g, block outputs max rel. |Δ| %.2g",
            spec.id,
            d["attention"],
            d["blocks"],
        )


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
    needs: Sequence[str] | None = None,
    shard_mb: float = 256,
    compile: bool | str = "auto",
) -> dict[str, Any]:
    """Extract ``manifest`` through ``spec`` into the store ``out``; returns a summary.

    ``needs``: what the analyses reading this store need (:data:`vitlib.registry.NEEDS`;
    default: everything a reduced view can hold); the store holds that and no more, and a
    change of needs starts the store afresh.

    ``shard_mb``: buffered rows per commit that size the store's shards (MiB;
    :func:`vitlib.store.shard_batches`; 0: one batch per shard and commit).
    ``on_batch(i)`` is called after batch ``i`` is handed to the writer (used by tests to
    interrupt).  ``compile``: ``extract.compile`` (:func:`compile_reductions`).
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
            shard_mb=shard_mb,
            needs=needs,
        )
    t0 = time.perf_counter()
    tune_malloc()
    dev = resolve_device(device)
    bs = effective_batch_size(batch_size, manifest.cka_batch_size)
    plan = reduced_plan(spec, needs, gram_points=gram_points, residual_norms=residual_norms)
    meta = _store_meta(
        spec,
        manifest,
        view,
        batch_size=bs,
        dtype=dtype,
        feature_dtype=feature_dtype,
        weights_path=weights_path,
        cka_batch_size=manifest.cka_batch_size,
        needs=plan.needs,
        feature_layers=plan.feature_layers,
        gram_points=list(plan.gram_points),
        residual_norms=plan.residual_norms,
    )
    compiled = compile_reductions(compile, spec, len(manifest), plan.needs)
    reducer = make_reducer(
        spec,
        plan,
        cka_batch_size=manifest.cka_batch_size,
        feature_dtype=feature_dtype,
        compile=compiled,
    )
    log.info("attention reductions %s", "compiled (torch.compile)" if compiled else "eager")
    writer = StoreWriter(
        out,
        meta,
        image_specs=reducer.image_specs(),
        chunk_specs=reducer.chunk_specs(),
        sum_specs=reducer.sum_specs(),
        labels=np.asarray(manifest.labels),
        shard_bytes=shard_mb * 2**20,
    )
    start, sums = writer.load_progress()
    if sums is not None:
        reducer.sums = {k: v.copy() for k, v in sums.items()}
    if start:
        log.info("resuming %s at batch %d of %d", out, start, writer.n_batches)

    if start < writer.n_batches:
        model = build_model(spec, weights_path, device=dev)
        _checked(model, spec)
        cap = make_capture(model, reducer, dtype)
        loader = view_loader(spec, manifest, view, start, bs, num_workers, dev)
        # the writes of batch b overlap the forward of batch b + 1
        with BackgroundWriter(writer) as bg:
            for b, (images, _idx) in _committed_batches(
                loader, start, writer.n_batches, f"extract {spec.id}", progress, on_batch
            ):
                cap(images.to(dev, non_blocking=True), reducer)
                reducer.accumulate()
                img, chk = reducer.batch_arrays()
                bg.write_batch(b, img, chk, reducer.sums)
    summary = _summary(spec, manifest, view, writer, start, dev, dtype, t0, needs=plan.needs)
    writer.finalize(reducer.sums, summary)
    return summary


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


def group_bounds(manifest: Manifest, key: str, what: str) -> list[int]:
    """Batch bounds ``[0, …, n]`` at every change of ``item.meta[key]`` (a DAVIS sequence,
    an SPair category); a group must be contiguous in the manifest.

    >>> from vitlib.data.manifest import Item, Manifest
    >>> items = [Item(f"{s}{i}", "x", 0, meta={"seq": s}) for s, i in ("a0", "a1", "b0")]
    >>> m = Manifest("d", "davis", "/", ["c"], items)
    >>> group_bounds(m, "seq", "sequence")
    [0, 2, 3]
    """
    bounds: list[int] = []
    seen: set[Any] = set()
    for i, it in enumerate(manifest.items):
        g = it.meta.get(key)
        if not bounds or g != manifest.items[i - 1].meta.get(key):
            if g in seen:
                raise ValueError(f"{what} {g!r}: its items are not contiguous in the manifest")
            seen.add(g)
            bounds.append(i)
    return bounds + [len(manifest)]


def _davis_plan(manifest: Manifest, grid: np.ndarray) -> tuple[list[int], dict[int, torch.Tensor]]:
    """Batch bounds at sequence starts (frames contiguous) and each sequence's frame-0
    one-hot ``[C, gh·gw]`` by its first item."""
    from vitlib.data.annotations import davis_mask
    from vitlib.downstream.davis import first_frame_onehot

    bounds = group_bounds(manifest, "seq", "DAVIS sequence")
    firsts = {}
    for i in bounds[:-1]:
        it = manifest.items[i]
        a = it.meta.get("annotation")
        if not a:
            raise ValueError(f"DAVIS {it.meta.get('seq')}: frame {it.id} has no annotation")
        gh, gw = (int(v) for v in grid[i])
        onehot = first_frame_onehot(davis_mask(f"{manifest.root}/{a}"), (gh, gw))
        firsts[i] = onehot.reshape(-1, gh * gw)
    return bounds, firsts


def _spair_plan(manifest: Manifest) -> tuple[list[int], dict[int, list[int]]]:
    """Batch bounds at category starts (a category's images are contiguous) and, per
    source item, its pairs with keypoints (index order)."""
    bounds = group_bounds(manifest, "category", "SPair category")
    by_src: dict[int, list[int]] = {}
    for j, p in enumerate(manifest.extra["pairs"]):
        if len(p["src_kps"]):
            by_src.setdefault(int(p["src"]), []).append(j)
    return bounds, by_src


def _spair_batch(
    manifest: Manifest,
    by_src: dict[int, list[int]],
    grids: dict[int, torch.Tensor],
    grid_hw: np.ndarray,
    size: int,
    depth: int,
    dev: torch.device,
    rounding: str,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Keypoint transfer of every pair whose source is in this batch (a category), at every
    block, exactly as :func:`vitlib.downstream.tables.spair_table` on stored tokens: rows
    ``[K, L, 2]`` predicted target pixels and ``[K]`` pair indices, by source item."""
    from vitlib.downstream.tables import SpairMaps, spair_transfer, spair_view_kps

    todo = []  # (pair, source, target, source keypoints in view pixels), by source item
    for i in grids:
        for j in by_src.get(i, []):
            p = manifest.extra["pairs"][j]
            t = int(p["trg"])
            if t not in grids:
                raise ValueError(f"SPair pair {j}: target item {t} is not in its category's batch")
            todo.append((j, i, t, spair_view_kps(p["src_kps"], p["src_imsize"], size)))
    out = [np.zeros((len(src), depth, 2), np.float32) for *_, src in todo]
    maps_of = SpairMaps(
        lambda k, layer: grids[k][:, layer].to(dev),
        lambda k: (int(grid_hw[k][0]), int(grid_hw[k][1])),
        size,
    )
    for layer in range(depth):  # each image's map once per layer, reused by its pairs
        for o, (_, i, t, src) in zip(out, todo):
            o[:, layer] = spair_transfer(maps_of(i, layer), maps_of(t, layer), src, size, rounding)
    return out, [np.full(len(src), j, np.int64) for j, _, _, src in todo]


def _image_grids(
    images: Any,
    idx: Sequence[int],
    geoms: list[Any] | None,
    cap: Capture,
    consumer: TokenReducer,
    tile_batch: int,
    patch: int,
    dev: torch.device,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """``(item, [gh·gw, L, D] tokens row-major, [L, D] CLS or None)`` of every image of a
    batch, in order; dense views run whole images' tiles in forwards of ≲ ``tile_batch``
    tiles, so memory stays bounded whatever the batch."""
    if geoms is None:
        for lo in range(0, len(images), tile_batch):
            cap(images[lo : lo + tile_batch].to(dev), consumer)
            tokens, cls = consumer.stacked()
            for j, i in enumerate(idx[lo : lo + tile_batch]):
                yield int(i), tokens[j].permute(1, 0, 2), cls[j]
        return
    k = 0
    while k < len(images):
        group = [k]
        while (
            group[-1] + 1 < len(images)
            and sum(len(images[g]) for g in group) + len(images[group[-1] + 1]) <= tile_batch
        ):
            group.append(group[-1] + 1)
        tiles = torch.cat([images[g] for g in group])
        parts = []
        for lo in range(0, len(tiles), tile_batch):
            cap(tiles[lo : lo + tile_batch].to(dev), consumer)
            parts.append(consumer.stacked()[0])
        t = geoms[int(idx[group[0]])].window // patch
        L, D = parts[0].shape[1], parts[0].shape[-1]
        tt = torch.cat(parts).reshape(len(tiles), L, t, t, D)
        n = 0
        for g in group:
            i = int(idx[g])
            grid = assemble_tiles(tt[n : n + len(images[g])], geoms[i])
            n += len(images[g])
            yield i, grid.permute(1, 2, 0, 3).reshape(-1, L, D), None
        k = group[-1] + 1


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
    shard_mb: float = 256,
    needs: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Extract a token view: every spatial token of every block (need ``tokens``) and/or
    what is computed from them inside the pass, so the tokens need not be stored:

    ``segment_pool``
        each annotation's soft token mask pools every block (exactly
        :func:`vitlib.metrics.segfeat.pooled_features` on the stored tokens):
        ``seg/pooled [A, L, D]``, ``seg/category [A]``, ragged by ``seg/offsets``;
    ``dense_sample@per_image=…,full_images=…,seed=…,threshold=…``
        ``per_image`` tokens of every image drawn uniformly without replacement (seeded by
        ``seed`` and the image's index), every token of the first ``full_images`` images,
        with their block outputs at every block and their label — the category of the
        annotation covering most of the token when it covers ``threshold`` of it, else 0
        (background): ``dense/tokens [T, L, D]``, ``dense/label``, ``dense/pos`` ragged by
        ``dense/offsets`` (dense probes and PCA maps, :mod:`vitlib.metrics.dense`);
    ``davis_propagation@n_last=…,radius=…,topk=…,temperature=…``
        DAVIS label propagation at every block (exactly :func:`propagate_labels` on the
        stored tokens), one sequence per batch: ``davis/soft [T, L, C_max]`` soft masks at
        token resolution, ragged like the tokens; the settings are part of the store.

    ``dense``: each image is tiled (docs/protocols.md §4, window = the model's image size,
    short side ``tile_factor`` windows); tiles run in forwards of ``tile_batch`` tiles
    (default ``batch_size``) and are re-assembled into one grid per image.  Other token
    views run ``batch_size`` images per forward.
    """
    from vitlib.downstream.davis import Propagator, neighbourhood_mask
    from vitlib.metrics.segfeat import pool, segment_masks

    t0 = time.perf_counter()
    dev = resolve_device(device)
    need = {parse_need(n)[0]: parse_need(n)[2] for n in (needs or ["tokens"])}
    unknown = sorted(set(need) - set(TOKEN_NEEDS))
    if unknown:
        raise ValueError(f"token views hold {', '.join(TOKEN_NEEDS)}, not {unknown}")
    geoms, grid = _token_layout(spec, manifest, view, tile_factor)
    counts = grid[:, 0].astype(np.int64) * grid[:, 1]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    fdt = np.dtype(feature_dtype)
    L, D = spec.depth, spec.embed_dim
    extra: dict[str, Any] = {}
    token_specs, all_offsets = [], {keys.OFFSETS: offsets}
    if "tokens" in need:
        token_specs.append(ArraySpec(keys.TOKENS, (L, D), fdt))
    masks: list[tuple[np.ndarray, np.ndarray]] = []
    if "segment_pool" in need:
        masks = segment_masks(manifest, grid, crop=view == "patches")
        all_offsets[keys.SEG_OFFSETS] = np.concatenate(
            [[0], np.cumsum([len(c) for _, c in masks])]
        ).astype(np.int64)
        token_specs += [
            ArraySpec(keys.SEG_POOLED, (L, D), "float32", keys.SEG_OFFSETS),
            ArraySpec(keys.SEG_CATEGORY, (), "int64", keys.SEG_OFFSETS),
        ]
    dense: dict[str, Any] | None = None
    dense_pos: list[np.ndarray] = []
    dense_lab: list[np.ndarray] = []
    if "dense_sample" in need:
        from vitlib.metrics.dense import dense_sample_plan, dense_settings

        dense = dense_settings(need["dense_sample"])
        dense_pos, dense_lab = dense_sample_plan(manifest, grid, crop=view == "patches", **dense)
        all_offsets[keys.DENSE_OFFSETS] = np.concatenate(
            [[0], np.cumsum([len(p) for p in dense_pos])]
        ).astype(np.int64)
        token_specs += [
            ArraySpec(keys.DENSE_TOKENS, (L, D), fdt, keys.DENSE_OFFSETS),
            ArraySpec(keys.DENSE_LABEL, (), "int64", keys.DENSE_OFFSETS),
            ArraySpec(keys.DENSE_POS, (), "int64", keys.DENSE_OFFSETS),
        ]
        extra["dense_sample"] = dense
    bounds: list[int] | None = None
    firsts: dict[int, torch.Tensor] = {}
    davis: dict[str, Any] | None = None
    c_max = 0
    if "davis_propagation" in need:
        davis = davis_settings(need["davis_propagation"])
        bounds, firsts = _davis_plan(manifest, grid)
        c_max = max(int(f.shape[0]) for f in firsts.values())
        token_specs.append(ArraySpec(keys.DAVIS_SOFT, (L, c_max), "float32"))
        extra["davis"] = davis
    meta = _store_meta(
        spec,
        manifest,
        view,
        batch_size=batch_size,
        dtype=dtype,
        feature_dtype=feature_dtype,
        weights_path=weights_path,
        kind="tokens",
        cka_batch_size=0,
        tile_factor=tile_factor,
        n_tokens=int(offsets[-1]),
        needs=sorted(needs or ["tokens"]),
        **extra,
    )
    spair: dict[int, list[int]] = {}  # source item → its pairs (index order)
    rounding = "faithful"
    if "spair_transfer" in need:
        from vitlib.downstream.tables import spair_rounding

        rounding = spair_rounding(list(needs or []))
        if view != "spair":
            raise ValueError(f"need spair_transfer needs the 'spair' view, not {view!r}")
        bounds, spair = _spair_plan(manifest)
        all_offsets[keys.SPAIR_OFFSETS] = np.concatenate(
            [
                [0],
                np.cumsum(
                    [
                        sum(len(manifest.extra["pairs"][j]["src_kps"]) for j in spair.get(i, []))
                        for i in range(len(manifest))
                    ]
                ),
            ]
        ).astype(np.int64)
        token_specs += [
            ArraySpec(keys.SPAIR_PRED, (L, 2), "float32", keys.SPAIR_OFFSETS),
            ArraySpec(keys.SPAIR_PAIR, (), "int64", keys.SPAIR_OFFSETS),
        ]
    keep_cls = view != "dense" and "tokens" in need
    image_specs = [ArraySpec(keys.TOKEN_CLS, (L, D), fdt)] if keep_cls else []
    writer = StoreWriter(
        out,
        meta,
        image_specs=image_specs,
        chunk_specs=[],
        sum_specs=[],
        labels=np.asarray(manifest.labels),
        token_specs=token_specs,
        offsets=all_offsets,
        extra_arrays={keys.GRID: grid},
        shard_bytes=shard_mb * 2**20,
        bounds=bounds,
    )
    start, _ = writer.load_progress()
    if start:
        log.info("resuming %s at batch %d of %d", out, start, writer.n_batches)
    if start < writer.n_batches:
        model = build_model(spec, weights_path, device=dev)
        _checked(model, spec)
        cap = Capture(model, points=("block",), attention=False, dtype=dtype)  # type: ignore[arg-type]
        consumer = TokenReducer(L, spec.num_prefix_tokens, getattr(torch, feature_dtype))
        if geoms is not None:
            ds: Any = DenseDataset(manifest, geoms, spec.mean, spec.std)
            collate: Any = lambda b: ([t for t, _ in b], [i for _, i in b])  # noqa: E731
        else:
            ds = ManifestDataset(manifest, make_transform(view, spec.img_size, spec.mean, spec.std))
            collate = None
        b_ = writer.bounds
        loader = DataLoader(
            ds,
            batch_sampler=[list(range(b_[b], b_[b + 1])) for b in range(start, writer.n_batches)],
            num_workers=num_workers,
            collate_fn=collate,
        )
        tb = tile_batch or batch_size
        props: list[Any] = []
        with BackgroundWriter(writer) as bg:  # writes overlap the next batch
            for b, (images, idx) in _committed_batches(
                loader, start, writer.n_batches, f"extract {spec.id} {view}", progress, on_batch
            ):
                rows: dict[str, list[np.ndarray]] = {s.name: [] for s in token_specs}
                cls_rows = []
                batch_grids_: list[tuple[int, torch.Tensor]] = []
                for i, g, cls in _image_grids(
                    images, idx, geoms, cap, consumer, tb, spec.patch_size, dev
                ):
                    if spair:
                        batch_grids_.append((i, g))
                    if keep_cls and cls is not None:
                        cls_rows.append(cls.numpy())
                    if "tokens" in need:
                        rows[keys.TOKENS].append(g.numpy())
                    if masks:
                        rows[keys.SEG_POOLED].append(pool(masks[i][0], g.numpy()))
                        rows[keys.SEG_CATEGORY].append(masks[i][1])
                    if dense is not None:
                        sel = torch.as_tensor(dense_pos[i], dtype=torch.long)
                        rows[keys.DENSE_TOKENS].append(g[sel].numpy())
                        rows[keys.DENSE_LABEL].append(dense_lab[i])
                        rows[keys.DENSE_POS].append(dense_pos[i])
                    if davis is not None:
                        gh, gw = (int(v) for v in grid[i])
                        soft = np.zeros((gh * gw, L, c_max), np.float32)
                        if i in firsts:  # a sequence starts: one propagator per block
                            first = firsts[i]
                            nb = neighbourhood_mask(gh, gw, davis["radius"]).to(dev)
                            props = [
                                Propagator(
                                    g[:, layer].to(dev),
                                    first.to(dev),
                                    gh,
                                    gw,
                                    mask=nb,
                                    **{k: v for k, v in davis.items() if k != "radius"},
                                )
                                for layer in range(L)
                            ]
                            soft[:, :, : first.shape[0]] = first.T.numpy()[:, None, :]
                        else:
                            for layer, prop in enumerate(props):
                                s_ = prop.step(g[:, layer].to(dev))
                                soft[:, layer, : s_.shape[0]] = s_.T.cpu().numpy()
                        rows[keys.DAVIS_SOFT].append(soft)
                if spair:
                    batch_grids = dict(batch_grids_)
                    pred_rows, pair_rows = _spair_batch(
                        manifest, spair, batch_grids, grid, spec.img_size, L, dev, rounding
                    )
                    rows[keys.SPAIR_PRED], rows[keys.SPAIR_PAIR] = pred_rows, pair_rows
                per_token = {
                    k: np.concatenate(v) if v else np.zeros((0, *spec_.shape), spec_.dtype)
                    for (k, v), spec_ in zip(rows.items(), token_specs)
                }
                per_image = {keys.TOKEN_CLS: np.stack(cls_rows)} if keep_cls else {}
                bg.write_batch(b, per_image, {}, {}, per_token=per_token)
    summary = _summary(
        spec,
        manifest,
        view,
        writer,
        start,
        dev,
        dtype,
        t0,
        n_tokens=int(offsets[-1]),
        needs=sorted(needs or ["tokens"]),
    )
    writer.finalize({}, summary)
    return summary


#: What a token view can hold (:func:`run_token_extraction`).
TOKEN_NEEDS = ("tokens", "segment_pool", "dense_sample", "davis_propagation", "spair_transfer")
#: Settings of the ``davis_propagation`` need, in its qualifier's order.
DAVIS_SETTINGS = ("n_last", "radius", "topk", "temperature")


def davis_settings(qualifier: str | None) -> dict[str, Any]:
    """``"n_last=7,radius=12,topk=5,temperature=0.1"`` → the propagation settings.

    >>> davis_settings("n_last=7,radius=12,topk=5,temperature=0.1")["temperature"]
    0.1
    """
    if not qualifier:
        raise ValueError("need davis_propagation must name its settings (davis_propagation@…)")
    kv = dict(part.split("=", 1) for part in qualifier.split(","))
    if sorted(kv) != sorted(DAVIS_SETTINGS):
        raise ValueError(f"davis_propagation settings {sorted(kv)}, expected {DAVIS_SETTINGS}")
    return {k: (float(kv[k]) if k == "temperature" else int(kv[k])) for k in DAVIS_SETTINGS}
