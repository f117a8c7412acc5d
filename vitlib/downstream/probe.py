"""Linear probes on stored features (paper Table 6, extended to every layer).

Training streams the features of one layer from the store in chunks (ImageNet-scale feature
sets never sit in memory whole): each epoch visits the chunks in a seeded random order and
shuffles inside each chunk.  The MAE protocol's non-affine BatchNorm in front of the linear
layer is an option.  SGD with momentum and a cosine schedule; seeded and deterministic on
the CPU; on a GPU when one is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn


def train_probe(
    chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
    dim: int,
    num_classes: int,
    *,
    n_train: int,
    epochs: int = 20,
    lr: float = 0.1,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    batchnorm: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> nn.Module:
    """Train one linear probe (a grid of one, :func:`train_probe_grid`): optional
    non-affine BatchNorm, a linear layer initialised with ``trunc_normal(std=0.01)`` and zero
    bias, SGD with momentum 0.9 and weight decay on all parameters, a cosine schedule per
    step; ``chunks()`` yields ``(features [n_i, D], labels [n_i])`` of the training set
    (called once per epoch, chunk order decided here)."""
    grid, _ = train_probe_grid(
        chunks,
        dim,
        num_classes,
        n_train=n_train,
        lrs=[lr],
        weight_decays=[weight_decay],
        epochs=epochs,
        batch_size=batch_size,
        batchnorm=batchnorm,
        seed=seed,
        device=device,
    )
    return grid.head(0)


@torch.no_grad()
def evaluate_probe(
    model: nn.Module, x: np.ndarray, y: np.ndarray, device: str = "cpu", batch_size: int = 4096
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) of a probe."""
    y_t = torch.as_tensor(np.asarray(y, np.int64))
    correct1 = correct5 = 0
    for lo in range(0, len(y_t), batch_size):
        logits = model(
            torch.as_tensor(np.asarray(x[lo : lo + batch_size], np.float32), device=device)
        ).cpu()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        yy = y_t[lo : lo + batch_size]
        correct1 += int((top[:, 0] == yy).sum())
        correct5 += int((top == yy[:, None]).any(1).sum())
    return {"top1": 100.0 * correct1 / len(y_t), "top5": 100.0 * correct5 / len(y_t)}


class ProbeGrid(nn.Module):
    """``G`` linear heads over the same (optionally BatchNorm-ed) features, trained at once:
    logits ``[G, B, C]``.  Head ``g`` is a ``Linear`` initialised with ``trunc_normal(std=
    0.01)`` and zero bias, drawn from the RNG stream after the ``g`` earlier heads."""

    def __init__(self, dim: int, num_classes: int, heads: int, batchnorm: bool) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6) if batchnorm else nn.Identity()
        ws, bs = [], []
        for _ in range(heads):
            lin = nn.Linear(dim, num_classes)
            nn.init.trunc_normal_(lin.weight, std=0.01)
            ws.append(lin.weight.detach().T.clone())
            bs.append(torch.zeros(num_classes))
        self.weight = nn.Parameter(torch.stack(ws))  # [G, D, C]
        self.bias = nn.Parameter(torch.stack(bs))  # [G, C]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x)
        return torch.einsum("bd,gdc->gbc", z, self.weight) + self.bias[:, None, :]

    def head(self, g: int) -> nn.Module:
        """Head ``g`` as a plain probe (its BatchNorm statistics included)."""
        net = _Head(self.norm, self.weight[g].detach().T, self.bias[g].detach())
        return net.eval()


class _Head(nn.Module):
    def __init__(self, norm: nn.Module, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.norm, self.lin = norm, nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.lin.weight.copy_(w)
            self.lin.bias.copy_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.norm(x))


