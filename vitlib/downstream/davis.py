"""DAVIS-2017 semi-supervised video object segmentation by label propagation, and J&F.

Propagation follows DINO's protocol (docs/protocols.md §5.3): context = first frame (its annotation)
plus the ``n_last`` most recent frames (their soft predictions); affinities
``exp(cos / T)`` restricted to a ``±radius`` token neighbourhood, top-k sources per target
token, normalised.  Everything is a matrix product over whole frames — no loops over tokens.

J and F follow the official ``davis2017-evaluation`` definitions: J = IoU (1 when both masks
are empty); F = boundary F-measure of Martin et al.'s boundary maps, matched within
``ceil(0.008 × image diagonal)`` pixels; per object the mean over all frames except the
first and the last.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


# ------------------------------------------------------------------------------ metrics
def region_similarity(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """J: intersection over union of two binary masks (1.0 when both are empty); ``void``
    pixels (the annotation's 255) count for neither, as in the official evaluator.

    References
    ----------
    .. [1] F. Perazzi, J. Pont-Tuset, B. McWilliams, L. Van Gool, M. Gross and
       A. Sorkine-Hornung, "A Benchmark Dataset and Evaluation Methodology for Video Object
       Segmentation", CVPR 2016 (region similarity J).
    .. [2] J. Pont-Tuset, F. Perazzi, S. Caelles, P. Arbeláez, A. Sorkine-Hornung and
       L. Van Gool, "The 2017 DAVIS Challenge on Video Object Segmentation",
       arXiv:1704.00675, 2017.

    Examples
    --------
    The masks share one pixel of the three they cover together:

    >>> import numpy as np
    >>> pred = np.array([[1, 1, 0], [0, 0, 0]])
    >>> gt = np.array([[0, 1, 1], [0, 0, 0]])
    >>> round(region_similarity(pred, gt), 4)
    0.3333
    """
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {g.shape}")
    if void is not None:
        keep = ~np.asarray(void, bool)
        p, g = p & keep, g & keep
    union = np.logical_or(p, g).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, g).sum() / union)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """Boundary map of a binary segmentation (Martin et al. 2004, as in the DAVIS code)."""
    seg = np.asarray(seg, bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def boundary_f(
    pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008, void: np.ndarray | None = None
) -> float:
    """F: boundary F-measure with tolerance ``ceil(bound_th × diagonal)`` pixels; ``void``
    pixels are removed from both masks before their boundaries are taken (the official
    evaluator's ``f_measure``).

    References
    ----------
    .. [1] F. Perazzi, J. Pont-Tuset, B. McWilliams, L. Van Gool, M. Gross and
       A. Sorkine-Hornung, "A Benchmark Dataset and Evaluation Methodology for Video Object
       Segmentation", CVPR 2016 (contour accuracy F).
    .. [2] J. Pont-Tuset, F. Perazzi, S. Caelles, P. Arbeláez, A. Sorkine-Hornung and
       L. Van Gool, "The 2017 DAVIS Challenge on Video Object Segmentation",
       arXiv:1704.00675, 2017.
    .. [3] D. R. Martin, C. C. Fowlkes and J. Malik, "Learning to Detect Natural Image
       Boundaries Using Local Brightness, Color, and Texture Cues", IEEE TPAMI 26(5), 2004
       (boundary maps and their matching).

    Examples
    --------
    On a 6×6 frame the tolerance is ceil(0.008 · √72) = 1 pixel, so a square shifted by one
    column still matches every boundary pixel (F = 1); an empty prediction has no boundary
    (F = 0):

    >>> import numpy as np
    >>> gt = np.zeros((6, 6), dtype=bool)
    >>> gt[1:4, 1:4] = True
    >>> boundary_f(np.roll(gt, 1, axis=1), gt), boundary_f(np.zeros_like(gt), gt)
    (1.0, 0.0)
    """
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {g.shape}")
    if void is not None:
        keep = ~np.asarray(void, bool)
        p, g = p & keep, g & keep
    bound_pix = bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(p.shape))
    from scipy import ndimage  # the evaluation only; the extraction's propagation needs none

    fb, gb = seg2bmap(p), seg2bmap(g)
    n_f, n_g = int(fb.sum()), int(gb.sum())
    if n_f == 0 and n_g == 0:
        return 1.0
    if n_f == 0 or n_g == 0:
        return 0.0
    # Dilating by the disk x² + y² ≤ r² marks exactly the pixels within Euclidean distance r
    # of a boundary pixel, so matches are counted with distance transforms — on the bounding
    # box of both boundaries padded by r (nothing outside it can match) — instead of two
    # binary dilations of the whole frame.
    r = int(bound_pix)
    rows, cols = np.nonzero(fb | gb)
    r0, r1 = max(rows.min() - r, 0), min(rows.max() + r + 1, fb.shape[0])
    c0, c1 = max(cols.min() - r, 0), min(cols.max() + r + 1, fb.shape[1])
    fb, gb = fb[r0:r1, c0:c1], gb[r0:r1, c0:c1]
    d_to_g = ndimage.distance_transform_edt(~gb, return_distances=True, return_indices=False)
    d_to_f = ndimage.distance_transform_edt(~fb, return_distances=True, return_indices=False)
    precision = (d_to_g[fb] <= r).sum() / n_f
    recall = (d_to_f[gb] <= r).sum() / n_g
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def evaluate_sequence(pred: np.ndarray, gt: np.ndarray) -> dict[int, dict[str, float]]:
    """Per object of one sequence: J and F means over frames 1..T−2 (first and last excluded).

    ``pred``, ``gt``: ``[T, H, W]`` integer label maps (0 background; 255 in ``gt`` is void:
    those pixels count in neither J nor F, as in the official davis2017-evaluation).
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and annotation {gt.shape} differ")
    objects = [o for o in np.unique(gt) if o not in (0, 255)]
    frames = range(1, gt.shape[0] - 1) if gt.shape[0] > 2 else range(gt.shape[0])
    out = {}
    void = gt == 255
    for o in objects:
        js = [region_similarity(pred[t] == o, gt[t] == o, void[t]) for t in frames]
        fs = [boundary_f(pred[t] == o, gt[t] == o, void=void[t]) for t in frames]
        out[int(o)] = {"J": float(np.mean(js)), "F": float(np.mean(fs))}
    return out


# ------------------------------------------------------------------------------ propagation
def neighbourhood_mask(h: int, w: int, radius: int) -> torch.Tensor:
    """``[h·w, h·w]`` 1 where source and target tokens are within ±radius rows and columns."""
    r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    r, c = r.flatten(), c.flatten()
    return (
        ((r[:, None] - r[None, :]).abs() <= radius) & ((c[:, None] - c[None, :]).abs() <= radius)
    ).float()


class Propagator:
    """DAVIS label propagation one frame at a time (DINO's protocol): the first frame's
    mask, then each frame's soft mask from frame 0 and the last ``n_last`` frames, among the
    ``topk`` most similar source tokens within ``radius`` rows/columns, weights
    ``exp(cos/temperature)``.  Keeps only the context it needs (first frame + ``n_last``).

    ``first_feats``: ``[h·w, D]``; ``first_mask``: ``[C, h·w]``.
    """

    def __init__(
        self,
        first_feats: torch.Tensor,
        first_mask: torch.Tensor,
        h: int,
        w: int,
        *,
        n_last: int = 7,
        radius: int = 12,
        topk: int = 5,
        temperature: float = 0.1,
        mask: torch.Tensor | None = None,
    ) -> None:
        self.hw = h * w
        self.n_last, self.topk, self.temperature = n_last, topk, temperature
        f0 = F.normalize(first_feats.float(), dim=-1)
        # symmetric [hw, hw]
        self.mask = (mask if mask is not None else neighbourhood_mask(h, w, radius)).to(f0.device)
        self._outside = self.mask == 0
        self._cuts = bool(self._outside.any())
        # a weighted (non-binary) mask scales every affinity: the dense way only
        self._binary = bool(((self.mask == 0) | (self.mask == 1)).all())
        self.first = (f0, first_mask.float())
        self.ctx: list[tuple[torch.Tensor, torch.Tensor]] = []

    def step(self, feats: torch.Tensor) -> torch.Tensor:
        """The soft mask ``[C, h·w]`` of the next frame from its features ``[h·w, D]``.

        Only the ``topk`` strongest sources of a target keep a weight, so the weights
        ``exp(cos/T)`` are taken of those alone (:meth:`_sparse`), not of every target ×
        source pair; a tie at the k-th weight (DINO keeps every source tied with it) goes
        the dense way of the original (:meth:`_dense`), which gives the same kept set."""
        f = F.normalize(feats.float(), dim=-1)
        src = [self.first] + (self.ctx[-self.n_last :] if self.n_last else [])
        # targets × sources (contiguous along the sources, where top-k and the sums run)
        sims = f @ torch.cat([s[0] for s in src]).T
        labels = torch.cat([s[1] for s in src], dim=1)  # [C, n·hw]
        seg = self._sparse(sims, labels, len(src)) if self._binary else None
        if seg is None:
            seg = self._dense(sims, labels, len(src))
        self.ctx.append((f, seg))
        if len(self.ctx) > self.n_last:
            self.ctx.pop(0)
        return seg

    def _dense(self, sims: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
        """DINO's formula over the whole ``[h·w, n·h·w]`` affinity."""
        hw = self.hw
        aff = torch.exp(sims / self.temperature)
        aff = (aff.reshape(hw, n, hw) * self.mask[:, None, :]).reshape(hw, n * hw)
        k = min(self.topk, aff.shape[1])
        kth = aff.topk(k, dim=1).values[:, -1:]  # k-th largest per target
        aff = torch.where(aff >= kth, aff, torch.zeros_like(aff))
        aff = aff / aff.sum(1, keepdim=True).clamp_min(1e-30)
        return labels @ aff.T  # [C, hw]

    def _sparse(self, sims: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor | None:
        """The same from the ``topk`` + 1 strongest sources of each target; None when the
        (k+1)-th weight ties the k-th (then DINO keeps more than k: :meth:`_dense`)."""
        hw = self.hw
        # masked in place (the product is fresh; the dense fallback zeroes those entries
        # anyway) and only where the neighbourhood cuts anything
        s = sims
        if self._cuts:
            s.reshape(hw, n, hw).masked_fill_(self._outside[:, None, :], -torch.inf)
        k = min(self.topk, s.shape[1])
        vals, idx = s.topk(min(k + 1, s.shape[1]), dim=1)  # descending
        e = torch.exp(vals / self.temperature)  # 0 outside the neighbourhood, as the mask
        if e.shape[1] > k and bool((e[:, k] >= e[:, k - 1]).any()):
            return None
        w = e[:, :k]
        w = w / w.sum(1, keepdim=True).clamp_min(1e-30)
        return (labels[:, idx[:, :k]] * w).sum(-1)


def propagate_labels(
    feats: torch.Tensor,
    first_mask: torch.Tensor,
    *,
    n_last: int = 7,
    radius: int = 12,
    topk: int = 5,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Soft masks of every frame by label propagation (:class:`Propagator`).

    Parameters
    ----------
    feats : ``[T, h, w, D]`` per-frame token features.
    first_mask : ``[C, h, w]`` one-hot (or soft) annotation of frame 0 at token resolution.

    Returns
    -------
    ``[T, C, h, w]`` soft masks (frame 0 is ``first_mask``).
    """
    T, h, w, D = feats.shape
    C = first_mask.shape[0]
    prop = Propagator(
        feats[0].reshape(h * w, D),
        first_mask.reshape(C, h * w),
        h,
        w,
        n_last=n_last,
        radius=radius,
        topk=topk,
        temperature=temperature,
    )
    segs = [first_mask.reshape(C, h * w).float()]
    segs += [prop.step(feats[t].reshape(h * w, D)) for t in range(1, T)]
    return torch.stack(segs).reshape(T, -1, h, w)


def first_frame_onehot(annotation: np.ndarray, grid_hw: tuple[int, int]) -> torch.Tensor:
    """``[C, gh, gw]`` one-hot of a frame-0 annotation (object ids) nearest-resized to the
    token grid, ``C`` = largest id + 1 (the original's first-frame handling)."""
    from PIL import Image

    gh, gw = grid_hw
    first = np.asarray(Image.fromarray(annotation).resize((gw, gh), Image.Resampling.NEAREST))
    C = int(first.max()) + 1
    return torch.from_numpy(np.eye(C, dtype=np.float32)[first]).permute(2, 0, 1)


def soft_to_labels(soft: torch.Tensor, patch: int, out_hw: tuple[int, int]) -> np.ndarray:
    """DINO's post-processing: bilinear upsampling by the patch size, per-channel min–max
    normalisation, argmax, nearest resize to the frame size → ``[T, H, W]`` labels."""
    up = F.interpolate(soft, scale_factor=patch, mode="bilinear", align_corners=False)
    lo = up.amin(dim=(-2, -1), keepdim=True)
    hi = up.amax(dim=(-2, -1), keepdim=True)
    up = torch.where(hi > 0, (up - lo) / (hi - lo).clamp_min(1e-30), up)
    # argmax over the few channels by comparisons (torch's argmax over a strided channel
    # axis was the slowest step); ties keep the first channel, as argmax does
    best, lab = up[:, 0], torch.zeros(up.shape[0], *up.shape[2:], dtype=up.dtype)
    for c in range(1, up.shape[1]):
        better = up[:, c] > best
        best = torch.where(better, up[:, c], best)
        lab = torch.where(better, torch.full_like(lab, c), lab)
    lab = lab[:, None]
    return F.interpolate(lab, size=out_hw, mode="nearest")[:, 0].to(torch.int64).numpy()
