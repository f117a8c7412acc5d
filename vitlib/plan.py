"""The cost of a run before any job: images, forward FLOPs, GPU-hours and disk per store.

``python -m vitlib plan [--configfile PRESET]`` loads the configuration the way the workflow
does (a preset alone plus the schema's defaults; ``config.yaml`` without one), lists every
store the configured analyses read — (model, dataset, view) with the union of their capture
needs (:func:`vitlib.registry.needs_for`) — and computes from the store layout itself (the
reducer's array declarations, :mod:`vitlib.keys`):

* images: the manifest's count when ``results/manifests/<dataset>.json`` exists, else the
  official dataset's published size (:data:`PUBLISHED`) with the config's sampling applied;
* forward GFLOPs: per block ``2·(12·N·D² + 2·N²·D)`` multiply–adds ×2 (QKV, projection,
  MLP 4×, QKᵀ and AV) plus the patch embedding, times forwards per image (dense tiles);
* GPU-hours on a named reference GPU at an assumed utilisation (:data:`REFERENCE_GPU`);
* disk and file count of every store (bytes and chunks of every array as the writer lays
  them out) plus the small result tables.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vitlib import registry

#: Published sizes of the official datasets (images), used while a root is not on disk.
PUBLISHED: dict[str, int] = {
    "imagenet_train": 1_281_167,
    "imagenet_val": 50_000,
    "coco_val2017": 5_000,
    "partimagenet_test": 2_405,  # 11 super-categories; the test split
    "roxford5k": 4_993 + 70,
    "rparis6k": 6_322 + 70,
    "davis2017_val": 1_999,  # 30 videos
    "spair71k_test_pairs": 12_234,
}
#: Typical image size (h, w) per dataset kind, for dense-view token counts.
TYPICAL_HW: dict[str, tuple[int, int]] = {
    "coco": (480, 640),
    "partimagenet": (375, 500),
    "davis": (480, 854),
}
#: Annotations kept per image for part / object clustering (COCO val2017: 36 781 instance
#: annotations on 5 000 images; PartImageNet: about 4 parts per image), for planning.
SEGMENTS_PER_IMAGE: dict[str, float] = {"coco": 7.4, "partimagenet": 4.0}
#: Keypoints per SPair-71k pair (visible in both images; planning value).
SPAIR_KPS_PER_PAIR = 10
#: Objects of the most crowded DAVIS-2017 val sequence (planning bound of the soft masks).
DAVIS_MAX_OBJECTS = 5
#: The reference GPU: dense bf16 / TF32-fp32 peak (TFLOP/s) and an assumed utilisation.
REFERENCE_GPU = "NVIDIA H100 SXM"
REFERENCE_PEAK_TFLOPS = {"bf16": 989.0, "fp32": 67.0}
REFERENCE_UTILISATION = 0.4
TABLE_BYTES = 64 << 10  # a per-(analysis, dataset, model) table, generously


@dataclass
class StorePlan:
    model: str
    dataset: str
    view: str
    needs: list[str]
    images: int
    images_source: str
    gflops: float
    gpu_hours: float
    bytes: int
    files: int
    arrays: dict[str, int]

    def row(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "view": self.view,
            "images": self.images,
            "images_from": self.images_source,
            "needs": ",".join(self.needs),
            "GFLOPs": round(self.gflops),
            "GPU_h": round(self.gpu_hours, 3),
            "GB": round(self.bytes / 1e9, 3),
            "files": self.files,
        }


def load_config(configfiles: Sequence[str | Path], *, base_dir: str | Path = ".") -> dict:
    """The configuration as the workflow sees it, without requiring the data on disk."""
    from vitlib.config import validate_config

    files = list(configfiles) or [Path(base_dir) / "config.yaml"]
    config: dict[str, Any] = {}
    for f in files:
        _merge(config, yaml.safe_load(Path(f).read_text()) or {})
    return validate_config(config, base_dir=base_dir, require_data=False)


def _merge(a: dict, b: Mapping) -> None:
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(a.get(k), dict):
            _merge(a[k], v)
        else:
            a[k] = v


def dataset_images(config: Mapping[str, Any], name: str) -> tuple[int, str]:
    """Images of a dataset: the manifest's count if present, else a published size."""
    manifest = Path(config["results"], "manifests", f"{name}.json")
    if manifest.exists():
        return len(json.loads(manifest.read_text())["items"]), "manifest"
    ds = config["datasets"][name]
    kind = ds["kind"]
    if "generate" in ds:
        return 0, "generated (run the manifest rule for counts)"
    root = str(ds.get("root", ""))
    if kind == "imagenet50":
        return 50 * int(ds.get("per_class") or 1300), "50 classes × per_class"
    if kind == "imagefolder":
        val = "val" in root.lower() or "val" in name.lower()
        n = PUBLISHED["imagenet_val" if val else "imagenet_train"]
        classes = len(ds["classes"]) if ds.get("classes") else 1000
        n = n * classes // 1000
        if ds.get("per_class"):
            n = min(n, classes * int(ds["per_class"]))
        return n, f"published ImageNet-1k {'val' if val else 'train'}, {classes} classes"
    if kind == "coco":
        return min(PUBLISHED["coco_val2017"], int(ds.get("limit") or 5000)), "published"
    if kind == "partimagenet":
        per = ds.get("per_super")
        return (11 * int(per) if per else PUBLISHED["partimagenet_test"]), "11 supers × per_super"
    if kind == "revisited":
        return PUBLISHED.get(str(ds.get("name")), 5_000), "published"
    if kind == "davis":
        return PUBLISHED["davis2017_val"], "published"
    if kind == "spair":
        per = int(ds.get("pairs_per_category") or 0)
        pairs = 18 * per if per else PUBLISHED["spair71k_test_pairs"]
        return 2 * pairs, "2 images per pair (upper bound)"
    return 0, "unknown"


