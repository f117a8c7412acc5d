"""Mini-zoo recipe sweep on a GPU: DINO- and MAE-style variants trained side by side, each
scored by the demo's k-NN (k = 20, CLS of every block, ``world`` → ``world_val``).

An experiment harness for the open question of issue #18 (a DINO-style model that learns on
the synthetic world), not part of vitlib: it runs the library's own methods
(:mod:`vitlib.minizoo`) in a loop of its own, with one extra the library does not have —
*world-redrawn views*: the second global crop comes from a second render of the same object
(same outline and pose; new colours, texture and background, :meth:`Obj.redrawn`).

    python benchmarks/minizoo_sweep.py --budget 420 --variants d_base,m_base
    python benchmarks/minizoo_sweep.py --tm 'm_tm150={"epochs": 150, "batch_size": 256, "lr": 0.00075}'

Every variant runs in its own process for ``--budget`` seconds (its step count is set from
its first 40 steps, so the cosine schedule ends on time); ``--tm`` runs the real
:func:`vitlib.minizoo.train.train_model` on the preset's ``zoo_world`` instead (the run that
``presets/minizoo.yaml`` reproduces).  Logs, JSON summaries and checkpoints land in
``--outdir``.  What the H100 runs of 2026-11-24 gave is in ``minizoo_sweep.h100.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from multiprocessing import Pool
from typing import Any

import numpy as np

#: name → (method, recipe options, harness extras: pairs (1: the second global crop from the
#: redrawn render; 2: the local crops too), pairs_p (share of images), ramp (the share rises
#: over this fraction of the run), blur (DINO's blur and solarisation))
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "d_base": ("dino", {"local_crops": 2, "momentum": 0.99}, {}),
    "d_mean": ("dino", {"local_crops": 2, "momentum": 0.99, "centering": "mean"}, {}),
    "d_blur": ("dino", {"local_crops": 2, "momentum": 0.99}, {"blur": 1}),
    "d_pair": ("dino", {"local_crops": 2, "momentum": 0.99}, {"pairs": 1}),
    "d_pair_nohue": ("dino", {"local_crops": 2, "momentum": 0.99, "hue": 0.0}, {"pairs": 1}),
    "d_pair_ramp": ("dino", {"local_crops": 2, "momentum": 0.99}, {"pairs": 1, "ramp": 0.3}),
    "d_pair2_l4": ("dino", {"local_crops": 4, "momentum": 0.996}, {"pairs": 2}),
    "d_pair50": ("dino", {"local_crops": 2, "momentum": 0.99}, {"pairs": 1, "pairs_p": 0.5}),
    "d_pair50_blur": (
        "dino",
        {"local_crops": 4, "momentum": 0.99},
        {"pairs": 1, "pairs_p": 0.5, "blur": 1},
    ),
    "d_pair_tt07": (
        "dino",
        {"local_crops": 2, "momentum": 0.99, "teacher_temp": 0.07, "out_dim": 64},
        {"pairs": 1},
    ),
    "d_mean_pair50": (
        "dino",
        {"local_crops": 2, "momentum": 0.99, "centering": "mean"},
        {"pairs": 1, "pairs_p": 0.5},
    ),
    "d_koleo": ("dino", {"local_crops": 2, "momentum": 0.99, "koleo": 0.1}, {}),
    "d_pair_koleo": ("dino", {"local_crops": 2, "momentum": 0.99, "koleo": 0.1}, {"pairs": 1}),
    "d_mean_pair_koleo": (
        "dino",
        {"local_crops": 2, "momentum": 0.99, "koleo": 0.1, "centering": "mean"},
        {"pairs": 1},
    ),
    "d_pair_kbn": (
        "dino",
        {"local_crops": 2, "momentum": 0.99, "koleo": 0.1, "koleo_on": "bottleneck"},
        {"pairs": 1},
    ),
    "m_base": ("mae", {}, {}),
    "m_mask90": ("mae", {"mask_ratio": 0.9}, {}),
    "m_nonorm": ("mae", {"norm_pix_loss": False, "mask_ratio": 0.6}, {}),
}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: the demo's mini-zoo architecture (config.yaml ``demo_arch``)
ARCH = {"img_size": 64, "patch_size": 8, "embed_dim": 96, "depth": 6, "num_heads": 3}


def views(rng: np.random.Generator, k: int, size: int, n_views: int) -> list[np.ndarray]:
    """``n_views`` renders of one object of class ``k`` (the first as the world draws it,
    the others redrawn: same outline and pose, new appearance and background), 64 px."""
    from vitlib.data.synthetic.draw import _backdrop, _finish, _new_obj, paint, render_backdrop
    from vitlib.data.synthetic.imagenet import MAX_TILT
    from vitlib.data.views import center_pixels

    px = center_pixels(ARCH["img_size"])
    r = rng.uniform(0.28, 0.44) * size
    cx, cy = rng.uniform(0.85 * r, size - 0.85 * r, size=2)
    obj = _new_obj(rng, k, cx, cy, r, rng.uniform(-MAX_TILT, MAX_TILT))
    out = []
    for v in range(n_views):
        b = _backdrop(rng)
        rgb = render_backdrop(b, size, size)
        paint(rgb, np.zeros((size, size), np.int32), obj if v == 0 else obj.redrawn(rng), 1)
        out.append(np.asarray(px(_finish(rgb, rng, b.noise))))
    return out


def _class_pool(args: tuple[int, int, int]) -> np.ndarray:
    from vitlib.data.synthetic.common import _rng

    k, per_class, seed = args
    return np.stack(
        [np.stack(views(_rng(seed, "imagenet", 7, k, j), k, 96, 2)) for j in range(per_class)]
    )


def _class_images(args: tuple[str, int, int, int]) -> None:
    """Class ``k`` of ``generate_imagefolder(seed, per_class, 96)``, byte for byte."""
    from pathlib import Path

    from vitlib.data.synthetic.common import _rng, _save_png
    from vitlib.data.synthetic.imagenet import imagenet_sample
    from vitlib.data.synthetic.shapes import CLASSES

    out, k, per_class, seed = args
    for i in range(per_class):
        im, _, _ = imagenet_sample(_rng(seed, "imagenet", 0, k, i), k, 96)
        _save_png(im, Path(out) / CLASSES[k] / f"{i:04d}.png")


def load_eval(root: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from PIL import Image

    from vitlib.data.views import center_pixels

    px, out = center_pixels(ARCH["img_size"]), {}
    for split in ("train", "val"):
        xs, ys = [], []
        for k, c in enumerate(sorted(os.listdir(f"{root}/{split}"))):
            for f in sorted(os.listdir(f"{root}/{split}/{c}")):
                xs.append(np.asarray(px(Image.open(f"{root}/{split}/{c}/{f}").convert("RGB"))))
                ys.append(k)
        out[split] = (np.stack(xs), np.array(ys))
    return out


def knn(net: Any, ev: dict[str, tuple[np.ndarray, np.ndarray]], dev: Any) -> list[float]:
    """The demo's k-NN top-1 (k = 20, T = 0.07, cosine) of the CLS token of every block."""
    import torch
    import torch.nn.functional as F

    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    was = net.training
    net.eval()
    feats = {}
    with torch.no_grad():
        for split, (x, _) in ev.items():
            t = (torch.from_numpy(x).to(dev).permute(0, 3, 1, 2).float() / 255 - mean) / std
            h = net.norm_pre(net._pos_embed(net.patch_embed(t)))
            per = []
            for blk in net.blocks:
                h = blk(h)
                per.append(F.normalize(h[:, 0].float(), dim=-1))
            feats[split] = per
        ytr = torch.from_numpy(ev["train"][1]).to(dev)
        res = []
        for a, b in zip(feats["train"], feats["val"]):
            v, i = (b @ a.T).topk(20, dim=1)
            votes = torch.zeros(len(b), 10, device=dev).scatter_add_(1, ytr[i], (v / 0.07).exp())
            hit = votes.argmax(1).cpu().numpy() == ev["val"][1]
            res.append(round(float(hit.mean() * 100), 1))
    net.train(was)
    return res


