"""Image–text contrastive learning (CLIP-style): the image tower and a small text tower map
an image and its caption to one space; a symmetric InfoNCE loss over the batch (open_clip's
``ClipLoss``) pulls matching pairs together.  The captions are the world's, written from each
image's generative factors (:mod:`vitlib.data.synthetic.captions`); the text tower is
open_clip's ``TextTransformer`` over the world's closed vocabulary.  Only the image tower is
analysed: the checkpoint is in open_clip's layout for a timm image tower (``visual.trunk.*``,
``visual.head.proj.weight``, ``text.*``, ``logit_scale``).
"""

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
class ClipRecipe(Recipe):
    lr: float = 1e-3
    embed_dim: int = 64  # the joint space
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 2
    crop_scale: float = 0.6  # mild crops: the caption describes the whole image
    init_temperature: float = 0.07
    # The probability that an image's caption is cut to its class word ("a star"): the
    # nuisance words (colours, texture) alone tell most captions of a batch apart, so without
    # it the image tower learns colour and little shape (like terse alt-texts on the web).
    caption_dropout: float = 0.5


class Clip(Method):
    name = "clip"
    recipe_cls = ClipRecipe
    checkpoint_format = "open_clip"
    needs_captions = True

    def build(self, backbone: Callable[..., nn.Module], n_classes: int) -> None:
        recipe = self.recipe
        assert isinstance(recipe, ClipRecipe)
        from open_clip.loss import ClipLoss
        from open_clip.transformer import TextTransformer

        from vitlib.data.synthetic.captions import CONTEXT, EOT

        self.r = recipe
        self.net = backbone(num_classes=0)
        self.proj = nn.Linear(embed_dim(self.net), recipe.embed_dim, bias=False).to(self.device)
        self.text = TextTransformer(
            context_length=CONTEXT,
            vocab_size=EOT + 1,
            width=recipe.text_width,
            heads=recipe.text_heads,
            layers=recipe.text_layers,
            output_dim=recipe.embed_dim,
            pool_type="argmax",  # the end-of-text token has the largest id, as in CLIP
        ).to(self.device)
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1 / recipe.init_temperature), device=self.device)
        )
        self.clip_loss = ClipLoss()

    def parameters(self) -> list[nn.Parameter]:
        return [
            *self.net.parameters(),
            *self.proj.parameters(),
            *self.text.parameters(),
            self.logit_scale,
        ]

    def train(self) -> None:
        self.net.train()
        self.text.train()

    def loss(self, batch: Batch) -> torch.Tensor:
        if batch.captions is None:
            raise ValueError("CLIP-style training needs captions")
        size = batch.x.shape[-1]
        v = random_resized_crop(batch.x, size, (self.r.crop_scale, 1.0), batch.g, flip=True)
        v = colour_jitter(v, batch.g, 0.1, 0.0)  # mild: the caption names the colours
        img = F.normalize(self.proj(self.net(batch.normalise(v))), dim=-1)
        caps = batch.captions
        if self.r.caption_dropout:
            from vitlib.data.synthetic.captions import class_only

            short = torch.from_numpy(class_only(caps.cpu().numpy())).to(caps.device)
            cut = torch.rand(len(caps), generator=batch.g) < self.r.caption_dropout
            caps = torch.where(cut[:, None].to(caps.device), short, caps)
        txt = F.normalize(self.text(caps), dim=-1)
        scale = self.logit_scale.clamp(max=math.log(100)).exp()
        loss: torch.Tensor = self.clip_loss(img, txt, scale)
        return loss

    def checkpoint(self) -> Any:
        return {
            "state_dict": {
                **{f"visual.trunk.{k}": v for k, v in self.net.state_dict().items()},
                "visual.head.proj.weight": self.proj.weight.detach().clone(),
                **{f"text.{k}": v for k, v in self.text.state_dict().items()},
                "logit_scale": self.logit_scale.detach().clone(),
            }
        }
