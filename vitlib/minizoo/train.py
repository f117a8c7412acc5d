"""Train a small ViT by one of the paper's three kinds of supervision.

``supervised``  explicit: cross-entropy on the CLS token through a linear head (FS/timm)
``dino``        contrastive self-distillation: EMA teacher, multi-crop (2 global + local
                crops), centring and sharpening of a DINO head's output (DINO)
``mae``         reconstruction: 75 % of the patches masked, the encoder sees the rest, a
                light decoder predicts the normalised pixels of the masked ones (MAE)

The backbone is ``timm.create_model(arch, **arch_kwargs)``, exactly what the zoo builds, and
each checkpoint is written in its family's upstream layout (timm state dict; DINO
``{"teacher": {"backbone.*", "head.*"}, "student": ...}``; MAE ``{"model": encoder +
decoder_* + mask_token}``) so that it loads through the zoo's own converters.  Images are
decoded once into memory (the world is small) and augmented on tensors in batches.
Deterministic by seed on a given machine; the checkpoint appears atomically at the end.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from vitlib.data.manifest import Manifest
from vitlib.data.views import center_pixels, load_rgb
from vitlib.minizoo.augment import colour_jitter, random_resized_crop

log = logging.getLogger(__name__)
METHODS = ("supervised", "dino", "mae")
DEFAULT_LR = {"supervised": 1e-3, "dino": 5e-4, "mae": 1.5e-3}


def load_images(manifest: Manifest, size: int) -> torch.Tensor:
    """Every image of ``manifest`` as ``uint8 [N, 3, size, size]`` (short side resize +
    centre crop, the ``center`` view's pixels)."""
    px = center_pixels(size)
    arr = np.stack(
        [np.asarray(px(load_rgb(manifest.abspath(it))), dtype=np.uint8) for it in manifest.items]
    )
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * t))