def run_variant(name: str, a: argparse.Namespace) -> None:
    import timm
    import torch
    import torch.nn.functional as F

    from vitlib.minizoo.common import Batch, cosine_lr
    from vitlib.minizoo.dino import Dino
    from vitlib.minizoo.train import METHODS, recipe_for

    method, opts, extra = VARIANTS[name]
    dev = torch.device(a.device)
    torch.set_num_threads(a.threads)
    base = {"dino": 5e-4, "mae": 1.5e-3}[method] * a.lr_mult
    recipe = recipe_for(method, {**opts, "batch_size": a.bs, "epochs": 1, "lr": base})
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    pool = torch.from_numpy(np.load(a.pool)["X"]).permute(0, 1, 4, 2, 3).contiguous().to(dev)
    ev = load_eval(a.eval_root)
    pairs, ramp = extra.get("pairs", 0), extra.get("ramp", 0.0)
    pairs_p, blur = extra.get("pairs_p", 1.0), extra.get("blur", 0)
    mean_t = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std_t = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    progress = {"frac": 0.0}

    def gblur(x: torch.Tensor, p: float) -> torch.Tensor:
        """DINO's Gaussian blur (sigma 0.1-2 px) with probability ``p`` per image."""
        n = x.shape[0]
        sig = torch.empty(n).uniform_(0.1, 2.0, generator=g)
        sig = torch.where(torch.rand(n, generator=g) < p, sig, torch.full_like(sig, 1e-3))
        r = torch.arange(-4, 5, dtype=torch.float32)
        k1 = torch.exp(-(r[None] ** 2) / (2 * sig[:, None] ** 2))
        k1 = (k1 / k1.sum(1, keepdim=True)).repeat_interleave(3, 0).to(x.device)
        y = F.pad(x.reshape(1, n * 3, *x.shape[-2:]), (4, 4, 4, 4), mode="reflect")
        y = F.conv2d(y, k1[:, None, None, :], groups=n * 3)
        return F.conv2d(y, k1[:, None, :, None], groups=n * 3).reshape_as(x)

    def solarize(x: torch.Tensor, p: float) -> torch.Tensor:
        on = (torch.rand(x.shape[0], generator=g) < p).to(x.device).view(-1, 1, 1, 1)
        return torch.where(on & (x >= 0.5), 1 - x, x)

    class PairDino(Dino):
        """The library's DINO on (render, redrawn render) pairs: its own crops drawn here."""

        def crops(self, batch: Batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
            r, x0, x1 = self.r, batch.x[:, 0], batch.x[:, 1]
            if ramp or pairs_p < 1:
                share = pairs_p * (min(1.0, progress["frac"] / ramp) if ramp else 1.0)
                pick = (torch.rand(len(x0), generator=g) < share).to(dev).view(-1, 1, 1, 1)
                x1 = torch.where(pick, x1, x0)
            size = x0.shape[-1]
            glob = [self._view(v, size, (r.global_scale, 1.0), g) for v in (x0, x1)]
            loc = [
                self._view(x1 if pairs == 2 and j % 2 else x0, size // 2, (0.1, r.local_scale), g)
                for j in range(r.local_crops)
            ]
            if blur:
                glob = [gblur(glob[0], 1.0), solarize(gblur(glob[1], 0.1), 0.2)]
                loc = [gblur(v, 0.5) for v in loc]
            return [batch.normalise(v) for v in glob], [batch.normalise(v) for v in loc]

    def backbone(**e: Any) -> torch.nn.Module:
        return timm.create_model("vit_small_patch16_224", pretrained=False, **ARCH, **e).to(dev)

    m = (PairDino if method == "dino" else METHODS[method])(recipe, backbone, 10, dev)
    params = m.parameters()
    base_lr = recipe.lr * a.bs / 64
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=recipe.weight_decay)
    n, spe = len(pool), len(pool) // a.bs
    scored = m.teacher if method == "dino" else m.net  # type: ignore[attr-defined]
    log = open(f"{a.outdir}/{name}.log", "w")

    def say(*s: Any) -> None:
        print(name, *s, file=log, flush=True)

    say("init knn", knn(scored, ev, dev))
    t0, step, total, trace = time.time(), 0, 0, []
    deadline = t0 + a.budget
    loss = torch.zeros(())
    while not total or step < total:
        order = torch.randperm(n, generator=g)
        for b in range(spe):
            if total and step >= total:
                break
            idx = order[b * a.bs : (b + 1) * a.bs]
            xb = pool[idx.to(dev)].float() / 255
            if not pairs:
                xb = torch.stack([xb[:, 0], xb[:, 0]], 1)
            if method == "mae":
                xb = xb[:, 0]
            horizon = total or 10**9
            progress["frac"] = step / horizon
            for pg in opt.param_groups:
                pg["lr"] = cosine_lr(step, horizon, base_lr, 300)
            m.train()
            zeros = torch.zeros(len(idx), dtype=torch.long, device=dev)
            loss = m.loss(Batch(xb, zeros, idx, g, lambda x: (x - mean_t) / std_t))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            m.after_backward(step, spe)
            torch.nn.utils.clip_grad_norm_(params, recipe.clip_grad)
            opt.step()
            m.after_step(step, horizon)
            step += 1
            if step == 40:  # calibrate the step count to the budget
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                dt = (time.time() - t0) / 40
                total = int((deadline - time.time() - 25) / (dt * 1.08)) + 40
                say(f"step {dt * 1000:.1f} ms -> {total} steps = {total / spe:.1f} epochs")
            if total and step % max(1, total // 6) == 0:
                kn = knn(scored, ev, dev)
                trace.append((step, round(loss.item(), 4), kn))
                say(step, f"loss {loss.item():.4f}", f"{time.time() - t0:.0f}s", "knn", kn)
    kn = knn(scored, ev, dev)
    say("final", step, f"loss {loss.item():.4f}", "knn", kn, "epochs", round(total / spe, 2))
    torch.save(m.checkpoint(), f"{a.outdir}/{name}.pth")
    summary = {"name": name, "steps": total, "epochs": total / spe, "bs": a.bs, "knn": kn}
    with open(f"{a.outdir}/{name}.json", "w") as f:
        json.dump({**summary, "trace": trace}, f)


def run_train_model(name: str, options: str, a: argparse.Namespace) -> None:
    """The preset's path: :func:`train_model` (MAE) on ``zoo_world``, then the k-NN."""
    import timm
    import torch

    from vitlib.data.manifest import read_imagefolder
    from vitlib.minizoo.train import train_model

    torch.set_num_threads(2)
    man = read_imagefolder(f"{a.outdir}/zoo_world/imagenet/train", dataset="zoo_world")
    out = f"{a.outdir}/{name}.pth"
    s = train_model(
        "mae",
        man,
        arch="vit_small_patch16_224",
        arch_kwargs=ARCH,
        out=out,
        recipe=json.loads(options),
        log_path=f"{a.outdir}/{name}.loss.tsv",
        device=a.device,
        progress=False,
    )
    net = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **ARCH)
    ck = torch.load(out, map_location="cpu")["model"]
    net.load_state_dict({k: v for k, v in ck.items() if not k.startswith(("decoder", "mask"))})
    kn = knn(net.to(a.device), load_eval(a.eval_root), torch.device(a.device))
    with open(f"{a.outdir}/{name}.log", "w") as f:
        print(name, "final", json.dumps(s), "knn", kn, "options", options, file=f)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default="", help="comma-separated names of VARIANTS")
    p.add_argument("--tm", action="append", default=[], help="name=JSON recipe (train_model)")
    p.add_argument("--budget", type=float, default=420, help="seconds per variant")
    p.add_argument("--bs", type=int, default=256)
    p.add_argument("--lr-mult", type=float, default=0.5, help="times the recipe's lr")
    p.add_argument("--per-class", type=int, default=1000)
    p.add_argument("--device", default="cuda")
    p.add_argument("--threads", type=int, default=2, help="torch threads per variant")
    p.add_argument("--outdir", default="/tmp/minizoo_sweep")
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--run-tm", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.pool, a.eval_root = f"{a.outdir}/pool.npz", f"{a.outdir}/eval/imagenet"
    if a.run:
        run_variant(a.run, a)
        return 0
    if a.run_tm:
        name, options = a.run_tm.split("=", 1)
        run_train_model(name, options, a)
        return 0
    os.makedirs(a.outdir, exist_ok=True)
    t = time.time()
    from vitlib.data.synthetic import generate

    generate(os.path.dirname(a.eval_root), size="demo", seed=0, parts=["imagenet"])
    procs = min(16, os.cpu_count() or 1)
    with Pool(procs) as pool:
        parts = pool.map(_class_pool, [(k, a.per_class, 1) for k in range(10)])
        np.savez(a.pool, X=np.concatenate(parts))
        if a.tm:
            zoo = f"{a.outdir}/zoo_world/imagenet/train"
            pool.map(_class_images, [(zoo, k, a.per_class, 1) for k in range(10)])
    print(f"data {time.time() - t:.0f}s", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    common = ["--budget", str(a.budget), "--bs", str(a.bs), "--lr-mult", str(a.lr_mult)]
    common += ["--threads", str(a.threads)]
    common += ["--device", a.device, "--outdir", a.outdir, "--per-class", str(a.per_class)]
    jobs = [["--run", v] for v in a.variants.split(",") if v] + [["--run-tm", t] for t in a.tm]
    running = [subprocess.Popen([sys.executable, __file__, *common, *job], env=env) for job in jobs]
    for r in running:
        r.wait()
    for job in jobs:
        name = job[1].split("=", 1)[0]
        try:
            with open(f"{a.outdir}/{name}.log") as f:
                print(f.read().strip().splitlines()[-1])
        except OSError as e:
            print(name, "failed:", e)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
