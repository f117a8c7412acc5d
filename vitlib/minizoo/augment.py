"""Batched tensor augmentations (no per-image Python work): random resized crops and flips
as one ``affine_grid``/``grid_sample`` call, colour jitter by broadcasting."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    g: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> torch.Tensor:
    """A crop of each image covering ``scale`` of its area at aspect ``ratio``, resized to
    ``size``² (bilinear), mirrored with probability ½ — ``[B, C, H, W]`` float in, out."""
    B = x.shape[0]
    area = torch.empty(B).uniform_(*scale, generator=g)
    logr = torch.empty(B).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    r = torch.exp(logr)
    sw = torch.sqrt(area * r).clamp(max=1.0)  # fraction of the width
    sh = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(B, generator=g) * 2 - 1) * (1 - sw)
    cy = (torch.rand(B, generator=g) * 2 - 1) * (1 - sh)
    sx = sw * torch.where(torch.rand(B, generator=g) < 0.5, -1.0, 1.0) if flip else sw
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx, cx
    theta[:, 1, 1], theta[:, 1, 2] = sh, cy
    grid = F.affine_grid(theta, [B, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter(
    x: torch.Tensor, g: torch.Generator, strength: float = 0.4, p_grey: float = 0.2
) -> torch.Tensor:
    """Per-image brightness, contrast and saturation factors in ``1 ± strength`` and random
    greyscale, on ``[B, 3, H, W]`` images in [0, 1]."""
    B = x.shape[0]

    def factor() -> torch.Tensor:
        return 1 + (torch.rand(B, 1, 1, 1, generator=g) * 2 - 1) * strength

    x = x * factor()
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * factor() + mean
    grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = (x - grey) * factor() + grey
    to_grey = torch.rand(B, 1, 1, 1, generator=g) < p_grey
    x = torch.where(to_grey, grey.expand_as(x), x)
    return x.clamp(0, 1)
