"""vitlib benchmarks: figures and ratios against baselines measured side by side in one run.

    python benchmarks/run.py                 # every section, writes benchmarks/RESULTS.md
    python benchmarks/run.py --only capture  # one section
    python benchmarks/run.py --quick         # fewer repeats (smoke run)

Each section returns rows ``(figure, value, baseline, ratio, note)``.  Timings are medians of
``--repeats`` runs, baseline and candidate interleaved so drifts of the machine hit both.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# The allocator settings of extraction jobs (vitlib.extract.tune_malloc) are applied in main(),
# so the timings are those of the workflow's own jobs.

Row = tuple[str, str, str, str, str]


def median_times(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median wall time of each function, runs interleaved."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_peak(dtype: torch.dtype, n: int = 2048) -> float:
    """This CPU's measured matmul throughput (GFLOP/s) for ``dtype``, median of 5."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(ts) / 1e9


#: the capture section's networks (timm architectures) and batch sizes
CAPTURE_ARCHS = (
    ("vit_small_patch16_224", 32),
    ("vit_base_patch16_224", 32),
    ("vit_base_patch8_224", 8),
)


def paper_capture_plan() -> tuple[list[str], dict[str, Any]]:
    """The heaviest store of the paper preset (ImageNet-50, centre view: every attention
    analysis, CKA, residual, entropy, artifact tokens): its capture needs and the extraction
    settings, read from ``presets/paper.yaml`` through the workflow's own planning."""
    import yaml

    from vitlib import registry
    from vitlib.config import validate_config

    cfg = validate_config(
        yaml.safe_load((Path(__file__).parents[1] / "presets" / "paper.yaml").read_text()),
        require_data=False,
    )
    ex = cfg["extract"]
    ds = cfg["datasets"]["imagenet50"]
    return registry.needs_for(cfg, "imagenet50", "center"), {
        "images": ds["per_class"] * len(ds["classes"]),
        "compile": ex["compile"],
        "gram_points": tuple(ex["gram_points"]),
        "residual_norms": ex["residual_norms"],
        "feature_dtype": ex["feature_dtype"],
        "cka_batch_size": cfg["datasets"]["imagenet50"]["cka_batch_size"],
    }


def bench_capture(repeats: int) -> list[Row]:
    """The extraction's one-pass capture as the workflow runs it for the paper preset's
    heaviest store (its needs, Gram points, residual norms, entropy; the reducer built by
    vitlib.extract.make_reducer; the job's allocator settings) against a plain timm
    ``forward_features`` and timm's ``forward_intermediates`` (every block) of the same
    model and batch, fp32 and bf16 autocast, on ViT-S/16, B/16 and B/8 (N = 785)."""
    import timm

    from vitlib.extract import (
        compile_reductions,
        make_capture,
        make_reducer,
        reduced_plan,
        streams_attention,
    )
    from vitlib.models.registry import ModelSpec

    needs, ex = paper_capture_plan()
    compiled: dict[str, bool] = {}
    first_call: dict[str, float] = {}
    route: dict[str, str] = {}

    def ctx(dtype: str) -> Any:
        return torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bf16")

    def plain(model: torch.nn.Module, x: torch.Tensor, dtype: str) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode(), ctx(dtype):
                return model.forward_features(x)

        return run

    def intermediates(model: Any, x: torch.Tensor, dtype: str) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode(), ctx(dtype):
                return model.forward_intermediates(x, intermediates_only=True)

        return run

    def captured(
        model: Any,
        spec: ModelSpec,
        x: torch.Tensor,
        dtype: str,
        eager: bool = False,
        stream: bool | None = None,
    ) -> Callable[[], object]:
        plan = reduced_plan(
            spec, needs, gram_points=ex["gram_points"], residual_norms=ex["residual_norms"]
        )

        # the extraction's choice for this model on the paper store (extract.compile)
        comp = compile_reductions(ex["compile"], spec, ex["images"], needs) and not eager
        if not eager:
            compiled[spec.id] = comp

        def run() -> object:
            red = make_reducer(
                spec,
                plan,
                cka_batch_size=ex["cka_batch_size"],
                feature_dtype=ex["feature_dtype"],
                compile=comp,
            )
            cap = make_capture(model, red, dtype, stream=stream)
            cap(x, red)
            red.accumulate()
            return red.batch_arrays()

        return run

    p32, p16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    rows: list[Row] = [
        (
            "matmul peak 2048^3 (GFLOP/s)",
            f"fp32 {p32:.0f}, bf16 {p16:.0f}",
            "",
            "",
            "measured in this section, before the models",
        )
    ]
    for arch, batch in CAPTURE_ARCHS:
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False, num_classes=0).eval()
        patch = model.patch_embed.patch_size[0]
        spec = ModelSpec(
            id=arch,
            family="timm",
            arch=arch,
            depth=len(model.blocks),
            num_heads=model.blocks[0].attn.num_heads,
            embed_dim=model.embed_dim,
            patch_size=patch,
            img_size=224,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        )
        x = torch.randn(batch, 3, 224, 224)
        fns: dict[str, Callable[[], object]] = {}
        for dt in ("fp32", "bf16"):
            fns[f"plain_{dt}"] = plain(model, x, dt)
            fns[f"inter_{dt}"] = intermediates(model, x, dt)
            fns[f"capture_{dt}"] = captured(model, spec, x, dt)
            if compiled[spec.id]:  # the eager reductions in the same run: the gain measured
                fns[f"eager_{dt}"] = captured(model, spec, x, dt, eager=True)
            # the other route of the attention (vitlib.extract.streams_attention): whole and
            # hooked at attn_drop, or block by block inside the module
            other = not streams_attention(dt, x.device)
            fns[f"other_{dt}"] = captured(model, spec, x, dt, stream=other)
            fns[f"other_{dt}"]()
            route[dt] = "streamed" if other else "hooked whole"
            t0 = time.perf_counter()  # the first call compiles (when compiled)
            fns[f"capture_{dt}"]()
            first_call[f"{arch} {dt}"] = time.perf_counter() - t0
        t = median_times(fns, repeats)
        name = arch.replace("vit_", "").replace("_patch", "/").replace("_224", "")
        for dt in ("fp32", "bf16"):
            ratio = t[f"capture_{dt}"] / t[f"plain_{dt}"]
            rows.append(
                (
                    f"{name} capture {dt}, batch {batch} (img/s)",
                    f"{batch / t[f'capture_{dt}']:.2f}",
                    f"plain timm forward {batch / t[f'plain_{dt}']:.2f}",
                    f"{ratio:.3f}x time",
                    f"forward_intermediates {t[f'inter_{dt}'] / t[f'plain_{dt}']:.3f}x;"
                    f" attention {route[dt]} instead {t[f'other_{dt}'] / t[f'plain_{dt}']:.3f}x;"
                    + (
                        f" reductions compiled (eager reductions"
                        f" {t[f'eager_{dt}'] / t[f'plain_{dt}']:.3f}x), first call"
                        f" {first_call[f'{arch} {dt}']:.1f} s"
                        if compiled[arch]
                        else " reductions eager"
                    )
                    + "; target <= 1.10x",
                )
            )
    rows.append(
        (
            "capture configuration",
            f"needs {', '.join(needs)}",
            "",
            "",
            f"Gram points {', '.join(ex['gram_points'])}; CKA minibatch {ex['cka_batch_size']};"
            f" residual norms {ex['residual_norms']}; features {ex['feature_dtype']};"
            f" extract.compile {ex['compile']} for the {ex['images']:,} images of the store",
        )
    )
    return rows


