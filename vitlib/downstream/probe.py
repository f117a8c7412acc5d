"""Linear probes on stored features (paper Table 6, extended to every layer).

Training streams the features of one layer from the store in chunks (ImageNet-scale feature
sets never sit in memory whole): each epoch visits the chunks in a seeded random order and
shuffles inside each chunk.  The MAE protocol's non-affine BatchNorm in front of the linear
layer is an option.  SGD with momentum and a cosine schedule; seeded and deterministic on
the CPU; on a GPU when one is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn


def make_probe(dim: int, num_classes: int, batchnorm: bool) -> nn.Module:
    layers: list[nn.Module] = []
    if batchnorm:
        layers.append(nn.BatchNorm1d(dim, affine=False, eps=1e-6))
    lin = nn.Linear(dim, num_classes)
    nn.init.trunc_normal_(lin.weight, std=0.01)
    nn.init.zeros_(lin.bias)
    layers.append(lin)
    return nn.Sequential(*layers)


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
    """Train a linear probe; ``chunks()`` yields ``(features [n_i, D], labels [n_i])`` of the
    training set (called once per epoch, chunk order decided here)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = make_probe(dim, num_classes, batchnorm).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps = epochs * max(1, math.ceil(n_train / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    loss_fn = nn.CrossEntropyLoss()
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
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x[idx]), y[idx]).backward()
                opt.step()
                sched.step()
    return model.eval()


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
