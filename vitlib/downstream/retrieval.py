"""Revisited Oxford/Paris retrieval evaluation (docs/protocols.md §5.2; Radenović et al. 2018)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def average_precision(ranks_pos: np.ndarray, n_pos: int) -> float:
    """Trapezoidal AP from the 0-based ranks of the positives (junk already removed)."""
    ap = 0.0
    recall_step = 1.0 / n_pos
    for j, r in enumerate(np.sort(ranks_pos)):
        precision_0 = 1.0 if r == 0 else j / r
        precision_1 = (j + 1) / (r + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def _positions(order: np.ndarray, items: Sequence[int]) -> np.ndarray:
    return np.flatnonzero(np.isin(order, np.asarray(items, dtype=np.int64)))


def revisited_map(
    ranks: np.ndarray,
    gnd: Sequence[Mapping[str, Any]],
    protocol: str,
    kappas: Sequence[int] = (1, 5, 10),
) -> dict[str, Any]:
    """mAP of a ranking under the revisited protocol ``easy``, ``medium`` or ``hard``.

    Parameters
    ----------
    ranks : ``[n_db, n_queries]``; column q lists database indices, best first.
    gnd : one dict per query with ``easy``, ``hard``, ``junk`` index lists.
    protocol : ``easy`` (positives easy; junk and hard ignored), ``medium`` (positives easy ∪
        hard; junk ignored) or ``hard`` (positives hard; junk ∪ easy ignored).

    Returns
    -------
    ``{"map": %, "aps": [n_q], "mpr": precision@kappas %, "prs": [n_q, len(kappas)]}``;
    queries without positives are excluded from the means (as the official code does).
    """
    if ranks.ndim != 2 or ranks.shape[1] != len(gnd):
        raise ValueError(f"ranks must be [n_db, {len(gnd)}], got {ranks.shape}")
    aps = np.full(len(gnd), np.nan)
    prs = np.full((len(gnd), len(kappas)), np.nan)
    for q, g in enumerate(gnd):
        easy, hard, junk = list(g.get("easy", [])), list(g.get("hard", [])), list(g.get("junk", []))
        if protocol == "easy":
            pos, ign = easy, junk + hard
        elif protocol == "medium":
            pos, ign = easy + hard, junk
        elif protocol == "hard":
            pos, ign = hard, junk + easy
        else:
            raise ValueError(f"protocol must be easy, medium or hard, not {protocol!r}")
        if not pos:
            continue
        order = ranks[:, q]
        p = _positions(order, pos)
        j = _positions(order, ign)
        # each positive moves up by the number of ignored images ranked before it
        adj = p - np.searchsorted(j, p)
        aps[q] = average_precision(adj, len(pos))
        last = adj.max() + 1
        prs[q] = [(adj < min(kp, last)).sum() / min(kp, last) for kp in kappas]
    valid = ~np.isnan(aps)
    return {
        "map": float(aps[valid].mean() * 100) if valid.any() else float("nan"),
        "aps": aps,
        "mpr": (np.nanmean(prs, 0) * 100).tolist(),
        "prs": prs,
        "kappas": list(kappas),
    }
