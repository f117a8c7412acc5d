"""Positional query rows of single images (docs/protocols.md §2.1): the attention that
chosen query tokens (top / left / centre / right / bottom of the token grid, or the
diagonal) pay to the spatial keys, for every block and head.

A store keeps two query rows per image (the CLS query and the mean spatial query); the rows of
other queries of a handful of chosen images come from one small forward pass of the network
the store recorded (:func:`store_model`: its spec and checkpoint, the checkpoint's sha256
checked against the store's), so the rows are exactly those of the network that made the
store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vitlib.data.manifest import Manifest
from vitlib.store import Store

#: The original's named query positions (``select_positions``), in its order.
POSITIONS = ("top", "left", "center", "right", "bottom")
#: Every query name :func:`query_positions` accepts (``diagonal``: one query per grid row).
QUERY_NAMES = (*POSITIONS, "diagonal")


def query_positions(h: int, w: int, names: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(name, row, col)`` of the named query tokens on an ``h × w`` token grid.

    As the original's ``select_positions``: with ``m = K/2`` for even ``K`` and ``(K+1)/2``
    for odd ``K`` (per axis), top = (0, m−1), left = (m−1, 0), center = (m−1, m−1),
    right = (m−1, K−1), bottom = (K−1, m−1); ``diagonal`` expands to ``diagonal_i`` =
    (i, i) for ``i < min(h, w)``.
    """
    unknown = [n for n in names if n not in QUERY_NAMES]
    if unknown:
        raise ValueError(f"unknown query position(s) {unknown}; known: {', '.join(QUERY_NAMES)}")
    mh, mw = (h + 1) // 2, (w + 1) // 2  # K/2 for even K, (K+1)/2 for odd K
    at = {
        "top": (0, mw - 1),
        "left": (mh - 1, 0),
        "center": (mh - 1, mw - 1),
        "right": (mh - 1, w - 1),
        "bottom": (h - 1, mw - 1),
    }
    out: list[tuple[str, int, int]] = []
    for n in names:
        if n == "diagonal":
            out += [(f"diagonal_{i}", i, i) for i in range(min(h, w))]
        else:
            out.append((n, *at[n]))
    return out


def store_model(store: Store | str | Path) -> Any:
    """The network that made ``store``, rebuilt from the spec and checkpoint its metadata
    records (a checkpoint whose sha256 differs from the store's is an error: the store is
    stale, re-run its extraction)."""
    from vitlib.models.build import build_model
    from vitlib.models.registry import ModelSpec
    from vitlib.models.weights import WeightsError, sha256_cached

    s = Store.open(store)
    meta = s.meta
    d = dict(meta["spec"])
    d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
    spec = ModelSpec(**d)
    path = meta.get("weights") or None
    if path:
        if not Path(path).is_file():
            raise WeightsError(f"{s.path}: the store's checkpoint {path} is missing")
        if meta.get("weights_sha256") and sha256_cached(path) != meta["weights_sha256"]:
            raise WeightsError(
                f"{s.path}: checkpoint {path} changed since the store was written"
                " (sha256 differs): re-run its extraction"
            )
    return build_model(spec, path)


def query_rows(
    store: Store | str | Path,
    manifest: Manifest,
    indices: Sequence[int],
    names: Sequence[str],
    *,
    batch_size: int = 8,
) -> dict[str, np.ndarray]:
    """Attention rows of the named query tokens (:func:`query_positions`) of the items
    ``indices`` of ``manifest``, through the store's network (:func:`store_model`) in fp32
    on the CPU, the store's view (centre crop).

    Returns ``queries`` ``[n, L, H, P, h, w]`` (the query row over the spatial keys, not
    renormalised: the original's maps), ``query_names`` ``[P]``, ``query_yx`` ``[P, 2]``
    (row, col of each query token) and ``query_cls`` ``[n, L, H, h, w]`` (the CLS row of the
    same pass, which equals the store's up to its dtype: a check that the pass is the
    store's network).
    """
    import torch

    from vitlib.data.views import ManifestDataset, make_transform
    from vitlib.models.capture import Capture

    s = Store.open(store)
    h, w = s.grid_hw
    p0 = int(s.meta["num_prefix_tokens"])
    pos = query_positions(h, w, names)
    rows = torch.tensor([p0 + r * w + c for _, r, c in pos], dtype=torch.long)
    spec = s.meta["spec"]
    ds = ManifestDataset(
        manifest, make_transform(s.meta["view"], spec["img_size"], spec["mean"], spec["std"])
    )
    cap = Capture(store_model(s), points=(), attention=True, dtype="fp32")
    qs, cs = [], []
    idx = list(indices)
    with torch.inference_mode():
        for lo in range(0, len(idx), batch_size):
            x = torch.stack([ds[i][0] for i in idx[lo : lo + batch_size]])
            att = cap.collect(x).attention  # [L, B, H, N, N]
            assert att is not None
            q = att[:, :, :, rows, p0:]  # [L, B, H, P, S]
            qs.append(q.permute(1, 0, 2, 3, 4).numpy())
            cs.append(att[:, :, :, 0, p0:].permute(1, 0, 2, 3).numpy())
    L, H = s.meta["depth"], s.meta["num_heads"]
    q_all = np.concatenate(qs) if qs else np.zeros((0, L, H, len(pos), h * w), np.float32)
    c_all = np.concatenate(cs) if cs else np.zeros((0, L, H, h * w), np.float32)
    return {
        "queries": q_all.reshape(*q_all.shape[:-1], h, w).astype(np.float32),
        "query_names": np.array([n for n, _, _ in pos]),
        "query_yx": np.array([[r, c] for _, r, c in pos], dtype=int).reshape(-1, 2),
        "query_cls": c_all.reshape(*c_all.shape[:-1], h, w).astype(np.float32),
    }
