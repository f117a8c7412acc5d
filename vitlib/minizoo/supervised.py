"""Explicit supervision (FS/timm): cross-entropy on the CLS token through a linear head."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitlib.minizoo.augment import colour_jitter, random_resized_crop
from vitlib.minizoo.common import Batch, Method, Recipe


@dataclass(frozen=True)
class SupervisedRecipe(Recipe):
    crop_scale: float = 0.35  # random-resized-crop area range [crop_scale, 1]
    jitter: float = 0.3
    grey: float = 0.1
    label_smoothing: float = 0.1


class Supervised(Method):
    name = "supervised"
    recipe_cls = SupervisedRecipe
    checkpoint_format = "timm"

    def build(self, backbone: Callable[..., nn.Module], n_classes: int) -> None:
        recipe = self.recipe
        assert isinstance(recipe, SupervisedRecipe)
        self.r = recipe
        self.net = backbone(num_classes=n_classes)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def train(self) -> None:
        self.net.train()

    def loss(self, batch: Batch) -> torch.Tensor:
        size = batch.x.shape[-1]
        v = random_resized_crop(batch.x, size, (self.r.crop_scale, 1.0), batch.g)
        v = colour_jitter(v, batch.g, self.r.jitter, self.r.grey)
        logits = self.net(batch.normalise(v))
        return F.cross_entropy(logits, batch.y, label_smoothing=self.r.label_smoothing)

    def checkpoint(self) -> Any:
        return self.net.state_dict()
