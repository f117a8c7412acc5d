"""Reconstruction (MAE): most patches are masked, the encoder sees the rest, a light decoder
predicts the normalised pixels of the masked ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vitlib.minizoo.augment import random_resized_crop
from vitlib.minizoo.common import Batch, Method, Recipe, embed_dim, patchify


@dataclass(frozen=True)
class MaeRecipe(Recipe):
    lr: float = 1.5e-3
    mask_ratio: float = 0.75
    crop_scale: float = 0.5
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True


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
    patch: int
    n_patches: int

    @classmethod
    def of(cls, net: nn.Module) -> _VitParts:
        pos_embed, cls_token, blocks = net.pos_embed, net.cls_token, net.blocks
        npt, pe = net.num_prefix_tokens, net.get_submodule("patch_embed")
        assert isinstance(pos_embed, torch.Tensor) and isinstance(cls_token, torch.Tensor)
        assert isinstance(blocks, (nn.Sequential, nn.ModuleList)) and isinstance(npt, int)
        return cls(
            patch_embed=pe,
            pos_embed=pos_embed,
            cls_token=cls_token,
            blocks=blocks,
            norm=net.get_submodule("norm"),
            num_prefix_tokens=npt,
            patch=int(pe.patch_size[0]),  # type: ignore[index]
            n_patches=int(pe.num_patches),  # type: ignore[arg-type]
        )


class Mae(Method):
    name = "mae"
    recipe_cls = MaeRecipe
    checkpoint_format = "mae"

    def build(self, backbone: Callable[..., nn.Module], n_classes: int) -> None:
        recipe = self.recipe
        assert isinstance(recipe, MaeRecipe)
        self.r = recipe
        self.net = backbone(num_classes=0)
        self.vit = _VitParts.of(self.net)
        self.patch = self.vit.patch
        self.decoder = MaeDecoder(
            embed_dim(self.net),
            self.vit.n_patches,
            self.patch,
            recipe.decoder_dim,
            recipe.decoder_depth,
            recipe.decoder_heads,
        ).to(self.device)

    def parameters(self) -> list[nn.Parameter]:
        return [*self.net.parameters(), *self.decoder.parameters()]

    def train(self) -> None:
        self.net.train()
        self.decoder.train()

    def loss(self, batch: Batch) -> torch.Tensor:
        r, vit = self.r, self.vit
        size = batch.x.shape[-1]
        v = batch.normalise(random_resized_crop(batch.x, size, (r.crop_scale, 1.0), batch.g))
        npt, pos = vit.num_prefix_tokens, vit.pos_embed
        tok = vit.patch_embed(v) + pos[:, npt:]
        B, N, D = tok.shape
        keep = round(N * (1 - r.mask_ratio))
        shuffle = torch.rand(B, N, generator=batch.g).argsort(1).to(tok.device)
        restore = shuffle.argsort(1)
        vis = torch.gather(tok, 1, shuffle[:, :keep, None].expand(-1, -1, D))
        cls = (vit.cls_token + pos[:, :1]).expand(B, -1, -1)
        h = torch.cat([cls, vis], 1)
        for blk in vit.blocks:
            h = blk(h)
        pred = self.decoder(vit.norm(h), restore)
        target = patchify(v, self.patch)
        if r.norm_pix_loss:
            mu, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mu) / (var + 1e-6).sqrt()
        masked = torch.ones(B, N, device=tok.device)
        masked[:, :keep] = 0
        masked = torch.gather(masked, 1, restore)
        return (((pred - target) ** 2).mean(-1) * masked).sum() / masked.sum()

    def checkpoint(self) -> Any:
        """MAE's release layout: ``{"model": encoder + decoder_* + mask_token}``."""
        return {"model": {**self.net.state_dict(), **self.decoder.state_dict()}}
