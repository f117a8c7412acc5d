"""Attention metrics on post-softmax attention probabilities (docs/protocols.md §2).

All functions accept a NumPy array or a torch tensor ``attn`` of shape ``[..., H, N, N]``
(rows = queries, columns = keys, rows summing to 1) whose first ``num_prefix_tokens`` tokens
are prefix tokens (CLS, registers) and whose remaining ``h·w`` tokens are the spatial grid in
row-major order; they return the same kind they were given.  The extraction calls the torch
forms on each batch inside the forward pass; the analyses and tests call them directly.

torch is imported where a function needs it: the table jobs that read only the grid geometry
(:func:`uniform_attention_distance`) or threshold stored NumPy maps
(:func:`mass_threshold_mask`) never load it (about 1.5 s of start-up and 0.8 s of teardown per
job on a 2-core machine).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

    ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)
else:
    ArrayT = TypeVar("ArrayT")


def _as_torch(x: ArrayT) -> tuple[torch.Tensor, bool]:
    import torch

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

    Rows whose whole mass sits on prefix keys stay all-zero (docs/protocols.md §2.3 step 2).
    Computed in float32 whatever the input dtype.
    """
    import torch

    s = attn[..., num_prefix_tokens:, num_prefix_tokens:].float()
    mass = s.sum(-1, keepdim=True)
    return torch.where(
        mass > 0, s / mass.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(s)
    )


def _grid_distances(h: int, w: int) -> np.ndarray:
    """``[h·w, h·w]`` float64 distances between the cells of an ``h × w`` grid placed on the
    unit square: cell (row r, column c) at ``(c, r) / (max(h, w) − 1)``."""
    scale = max(max(h, w) - 1, 1)
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pos = np.stack([c.ravel(), r.ravel()], -1) / scale
    return np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))


@lru_cache(maxsize=32)
def _distance_template(h: int, w: int, device: str) -> torch.Tensor:
    import torch

    return torch.from_numpy(_grid_distances(h, w)).float().to(device)


def distance_template(grid_hw: tuple[int, int], device: str | torch.device = "cpu") -> torch.Tensor:
    """``[h·w, h·w]`` Euclidean distances between grid cells on the unit square.

    Cell (row r, column c) sits at ``(c, r) / (max(h, w) − 1)``, i.e. docs/protocols.md §2.5's
    ``(c/(K−1), r/(K−1))`` for a square grid (max distance √2), isotropic otherwise.
    """
    return _distance_template(int(grid_hw[0]), int(grid_hw[1]), str(device))


def uniform_attention_distance(grid_hw: tuple[int, int]) -> float:
    """The mean attention distance (unit-square units) of uniform attention over the spatial
    tokens of an ``h × w`` grid: the mean of :func:`distance_template` — the reference a
    head's distance is read against (the paper's "global" end).

    >>> round(uniform_attention_distance((2, 2)), 6)  # (8 · 1 + 4 · √2) / 16
    0.853553
    """
    return float(_grid_distances(int(grid_hw[0]), int(grid_hw[1])).mean())


def mean_attention_distance(
    attn: ArrayT, grid_hw: tuple[int, int], num_prefix_tokens: int = 1
) -> ArrayT:
    """Average attention distance per head (docs/protocols.md §2.5).

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

    References
    ----------
    .. [1] A. Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image
       Recognition at Scale", ICLR 2021 (mean attention distance).
    .. [2] M. Raghu, T. Unterthiner, S. Kornblith, C. Zhang and A. Dosovitskiy, "Do Vision
       Transformers See Like Convolutional Neural Networks?", NeurIPS 2021.
    .. [3] M. Walmer, S. Suri, K. Gupta and A. Shrivastava, "Teaching Matters: Investigating
       the Role of Supervision in Vision Transformers", CVPR 2023, Sec. 4.3 (distances on
       the unit square).

    Examples
    --------
    One CLS token and a 2×2 grid.  Uniform attention (head 0) gives every query the mean of
    its distances 0, 1, 1 and √2 to the four cells, (2 + √2)/4; attending only to itself
    (head 1) gives 0:

    >>> import numpy as np
    >>> attn = np.stack([np.full((5, 5), 0.2), np.eye(5)])  # [H=2, N=5, N=5]
    >>> [round(float(d), 4) for d in mean_attention_distance(attn, (2, 2))]
    [0.8536, 0.0]
    """
    t, was_np = _as_torch(attn)
    _check(t, grid_hw, num_prefix_tokens)
    s = spatial_rows(t, num_prefix_tokens)
    d = distance_template(grid_hw, s.device)
    out = (s * d).sum(-1).mean(-1)
    return _back(out, was_np)