class DinoHead(nn.Module):
    """MLP → bottleneck → L2-normalised → weight-normalised linear layer (DINO's head)."""

    def __init__(self, dim: int, out_dim: int = 256, hidden: int = 256, bottleneck: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        self.last_layer = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck, out_dim, bias=False)
        )
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class MaeDecoder(nn.Module):
    """MAE's light decoder: embed, mask tokens, learned positions, a few blocks, pixels."""

    def __init__(
        self,
        dim: int,
        n_patches: int,
        patch: int,
        dec_dim: int = 64,
        depth: int = 2,
        heads: int = 4,
    ):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.decoder_embed = nn.Linear(dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, n_patches + 1, dec_dim) * 0.02)
        self.decoder_blocks = nn.ModuleList(
            Block(dec_dim, heads, qkv_bias=True) for _ in range(depth)
        )
        self.decoder_norm = nn.LayerNorm(dec_dim)
        self.decoder_pred = nn.Linear(dec_dim, patch * patch * 3)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        B, n_vis = x.shape[0], x.shape[1] - 1
        n = restore.shape[1]
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(B, n - n_vis, -1)], 1)
        tokens = torch.gather(tokens, 1, restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], tokens], 1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, (H // p) * (W // p), p * p * C)


def _embed_dim(net: nn.Module) -> int:
    """The token width of a timm ViT."""
    dim = net.embed_dim
    assert isinstance(dim, int)
    return dim


@dataclass(frozen=True)
class _VitParts:
    """The pieces of a timm ViT that the MAE step runs by hand, typed (torch types every
    module attribute as ``Tensor | Module``)."""

    patch_embed: nn.Module
    pos_embed: torch.Tensor
    cls_token: torch.Tensor
    blocks: nn.Sequential | nn.ModuleList
    norm: nn.Module
    num_prefix_tokens: int

    @classmethod
    def of(cls, net: nn.Module) -> _VitParts:
        pos_embed, cls_token, blocks = net.pos_embed, net.cls_token, net.blocks
        num_prefix_tokens = net.num_prefix_tokens
        assert isinstance(pos_embed, torch.Tensor) and isinstance(cls_token, torch.Tensor)
        assert isinstance(blocks, (nn.Sequential, nn.ModuleList))
        assert isinstance(num_prefix_tokens, int)
        return cls(
            patch_embed=net.get_submodule("patch_embed"),
            pos_embed=pos_embed,
            cls_token=cls_token,
            blocks=blocks,
            norm=net.get_submodule("norm"),
            num_prefix_tokens=num_prefix_tokens,
        )


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_model(
    method: str,
    manifest: Manifest,
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    out: str | os.PathLike,
    epochs: int,
    batch_size: int = 64,
    lr: float | None = None,
    seed: int = 0,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    log_path: str | os.PathLike | None = None,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Train ``arch`` by ``method`` on the images of ``manifest``; write the checkpoint to
    ``out`` and the loss of every step to ``log_path`` (TSV); return a summary."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    kw = dict(arch_kwargs)
    size = int(kw.get("img_size", 224))
    images = load_images(manifest, size)
    labels = torch.tensor(manifest.labels)
    n_cls = int(labels.max()) + 1
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x - mean_t) / std_t

    if method == "supervised":
        net = timm.create_model(arch, pretrained=False, num_classes=n_cls, **kw)
        params = list(net.parameters())
    elif method == "dino":
        net = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True, **kw)
        dim = _embed_dim(net)
        head = DinoHead(dim, out_dim=int(options.get("out_dim", 256)))
        teacher = timm.create_model(
            arch, pretrained=False, num_classes=0, dynamic_img_size=True, **kw
        )
        t_head = DinoHead(dim, out_dim=int(options.get("out_dim", 256)))
        teacher.load_state_dict(net.state_dict())
        t_head.load_state_dict(head.state_dict())
        for p in (*teacher.parameters(), *t_head.parameters()):
            p.requires_grad_(False)
        center = torch.zeros(1, t_head.last_layer.out_features)
        params = [*net.parameters(), *head.parameters()]
    else:
        net = timm.create_model(arch, pretrained=False, num_classes=0, **kw)
        patch = int(kw.get("patch_size", 16))
        n_patches = (size // patch) ** 2
        vit = _VitParts.of(net)
        decoder = MaeDecoder(_embed_dim(net), n_patches, patch)
        params = [*net.parameters(), *decoder.parameters()]
    base_lr = float(lr or DEFAULT_LR[method]) * batch_size / 64
    opt = torch.optim.AdamW(
        params, lr=base_lr, weight_decay=float(options.get("weight_decay", 0.05))
    )
    n = len(images)
    steps_per_epoch = max(1, n // batch_size)
    total = epochs * steps_per_epoch
    warmup = min(total // 5, steps_per_epoch * 2)
    rows: list[tuple[int, int, float, float, float]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"train {method}", unit="step", mininterval=2.0)
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=g)
        for b in range(steps_per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            x = images[idx].float() / 255
            cur = cosine_lr(step, total, base_lr, warmup)
            for pg in opt.param_groups:
                pg["lr"] = cur
            net.train()
            if method == "supervised":
                v = random_resized_crop(x, size, (0.35, 1.0), g)
                v = colour_jitter(v, g, strength=0.2, p_grey=0.0)
                loss = F.cross_entropy(net(norm(v)), labels[idx], label_smoothing=0.1)
            elif method == "dino":
                n_local = int(options.get("local_crops", 2))
                jit = float(options.get("jitter", 0.4))
                grey = float(options.get("grey", 0.2))
                glob = [
                    norm(colour_jitter(random_resized_crop(x, size, (0.4, 1.0), g), g, jit, grey))
                    for _ in range(2)
                ]
                loc = [
                    norm(
                        colour_jitter(
                            random_resized_crop(x, size // 2, (0.1, 0.4), g), g, jit, grey
                        )
                    )
                    for _ in range(n_local)
                ]
                with torch.no_grad():
                    t_out = [t_head(teacher(v)) for v in glob]
                s_out = [head(net(v)) for v in glob + loc]
                t_temp = float(options.get("teacher_temp", 0.04))
                loss, terms = torch.zeros(()), 0
                for i, t in enumerate(t_out):
                    q = F.softmax((t - center) / t_temp, -1)
                    for j, s in enumerate(s_out):
                        if j == i:
                            continue
                        loss = loss - (q * F.log_softmax(s / 0.1, -1)).sum(-1).mean()
                        terms += 1
                loss = loss / terms
                with torch.no_grad():
                    center = 0.9 * center + 0.1 * torch.cat(t_out).mean(0, keepdim=True)
            else:
                v = norm(random_resized_crop(x, size, (0.5, 1.0), g))
                tok = vit.patch_embed(v) + vit.pos_embed[:, vit.num_prefix_tokens :]
                B, N, D = tok.shape
                keep = int(round(N * (1 - float(options.get("mask_ratio", 0.75)))))
                noise = torch.rand(B, N, generator=g)
                shuffle = noise.argsort(1)
                restore = shuffle.argsort(1)
                vis = torch.gather(tok, 1, shuffle[:, :keep, None].expand(-1, -1, D))
                cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(B, -1, -1)
                h = torch.cat([cls, vis], 1)
                for blk in vit.blocks:
                    h = blk(h)
                pred = decoder(vit.norm(h), restore)
                target = patchify(v, patch)
                target = (target - target.mean(-1, keepdim=True)) / (
                    target.var(-1, keepdim=True) + 1e-6
                ).sqrt()
                masked = torch.ones(B, N)
                masked[:, :keep] = 0
                masked = torch.gather(masked, 1, restore)
                loss = (((pred - target) ** 2).mean(-1) * masked).sum() / masked.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 3.0)
            opt.step()
            if method == "dino":
                m = (
                    1
                    - (1 - float(options.get("momentum", 0.99)))
                    * (math.cos(math.pi * step / total) + 1)
                    / 2
                )
                with torch.no_grad():
                    for ps, pt in zip(
                        [*net.parameters(), *head.parameters()],
                        [*teacher.parameters(), *t_head.parameters()],
                    ):
                        pt.mul_(m).add_(ps.detach(), alpha=1 - m)
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
    out = Path(out)
    if method == "supervised":
        ckpt: Any = net.state_dict()
    elif method == "dino":
        ckpt = {
            "teacher": {
                **{f"backbone.{k}": v for k, v in teacher.state_dict().items()},
                **{f"head.{k}": v for k, v in t_head.state_dict().items()},
            },
            "student": {
                **{f"backbone.{k}": v for k, v in net.state_dict().items()},
                **{f"head.{k}": v for k, v in head.state_dict().items()},
            },
            "epoch": epochs,
        }
    else:
        ckpt = {"model": {**net.state_dict(), **decoder.state_dict()}, "epoch": epochs}
    if log_path is not None:
        lp = Path(log_path)
        lp.parent.mkdir(parents=True, exist_ok=True)
        tmp = lp.with_name(f".{lp.name}.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t")
            w.writerow(["epoch", "step", "loss", "lr", "seconds"])
            w.writerows(rows)
        os.replace(tmp, lp)
    _atomic_save(ckpt, out)
    first = np.mean([r[2] for r in rows if r[0] == 0])
    last = np.mean([r[2] for r in rows if r[0] == epochs - 1])
    return {
        "method": method,
        "epochs": epochs,
        "steps": total,
        "n_images": n,
        "first_epoch_loss": float(first),
        "last_epoch_loss": float(last),
        "seconds": round(time.perf_counter() - t0, 2),
    }
