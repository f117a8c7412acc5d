"""GPU path, end to end: ViT-B/16 (random init) extraction on a GPU, in img/s.

Run on a machine with a CUDA GPU (``python benchmarks/gpu_extract.py --images 5000``):

1. a synthetic ImageNet-style folder of ``--images`` images (the demo world's generator);
2. plain ``forward_features`` on preloaded batches, fp32 and bf16 autocast (the baseline);
3. the workflow's extraction (:func:`vitlib.extract.run_extraction`: data loading, one-pass
   capture, every reduction of the paper preset's ImageNet-50 store, Zarr writes) in fp32 and
   bf16, with its default needs;
4. the fraction of the GPU's bf16 peak (a measured 8192³ matrix product) that each reaches.

Prints and writes a JSON summary (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--out", default="gpu_extract.json")
    a = ap.parse_args()

    import torch

    from vitlib.data.manifest import read_imagefolder
    from vitlib.data.synthetic import generate
    from vitlib.extract import run_extraction
    from vitlib.models.build import build_model
    from vitlib.models.registry import spec_from_config

    assert torch.cuda.is_available(), "needs a CUDA GPU"
    dev = torch.device("cuda")
    out: dict[str, object] = {"gpu": torch.cuda.get_device_name(0), "images": a.images}

    # bf16 matmul peak of this GPU, measured
    x = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        x @ x
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        x @ x
    torch.cuda.synchronize()
    peak = 10 * 2 * 8192**3 / (time.perf_counter() - t0) / 1e12
    out["bf16_matmul_tflops"] = round(peak, 1)
    del x

    work = Path(tempfile.mkdtemp())
    per_class = max(1, a.images // 10)
    root = generate(work / "world", size="demo", seed=0, parts=["imagenet"], per_class=per_class)
    man = read_imagefolder(root / "imagenet" / "train", dataset="bench", cka_batch_size=8)
    out["images"] = len(man)
    spec = spec_from_config(
        "vit_b16", {"arch": "vit_base_patch16_224", "family": "random", "init_seed": 0}
    )
    gflop = 35.1  # ViT-B/16 forward per image (vitlib.plan.forward_gflops)

    model = build_model(spec, None, device=dev)
    batch = torch.randn(a.batch_size, 3, 224, 224, device=dev)
    for dtype in ("fp32", "bf16"):
        ctx = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if dtype == "bf16"
            else torch.autocast("cuda", enabled=False)
        )
        with torch.inference_mode(), ctx:
            for _ in range(3):
                model.forward_features(batch)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            n = 0
            while time.perf_counter() - t0 < 10:
                model.forward_features(batch)
                n += a.batch_size
            torch.cuda.synchronize()
        ips = n / (time.perf_counter() - t0)
        out[f"plain_{dtype}_img_s"] = round(ips, 1)
        out[f"plain_{dtype}_frac_bf16_peak"] = round(ips * gflop / 1e3 / peak, 3)
    del model
    torch.cuda.empty_cache()

    for dtype in ("fp32", "bf16"):
        store = work / f"{dtype}.zarr"
        summary = run_extraction(
            spec,
            man,
            "center",
            store,
            batch_size=a.batch_size,
            dtype=dtype,
            device="cuda",
            num_workers=a.workers,
            progress=False,
        )
        ips = len(man) / summary["seconds"]
        out[f"extract_{dtype}_img_s"] = round(ips, 1)
        out[f"extract_{dtype}_frac_bf16_peak"] = round(ips * gflop / 1e3 / peak, 3)
        out[f"extract_{dtype}_vs_plain"] = round(out[f"plain_{dtype}_img_s"] / ips, 2)  # type: ignore[operator]
    # drift of the stored per-image attention distance, bf16 vs fp32
    import numpy as np

    from vitlib.store import Store

    d32 = Store(work / "fp32.zarr").read("attn/distance").astype(np.float64)
    d16 = Store(work / "bf16.zarr").read("attn/distance").astype(np.float64)
    out["bf16_max_abs_distance_drift"] = float(np.abs(d32.mean(0) - d16.mean(0)).max())
    out["cpu_cores"] = os.cpu_count()
    print(json.dumps(out, indent=1))
    Path(a.out).write_text(json.dumps(out, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
