"""Keypoint correspondence metric (docs/protocols.md §5.4)."""

from __future__ import annotations

import numpy as np


def pck(
    pred_xy: np.ndarray, gt_xy: np.ndarray, ref_size: float | np.ndarray, alpha: float
) -> float:
    """Percentage of correct keypoints: error ``< alpha · ref_size``.

    ``pred_xy``, ``gt_xy``: ``[n, 2]``; ``ref_size``: scalar or ``[n]`` (e.g. the longer side
    of the target bounding box, the paper's choice, or the image size).  Returns a fraction
    in [0, 1] (NaN for no keypoints).

    References
    ----------
    .. [1] Y. Yang and D. Ramanan, "Articulated Human Detection with Flexible Mixtures of
       Parts", IEEE TPAMI 35(12), 2013 (percentage of correct keypoints).
    .. [2] J. Min, J. Lee, J. Ponce and M. Cho, "SPair-71k: A Large-scale Benchmark for
       Semantic Correspondence", arXiv:1908.10543, 2019.
    .. [3] S. Amir, Y. Gandelsman, S. Bagon and T. Dekel, "Deep ViT Features as Dense Visual
       Descriptors", ECCV Workshops 2022 (the evaluation protocol the paper follows).

    Examples
    --------
    Errors 0, 5 and 10 pixels against a threshold of 0.1 · 100 = 10: the comparison is
    strict, so two of the three keypoints are correct:

    >>> import numpy as np
    >>> pred = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    >>> round(pck(pred, np.zeros((3, 2)), ref_size=100, alpha=0.1), 4)
    0.6667
    """
    pred, gt = np.asarray(pred_xy, float), np.asarray(gt_xy, float)
    if pred.shape != gt.shape or pred.ndim != 2 or pred.shape[1] != 2:
        raise ValueError(f"pred_xy and gt_xy must both be [n, 2], got {pred.shape} and {gt.shape}")
    if len(pred) == 0:
        return float("nan")
    err = np.linalg.norm(pred - gt, axis=1)
    return float((err < alpha * np.asarray(ref_size, float)).mean())