def _tokens_and_forwards(spec: Any, view: str, kind: str, tile_factor: int) -> tuple[int, int]:
    """Spatial tokens kept per image and forward passes per image for a view."""
    g = spec.grid
    if view != "dense":
        return g * g, 1
    from vitlib.data.views import dense_geometry

    h, w = TYPICAL_HW.get(kind, (480, 640))
    geo = dense_geometry(h, w, spec.img_size, spec.patch_size, tile_factor)
    gh, gw = geo.grid
    return gh * gw, len(geo.tiles)


def forward_gflops(spec: Any) -> float:
    """Forward GFLOPs of one image through the ViT (2 FLOPs per multiply–add)."""
    n = spec.num_prefix_tokens + spec.grid**2
    d = spec.embed_dim
    per_block = 2 * (12 * n * d * d + 2 * n * n * d)
    embed = 2 * spec.grid**2 * (3 * spec.patch_size**2) * d
    return (spec.depth * per_block + embed) / 1e9


def _array_cost(
    shape: Sequence[int], chunks: Sequence[int], itemsize: int, shards: Sequence[int] | None = None
) -> tuple[int, int]:
    """Bytes on disk (uncompressed inner chunks, edge chunks stored whole, plus each shard's
    index: 16 bytes per inner chunk and a 4-byte checksum) and files (one per shard, or per
    chunk when unsharded)."""
    n_chunks = int(np.prod([math.ceil(s / c) for s, c in zip(shape, chunks)], dtype=np.int64))
    files = int(
        np.prod([math.ceil(s / c) for s, c in zip(shape, shards or chunks)], dtype=np.int64)
    )
    data = n_chunks * int(np.prod(chunks, dtype=np.int64)) * itemsize
    if shards is None:
        return data, files
    per_shard = int(np.prod([math.ceil(s / c) for s, c in zip(shards, chunks)], dtype=np.int64))
    return data + files * (16 * per_shard + 4), files


