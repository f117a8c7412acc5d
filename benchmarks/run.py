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
from pathlib import Path
from typing import Callable

# Stable allocator behaviour for timing (SETUP.md: far less page-fault noise).  Must be set
# before the process starts, so re-exec once with them.
_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
if any(os.environ.get(k) != v for k, v in _MALLOC.items()) and __name__ == "__main__":
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_MALLOC})

import torch  # noqa: E402

Row = tuple[str, str, str, str, str]


def median_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
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


def bench_capture(repeats: int) -> list[Row]:
    """Full one-pass capture (block outputs + attention reducers + CKA Grams, exactly what the
    extraction runs) vs a plain timm forward of the same model and batch, fp32 and bf16."""
    import timm

    from vitlib.models import Capture
    from vitlib.reducers import StreamingReducer

    rows: list[Row] = []
    for arch in ("vit_base_patch16_224", "vit_small_patch16_224"):
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False, num_classes=0).eval()
        x = torch.randn(32, 3, 224, 224)
        L, H, D = len(model.blocks), model.blocks[0].attn.num_heads, model.embed_dim

        def plain(dtype: str) -> Callable[[], object]:
            def run() -> object:
                with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16,
                                                            enabled=dtype == "bf16"):
                    return model.forward_features(x)
            return run

        def captured(dtype: str) -> Callable[[], object]:
            cap = Capture(model, points=("block",), dtype=dtype)  # type: ignore[arg-type]

            def run() -> object:
                red = StreamingReducer(depth=L, num_heads=H, embed_dim=D, grid_hw=(14, 14),
                                       cka_batch_size=8)
                cap(x, red)
                red.accumulate()
                return red.batch_arrays()
            return run

        t = median_times({"plain_fp32": plain("fp32"), "capture_fp32": captured("fp32"),
                          "plain_bf16": plain("bf16"), "capture_bf16": captured("bf16")},
                         repeats)
        name = arch.replace("vit_", "").replace("_patch", "/").replace("_224", "")
        for dt in ("fp32", "bf16"):
            ratio = t[f"capture_{dt}"] / t[f"plain_{dt}"]
            rows.append((f"{name} capture {dt}, batch 32 (img/s)",
                         f"{32 / t[f'capture_{dt}']:.1f}",
                         f"plain timm forward {32 / t[f'plain_{dt}']:.1f}",
                         f"{ratio:.3f}x time", "target <= 1.10x"))
        rows.append((f"{name} capture bf16 vs fp32 (img/s)",
                     f"{32 / t['capture_bf16']:.1f}", f"{32 / t['capture_fp32']:.1f}",
                     f"{t['capture_fp32'] / t['capture_bf16']:.2f}x faster", ""))
    return rows


SECTIONS: dict[str, Callable[[int], list[Row]]] = {"capture": bench_capture}


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

    return (f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); timm {timm.__version__}; "
            f"numpy {numpy.__version__}; zarr {zarr.__version__}; Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=list(SECTIONS), action="append")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 repeats")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    a = ap.parse_args()
    repeats = 2 if a.quick else a.repeats
    rows: list[Row] = []
    for name in a.only or SECTIONS:
        print(f"== {name}", flush=True)
        rows += SECTIONS[name](repeats)
    header = ("figure", "value", "baseline (same run)", "ratio", "note")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    Path(a.out).write_text(
        f"# vitlib benchmark results\n\nMachine: {machine()}\n\n"
        f"Command: `python benchmarks/run.py {' '.join(sys.argv[1:])}` "
        f"(medians of {repeats} interleaved runs)\n\n{table}\n")


if __name__ == "__main__":
    main()
