"""Attention analyses (PROTOCOLS §2); public functions work on NumPy arrays or tensors."""

from vitlib.attention.core import (
    aligned_aggregate,
    aligned_sum,
    distance_template,
    mass_threshold_mask,
    mean_attention_distance,
    spatial_rows,
)

__all__ = [
    "aligned_aggregate",
    "aligned_sum",
    "distance_template",
    "mass_threshold_mask",
    "mean_attention_distance",
    "spatial_rows",
]
