"""GPU check of what the extraction computes inside the pass instead of storing tokens.

Run on a machine with a CUDA GPU (``python benchmarks/gpu_inpass.py``), ViT-B/16 (random
init), the paper preset's settings (dense view, tile factor 2, bf16 off so the two routes
compare bit for bit):

1. DAVIS: synthetic 480×854 sequences; a dense token store + label propagation from it
   (the old route) against ``davis_propagation`` in the pass: seconds, store bytes, and the
   largest J&F difference between the two tables;
2. SPair: synthetic categories; a ``spair`` token store + transfer from it against
   ``spair_transfer`` in the pass: seconds, bytes, largest PCK difference;
3. k-NN: the memory bank streamed against stored queries against a train store of every
   block (the old route): seconds and the agreement of the two k-NN tables.

Prints and writes a JSON summary (``--out``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _davis(root: Path, seqs: int, frames: int) -> None:
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    names = [f"s{k}" for k in range(seqs)]
    (root / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{n}\n" for n in names))
    for n in names:
        bg = rng.integers(0, 255, (480, 854, 3), dtype=np.uint8)
        for f in range(frames):
            img, mask = np.roll(bg, 6 * f, axis=1).copy(), np.zeros((480, 854), np.uint8)
            for o in (1, 2, 3):
                y0, x0 = 60 + 110 * (o - 1), 100 + 200 * (o - 1) + 5 * f
                mask[y0 : y0 + 90, x0 : x0 + 150] = o
                img[y0 : y0 + 90, x0 : x0 + 150] = (60 * o, 255 - 60 * o, 30 * o)
            p = root / "JPEGImages" / "480p" / n / f"{f:05d}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(p)
            a = root / "Annotations" / "480p" / n / f"{f:05d}.png"
            a.parent.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(mask, "P")
            im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * 756)
            im.save(a)


def _spair(root: Path, cats: int, images: int, pairs: int) -> None:
    rng = np.random.default_rng(1)
    pdir = root / "PairAnnotation" / "test"
    pdir.mkdir(parents=True)
    for c in range(cats):
        cat = f"c{c}"
        (root / "ImageAnnotation" / cat).mkdir(parents=True)
        sizes = []
        for i in range(images):
            w, h = int(rng.integers(300, 500)), int(rng.integers(300, 500))
            sizes.append((w, h))
            p = root / "JPEGImages" / cat / f"im{i}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
        for k in range(pairs):
            s, t = rng.choice(images, 2, replace=False)
            (sw, sh), (tw, th) = sizes[s], sizes[t]
            d = {
                "category": cat,
                "mirror": 0,
                "src_imname": f"im{s}.jpg",
                "trg_imname": f"im{t}.jpg",
                "src_bndbox": [10, 10, sw - 10, sh - 10],
                "trg_bndbox": [10, 10, tw - 10, th - 10],
                "src_imsize": [sw, sh, 3],
                "trg_imsize": [tw, th, 3],
                "kps_ids": list(range(10)),
                "src_kps": np.stack([rng.integers(0, sw, 10), rng.integers(0, sh, 10)], 1).tolist(),
                "trg_kps": np.stack([rng.integers(0, tw, 10), rng.integers(0, th, 10)], 1).tolist(),
            }
            (pdir / f"{c:03d}{k:05d}-im{s}-im{t}:{cat}.json").write_text(json.dumps(d))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--sequences", type=int, default=2)
    ap.add_argument("--spair-categories", type=int, default=3)
    ap.add_argument("--spair-images", type=int, default=30)
    ap.add_argument("--spair-pairs", type=int, default=40)
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--out", default="gpu_inpass.json")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of the script")
    a = ap.parse_args()

    import torch

    from vitlib.data.manifest import read_imagefolder
    from vitlib.data.readers import read_davis, read_spair
    from vitlib.data.synthetic import generate
    from vitlib.downstream.knn_bank import knn_bank_table, stream_knn_bank
    from vitlib.downstream.tables import davis_table, knn_table, spair_table
    from vitlib.extract import run_extraction
    from vitlib.models.registry import spec_from_config

    cuda = a.device == "cuda"
    assert not cuda or torch.cuda.is_available(), "needs a CUDA GPU"
    out: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0) if cuda else "cpu"}
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    spec = spec_from_config(
        "vit_b16", {"arch": "vit_base_patch16_224", "family": "random", "init_seed": 0}
    )
    work = Path(tempfile.mkdtemp())
    kw = dict(batch_size=64, device=a.device, num_workers=8 if cuda else 0, progress=False)

    def timed(f: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
        sync()
        t0 = time.perf_counter()
        r = f(*args, **kwargs)
        sync()
        return r, time.perf_counter() - t0

    # 1. DAVIS
    _davis(work / "davis", a.sequences, a.frames)
    m = read_davis(work / "davis", dataset="d")
    need = "davis_propagation@n_last=7,radius=12,topk=5,temperature=0.1"
    _, t_tok = timed(run_extraction, spec, m, "dense", work / "dt.zarr", needs=["tokens"], **kw)
    tab_tok, t_tab_tok = timed(davis_table, work / "dt.zarr", m)
    _, t_in = timed(run_extraction, spec, m, "dense", work / "dp.zarr", needs=[need], **kw)
    tab_in, t_tab_in = timed(davis_table, work / "dp.zarr", m)
    out["davis"] = {
        "frames": len(m),
        "token_route_extract_s": round(t_tok, 2),
        "token_route_table_s": round(t_tab_tok, 2),
        "in_pass_extract_s": round(t_in, 2),
        "in_pass_table_s": round(t_tab_in, 2),
        "token_store_MB": round(_size(work / "dt.zarr") / 1e6, 1),
        "in_pass_store_MB": round(_size(work / "dp.zarr") / 1e6, 1),
        "max_abs_JF_diff": float(np.abs(tab_tok["JF"] - tab_in["JF"]).max()),
        "JF_last_layer": float(tab_in["JF"].iloc[-1]),
    }
    print(out["davis"], flush=True)
    Path(a.out).write_text(json.dumps(out, indent=1))

    # 2. SPair
    _spair(work / "spair", a.spair_categories, a.spair_images, a.spair_pairs)
    m = read_spair(work / "spair", dataset="s", pairs_per_category=a.spair_pairs)
    _, t_tok = timed(run_extraction, spec, m, "spair", work / "st.zarr", needs=["tokens"], **kw)
    tab_tok, t_tab_tok = timed(spair_table, work / "st.zarr", m)
    _, t_in = timed(
        run_extraction, spec, m, "spair", work / "sp.zarr", needs=["spair_transfer"], **kw
    )
    tab_in, t_tab_in = timed(spair_table, work / "sp.zarr", m)
    out["spair"] = {
        "images": len(m),
        "pairs": len(m.extra["pairs"]),
        "token_route_extract_s": round(t_tok, 2),
        "token_route_table_s": round(t_tab_tok, 2),
        "in_pass_extract_s": round(t_in, 2),
        "in_pass_table_s": round(t_tab_in, 2),
        "token_store_MB": round(_size(work / "st.zarr") / 1e6, 1),
        "in_pass_store_MB": round(_size(work / "sp.zarr") / 1e6, 3),
        "max_abs_pck_diff": float(np.abs(tab_tok["pck"] - tab_in["pck"]).max()),
    }
    print(out["spair"], flush=True)
    Path(a.out).write_text(json.dumps(out, indent=1))

    # 3. k-NN: streamed bank vs a train store of every block
    root = generate(
        work / "world", size="demo", seed=0, parts=["imagenet"], per_class=a.train // 10
    )
    train = read_imagefolder(root / "imagenet" / "train", dataset="tr", cka_batch_size=0)
    root_q = generate(
        work / "worldq", size="demo", seed=1, parts=["imagenet"], per_class=a.queries // 10
    )
    test = read_imagefolder(root_q / "imagenet" / "train", dataset="te", cka_batch_size=0)
    fk = dict(needs=["features"], **kw)
    run_extraction(spec, test, "center", work / "q.zarr", **fk)
    _, t_store = timed(run_extraction, spec, train, "center", work / "tr.zarr", **fk)
    ref, t_knn = timed(knn_table, work / "tr.zarr", work / "q.zarr", ks=(10, 20, 100, 200))
    bank, t_bank = timed(
        stream_knn_bank,
        spec,
        train,
        work / "q.zarr",
        k_max=200,
        batch_size=256,
        device=a.device,
        num_workers=kw["num_workers"],
        progress=False,
        out=work / "bank.npz",
    )
    tab = knn_bank_table(bank, work / "q.zarr", ks=(10, 20, 100, 200))
    out["knn"] = {
        "train": len(train),
        "queries": len(test),
        "train_store_extract_s": round(t_store, 2),
        "knn_from_store_s": round(t_knn, 2),
        "bank_stream_s": round(t_bank, 2),
        "train_store_MB": round(_size(work / "tr.zarr") / 1e6, 1),
        "bank_MB": round((work / "bank.npz").stat().st_size / 1e6, 1),
        "max_abs_top1_diff": float(np.abs(ref["top1"].to_numpy() - tab["top1"].to_numpy()).max()),
    }
    print(out["knn"], flush=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
