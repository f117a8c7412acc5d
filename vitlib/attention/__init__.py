"""Attention analyses (docs/protocols.md §2); public functions work on NumPy arrays or tensors.

Names are imported lazily (PEP 562) so that table jobs that never touch torch do not pay
for importing it.
"""

from importlib import import_module
from typing import Any

__all__ = [
    "aligned_aggregate",
    "aligned_sum",
    "distance_template",
    "mass_threshold_mask",
    "mean_attention_distance",
    "spatial_rows",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("vitlib.attention.core"), name)
    raise AttributeError(f"module 'vitlib.attention' has no attribute {name!r}")
