"""GPU path, end to end: ViT-B/16 (random init) extraction on a GPU, in img/s.

Run on a machine with a CUDA GPU (``python benchmarks/gpu_extract.py --images 5000``):

1. a synthetic ImageNet-style folder of ``--images`` images (the demo world's generator);
2. plain ``forward_features`` on preloaded batches, fp32 and bf16 autocast (the baseline);
3. the breakdown of an extraction batch: the capture with every reduction of the default
   needs on the same preloaded batches (``capture_*``: forward, reductions and the copy of
   the batch's rows to host memory, no data loading, no store), eager and with the
   attention reductions compiled (``capture_*_compiled_*``: compile time, img/s, largest
   difference to eager of the per-image distance, entropy and CLS rows), and the data loader alone
   (``loader_img_s``: decoding and transforms in ``--workers`` processes, copied to the GPU);
4. the workflow's extraction (:func:`vitlib.extract.run_extraction`: data loading, one-pass
   capture, every reduction of the paper preset's ImageNet-50 store, Zarr writes) in fp32 and
   bf16, with its default needs;
5. the fraction of the GPU's bf16 peak (a measured 8192³ matrix product) that each reaches;
6. with ``--profile``, torch.profiler tables of three capture steps per dtype (top ops by
   device and host time) beside ``--out``.

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
from typing import Any


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--out", default="gpu_extract.json")
    ap.add_argument("--seconds", type=float, default=10.0, help="per timed loop")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run of the script itself")
    ap.add_argument("--arch", default="vit_base_patch16_224")
    ap.add_argument(
        "--profile", action="store_true", help="write torch.profiler tables of the capture"
    )
    a = ap.parse_args()

    import torch

    from vitlib.data.manifest import read_imagefolder
    from vitlib.data.synthetic import generate
    from vitlib.extract import (
        make_capture,
        make_reducer,
        reduced_plan,
        run_extraction,
        view_loader,
    )
    from vitlib.models.build import build_model
    from vitlib.models.capture import Capture
    from vitlib.models.registry import spec_from_config

    cuda = a.device == "cuda"
    assert not cuda or torch.cuda.is_available(), "needs a CUDA GPU"
    dev = torch.device(a.device)

    class Loud(dict[str, object]):
        """Prints every figure as it is measured (a run cut short still reports)."""

        def __setitem__(self, key: str, value: object) -> None:
            print(f"{key}: {value}", flush=True)
            super().__setitem__(key, value)

    out: dict[str, object] = Loud(
        {
            "gpu": torch.cuda.get_device_name(0) if cuda else "cpu (smoke run)",
            "images": a.images,
        }
    )

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    # bf16 matmul peak of this GPU, measured
    n = 8192 if cuda else 512
    x = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        x @ x
    sync()
    t0 = time.perf_counter()
    for _ in range(10):
        x @ x
    sync()
    peak = 10 * 2 * n**3 / (time.perf_counter() - t0) / 1e12
    out["bf16_matmul_tflops"] = round(peak, 1)
    del x

    work = Path(tempfile.mkdtemp())
    per_class = max(1, a.images // 10)
    root = generate(work / "world", size="demo", seed=0, parts=["imagenet"], per_class=per_class)
    man = read_imagefolder(root / "imagenet" / "train", dataset="bench", cka_batch_size=8)
    out["images"] = len(man)
    spec = spec_from_config("vit_b16", {"arch": a.arch, "family": "random", "init_seed": 0})
    from vitlib.plan import forward_gflops

    gflop = forward_gflops(spec)  # per image

    def timed(fn: object, bs: int) -> float:
        """img/s of ``fn()`` (one batch) over ``--seconds``, after 3 warm-ups."""
        for _ in range(3):
            fn()  # type: ignore[operator]
        sync()
        t0 = time.perf_counter()
        done = 0
        while time.perf_counter() - t0 < a.seconds:
            fn()  # type: ignore[operator]
            done += bs
        sync()
        return done / (time.perf_counter() - t0)

    model = build_model(spec, None, device=dev)
    batch = torch.randn(a.batch_size, 3, spec.img_size, spec.img_size, device=dev)
    plan = reduced_plan(spec, None, gram_points=("block",), residual_norms=False)
    for dtype in ("fp32", "bf16"):
        ctx = (
            torch.autocast(dev.type, dtype=torch.bfloat16)
            if dtype == "bf16"
            else torch.autocast(dev.type, enabled=False)
        )
        with torch.inference_mode(), ctx:
            ips = timed(lambda m=model: m.forward_features(batch), a.batch_size)
        out[f"plain_{dtype}_img_s"] = round(ips, 1)
        out[f"plain_{dtype}_frac_bf16_peak"] = round(ips * gflop / 1e3 / peak, 3)
        # the extraction's own per-batch work on preloaded batches: capture + reductions +
        # the batch's rows copied to host memory (no loader, no store)
        reducers = {
            comp: make_reducer(
                spec, plan, cka_batch_size=man.cka_batch_size, feature_dtype="float16", compile=comp
            )
            for comp in (False, True)
        }
        reducer = reducers[False]
        cap = make_capture(model, reducer, dtype)

        def step(cap: Capture = cap, reducer: Any = reducer) -> None:
            cap(batch, reducer)
            reducer.accumulate()
            reducer.batch_arrays()

        ips = timed(step, a.batch_size)
        # the same with the attention reductions compiled (extract.compile; Triton on a GPU):
        # the first call's time (compiling), img/s, and the largest difference to eager
        rc = reducers[True]
        t0 = time.perf_counter()
        step(reducer=rc)
        sync()
        out[f"capture_{dtype}_compile_s"] = round(time.perf_counter() - t0, 1)
        out[f"capture_{dtype}_compiled_img_s"] = round(
            timed(lambda rc=rc: step(reducer=rc), a.batch_size), 1
        )
        step(reducer=reducer)
        step(reducer=rc)
        eager_img, compiled_img = reducer.batch_arrays()[0], rc.batch_arrays()[0]
        out[f"capture_{dtype}_compiled_max_abs_diff"] = max(
            float(abs(compiled_img[k].astype("float64") - eager_img[k].astype("float64")).max())
            for k in ("attn/distance", "attn/entropy", "attn/cls_row")
            if k in eager_img
        )
        if a.profile:  # where the capture's time goes: the top ops by device and host time
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=acts) as prof:
                for _ in range(3):
                    step()
                sync()
            ka = prof.key_averages()
            with open(Path(a.out).with_suffix(f".profile_{dtype}.txt"), "w") as f:
                for key in (("cuda_time_total",) if cuda else ()) + ("cpu_time_total",):
                    f.write(f"# 3 capture steps of {a.batch_size} images, by {key}\n")
                    f.write(ka.table(sort_by=key, row_limit=40) + "\n")
        out[f"capture_{dtype}_img_s"] = round(ips, 1)
        out[f"capture_{dtype}_vs_plain"] = round(out[f"plain_{dtype}_img_s"] / ips, 2)  # type: ignore[operator]
    del model
    if cuda:
        torch.cuda.empty_cache()
    # the data loader alone (decode + transform in the workers, pinned, copied to the device)
    loader = view_loader(spec, man, "center", 0, a.batch_size, a.workers, dev)
    t0, done = time.perf_counter(), 0
    for images, _ in loader:
        images.to(dev, non_blocking=True)
        done += len(images)
    sync()
    out["loader_img_s"] = round(done / (time.perf_counter() - t0), 1)
    out["loader_workers"] = a.workers

    for dtype in ("fp32", "bf16"):
        store = work / f"{dtype}.zarr"
        summary = run_extraction(
            spec,
            man,
            "center",
            store,
            batch_size=a.batch_size,
            dtype=dtype,
            device=a.device,
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
