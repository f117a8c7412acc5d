"""Train a small ViT by one of the paper's kinds of supervision — one module per method:

``supervised``  explicit: cross-entropy on the CLS token (:mod:`~vitlib.minizoo.supervised`)
``clip``        image–text contrastive on the world's captions (:mod:`~vitlib.minizoo.clip`)
``dino``        self-distillation with an EMA teacher, multi-crop, centring
                (:mod:`~vitlib.minizoo.dino`)
``mae``         masked reconstruction with a light decoder (:mod:`~vitlib.minizoo.mae`)

The backbone is ``timm.create_model(arch, **arch_kwargs)``, exactly what the zoo builds, and
each checkpoint is written in its family's upstream layout so that it loads through the zoo's
own converters.  A method's options are its recipe dataclass (:func:`recipe_for`: an unknown
option is an error).  Images are decoded once into memory and augmented on tensors in
batches.  Deterministic by seed on a given machine; the checkpoint appears atomically at the
end.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from vitlib.data.manifest import Manifest
from vitlib.data.views import center_pixels, load_rgb
from vitlib.minizoo.clip import Clip
from vitlib.minizoo.common import Batch, Method, Recipe, cosine_lr, make_recipe
from vitlib.minizoo.dino import Dino
from vitlib.minizoo.mae import Mae
from vitlib.minizoo.supervised import Supervised

log = logging.getLogger(__name__)
#: The training methods by name.
METHODS: dict[str, type[Method]] = {m.name: m for m in (Supervised, Clip, Dino, Mae)}


def recipe_for(method: str, options: Mapping[str, Any], where: str = "train") -> Recipe:
    """The recipe of ``method`` from ``options`` (unknown keys and bad values refused)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    return make_recipe(METHODS[method].recipe_cls, options, where)


def load_images(manifest: Manifest, size: int) -> torch.Tensor:
    """Every image of ``manifest`` as ``uint8 [N, 3, size, size]`` (short side resize +
    centre crop, the ``center`` view's pixels)."""
    px = center_pixels(size)
    arr = np.stack(
        [np.asarray(px(load_rgb(manifest.abspath(it))), dtype=np.uint8) for it in manifest.items]
    )
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _to_cpu(obj: Any) -> Any:
    """A checkpoint with every tensor in host memory (loadable without a GPU)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_captions(manifest: Manifest, path: str | os.PathLike | None = None) -> torch.Tensor:
    """Token ids ``[N, T]`` of the caption of every image of ``manifest``, read from the
    world's caption file (``captions_<split>.tsv`` beside the class folders, or ``path``)."""
    from vitlib.data.synthetic.captions import tokenise

    root = Path(manifest.root)
    p = Path(path) if path is not None else root.parent / f"captions_{root.name}.tsv"
    if not p.is_file():
        raise FileNotFoundError(
            f"{p}: no caption file for the images of {root} (CLIP-style training reads the"
            " captions the synthetic world writes beside its class folders)"
        )
    caps: dict[str, str] = {}
    with open(p, newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            caps[row[0]] = row[1]
    missing = [it.path for it in manifest.items if it.path not in caps]
    if missing:
        raise ValueError(f"{p}: no caption for {len(missing)} images, e.g. {missing[0]!r}")
    return torch.from_numpy(tokenise([caps[it.path] for it in manifest.items]))


def train_model(
    method: str,
    manifest: Manifest,
    *,
    arch: str,
    arch_kwargs: Mapping[str, Any],
    out: str | os.PathLike,
    recipe: Recipe | Mapping[str, Any] | None = None,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    log_path: str | os.PathLike | None = None,
    captions: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``arch`` by ``method`` with ``recipe`` (a recipe or its options) on the images of
    ``manifest``; write the checkpoint to ``out`` and the loss of every step to
    ``log_path`` (TSV); return a summary.  ``device``: ``cpu``, ``cuda[:i]`` or ``auto``
    (the images stay in host memory as uint8; each batch moves to the device; the random
    draws come from one CPU generator, so a run is reproducible per device)."""
    from vitlib.extract import resolve_device

    dev = resolve_device(device)
    if not isinstance(recipe, Recipe):
        recipe = recipe_for(method, recipe or {})
    elif method not in METHODS or not isinstance(recipe, METHODS[method].recipe_cls):
        raise ValueError(f"recipe {type(recipe).__name__} does not fit method {method!r}")
    cls = METHODS[method]
    t0 = time.perf_counter()
    torch.manual_seed(recipe.seed)
    g = torch.Generator().manual_seed(recipe.seed)
    kw = dict(arch_kwargs)
    size = int(kw.get("img_size", 224))
    images = load_images(manifest, size)
    labels = torch.tensor(manifest.labels)
    tokens = load_captions(manifest, captions) if cls.needs_captions else None
    mean_t = torch.tensor(mean, device=dev).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=dev).view(1, 3, 1, 1)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return (x - mean_t) / std_t

    def backbone(**extra: Any) -> torch.nn.Module:
        return timm.create_model(arch, pretrained=False, **{**kw, **extra}).to(dev)

    m = cls(recipe, backbone, int(labels.max()) + 1, dev)
    params = m.parameters()
    bs = recipe.batch_size
    base_lr = recipe.lr * bs / 64
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=recipe.weight_decay)
    n = len(images)
    steps_per_epoch = max(1, n // bs)
    total = recipe.epochs * steps_per_epoch
    warmup = min(total // 5, round(steps_per_epoch * recipe.warmup_epochs)) or 1
    rows: list[tuple[int, int, float, float, float]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"train {method}", unit="step", mininterval=2.0)
    step = 0
    for epoch in range(recipe.epochs):
        order = torch.randperm(n, generator=g)
        for b in range(steps_per_epoch):
            idx = order[b * bs : (b + 1) * bs]
            cur = cosine_lr(step, total, base_lr, warmup)
            for pg in opt.param_groups:
                pg["lr"] = cur
            m.train()
            batch = Batch(
                images[idx].to(dev, non_blocking=True).float() / 255,
                labels[idx].to(dev),
                idx,
                g,
                normalise,
                None if tokens is None else tokens[idx].to(dev),
            )
            loss = m.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            m.after_backward(step, steps_per_epoch)
            if recipe.clip_grad:
                torch.nn.utils.clip_grad_norm_(params, recipe.clip_grad)
            opt.step()
            m.after_step(step, total)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{method}: loss is {loss.item()} at step {step}")
            rows.append((epoch, step, loss.item(), cur, time.perf_counter() - t0))
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.3f}")
        log.info(
            "%s epoch %d: mean loss %.4f",
            method,
            epoch,
            np.mean([r[2] for r in rows if r[0] == epoch]),
        )
    if bar is not None:
        bar.close()
    if log_path is not None:
        lp = Path(log_path)
        lp.parent.mkdir(parents=True, exist_ok=True)
        tmp = lp.with_name(f".{lp.name}.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t")
            w.writerow(["epoch", "step", "loss", "lr", "seconds"])
            w.writerows(rows)
        os.replace(tmp, lp)
    _atomic_save(_to_cpu(m.checkpoint()), Path(out))
    first = np.mean([r[2] for r in rows if r[0] == 0])
    last = np.mean([r[2] for r in rows if r[0] == recipe.epochs - 1])
    return {
        "method": method,
        "epochs": recipe.epochs,
        "steps": total,
        "n_images": n,
        "first_epoch_loss": float(first),
        "last_epoch_loss": float(last),
        "seconds": round(time.perf_counter() - t0, 2),
    }