def train_probe_grid(
    chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
    dim: int,
    num_classes: int,
    *,
    n_train: int,
    lrs: Sequence[float],
    weight_decays: Sequence[float] = (0.0,),
    epochs: int = 20,
    batch_size: int = 256,
    batchnorm: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[ProbeGrid, list[tuple[float, float]]]:
    """Train one linear head per (learning rate, weight decay) at once, on the same batches
    (one pass over the features per epoch for the whole grid, as DINOv2's ``eval/linear.py``
    trains its learning rates together).  Each head follows the recipe of ``torch.optim.SGD``
    with momentum 0.9 and weight decay on all its parameters, under a per-step cosine
    schedule, with its own rate and decay (one vectorised SGD step over the heads; tested
    against ``torch.optim.SGD``). Returns the grid and
    the ``(lr, weight_decay)`` of every head, lr-major."""
    combos = [(float(lr), float(wd)) for lr in lrs for wd in weight_decays]
    if not combos:
        raise ValueError("the probe grid needs at least one learning rate and weight decay")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ProbeGrid(dim, num_classes, len(combos), batchnorm).to(device)
    lr = torch.tensor([c[0] for c in combos], device=device)
    wd = torch.tensor([c[1] for c in combos], device=device)
    params = [model.weight, model.bias]
    bufs: list[torch.Tensor | None] = [None, None]
    steps = epochs * max(1, math.ceil(n_train / batch_size))
    step = 0
    model.train()
    for _ in range(epochs):
        parts = list(chunks())
        for ci in torch.randperm(len(parts), generator=g).tolist():
            x, y = parts[ci]
            x = torch.as_tensor(np.asarray(x, np.float32), device=device)
            y = torch.as_tensor(np.asarray(y, np.int64), device=device)
            perm = torch.randperm(len(y), generator=g).to(device)
            for lo in range(0, len(y), batch_size):
                idx = perm[lo : lo + batch_size]
                if batchnorm and len(idx) < 2:
                    continue
                for p in params:
                    p.grad = None
                logits = model(x[idx])  # [G, B, C]
                yy = y[idx].expand(len(combos), -1)
                # the sum of the heads' mean losses: each head gets its own gradient
                loss = nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), yy.reshape(-1), reduction="none"
                )
                loss.view(len(combos), -1).mean(1).sum().backward()
                factor = 0.5 * (1 + math.cos(math.pi * step / steps))
                with torch.no_grad():
                    for i, p in enumerate(params):
                        shape = (-1,) + (1,) * (p.dim() - 1)
                        d = p.grad + wd.view(shape) * p  # type: ignore[operator]
                        buf = bufs[i]
                        bufs[i] = buf = d.clone() if buf is None else buf.mul_(0.9).add_(d)
                        p.sub_(lr.view(shape) * factor * buf)
                step += 1
    return model.eval(), combos


@torch.no_grad()
def grid_hits(
    model: ProbeGrid, x: np.ndarray, y: np.ndarray, device: str = "cpu", batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Per-item top-1 / top-5 hits of every head of a grid: two boolean arrays ``[G, n]``."""
    y_t = torch.as_tensor(np.asarray(y, np.int64))
    h1s, h5s = [], []
    for lo in range(0, len(y_t), batch_size):
        xb = torch.as_tensor(np.asarray(x[lo : lo + batch_size], np.float32), device=device)
        logits = model(xb).cpu()  # [G, B, C]
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        yy = y_t[lo : lo + batch_size]
        h1s.append(top[..., 0] == yy)
        h5s.append((top == yy[None, :, None]).any(-1))
    if not h1s:
        empty = np.zeros((model.weight.shape[0], 0), bool)
        return empty, empty.copy()
    return torch.cat(h1s, 1).numpy(), torch.cat(h5s, 1).numpy()


def grid_accuracy(
    model: ProbeGrid, x: np.ndarray, y: np.ndarray, device: str = "cpu", batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 / top-5 accuracy (%) of every head of a grid: two arrays ``[G]``."""
    h1, h5 = grid_hits(model, x, y, device, batch_size)
    n = max(1, h1.shape[1])
    return 100.0 * h1.sum(1) / n, 100.0 * h5.sum(1) / n
