"""Attention metrics on post-softmax attention probabilities (PROTOCOLS §2).

All functions accept a NumPy array or a torch tensor ``attn`` of shape ``[..., H, N, N]``
(rows = queries, columns = keys, rows summing to 1) whose first ``num_prefix_tokens`` tokens
are prefix tokens (CLS, registers) and whose remaining ``h·w`` tokens are the spatial grid in
row-major order; they return the same kind they were given.  The extraction calls the torch
forms on each batch inside the forward pass; the analyses and tests call them directly.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _as_torch(x: ArrayT) -> tuple[torch.Tensor, bool]:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)), True
    if isinstance(x, torch.Tensor):
        return x, False
    raise TypeError(f"expected a numpy array or torch tensor, got {type(x).__name__}")


def _back(x: torch.Tensor, was_numpy: bool):  # noqa: ANN202
    return x.cpu().numpy() if was_numpy else x


def _check(attn: torch.Tensor, grid_hw: tuple[int, int], num_prefix_tokens: int) -> None:
    h, w = grid_hw
    n = num_prefix_tokens + h * w
    if attn.ndim < 3 or attn.shape[-1] != n or attn.shape[-2] != n:
        raise ValueError(
            f"attn must be [..., H, N, N] with N = {num_prefix_tokens} + {h}*{w} = {n};"
            f" got shape {tuple(attn.shape)}"
        )


def spatial_rows(attn: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """Spatial queries × spatial keys, each row renormalised to sum 1.

    Rows whose whole mass sits on prefix keys stay all-zero (PROTOCOLS §2.3 step 2).
    Computed in float32 whatever the input dtype.
    """
    s = attn[..., num_prefix_tokens:, num_prefix_tokens:].float()
    mass = s.sum(-1, keepdim=True)
    return torch.where(
        mass > 0, s / mass.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(s)
    )


@lru_cache(maxsize=32)
def _distance_template(h: int, w: int, device: str) -> torch.Tensor:
    scale = max(max(h, w) - 1, 1)
    r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([c.flatten(), r.flatten()], -1).double() / scale
    return torch.cdist(pos, pos).float().to(device)


def distance_template(grid_hw: tuple[int, int], device: str | torch.device = "cpu") -> torch.Tensor:
    """``[h·w, h·w]`` Euclidean distances between grid cells on the unit square.

    Cell (row r, column c) sits at ``(c, r) / (max(h, w) − 1)``, i.e. PROTOCOLS §2.5's
    ``(c/(K−1), r/(K−1))`` for a square grid (max distance √2), isotropic otherwise.
    """
    return _distance_template(int(grid_hw[0]), int(grid_hw[1]), str(torch.device(device)))


def mean_attention_distance(
    attn: ArrayT, grid_hw: tuple[int, int], num_prefix_tokens: int = 1
) -> ArrayT:
    """Average attention distance per head (PROTOCOLS §2.5).

    Prefix tokens are dropped as queries and keys, each spatial row is renormalised, the
    expected query–key distance (unit-square units) is taken per query and averaged over
    the spatial queries.

    Parameters
    ----------
    attn : ``[..., H, N, N]`` attention probabilities.
    grid_hw : the spatial token grid ``(h, w)``; ``N = num_prefix_tokens + h·w``.
    num_prefix_tokens : CLS (+ register) tokens at the start of the sequence.

    Returns
    -------
    ``[..., H]`` float32 distances in ``[0, √2]``.
    """
    t, was_np = _as_torch(attn)
    _check(t, grid_hw, num_prefix_tokens)
    s = spatial_rows(t, num_prefix_tokens)
    d = distance_template(grid_hw, s.device)
    out = (s * d).sum(-1).mean(-1)
    return _back(out, was_np)


@lru_cache(maxsize=32)
def _aligned_index(h: int, w: int, device: str) -> torch.Tensor:
    r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    r, c = r.flatten(), c.flatten()
    dr = r[None, :] - r[:, None] + (h - 1)  # [query, key]
    dc = c[None, :] - c[:, None] + (w - 1)
    return (dr * (2 * w - 1) + dc).flatten().to(device)


def aligned_sum(spatial: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Sum of query-centred spatial maps.

    ``spatial`` is ``[..., Q, K]`` with Q = K = h·w (rows already renormalised); returns
    ``[..., 2h−1, 2w−1]`` where cell ``(h−1+dr, w−1+dc)`` holds the total attention that
    queries pay to the key ``dr`` rows below and ``dc`` columns right of themselves, summed
    over all queries — the canvas of PROTOCOLS §2.3 step 4, built with one ``index_add``.
    """
    h, w = int(grid_hw[0]), int(grid_hw[1])
    lead = spatial.shape[:-2]
    flat = spatial.reshape(-1, (h * w) ** 2)
    idx = _aligned_index(h, w, str(spatial.device))
    canvas = torch.zeros(
        flat.shape[0], (2 * h - 1) * (2 * w - 1), dtype=flat.dtype, device=flat.device
    )
    canvas.index_add_(1, idx, flat)
    return canvas.reshape(*lead, 2 * h - 1, 2 * w - 1)


def aligned_aggregate(attn: ArrayT, grid_hw: tuple[int, int], num_prefix_tokens: int = 1) -> ArrayT:
    """Aligned aggregated attention map (AAAM, PROTOCOLS §2.3), per-(image, query) mean.

    Returns ``[..., H, 2h−1, 2w−1]``: the average over spatial queries of each query's
    renormalised spatial map translated so the query sits at the centre ``(h−1, w−1)``.
    (The original code divides by batches × queries instead of images × queries; that
    faithful variant is the analysis setting ``aaam_normaliser``.)
    """
    t, was_np = _as_torch(attn)
    _check(t, grid_hw, num_prefix_tokens)
    s = spatial_rows(t, num_prefix_tokens)
    out = aligned_sum(s, grid_hw) / (grid_hw[0] * grid_hw[1])
    return _back(out, was_np)


def mass_threshold_mask(attention_map: ArrayT, mass: float = 0.6) -> ArrayT:
    """Smallest set of highest-attention cells holding at least ``mass`` of the total.

    ``attention_map`` is ``[..., M]`` (flattened spatial keys, any non-negative values; each
    map is renormalised first).  Cells are kept where the ascending cumulative sum exceeds
    ``1 − mass`` (DINO's thresholding, PROTOCOLS §2.8 step 3).  Returns a boolean mask of the
    same shape.
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    t, was_np = _as_torch(attention_map)
    a = t.float()
    a = a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    vals, order = torch.sort(a, dim=-1, stable=True)
    keep_sorted = torch.cumsum(vals, -1) > (1.0 - mass)
    keep = torch.zeros_like(keep_sorted)
    keep.scatter_(-1, order, keep_sorted)
    return _back(keep, was_np)
