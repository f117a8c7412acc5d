"""The per-dataset tasks the workflow runs on finished stores, by name.

Each maps a store (of the view the task reads), the dataset's manifest and the task's
settings from the config to one tidy per-layer table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from vitlib.data.manifest import Manifest


def _saliency(store: str, m: Manifest, **kw: Any) -> pd.DataFrame:
    from vitlib.attention.saliency import saliency_table

    return saliency_table(store, m, **kw)


def _segments(store: str, m: Manifest, **kw: Any) -> pd.DataFrame:
    from vitlib.metrics.segfeat import segment_clustering_table

    return segment_clustering_table(store, m, **kw)


def _retrieval(store: str, m: Manifest, **kw: Any) -> pd.DataFrame:
    from vitlib.downstream.tables import retrieval_table

    return retrieval_table(store, m, **kw)


def _davis(store: str, m: Manifest, **kw: Any) -> pd.DataFrame:
    from vitlib.downstream.tables import davis_table

    return davis_table(store, m, **kw)


def _spair(store: str, m: Manifest, **kw: Any) -> pd.DataFrame:
    from vitlib.downstream.tables import spair_table

    return spair_table(store, m, **kw)


TASKS: dict[str, Callable[..., pd.DataFrame]] = {
    "saliency": _saliency,
    "segments": _segments,
    "retrieval": _retrieval,
    "davis": _davis,
    "spair": _spair,
}


def task_table(
    task: str, store: str, manifest: Manifest, settings: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Run ``task`` on ``store`` and return its table (column ``task`` added)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    t = TASKS[task](store, manifest, **dict(settings or {}))
    t["task"] = task
    return t
