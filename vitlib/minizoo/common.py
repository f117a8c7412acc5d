"""What every training method of the mini-zoo shares: the recipe base, the method interface,
the learning-rate schedule and the batch of a step.

A *recipe* is a frozen dataclass: the options common to every method (:class:`Recipe`) plus
the method's own (a subclass in the method's module).  :func:`make_recipe` builds it from a
config mapping and refuses an unknown key by name, so a typo in a training option is an
error before any job runs.  A *method* (:class:`Method`) owns its networks and turns a batch
into a loss; the loop in :mod:`vitlib.minizoo.train` is the same for all of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class Recipe:
    """Options of every method (the paper-style defaults of a small from-scratch run)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3  # at batch 64; scaled linearly with the batch size
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    clip_grad: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                raise ValueError(f"training option {f.name!r} must be >= 0, got {v!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("training options epochs, batch_size and lr must be positive")


def make_recipe(cls: type[Recipe], options: Mapping[str, Any], where: str = "train") -> Recipe:
    """``cls(**options)`` with unknown keys and wrong types refused by name."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(
            f"{where}: unknown training option(s) {', '.join(map(repr, unknown))} for"
            f" {cls.__name__}; known: {', '.join(sorted(fields))}"
        )
    clean: dict[str, Any] = {}
    for k, v in options.items():
        default = fields[k].default
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            v = float(v) if ok else v
        elif isinstance(default, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
        else:
            ok = True
        if not ok:
            raise ValueError(
                f"{where}.{k}: expected {type(default).__name__}, got {v!r} ({cls.__name__})"
            )
        clean[k] = v
    try:
        return cls(**clean)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


@dataclass
class Batch:
    """One step's images (float in [0, 1], ``[B, 3, H, W]``), labels, indices and captions."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor
    g: torch.Generator
    normalise: Callable[[torch.Tensor], torch.Tensor]
    captions: torch.Tensor | None = None  # [B, T] token ids (CLIP-style only)


class Method:
    """A training method: builds its networks, turns a batch into a loss, writes its
    checkpoint in its family's upstream layout."""

    name: ClassVar[str]
    recipe_cls: ClassVar[type[Recipe]]
    #: The zoo's checkpoint format of what :meth:`checkpoint` returns.
    checkpoint_format: ClassVar[str]
    needs_captions: ClassVar[bool] = False

    def __init__(
        self,
        recipe: Recipe,
        backbone: Callable[..., nn.Module],
        n_classes: int,
        device: torch.device | str = "cpu",
    ):
        """``backbone(**kwargs)`` builds the timm ViT on ``device``; :meth:`build` makes the
        method's networks (there too)."""
        if not isinstance(recipe, self.recipe_cls):
            raise TypeError(f"{self.name} needs a {self.recipe_cls.__name__}, got {recipe!r}")
        self.recipe = recipe
        self.device = torch.device(device)
        self.build(backbone, n_classes)

    def build(self, backbone: Callable[..., nn.Module], n_classes: int) -> None:
        raise NotImplementedError

    def parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def train(self) -> None:
        """Put the trained modules in training mode."""

    def loss(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def after_backward(self, step: int, steps_per_epoch: int) -> None:
        """Called between the backward pass and the optimiser step (gradient surgery)."""

    def after_step(self, step: int, total: int) -> None:
        """Called after each optimiser step (EMA updates)."""

    def checkpoint(self) -> Any:
        raise NotImplementedError


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then half a cosine to 0."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * t))


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``[B, C, H, W]`` → ``[B, (H/p)(W/p), p·p·C]`` (MAE's order: rows of patches, then
    pixels within a patch, channels last)."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, (H // p) * (W // p), p * p * C)


def embed_dim(net: nn.Module) -> int:
    """The token width of a timm ViT."""
    dim = net.embed_dim
    assert isinstance(dim, int)
    return dim
