"""Contrastive self-distillation (DINO): a student and an EMA teacher see different crops of
the same image (2 global + local crops); the student matches the teacher's centred and
sharpened output distribution."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitlib.minizoo.augment import colour_jitter, random_resized_crop
from vitlib.minizoo.common import Batch, Method, Recipe, embed_dim


@dataclass(frozen=True)
class DinoRecipe(Recipe):
    lr: float = 5e-4
    out_dim: int = 256
    local_crops: int = 4
    global_scale: float = 0.4  # global crops cover [global_scale, 1] of the image
    local_scale: float = 0.4  # local crops cover [0.1, local_scale]
    jitter: float = 0.4
    hue: float = 0.5  # hue rotation range (fraction of a turn): colour is a nuisance
    grey: float = 0.2
    momentum: float = 0.99  # teacher EMA at the start (cosine to 1)
    teacher_temp: float = 0.04
    student_temp: float = 0.1
    centering: str = "sinkhorn"  # "sinkhorn" (DINOv2's Sinkhorn-Knopp) or "mean" (DINO's)
    center_momentum: float = 0.9  # the "mean" centring's EMA
    sinkhorn_iterations: int = 3
    freeze_last_layer: float = 1.0  # epochs during which the head's last layer is frozen
    koleo: float = 0.0  # weight of DINOv2's KoLeo term on the global crops (DINOv2: 0.1)
    koleo_on: str = "backbone"  # "backbone": the CLS (DINOv2); "bottleneck": the head MLP output

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.centering not in ("sinkhorn", "mean"):
            raise ValueError(f"centering must be 'sinkhorn' or 'mean', not {self.centering!r}")
        if self.koleo_on not in ("backbone", "bottleneck"):
            raise ValueError(f"koleo_on must be 'backbone' or 'bottleneck', not {self.koleo_on!r}")


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
        g = self.last_layer.parametrizations.weight.original0
        g.data.fill_(1.0)
        g.requires_grad_(False)  # DINO's norm_last_layer: unit-norm prototypes, for stability

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bottleneck features and the prototype logits."""
        z = self.mlp(x)
        return z, self.last_layer(F.normalize(z, dim=-1))


def sinkhorn_knopp(logits: torch.Tensor, temp: float, iterations: int = 3) -> torch.Tensor:
    """DINOv2's Sinkhorn-Knopp centring: teacher targets ``[B, K]`` whose rows sum to 1 and
    whose prototypes are used equally over the batch (no collapse onto one prototype)."""
    q = torch.exp((logits - logits.max()) / temp).T  # [K, B]
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(1, keepdim=True) / k
        q = q / q.sum(0, keepdim=True) / b
    return (q * b).T


def koleo(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """DINOv2's Kozachenko-Leonenko term on ``[B, D]`` features: minus the mean log distance
    of each L2-normalised row to its nearest other row (low when the batch is spread out;
    it keeps the backbone from mapping every image to one point)."""
    x = F.normalize(x.float(), dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.T
        dots.fill_diagonal_(-2.0)
        nn_idx = dots.argmax(1)
    return -torch.log(F.pairwise_distance(x, x[nn_idx], eps=eps) + eps).mean()


class Dino(Method):
    name = "dino"
    recipe_cls = DinoRecipe
    checkpoint_format = "dino"

    def build(self, backbone: Callable[..., nn.Module], n_classes: int) -> None:
        recipe = self.recipe
        assert isinstance(recipe, DinoRecipe)
        self.r = recipe
        self.net = backbone(num_classes=0, dynamic_img_size=True)
        self.teacher = backbone(num_classes=0, dynamic_img_size=True)
        dim = embed_dim(self.net)
        self.head = DinoHead(dim, out_dim=recipe.out_dim).to(self.device)
        self.t_head = DinoHead(dim, out_dim=recipe.out_dim).to(self.device)
        self.teacher.load_state_dict(self.net.state_dict())
        self.t_head.load_state_dict(self.head.state_dict())
        for p in (*self.teacher.parameters(), *self.t_head.parameters()):
            p.requires_grad_(False)
        self.center = torch.zeros(1, recipe.out_dim, device=self.device)

    def parameters(self) -> list[nn.Parameter]:
        return [*self.net.parameters(), *self.head.parameters()]

    def train(self) -> None:
        self.net.train()
        self.head.train()

    def _view(self, x: torch.Tensor, size: int, scale: tuple[float, float], g: torch.Generator):
        r = self.r
        v = random_resized_crop(x, size, scale, g)
        return colour_jitter(v, g, r.jitter, r.grey, hue=r.hue)

    def crops(self, batch: Batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The normalised global (2) and local crops of a batch (a variant that draws its
        views otherwise overrides this alone)."""
        r, x, g = self.r, batch.x, batch.g
        size = x.shape[-1]
        glob = [batch.normalise(self._view(x, size, (r.global_scale, 1.0), g)) for _ in range(2)]
        loc = [
            batch.normalise(self._view(x, size // 2, (0.1, r.local_scale), g))
            for _ in range(r.local_crops)
        ]
        return glob, loc

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.distill(*self.crops(batch))

    def distill(self, glob: list[torch.Tensor], loc: list[torch.Tensor]) -> torch.Tensor:
        """The student's cross-entropy against the teacher's centred, sharpened targets of
        the other global crops; updates the centre."""
        r = self.r
        with torch.no_grad():
            t_out = [self.t_head(self.teacher(v)) for v in glob]
        s_feat = [self.net(v) for v in glob + loc]
        if r.koleo_on == "bottleneck":
            s_feat, s_out = map(list, zip(*(self.head.both(f) for f in s_feat)))
        else:
            s_out = [self.head(f) for f in s_feat]
        loss, terms = torch.zeros((), device=self.device), 0
        for i, t in enumerate(t_out):
            if r.centering == "sinkhorn":
                q = sinkhorn_knopp(t, r.teacher_temp, r.sinkhorn_iterations)
            else:
                q = F.softmax((t - self.center) / r.teacher_temp, -1)
            for j, s in enumerate(s_out):
                if j != i:
                    loss = loss - (q * F.log_softmax(s / r.student_temp, -1)).sum(-1).mean()
                    terms += 1
        with torch.no_grad():
            m = r.center_momentum
            self.center = m * self.center + (1 - m) * torch.cat(t_out).mean(0, keepdim=True)
        loss = loss / terms
        if r.koleo:  # DINOv2: on each global crop's student CLS tokens separately
            loss = loss + r.koleo * sum(koleo(f) for f in s_feat[: len(glob)])
        return loss

    def after_backward(self, step: int, steps_per_epoch: int) -> None:
        if step < self.r.freeze_last_layer * steps_per_epoch:  # DINO's freeze_last_layer
            for p in self.head.last_layer.parameters():
                p.grad = None

    def after_step(self, step: int, total: int) -> None:
        m = 1 - (1 - self.r.momentum) * (math.cos(math.pi * step / total) + 1) / 2
        with torch.no_grad():
            for ps, pt in zip(
                [*self.net.parameters(), *self.head.parameters()],
                [*self.teacher.parameters(), *self.t_head.parameters()],
            ):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)

    def checkpoint(self) -> Any:
        """DINO's training checkpoint layout, teacher only (the published backbones are the
        teacher's; the student is not needed to analyse or resume the analysis)."""
        return {
            "teacher": {
                **{f"backbone.{k}": v for k, v in self.teacher.state_dict().items()},
                **{f"head.{k}": v for k, v in self.t_head.state_dict().items()},
            },
        }