def bench_cka(repeats: int) -> list[Row]:
    """12×12 layer CKA grid on identical random features (12 layers × 5,000 × 768, minibatch
    64): this project's Gram-based estimator vs the PyPI package cka-pytorch (1 epoch)."""
    import numpy as np
    from torch import nn

    from vitlib.metrics.cka import cka_grid_from_grams

    L, n, d, b = 12, 5000, 768, 64
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, 64, generator=g)
    feats = torch.stack(
        [
            base @ torch.randn(64, d, generator=g) + 0.3 * l * torch.randn(n, d, generator=g)
            for l in range(L)
        ]
    )  # [L, n, d]
    n_use = n - n % b
    C = n_use // b

    def ours_from_features() -> object:
        x = feats[:, :n_use].reshape(L, C, b, d).transpose(0, 1)  # [C, L, b, d]
        grams = x @ x.transpose(-1, -2)
        return cka_grid_from_grams(grams, grams)

    x = feats[:, :n_use].reshape(L, C, b, d).transpose(0, 1)
    stored = (x @ x.transpose(-1, -2)).numpy()  # what extraction stores

    def ours_from_grams() -> object:
        return cka_grid_from_grams(stored, stored)

    rows: list[Row] = []
    try:
        from cka_pytorch.cka import CKACalculator
    except ImportError:
        rows.append(("CKA 12x12 (cka-pytorch)", "n/a", "", "", "pip install cka-pytorch"))
        t = median_times({"ours": ours_from_features}, repeats)
        rows.append(("CKA 12x12 grid, ours incl. Grams (s)", f"{t['ours']:.3f}", "", "", ""))
        return rows

    class Replay(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Identity() for _ in range(L))

        def forward(self, idx: torch.Tensor) -> None:
            for l, layer in enumerate(self.layers):
                layer(feats[l, idx])

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(n_use), torch.zeros(n_use)), batch_size=b
    )
    names = [f"layers.{i}" for i in range(L)]
    result: dict[str, object] = {}

    def theirs() -> object:
        calc = CKACalculator(
            Replay(),
            Replay(),
            model1_layers=names,
            model2_layers=names,
            verbose=False,
            device=torch.device("cpu"),
        )
        result["grid"] = calc.calculate_cka_matrix(loader, num_epochs=1, epsilon=0.0)
        return result["grid"]

    # The workflow's path: Grams of CKA minibatches of 8 (the extraction's default) in two
    # stores of the extraction's layout, read and reduced by the function a CKA pair job runs.
    import tempfile

    from vitlib.metrics.tables import cka_pair_table
    from vitlib.store import ArraySpec, StoreWriter

    wb, bs = 8, 64
    x8 = feats[:, :n_use].reshape(L, n_use // wb, wb, d).transpose(0, 1)
    g8 = (x8 @ x8.transpose(-1, -2)).numpy()  # [C, L, 8, 8]
    tmp = tempfile.TemporaryDirectory(dir=os.environ.get("VITLIB_BENCH_TMP"))
    specs = [
        ArraySpec("feat/block_cls", (L, d), "float16"),
        ArraySpec("attn/cls_row", (L, 12, 196), "float16"),
        ArraySpec("attn/spatial_mean_row", (L, 12, 196), "float16"),
    ]
    paths = []
    for m in ("x", "y"):
        path = Path(tmp.name) / f"{m}.zarr"
        meta = {
            "model": f"bench_{m}",
            "spec": {"family": "timm"},
            "dataset": "bench",
            "manifest_digest": "same",
            "n_items": n_use,
            "batch_size": bs,
            "cka_batch_size": wb,
            "depth": L,
        }
        w = StoreWriter(
            path,
            meta,
            image_specs=specs,
            chunk_specs=[ArraySpec("gram/block_all", (L, wb, wb), "float32")],
            sum_specs=[],
            labels=np.zeros(n_use, dtype=np.int64),
        )
        for bi in range(w.n_batches):
            lo, hi = bi * bs, min((bi + 1) * bs, n_use)
            img = {sp.name: np.zeros((hi - lo, *sp.shape), sp.dtype) for sp in specs}
            w.write_batch(bi, img, {"gram/block_all": g8[lo // wb : hi // wb]}, {})
        w.finalize({}, {})
        paths.append(str(path))

    def ours_store() -> object:
        return cka_pair_table(paths[0], paths[1], points="block", kind="all")

    t = median_times(
        {
            "theirs": theirs,
            "ours_feat": ours_from_features,
            "ours_grams": ours_from_grams,
            "ours_store": ours_store,
        },
        repeats,
    )
    store_diff = float(
        np.abs(ours_store()["value"].to_numpy() - cka_grid_from_grams(g8, g8).ravel()).max()
    )
    tmp.cleanup()
    diff = float(np.abs(np.asarray(result["grid"], dtype=np.float64) - ours_from_grams()).max())
    rows.append(
        (
            "CKA 12x12 grid, 5000x768, from stored Grams (s)",
            f"{t['ours_grams']:.4f}",
            f"cka-pytorch 1 epoch {t['theirs']:.2f}",
            f"{t['theirs'] / t['ours_grams']:.0f}x faster",
            f"max |diff| {diff:.1e}; target >= 10x, <= 1e-5",
        )
    )
    rows.append(
        (
            "CKA 12x12 grid as a workflow pair job: Grams (minibatch 8) read from two stores (s)",
            f"{t['ours_store']:.4f}",
            f"cka-pytorch 1 epoch {t['theirs']:.2f}",
            f"{t['theirs'] / t['ours_store']:.0f}x faster",
            f"cka_pair_table on the extraction's store layout; max |diff| to the in-memory"
            f" grid {store_diff:.1e}; target >= 10x",
        )
    )
    rows.append(
        (
            "CKA 12x12 grid, incl. computing the Grams (s)",
            f"{t['ours_feat']:.3f}",
            f"cka-pytorch 1 epoch {t['theirs']:.2f}",
            f"{t['theirs'] / t['ours_feat']:.1f}x faster",
            "",
        )
    )
    return rows


def bench_knn(repeats: int) -> list[Row]:
    """k-NN as the k-NN table runs it (the training set in store-sized chunks, one exact
    search: FAISS fp32, or on a CPU with native bf16 the certified bf16 pass) vs scikit-learn brute-force cosine k-NN: 100,000 × 768 train, 10,000
    queries, k = 20 and k = 200 (the workflow's largest k)."""
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    from vitlib.downstream.knn import _bf16_pays, knn_topk_streaming

    rng = np.random.default_rng(0)
    xtr = rng.standard_normal((100_000, 768), dtype=np.float32)
    xte = rng.standard_normal((10_000, 768), dtype=np.float32)
    rows: list[Row] = []
    path = (
        "certified bf16 pass + exact re-ranking (vitlib.downstream.knn.certified_bf16_search)"
        if _bf16_pays(10_000, 100_000, 768)
        else "FAISS fp32 (no native bf16 on this CPU)"
    )
    for k in (20, 200):
        out: dict[str, Any] = {}

        def ours(k: int = k, out: dict[str, Any] = out) -> object:
            out["ours"] = knn_topk_streaming(
                (xtr[i : i + 25_000] for i in range(0, 100_000, 25_000)), xte, k
            )
            return out["ours"]

        def sk(k: int = k, out: dict[str, Any] = out) -> object:
            out["sk"] = (
                NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute", n_jobs=-1)
                .fit(xtr)
                .kneighbors(xte)
            )
            return out["sk"]

        t = median_times({"ours": ours, "sk": sk}, max(1, repeats // 2), warmup=0)
        same = np.mean([set(a) == set(b) for a, b in zip(out["ours"][1], out["sk"][1])])
        rows.append(
            (
                f"k-NN 100k x 768, 10k queries, k={k} (s)",
                f"{t['ours']:.2f}",
                f"sklearn brute cosine {t['sk']:.2f}",
                f"{t['sk'] / t['ours']:.1f}x faster",
                f"identical neighbour sets for {same * 100:.2f} % of queries; {path}; target >= 4x",
            )
        )
    return rows


def bench_davis_f(repeats: int) -> list[Row]:
    """DAVIS boundary F of one object on a 480×854 frame: vitlib's distance transforms on a
    cropped window vs the official two binary dilations of the whole frame (same value)."""
    import math

    import numpy as np
    from scipy import ndimage

    from vitlib.downstream.davis import boundary_f, seg2bmap

    yy, xx = np.mgrid[:480, :854]
    gt = (yy - 240) ** 2 / 90**2 + (xx - 400) ** 2 / 150**2 < 1
    pred = (yy - 250) ** 2 / 95**2 + (xx - 410) ** 2 / 140**2 < 1
    vals: dict[str, float] = {}

    def official() -> object:
        r = math.ceil(0.008 * np.linalg.norm(gt.shape))
        y, x = np.mgrid[-r : r + 1, -r : r + 1]
        disk = x * x + y * y <= r * r
        fb, gb = seg2bmap(pred), seg2bmap(gt)
        fd, gd = ndimage.binary_dilation(fb, disk), ndimage.binary_dilation(gb, disk)
        p, q = (fb & gd).sum() / fb.sum(), (gb & fd).sum() / gb.sum()
        vals["official"] = float(2 * p * q / (p + q))
        return vals

    def ours() -> object:
        vals["ours"] = boundary_f(pred, gt)
        return vals

    t = median_times({"ours": ours, "official": official}, repeats * 4)
    return [
        (
            "DAVIS boundary F, one object, 480x854 (ms)",
            f"{t['ours'] * 1e3:.1f}",
            f"binary dilations (davis2017-evaluation) {t['official'] * 1e3:.1f}",
            f"{t['official'] / t['ours']:.1f}x faster",
            f"same F: {vals['ours'] == vals['official']}",
        )
    ]


def bench_kmeans(repeats: int) -> list[Row]:
    """FAISS k-means (all points, 10 restarts) vs scikit-learn KMeans (n_init=10):
    5,000 × 768, k = 50, on clustered data."""
    import numpy as np
    from sklearn.cluster import KMeans

    from vitlib.metrics.clustering import kmeans_labels

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 768)).astype(np.float32) * 2
    x = centres[rng.integers(0, 50, 5000)] + rng.standard_normal((5000, 768), dtype=np.float32)
    out: dict[str, np.ndarray] = {}

    def inertia(lab: np.ndarray) -> float:
        return float(sum(((x[lab == c] - x[lab == c].mean(0)) ** 2).sum() for c in np.unique(lab)))

    def ours() -> object:
        out["ours"] = kmeans_labels(x, 50, seed=0, n_init=10)
        return out["ours"]

    def sk() -> object:
        out["sk"] = KMeans(50, n_init=10, random_state=0).fit_predict(x)
        return out["sk"]

    t = median_times({"ours": ours, "sk": sk}, max(1, repeats // 2), warmup=0)
    return [
        (
            "k-means 5000 x 768, k=50 (s)",
            f"{t['ours']:.2f}",
            f"sklearn n_init=10 {t['sk']:.2f}",
            f"{t['sk'] / t['ours']:.1f}x faster",
            f"inertia ratio ours/sklearn {inertia(out['ours']) / inertia(out['sk']):.4f}",
        )
    ]


def bench_memory(repeats: int) -> list[Row]:
    """Peak resident memory of a ViT-L/16 extraction (random init, batch 32, 64 images) and
    the Zarr store size per 1,000 images (fp16 features, all Gram points)."""
    import json
    import subprocess
    import tempfile

    code = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(2)
from vitlib.data.synthetic import generate
from vitlib.data.manifest import read_imagefolder
from vitlib.extract import run_extraction
from vitlib.models import get_spec
d = Path(sys.argv[1])
generate(d / "w", size="tiny", seed=0, classes=4, per_class=16, image_size=224)
man = read_imagefolder(d / "w" / "imagenet" / "train", dataset="m", cka_batch_size=8)
spec = get_spec("random_b16")
from dataclasses import replace
spec = replace(spec, id="random_l16", arch="vit_large_patch16_224", depth=24, num_heads=16, embed_dim=1024)
t = time.time()
run_extraction(spec, man, "center", d / "s.zarr", batch_size=32, progress=False,
               gram_points=("block","norm1","norm2","attn_skip","attn_branch","mlp_skip","mlp_branch"),
               residual_norms=True)
size = sum(f.stat().st_size for f in (d / "s.zarr").rglob("*") if f.is_file())
print(json.dumps({"peak_mb": int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) / 1024,
                  "seconds": time.time() - t, "bytes": size, "n": len(man)}))
"""
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([sys.executable, "-c", code, d], capture_output=True, text=True)
    if p.returncode:
        return [("ViT-L/16 extraction peak RSS", "failed", "", "", p.stderr[-300:])]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    per_1000 = r["bytes"] / r["n"] * 1000 / 2**20
    return [
        (
            "ViT-L/16 extraction, batch 32, 64 images: peak RSS (MiB)",
            f"{r['peak_mb']:.0f}",
            "",
            "",
            f"{r['seconds']:.0f} s",
        ),
        (
            "Zarr store per 1,000 images, ViT-L/16 (MiB)",
            f"{per_1000:.1f}",
            "",
            "",
            "fp16 features + fp32 Grams (b=8, 7 points)",
        ),
    ]


def bench_knn_memory(repeats: int) -> list[Row]:
    """Peak resident memory of the k-NN table (all 12 layers, k = 20) on a 100,000 × 12 × 768
    fp16 train store and 2,000 queries, against the baseline that loads a layer's whole train
    matrix (what a non-streaming implementation does; the original held all of ImageNet's)."""
    import json
    import subprocess
    import tempfile

    make = r"""
import sys, numpy as np
from vitlib.store import ArraySpec
from vitlib.store import StoreWriter
def store(path, n, seed, bs=5000):
    meta = {"model": "bench", "spec": {"family": "random"}, "dataset": path, "depth": 12,
            "n_items": n, "batch_size": bs}
    rng = np.random.default_rng(seed)
    w = StoreWriter(path, meta, image_specs=[ArraySpec("feat/block_cls", (12, 768), np.dtype("float16"))],
                    chunk_specs=[], sum_specs=[], labels=rng.integers(0, 1000, n))
    for b in range(w.n_batches):
        m = min(bs, n - b * bs)
        w.write_batch(b, {"feat/block_cls": rng.standard_normal((m, 12, 768), dtype=np.float32).astype(np.float16)}, {}, {})
    w.finalize({}, {})
store(sys.argv[1] + "/train.zarr", 100_000, 0)
store(sys.argv[1] + "/test.zarr", 2_000, 1)
"""
    run = r"""
import json, resource, sys, time, numpy as np
from vitlib.store import open_store
t = time.time()
if sys.argv[2] == "ours":
    from vitlib.downstream.tables import knn_table
    knn_table(sys.argv[1] + "/train.zarr", sys.argv[1] + "/test.zarr", ks=(20,))
else:
    from vitlib.downstream.knn import knn_accuracy, knn_topk_streaming
    gtr, gte = open_store(sys.argv[1] + "/train.zarr"), open_store(sys.argv[1] + "/test.zarr")
    ytr, yte = np.asarray(gtr["labels"][...]), np.asarray(gte["labels"][...])
    for layer in range(12):
        xtr = np.asarray(gtr["feat/block_cls"][:, layer], dtype=np.float32)   # whole layer
        q = np.asarray(gte["feat/block_cls"][:, layer], dtype=np.float32)
        s, i = knn_topk_streaming([xtr], q, 20)
        knn_accuracy(s, ytr[i], yte, [20], 1000, 0.07)
print(json.dumps({"peak_mb": int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) / 1024,
                  "seconds": time.time() - t}))
"""
    with tempfile.TemporaryDirectory(dir=os.environ.get("VITLIB_BENCH_TMP")) as d:
        p = subprocess.run([sys.executable, "-c", make, d], capture_output=True, text=True)
        if p.returncode:
            return [("k-NN peak RSS", "failed", "", "", p.stderr[-300:])]
        size = sum(f.stat().st_size for f in Path(d, "train.zarr").rglob("*") if f.is_file())
        res = {}
        for mode in ("ours", "whole"):
            p = subprocess.run([sys.executable, "-c", run, d, mode], capture_output=True, text=True)
            if p.returncode:
                return [("k-NN peak RSS", "failed", "", "", p.stderr[-300:])]
            res[mode] = json.loads(p.stdout.strip().splitlines()[-1])
    o, w = res["ours"], res["whole"]
    return [
        (
            "k-NN, 100,000 x 12 x 768 fp16 store, 2,000 queries, 12 layers: peak RSS (MiB)",
            f"{o['peak_mb']:.0f}",
            f"whole layer in memory {w['peak_mb']:.0f}",
            f"{w['peak_mb'] / o['peak_mb']:.1f}x less",
            f"{o['seconds']:.0f} s vs {w['seconds']:.0f} s; store {size / 2**30:.2f} GiB",
        )
    ]


def bench_workflow(repeats: int) -> list[Row]:
    """Dry-run time of the paper preset (20 models, every analysis) with all outputs present,
    and the jobs rerun after changing one analysis setting."""
    import re
    import shutil
    import subprocess
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as d:
        wd = Path(d)
        root = wd / "imagenet"
        for i in range(50):
            (root / f"n{i:08d}").mkdir(parents=True)
            (root / f"n{i:08d}" / "a.JPEG").write_bytes(b"x")
        cfg = re.sub(
            r"root: data[^\s,}]*", f"root: {root}", (repo / "presets" / "paper.yaml").read_text()
        )  # every dataset: one folder
        cfg = re.sub(r"classes: \[[^\]]*\]", "", cfg, flags=re.S)
        (wd / "config.yaml").write_text((repo / "config.yaml").read_text())
        (wd / "paper.yaml").write_text(cfg)
        smk = [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(repo / "Snakefile"),
            "-d",
            str(wd),
            "--configfile",
            str(wd / "paper.yaml"),
            "--cores",
            "2",
        ]
        jobs = subprocess.run(smk + ["-n", "--quiet", "rules"], capture_output=True, text=True)
        # mark every output present: create each listed output, then --touch in DAG order
        summary = subprocess.run(smk + ["-n", "--summary"], capture_output=True, text=True).stdout
        for line in summary.splitlines()[1:]:
            out = line.split("\t")[0]
            if not out or out.startswith(("Building", "output_file")):
                continue
            path = wd / out
            if out.endswith("/world"):
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
        subprocess.run(smk + ["--touch", "--quiet"], capture_output=True, text=True)
        times = []
        for _ in range(max(1, repeats // 2)):
            t0 = time.perf_counter()
            p = subprocess.run(smk + ["-n"], capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
        nothing = "Nothing to be done" in p.stdout + p.stderr
        changed = subprocess.run(
            smk
            + [
                "-n",
                "--config",
                "analyses={attention_distance: {datasets: [imagenet50], units: tokens}}",
            ],
            capture_output=True,
            text=True,
        )
        text = changed.stdout + changed.stderr
        rerun_models = sorted(set(re.findall(r"attention_distance/(\w+)\.csv", text)))
        stats = (
            dict(re.findall(r"^(\w+)\s+(\d+)$", text.split("Job stats:")[-1], re.M))
            if "Job stats:" in text
            else {}
        )
        shutil.rmtree(wd / ".snakemake", ignore_errors=True)
    total = re.search(r"total\s+(\d+)", jobs.stdout + jobs.stderr)
    return [
        (
            "dry run of the paper preset, all outputs present (s)",
            f"{statistics.median(times):.1f}",
            "",
            "",
            f"{total.group(1) if total else '?'} jobs in the DAG; nothing to do: {nothing}",
        ),
        (
            "jobs rerun after changing analyses.attention_distance.units",
            str(sum(int(v) for k, v in stats.items() if k != "total")),
            "",
            "",
            f"extract jobs: {stats.get('extract', '0')}; {dict((k, v) for k, v in stats.items() if k != 'total')};"
            f" tables rerun for {len(rerun_models)} models",
        ),
    ]


def _demo_run(repo: Path, wd: Path, env: dict[str, str]) -> dict[str, Any]:
    """One README demo in the fresh working directory ``wd``: wall time, jobs, each job
    log's start-up and total time (:func:`vitlib.logs.process_age`)."""
    import re
    import subprocess

    (wd / "config.yaml").write_text((repo / "config.yaml").read_text())
    (wd / "vitlib").symlink_to(repo / "vitlib")  # the shipped mini-zoo weights
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(wd)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd + ["--cores", "2"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"demo failed:\n{p.stderr[-3000:]}")
    start: dict[Path, float] = {}
    total: dict[Path, float] = {}
    logs = wd / "results" / "logs"
    for log in logs.rglob("*.log"):
        text = log.read_text(errors="replace")
        a = re.search(r"vitlib\.job: start-up ([\d.]+) s", text)
        b = re.search(r"vitlib\.job: done after ([\d.]+) s", text)
        if a and b:
            start[log.relative_to(logs)], total[log.relative_to(logs)] = (
                float(a.group(1)),
                float(b.group(1)),
            )
    steps = re.findall(r"(\d+) of (\d+) steps", p.stdout + p.stderr)
    return {
        "wall": wall,
        "jobs": int(steps[-1][1]) if steps else 0,
        "start": start,
        "total": total,
        "tables": wd / "results" / "tables",
    }


def _tables_differ(a: Path, b: Path) -> tuple[int, int, float]:
    """Tables of two runs: (equal tables, all tables, largest relative difference of a
    numeric value), timing columns (``seconds``) left out."""
    import numpy as np
    import pandas as pd

    same = n = 0
    worst = 0.0
    for fa in sorted(a.rglob("*.csv")):
        fb = b / fa.relative_to(a)
        n += 1
        if not fb.exists():
            worst = float("inf")
            continue
        da, db = pd.read_csv(fa), pd.read_csv(fb)
        cols = [c for c in da.columns if c != "seconds"]
        if list(da.columns) != list(db.columns) or da.shape != db.shape:
            worst = float("inf")
            continue
        num = [c for c in cols if pd.api.types.is_numeric_dtype(da[c])]
        other = [c for c in cols if c not in num]
        if not da[other].equals(db[other]):
            worst = float("inf")
            continue
        x, y = da[num].to_numpy(float), db[num].to_numpy(float)
        both = np.isnan(x) & np.isnan(y)
        d = np.where(both, 0.0, np.abs(x - y) / np.maximum(np.abs(x), 1e-12))
        d = np.where(np.isnan(d), np.inf, d)
        rel = float(d.max()) if d.size else 0.0
        same += rel == 0.0
        worst = max(worst, rel)
    return same, n, worst


def bench_demo(repeats: int) -> list[Row]:
    """The README's main job as a newcomer runs it: the embedded demo (``config.yaml``) from
    nothing to every figure, ``--cores 2``, in a fresh working directory (the weights of the
    mini-zoo linked in), with the run's job server (:mod:`vitlib.jobserver`) and, as the
    baseline in the same invocation, without it (``VITLIB_JOB_SERVER=0``: every job a fresh
    interpreter).  Wall time, jobs, what the jobs spent starting (each job log's first line:
    interpreter, Snakemake's preamble, the script's top-level imports), extraction jobs
    (torch and timm at the top) apart, and whether the two runs' tables agree.  One run each
    (minutes); ``repeats`` is not used."""
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "VITLIB_JOB_SERVER"}
    with tempfile.TemporaryDirectory() as d0, tempfile.TemporaryDirectory() as d1:
        base = _demo_run(repo, Path(d0), dict(env, VITLIB_JOB_SERVER="0"))
        srv = _demo_run(repo, Path(d1), env)
        same, n_tables, worst = _tables_differ(base["tables"], srv["tables"])

    def sums(r: dict[str, Any]) -> tuple[float, float, float, float, int]:
        ext = [k for k in r["start"] if k.parts[0] == "extract"]
        return (
            sum(r["start"].values()),
            sum(r["total"].values()),
            sum(r["start"][k] for k in ext),
            sum(r["total"][k] for k in ext),
            len(ext),
        )

    b_start, b_total, be_start, be_total, _ = sums(base)
    s_start, s_total, se_start, se_total, n_ext = sums(srv)
    return [
        (
            "README demo, fresh working directory, --cores 2: wall time (s)",
            f"{srv['wall']:.0f}",
            f"without the job server {base['wall']:.0f}",
            f"{srv['wall'] / base['wall']:.2f}x time",
            f"{srv['jobs']} jobs; tables: {same} of {n_tables} identical, largest relative"
            f" difference {worst:.1e} (seconds columns left out)",
        ),
        (
            "time the jobs spent starting (interpreter and imports) (s)",
            f"{s_start:.0f} of {s_total:.0f} job time ({100 * s_start / max(s_total, 1e-9):.0f} %)",
            f"{b_start:.0f} of {b_total:.0f} ({100 * b_start / max(b_total, 1e-9):.0f} %)",
            f"{s_total / max(b_total, 1e-9):.2f}x job time",
            f"mean start-up {s_start / max(len(srv['start']), 1):.2f} s a job"
            f" (without: {b_start / max(len(base['start']), 1):.2f} s)",
        ),
        (
            "of which extraction jobs (torch, timm) (s)",
            f"{se_start:.0f} of {se_total:.0f}",
            f"{be_start:.0f} of {be_total:.0f}",
            f"{se_total / max(be_total, 1e-9):.2f}x job time",
            f"{n_ext} jobs, mean start-up {se_start / max(n_ext, 1):.2f} s"
            f" (without: {be_start / max(n_ext, 1):.2f} s)",
        ),
    ]


def _vit_b16_gflop_per_image() -> float:
    """Forward FLOPs of ViT-B/16 at 224 (2 × MACs): 12 N D² + 2 N² D per block, patch embed."""
    N, D, L = 197, 768, 12
    macs = L * (12 * N * D * D + 2 * N * N * D) + 196 * 768 * 768
    return 2 * macs / 1e9


def bench_precision(repeats: int) -> list[Row]:
    """bf16 vs fp32 on the same images (ViT-B/16, batch 32): the largest attention-distance,
    entropy and CKA differences bf16 causes, and images/s as a fraction of the measured matmul peak."""
    import numpy as np
    import timm

    from vitlib.metrics.cka import cka_grid_from_grams
    from vitlib.models import Capture
    from vitlib.reducers import StreamingReducer

    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).eval()
    x = torch.randn(32, 3, 224, 224)
    out = {}
    times = {}

    def reducer() -> StreamingReducer:
        return StreamingReducer(
            depth=12,
            num_heads=12,
            embed_dim=768,
            grid_hw=(14, 14),
            cka_batch_size=8,
            entropy=True,
            feature_dtype="float32",
        )

    for dt, scores in (("fp32", True), ("bf16", True), ("bf16_direct", False)):
        cap = Capture(model, dtype=dt[:4], logits=scores)  # type: ignore[arg-type]
        cap(x, reducer())  # warm-up
        t0 = time.perf_counter()
        red = reducer()
        cap(x, red)
        times[dt] = time.perf_counter() - t0
        out[dt] = red.batch_arrays()
    d32, d16 = out["fp32"][0]["attn/distance"], out["bf16"][0]["attn/distance"]
    e32, e16 = out["fp32"][0]["attn/entropy"], out["bf16"][0]["attn/entropy"]
    e16_direct = out["bf16_direct"][0]["attn/entropy"]
    g32, g16 = out["fp32"][1]["gram/block_all"], out["bf16"][1]["gram/block_all"]
    grid32 = cka_grid_from_grams(g32, g32)
    grid16 = cka_grid_from_grams(g16, g16)
    cross = np.diag(cka_grid_from_grams(g32, g16))

    p32, p16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    gf = _vit_b16_gflop_per_image()
    ips32, ips16 = 32 / times["fp32"], 32 / times["bf16"]
    return [
        (
            "bf16 vs fp32: max |attention distance difference| (unit square)",
            f"{float(np.abs(d32 - d16).max()):.2e}",
            "",
            "",
            f"mean distance {float(d32.mean()):.3f}",
        ),
        (
            "bf16 vs fp32: max |CKA grid difference| (12x12, block outputs)",
            f"{float(np.abs(grid32 - grid16).max()):.2e}",
            "",
            "",
            f"min CKA(fp32 layer, bf16 same layer) {float(cross.min()):.5f}",
        ),
        (
            "bf16 vs fp32: max |attention entropy difference| (nats)",
            f"{float(np.abs(e32 - e16).max()):.2e}",
            "",
            "",
            f"mean entropy {float(e32.mean()):.3f}; entropy from the scores (the capture's);"
            f" the direct sum p log p on the bf16 probabilities differs from fp32 by"
            f" {float(np.abs(e32 - e16_direct).max()):.1e}",
        ),
        ("matmul peak 2048^3 (GFLOP/s)", f"fp32 {p32:.0f}, bf16 {p16:.0f}", "", "", ""),
        (
            "ViT-B/16 full capture, fraction of matmul peak",
            f"fp32 {ips32 * gf / p32 * 100:.0f} %",
            "",
            "",
            f"bf16 {ips16 * gf / p16 * 100:.0f} %; {gf:.1f} GFLOP/image; "
            f"{ips32:.1f} / {ips16:.1f} img/s",
        ),
    ]


def bench_similarity(repeats: int) -> list[Row]:
    """The similarity suite on a 12-layer model pair (5,000 images, width 384, CLS and
    mean-spatial, all nine measures, 100 permutations) against the fastest implementations
    installable here, evaluated pair by pair as their APIs take them: rsatoolbox for RSA
    (``calc_rdm`` correlation + ``compare_spearman``), cka-pytorch's ``linear``/``rbf`` style
    has no permutation API, so the other measures' baseline is vitlib's single-pair functions
    (the formulas of platonic-rep, netrep and Kornblith's notebook, vectorised; a loop over
    layer pairs and permutations as those libraries run). Times per permutation are measured
    on a few permutations and scaled to 100 (both sides are linear in the permutation count):
    ours as the precomputation with two grids plus 99 times the mean cost of a grid over a
    call of four; the baseline as one single-pair call times 144 layer pairs × 101 grids."""
    import numpy as np

    from vitlib.metrics.similarity import similarity
    from vitlib.metrics.similarity_suite import SUITE_MEASURES, LayerReps, pair_grids, pwcca

    L, n, d, P, kinds = 12, 5000, 384, 100, 2
    rng = np.random.default_rng(0)
    base = rng.normal(size=(n, 32))
    feats = [
        np.stack(
            [
                np.tanh(base @ rng.normal(size=(32, d)) + 0.5 * (l + 1) * rng.normal(size=(n, d)))
                for l in range(L)
            ],
            axis=1,
        ).astype(np.float32)
        for _ in range(2)
    ]
    perms = np.stack([rng.permutation(n) for _ in range(3)])
    rows: list[Row] = []

    # ours: whole suite, one kind; prep once, then grids with 0 and 3 permutations
    per_measure: dict[str, tuple[float, float]] = {}
    check: dict[str, float] = {}  # layer pair (4, 8) under the first permutation
    for m in SUITE_MEASURES:
        t0 = time.perf_counter()
        rx, ry = LayerReps(feats[0], [m]), LayerReps(feats[1], [m])
        check[m] = float(pair_grids(rx, ry, perms[:1])[m][1, 3, 7])  # builds n × n forms
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        pair_grids(rx, ry, perms)
        # the observed grid and 3 permuted ones, each the cost of one permutation (an upper
        # bound: it includes the buffers' first touch)
        per_perm = (time.perf_counter() - t0) / (1 + len(perms))
        per_measure[m] = (build, per_perm)
        del rx, ry

    # baselines: single-pair calls (a few layer pairs), scaled to L² pairs
    def single(m: str, x: np.ndarray, y: np.ndarray) -> float:
        if m == "linear_cka_debiased":
            return similarity(x, y, "linear_cka", debiased=True)
        if m == "pwcca":
            return pwcca(x, y)
        return similarity(x, y, m)

    try:
        import rsatoolbox

        def rsa_peer(x: np.ndarray, y: np.ndarray) -> float:
            a = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(x), method="correlation")
            b = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(y), method="correlation")
            return float(rsatoolbox.rdm.compare_spearman(a, b)[0, 0])

        peer_rsa: Callable[[np.ndarray, np.ndarray], float] | None = rsa_peer
    except ImportError:
        peer_rsa = None
    x0 = feats[0][:, 3].astype(np.float64)
    y0 = feats[1][:, 7].astype(np.float64)
    total_ours = total_base = 0.0
    for m in SUITE_MEASURES:
        fn = (lambda x, y, m=m: single(m, x, y)) if m != "rsa" or peer_rsa is None else peer_rsa
        t = median_times({"pair": lambda fn=fn: fn(x0, y0[perms[0]])}, max(1, min(repeats, 2)))
        diff = abs(fn(x0, y0[perms[0]]) - check[m])
        base = t["pair"] * L * L * (1 + P) * kinds
        build, per_perm = per_measure[m]  # build: precomputation + 2 grids
        ours = kinds * (build + (P - 1) * per_perm)
        total_ours += ours
        total_base += base
        who = "rsatoolbox" if m == "rsa" and peer_rsa is not None else "single-pair loop"
        # the values agree: the suite's observed grid cell equals the single-pair call
        rows.append(
            (
                f"{m}: 12x12 grid, 2 kinds, 100 permutations (s)",
                f"{ours:.0f}",
                f"{base:.0f} ({who})",
                f"{base / ours:.1f}x",
                f"ours: {per_perm * 1000:.0f} ms per permutation (144 layer pairs); "
                f"|Δ value| {diff:.1e}",
            )
        )
    rows.append(
        (
            "whole suite, 12x12, 5,000 images, 2 kinds, 100 permutations (s)",
            f"{total_ours:.0f}",
            f"{total_base:.0f}",
            f"{total_base / total_ours:.1f}x",
            "sum of the rows above; baseline times extrapolated from single-pair calls",
        )
    )
    return rows


SECTIONS: dict[str, Callable[[int], list[Row]]] = {
    "capture": bench_capture,
    "cka": bench_cka,
    "knn": bench_knn,
    "kmeans": bench_kmeans,
    "davis_f": bench_davis_f,
    "memory": bench_memory,
    "knn_memory": bench_knn_memory,
    "workflow": bench_workflow,
    "precision": bench_precision,
    "demo": bench_demo,
    "similarity": bench_similarity,
}


#: Sections measured once whatever ``--repeats`` says (a whole workflow run).
ONE_RUN = {"demo"}


def machine() -> str:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import timm
    import zarr

    return (
        f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); timm {timm.__version__}; "
        f"numpy {numpy.__version__}; zarr {zarr.__version__}; Python {platform.python_version()}"
    )


def _section_text(name: str, rows: list[Row], repeats: int) -> str:
    header = ("figure", "value", "baseline (same run)", "ratio", "note")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    when = time.strftime("%Y-%m-%d")
    how = "one run" if name in ONE_RUN else f"medians of {repeats} interleaved runs"
    return (
        f"## {name}\n\n`python benchmarks/run.py --only {name} --repeats {repeats}`, {when};"
        f" {how}. {machine()}\n\n" + "\n".join(lines) + "\n"
    )


def write_results(out: Path, sections: dict[str, str]) -> None:
    """Replace the named sections of ``out`` (``## <section>`` blocks, in SECTIONS order),
    keeping the others: every table in the file is written by this command."""
    kept: dict[str, str] = {}
    if out.exists():
        for block in out.read_text().split("\n## ")[1:]:
            name = block.split("\n", 1)[0].strip()
            if name in SECTIONS:
                kept[name] = "## " + block.rstrip("\n") + "\n"
    kept.update(sections)
    body = "\n".join(kept[n] for n in SECTIONS if n in kept)
    out.write_text(
        "# vitlib benchmark results\n\nWritten by `python benchmarks/run.py` (one section per"
        " `--only` name; never edited by hand). Every ratio compares with a baseline measured"
        " in the same run, interleaved.\n\n" + body
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=list(SECTIONS), action="append")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 repeats")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    a = ap.parse_args()
    from vitlib.extract import tune_malloc

    tune_malloc()  # the allocator of the workflow's extraction jobs
    repeats = 2 if a.quick else a.repeats
    done: dict[str, str] = {}
    for name in a.only or SECTIONS:
        print(f"== {name}", flush=True)
        done[name] = _section_text(name, SECTIONS[name](repeats), repeats)
        print(done[name], flush=True)
        write_results(Path(a.out), {name: done[name]})


if __name__ == "__main__":
    main()
