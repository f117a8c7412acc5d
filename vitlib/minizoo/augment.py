"""Batched tensor augmentations (no per-image Python work): random resized crops and flips
as one ``affine_grid``/``grid_sample`` call, colour jitter by broadcasting.  The random draws
come from a CPU generator (the same on every device) and move to the images' device."""

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
    grid = F.affine_grid(theta.to(x.device), [B, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


#: RGB → YIQ (NTSC); a hue rotation is a rotation of the (I, Q) plane.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def hue_rotate(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image of ``[B, 3, H, W]`` by ``turns[b]`` of a full turn (in
    YIQ space: luma kept, chroma rotated), one batched matrix product."""
    a = turns * 2 * math.pi
    c, s = torch.cos(a), torch.sin(a)
    rot = torch.zeros(len(a), 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = torch.linalg.inv(_YIQ) @ rot @ _YIQ  # [B, 3, 3]
    return torch.einsum("bij,bjhw->bihw", m.to(x.device), x)


def colour_jitter(
    x: torch.Tensor,
    g: torch.Generator,
    strength: float = 0.4,
    p_grey: float = 0.2,
    hue: float = 0.0,
) -> torch.Tensor:
    """Per-image brightness, contrast and saturation factors in ``1 ± strength``, a hue
    rotation of up to ``± hue`` turns and random greyscale, on ``[B, 3, H, W]`` images in
    [0, 1]."""
    B = x.shape[0]
    if hue:
        x = hue_rotate(x, (torch.rand(B, generator=g) * 2 - 1) * hue).clamp(0, 1)

    def factor() -> torch.Tensor:
        return (1 + (torch.rand(B, 1, 1, 1, generator=g) * 2 - 1) * strength).to(x.device)

    x = x * factor()
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * factor() + mean
    grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = (x - grey) * factor() + grey
    to_grey = (torch.rand(B, 1, 1, 1, generator=g) < p_grey).to(x.device)
    x = torch.where(to_grey, grey.expand_as(x), x)
    return x.clamp(0, 1)
