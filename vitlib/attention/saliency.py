"""Attention-saliency IoU (docs/protocols.md §2.8) from a ``center`` store and COCO-format masks.

For every image with at least one usable annotation the ground truth is the union of its
soft token masks (objects for COCO, parts for PartImageNet; centre-cropped like the view);
the prediction of each (layer, head) is the 60 %-mass set of the CLS query's or the mean
spatial query's attention over the spatial keys (stored at extraction, no forward pass) —
and, where the store holds them (need ``rollout``), of the same rows of the attention
rollout (queries ``rollout_cls``, ``rollout_spatial``; one fused head, docs §D8).

Empty mask sets are flagged, never averaged: an image none of whose annotations survives
at token resolution takes no part (a warning names how many and which, and the table's
``n_images_no_mask`` column counts them); a dataset where no image keeps a mask is a
:class:`~vitlib.data.manifest.DataError` naming the dataset and the store.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from vitlib import keys
from vitlib.attention.core import mass_threshold_mask
from vitlib.data.annotations import annotation_masks, coco_for_item, token_masks
from vitlib.data.manifest import DataError, Manifest
from vitlib.store import Store

log = logging.getLogger(__name__)

QUERIES = {"cls": keys.ATTN_CLS_ROW, "spatial": keys.ATTN_SPATIAL_MEAN_ROW}
#: The attention rollout's rows (need ``rollout``; one "head": the heads are fused), scored
#: beside the raw attention when the store holds them.
ROLLOUT_QUERIES = {
    "rollout_cls": keys.ATTN_ROLLOUT_CLS,
    "rollout_spatial": keys.ATTN_ROLLOUT_SPATIAL,
}


def iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of boolean masks ``[..., M]`` against ``gt [M]`` (0 where both are empty)."""
    inter = (pred & gt).sum(-1)
    union = (pred | gt).sum(-1)
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def saliency_iou(
    store: Store | str, manifest: Manifest, *, mass: float = 0.6
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-image IoU ``{query: [n_used, L, H]}`` and the manifest indices used.

    Images without any mask at token resolution are left out with a warning naming them;
    if none has one, :class:`DataError` names the dataset and the store.
    """
    g = Store.open(store)
    meta = g.meta
    if meta["manifest_digest"] != manifest.digest():
        raise ValueError(
            f"{g.path} was extracted from another manifest of"
            f" {manifest.dataset!r} (digest {meta['manifest_digest']})"
        )
    gh, gw = meta["grid_hw"]
    queries = dict(QUERIES)
    queries.update({q: k for q, k in ROLLOUT_QUERIES.items() if g.has(k)})
    out: dict[str, list[np.ndarray]] = {q: [] for q in queries}
    used = []
    no_mask: list[str] = []
    rows = {q: g.array(name) for q, name in queries.items()}
    step = int(rows["cls"].chunks[0])  # whole chunks: each is read once
    block: dict[str, np.ndarray] = {}
    for i, item in enumerate(manifest.items):
        if i % step == 0:
            block = {
                q: np.asarray(arr[i : i + step], dtype=np.float32)  # [b, L, H, M]
                for q, arr in rows.items()
            }
        coco = coco_for_item(manifest, item)
        soft, _ = token_masks(
            annotation_masks(coco, int(item.meta["image_id"])), (gh, gw), crop=True
        )
        if not len(soft):
            no_mask.append(item.id)
            continue
        gt = soft.sum(0).reshape(-1) > 0
        for q in queries:
            out[q].append(iou(mass_threshold_mask(block[q][i % step], mass), gt))
        used.append(i)
    if not used:
        raise DataError(
            f"dataset {manifest.dataset!r}: none of its {len(manifest)} images has an"
            f" annotation mask that survives at the {gh}x{gw} token grid of {g.path}"
            " (empty mask set): saliency IoU is undefined"
        )
    if no_mask:
        log.warning(
            "dataset %r: %d of %d images have no annotation mask at the %dx%d token grid"
            " and take no part in saliency IoU (first: %s)",
            manifest.dataset,
            len(no_mask),
            len(manifest),
            gh,
            gw,
            ", ".join(no_mask[:5]),
        )
    return {q: np.stack(v) for q, v in out.items()}, np.asarray(used)


def _iou_intervals(
    v: np.ndarray, statistics: Mapping[str, Any] | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Bootstrap intervals over images of the three head selections of IoUs ``v`` ``[n, L, H]``:
    ``head`` ``[L, H]``, ``per_image`` ``[L]`` (mean of the per-image best head) and
    ``per_layer`` ``[L]`` (best head of the resampled means: the selection is redone on every
    resample)."""
    from vitlib.stats import percentile_interval, resample_counts, settings_of

    resamples, level, seed = settings_of(statistics)
    n, L, H = v.shape
    nan = np.full((L, H), np.nan)
    if not resamples or n == 0:
        return {
            "head": (nan, nan),
            "per_image": (nan[:, 0], nan[:, 0]),
            "per_layer": (nan[:, 0], nan[:, 0]),
        }
    x = np.concatenate([v.reshape(n, L * H), v.max(-1)], axis=1)  # [n, L·H + L]
    means = np.concatenate([c @ x / n for c in resample_counts(n, resamples, seed)])
    head = means[:, : L * H].reshape(-1, L, H)
    out = {
        "head": percentile_interval(head, level),
        "per_image": percentile_interval(means[:, L * H :], level),
        "per_layer": percentile_interval(head.max(-1), level),
    }
    return out


def saliency_table(
    store: Store | str,
    manifest: Manifest,
    *,
    mass: float = 0.6,
    statistics: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Tidy IoU table: per (query, layer, head) the mean over images; per (query, layer) the
    best head chosen per image (``head_selection = "per_image"``: max over heads, then the
    mean — the paper's plots) and per layer (``"per_layer"``: max over heads of the mean);
    ``iou_ci_low``/``iou_ci_high``: bootstrap intervals over the images (docs §D7).

    ``n_images`` counts the images scored, ``n_images_no_mask`` those left out because no
    annotation mask of theirs survives at token resolution (flagged, see the module)."""
    s = Store.open(store)
    per_image, used = saliency_iou(s, manifest, mass=mass)
    rows = []
    for q, v in per_image.items():
        mean = v.mean(0)  # [L, H]
        ci = _iou_intervals(v, statistics)
        for layer in range(v.shape[1]):
            for h in range(v.shape[2]):
                rows.append(
                    {
                        "query": q,
                        "layer": layer,
                        "head": h,
                        "head_selection": "head",
                        "iou": float(mean[layer, h]),
                        "iou_ci_low": ci["head"][0][layer, h],
                        "iou_ci_high": ci["head"][1][layer, h],
                    }
                )
            rows.append(
                {
                    "query": q,
                    "layer": layer,
                    "head": -1,
                    "head_selection": "per_image",
                    "iou": float(v[:, layer].max(-1).mean()),
                    "iou_ci_low": ci["per_image"][0][layer],
                    "iou_ci_high": ci["per_image"][1][layer],
                }
            )
            rows.append(
                {
                    "query": q,
                    "layer": layer,
                    "head": int(mean[layer].argmax()),
                    "head_selection": "per_layer",
                    "iou": float(mean[layer].max()),
                    "iou_ci_low": ci["per_layer"][0][layer],
                    "iou_ci_high": ci["per_layer"][1][layer],
                }
            )
    t = pd.DataFrame(rows)
    for col, val in {
        "mass": mass,
        "n_images": len(used),
        "n_images_no_mask": len(manifest) - len(used),
    }.items():
        t[col] = val
    return t