def plan_store(
    config: Mapping[str, Any], model: str, dataset: str, view: str, needs: list[str]
) -> StorePlan:
    from vitlib import keys
    from vitlib.config import model_spec
    from vitlib.data.views import TOKEN_VIEWS
    from vitlib.extract import effective_batch_size, make_reducer, reduced_plan
    from vitlib.store import TOKEN_CHUNK, ArraySpec, shard_batches

    spec = model_spec(config, model)
    ex = config["extract"]
    ds = config["datasets"][dataset]
    n, source = dataset_images(config, dataset)
    fd = np.dtype(ex["feature_dtype"]).itemsize
    shard_bytes = float(ex["shard_mb"]) * 2**20
    arrays: dict[str, int] = {}
    files = 0
    tokens, forwards = _tokens_and_forwards(spec, view, ds["kind"], ex["tile_factor"])
    if view in TOKEN_VIEWS:
        total = n * tokens
        L, D = spec.depth, spec.embed_dim
        bases = {registry.parse_need(x)[0] for x in needs}
        tok = ArraySpec(keys.TOKENS, (L, D), ex["feature_dtype"])
        keep = "tokens" in bases
        cls = (
            [ArraySpec(keys.TOKEN_CLS, (L, D), ex["feature_dtype"])]
            if view != "dense" and keep
            else []
        )
        bs = ex["batch_size"]
        k = shard_batches(bs, cls, (), 0, shard_bytes, [tok] if keep else [], tokens)
        k = min(k, max(math.ceil(n / bs), 1))
        files = 3  # offsets, grid, labels
        if keep:
            b, f = _array_cost((total, L, D), (TOKEN_CHUNK, 1, D), fd, (TOKEN_CHUNK, L, D))
            arrays["tokens"], files = b, files + f
        if "segment_pool" in bases:  # [A, L, D] float32 + categories, A from published counts
            a = math.ceil(n * SEGMENTS_PER_IMAGE.get(ds["kind"], 8.0))
            rows = min(a, TOKEN_CHUNK)
            b, f = _array_cost((a, L, D), (rows, 1, D), 4, (rows, L, D))
            arrays[keys.SEG_POOLED], files = b, files + f + 2
            arrays[keys.SEG_CATEGORY] = 8 * a
        if "dense_sample" in bases:  # [T, L, D] sampled tokens + label and position
            q = next(registry.parse_need(x)[2] for x in needs if x.startswith("dense_sample"))
            from vitlib.metrics.dense import dense_settings

            st = dense_settings(q)
            t_ = min(total, n * st["per_image"] + st["full_images"] * tokens)
            rows = max(1, min(t_, TOKEN_CHUNK))
            b, f = _array_cost((t_, L, D), (rows, 1, D), fd, (rows, L, D))
            arrays[keys.DENSE_TOKENS], files = b, files + f + 3
            arrays[keys.DENSE_LABEL] = arrays[keys.DENSE_POS] = 8 * t_
        if "spair_transfer" in bases:  # [K, L, 2] float32 predictions + pair index
            kps = math.ceil(n / 2 * SPAIR_KPS_PER_PAIR)
            rows = max(1, min(kps, TOKEN_CHUNK))
            b, f = _array_cost((kps, L, 2), (rows, 1, 2), 4, (rows, L, 2))
            arrays[keys.SPAIR_PRED], files = b, files + f + 2
            arrays[keys.SPAIR_PAIR] = 8 * kps
        if "davis_propagation" in bases:  # [T, L, C_max] float32 soft masks
            c = DAVIS_MAX_OBJECTS + 1
            b, f = _array_cost((total, L, c), (TOKEN_CHUNK, 1, c), 4, (TOKEN_CHUNK, L, c))
            arrays[keys.DAVIS_SOFT], files = b, files + f
        if cls:
            b, f = _array_cost((n, L, D), (bs, 1, D), fd, (bs * k, L, D))
            arrays["cls"], files = b, files + f
    else:
        cka_b = int(ds.get("cka_batch_size", 0)) if "grams" in needs or "residual" in needs else 0
        rp = reduced_plan(
            spec,
            needs,
            gram_points=tuple(ex["gram_points"]),
            residual_norms=bool(ex["residual_norms"]),
        )
        red = make_reducer(spec, rp, cka_batch_size=cka_b, feature_dtype=ex["feature_dtype"])
        bs = effective_batch_size(ex["batch_size"], cka_b)
        n_chunks = n // cka_b if cka_b else 0
        k = shard_batches(bs, red.image_specs(), red.chunk_specs(), cka_b, shard_bytes)
        k = min(k, max(math.ceil(n / bs), 1))
        files = 1  # labels
        for s in red.image_specs():
            item = np.dtype(s.dtype).itemsize
            chunk = (bs, *((1,) + s.shape[1:] if s.shape else ()))
            b, f = _array_cost((n, *s.shape), chunk, item, (bs * k, *s.shape))
            arrays[s.name], files = b, files + f
        for s in red.chunk_specs():  # Grams: one chunk per commit, every layer (unsharded)
            per = max(bs // cka_b, 1)
            b, f = _array_cost((n_chunks, *s.shape), (per * k, *s.shape), 4)
            arrays[s.name], files = b, files + f
        for s in red.sum_specs():  # one chunk each, written at the end
            arrays[s.name] = int(np.prod(s.shape, dtype=np.int64)) * np.dtype(s.dtype).itemsize
            files += 1
    gflops = n * forwards * forward_gflops(spec)
    peak = REFERENCE_PEAK_TFLOPS["bf16" if ex["dtype"] in ("bf16", "fp16") else "fp32"]
    hours = gflops / (peak * 1e3 * REFERENCE_UTILISATION) / 3600
    return StorePlan(
        model, dataset, view, needs, n, source, gflops, hours, sum(arrays.values()), files, arrays
    )


def stores(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Every (model, dataset, view) store the configured analyses read."""
    out: dict[tuple[str, str, str], None] = {}
    for a in registry.ANALYSES_LIST:
        sec = config["analyses"].get(a.section, {})
        datasets = registry.section_datasets(sec)
        if a.shape == "train_test" and a.train == "store":
            datasets = datasets + [p["train"] for p in sec.get("pairs", [])]
        for ds in datasets:
            if a.enabled(sec):
                for m in config["models"]:
                    out[(m, ds, a.store_view(sec))] = None
    return list(out)


def plan_bank(config: Mapping[str, Any], model: str, train: str, test: str) -> StorePlan:
    """A k-NN memory bank job: the train images stream through the model, the kept
    neighbours (:meth:`~vitlib.downstream.knn_bank.KnnBank.save`) are its only output."""
    from vitlib.config import model_spec
    from vitlib.downstream.knn_bank import bank_file_bytes

    spec = model_spec(config, model)
    n_train, source = dataset_images(config, train)
    n_test, _ = dataset_images(config, test)
    k = min(max(config["analyses"]["knn"]["ks"]), max(n_train, 1))
    size = bank_file_bytes(spec.depth, n_test, k, n_train, 1000)
    gflops = n_train * forward_gflops(spec)
    ex = config["extract"]
    peak = REFERENCE_PEAK_TFLOPS["bf16" if ex["dtype"] in ("bf16", "fp16") else "fp32"]
    hours = gflops / (peak * 1e3 * REFERENCE_UTILISATION) / 3600
    return StorePlan(
        model, train, "knn_bank", ["bank"], n_train, source, gflops, hours, size, 1, {"bank": size}
    )


def banks(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Every (model, train, test) k-NN memory bank the configured analyses stream."""
    out = []
    for a in registry.ANALYSES_LIST:
        sec = config["analyses"].get(a.section, {})
        if a.train == "knn_bank" and a.enabled(sec):
            out += [
                (m, p["train"], p["test"]) for p in sec.get("pairs", []) for m in config["models"]
            ]
    return out


def plan(config: Mapping[str, Any]) -> tuple[list[StorePlan], dict[str, Any]]:
    plans = [
        plan_store(config, m, d, v, registry.needs_for(config, d, v)) for m, d, v in stores(config)
    ]
    plans += [plan_bank(config, m, tr, te) for m, tr, te in banks(config)]
    n_tables = sum(
        1 if a.shape == "models" else len(config["models"])
        for a in registry.ANALYSES_LIST
        for _ in registry.section_datasets(config["analyses"].get(a.section, {}))
    )
    totals = {
        "stores": sum(p.view != "knn_bank" for p in plans),
        "knn_banks": sum(p.view == "knn_bank" for p in plans),
        "images_through_models": sum(p.images for p in plans),
        "GFLOPs": round(sum(p.gflops for p in plans)),
        "GPU_hours": round(sum(p.gpu_hours for p in plans), 2),
        "store_GB": round(sum(p.bytes for p in plans) / 1e9, 1),
        "store_files": sum(p.files for p in plans),
        "tables": n_tables,
        "tables_GB": round(n_tables * TABLE_BYTES / 1e9, 3),
        "reference_gpu": f"{REFERENCE_GPU} at {REFERENCE_UTILISATION:.0%} of "
        f"its {'bf16' if config['extract']['dtype'] != 'fp32' else 'fp32'} peak",
    }
    return plans, totals


def format_plan(plans: list[StorePlan], totals: Mapping[str, Any], top: int = 5) -> str:
    import pandas as pd

    t = pd.DataFrame([p.row() for p in plans])
    lines = ["Per store (model, dataset, view):", t.to_string(index=False), "", "Totals:"]
    lines += [f"  {k}: {v}" for k, v in totals.items()]
    lines += ["", f"Largest {top} stores:"]
    lines += [
        f"  {p.model}/{p.dataset}/{p.view}: {p.bytes / 1e9:.1f} GB, {p.files} files"
        for p in sorted(plans, key=lambda p: -p.bytes)[:top]
    ]
    by_ds = t.groupby(["dataset", "view"])[["GB", "files"]].sum().sort_values("GB")[::-1]
    lines += ["", "By dataset and view:", by_ds.to_string()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vitlib plan", description=__doc__.split("\n")[0])
    ap.add_argument("--configfile", action="append", default=[], help="a preset (repeatable)")
    ap.add_argument("--csv", help="also write the per-store table here")
    a = ap.parse_args(argv)
    config = load_config(a.configfile)
    plans, totals = plan(config)
    print(format_plan(plans, totals))
    if a.csv:
        import pandas as pd

        pd.DataFrame([p.row() for p in plans]).to_csv(a.csv, index=False)
    return 0
