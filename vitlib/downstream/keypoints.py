"""Keypoint correspondence metric (PROTOCOLS §5.4)."""

from __future__ import annotations

import numpy as np


def pck(
    pred_xy: np.ndarray, gt_xy: np.ndarray, ref_size: float | np.ndarray, alpha: float
) -> float:
    """Percentage of correct keypoints: error ``< alpha · ref_size``.

    ``pred_xy``, ``gt_xy``: ``[n, 2]``; ``ref_size``: scalar or ``[n]`` (e.g. the longer side
    of the target bounding box, the paper's choice, or the image size).  Returns a fraction
    in [0, 1] (NaN for no keypoints).
    """
    pred, gt = np.asarray(pred_xy, float), np.asarray(gt_xy, float)
    if pred.shape != gt.shape or pred.ndim != 2 or pred.shape[1] != 2:
        raise ValueError(f"pred_xy and gt_xy must both be [n, 2], got {pred.shape} and {gt.shape}")
    if len(pred) == 0:
        return float("nan")
    err = np.linalg.norm(pred - gt, axis=1)
    return float((err < alpha * np.asarray(ref_size, float)).mean())