@lru_cache(maxsize=32)
def _aligned_index(h: int, w: int, device: str) -> torch.Tensor:
    import torch

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
    over all queries — the canvas of docs/protocols.md §2.3 step 4, built with one ``index_add``.
    """
    import torch

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
    """Aligned aggregated attention map (AAAM, docs/protocols.md §2.3), per-(image, query) mean.

    Returns ``[..., H, 2h−1, 2w−1]``: the average over spatial queries of each query's
    renormalised spatial map translated so the query sits at the centre ``(h−1, w−1)``.
    (The original code divides by batches × queries instead of images × queries; that
    faithful variant is the analysis setting ``aaam_normaliser``.)

    References
    ----------
    .. [1] M. Walmer, S. Suri, K. Gupta and A. Shrivastava, "Teaching Matters: Investigating
       the Role of Supervision in Vision Transformers", CVPR 2023, Sec. 4.2 and Fig. 3
       (aligned aggregated attention maps).

    Examples
    --------
    Uniform attention on a 2×2 grid: the key at offset (dr, dc) from a query exists for 4
    (centre), 2 (edges) or 1 (corners) of the 4 queries, each paying it 1/4, so the mean
    over queries is [[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16:

    >>> import numpy as np
    >>> m = aligned_aggregate(np.full((1, 5, 5), 0.2), (2, 2))  # [H=1, 3, 3]
    >>> (m[0] * 16).round().astype(int).tolist()
    [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
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
    ``1 − mass`` (DINO's thresholding, docs/protocols.md §2.8 step 3).  Returns a boolean mask of
    the same shape.

    References
    ----------
    .. [1] M. Caron, H. Touvron, I. Misra, H. Jégou, J. Mairal, P. Bojanowski and A. Joulin,
       "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021 (attention
       masks keeping 60 % of the mass).
    .. [2] M. Walmer, S. Suri, K. Gupta and A. Shrivastava, "Teaching Matters: Investigating
       the Role of Supervision in Vision Transformers", CVPR 2023, Sec. 4.4.

    Examples
    --------
    Of the mass 1 + 2 + 3 + 4 = 10, the two largest cells hold 7/10 ≥ 0.6 and the largest
    alone 4/10 < 0.6:

    >>> import numpy as np
    >>> mass_threshold_mask(np.array([1.0, 2.0, 3.0, 4.0]), mass=0.6).tolist()
    [False, False, True, True]
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    if isinstance(attention_map, np.ndarray):  # the saliency tables: no torch
        a = attention_map.astype(np.float32)
        a = a / np.maximum(a.sum(-1, keepdims=True), np.finfo(np.float32).tiny)
        order = np.argsort(a, axis=-1, kind="stable")
        vals = np.take_along_axis(a, order, -1)
        out = np.zeros(a.shape, dtype=bool)
        np.put_along_axis(out, order, np.cumsum(vals, -1) > (1.0 - mass), -1)
        return out
    import torch

    t, was_np = _as_torch(attention_map)
    a = t.float()
    a = a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    vals, order = torch.sort(a, dim=-1, stable=True)
    keep_sorted = torch.cumsum(vals, -1) > (1.0 - mass)
    keep = torch.zeros_like(keep_sorted)
    keep.scatter_(-1, order, keep_sorted)
    return _back(keep, was_np)
