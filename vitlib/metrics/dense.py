"""Dense feature quality per layer: patch-level linear probes and PCA feature maps (docs §D10).

Both read the tokens a token view samples during the extraction (need ``dense_sample``,
:func:`dense_sample_plan`): ``per_image`` tokens of every image drawn uniformly without
replacement, every token of the first ``full_images`` images, each with its label — the
category of the annotation (COCO objects, PartImageNet parts) covering most of the token
when it covers at least ``threshold`` of it, else background (−1). Storing a sample instead
of every token keeps a COCO store at ``n × per_image`` tokens (5,000 × 32 × 12 blocks × 768
× 2 bytes = 2.9 GB for a B/16) instead of 110 GB.

* :func:`dense_probe_table`: a linear classifier of the token's label from its block output,
  per block, trained on the tokens of a seeded part of the images and scored on the others:
  mIoU over the classes present (background included), the mIoU of the foreground classes
  and token accuracy, with bootstrap intervals over the test images. Uniform sampling
  scales every cell of the confusion matrix alike, so the IoUs estimate those of all tokens.
* :func:`pca_maps`: per block, a PCA of the sampled tokens of all images (one basis shared
  by the images), the first three components of the fully kept images shown as RGB.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from vitlib import keys
from vitlib.data.manifest import DataError, Manifest
from vitlib.registry import DENSE_SAMPLE_SETTINGS
from vitlib.store import Store

__all__ = [
    "DENSE_SETTINGS",
    "confusion_scores",
    "dense_probe_table",
    "dense_sample_plan",
    "dense_settings",
    "pca_maps",
    "token_labels",
]

#: Settings of the ``dense_sample`` need, in its qualifier's order (declared by the registry).
DENSE_SETTINGS = DENSE_SAMPLE_SETTINGS


def dense_settings(qualifier: str | None) -> dict[str, Any]:
    """``"per_image=32,full_images=4,seed=0,threshold=0.5"`` → the sampling settings.

    >>> dense_settings("per_image=32,full_images=4,seed=0,threshold=0.5")["threshold"]
    0.5
    """
    if not qualifier:
        raise ValueError("need dense_sample must name its settings (dense_sample@…)")
    kv = dict(part.split("=", 1) for part in qualifier.split(","))
    if sorted(kv) != sorted(DENSE_SETTINGS):
        raise ValueError(f"dense_sample settings {sorted(kv)}, expected {DENSE_SETTINGS}")
    return {
        "per_image": int(kv["per_image"]),
        "full_images": int(kv["full_images"]),
        "seed": int(kv["seed"]),
        "threshold": float(kv["threshold"]),
    }


def token_labels(soft: np.ndarray, categories: np.ndarray, threshold: float, m: int) -> np.ndarray:
    """``[m]`` label of every token from the annotations' coverage of it ``soft [A, m]``
    (:func:`coverage_masks`): the category of the annotation covering the token most, if it
    covers at least ``threshold``; −1 (background) otherwise.

    >>> token_labels(np.array([[0.9, 0.2, 0.0], [0.1, 0.6, 0.0]]), np.array([7, 3]), 0.5, 3)
    array([ 7,  3, -1])
    """
    if not len(soft):
        return np.full(m, -1, np.int64)
    best = soft.argmax(0)
    cover = soft.max(0)
    return np.where(cover >= threshold, np.asarray(categories)[best], -1).astype(np.int64)


def coverage_masks(
    manifest: Manifest, grid: np.ndarray, *, crop: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image: the fraction of every token covered by each usable annotation ``[A, M]``
    (the binary mask area-averaged onto the image's token grid: PIL's box filter; centre-
    cropped first for the ``patches`` view) and the annotations' categories ``[A]``."""
    from PIL import Image

    from vitlib.data.annotations import annotation_masks, coco_for_item, crop_square

    out = []
    for i, item in enumerate(manifest.items):
        gh, gw = (int(v) for v in grid[i])
        coco = coco_for_item(manifest, item)
        cov, cats = [], []
        for cat, m in annotation_masks(coco, int(item.meta["image_id"])):
            if crop:
                m = crop_square(m)
            small = Image.fromarray((m > 0).astype(np.uint8) * 255).resize(
                (gw, gh), Image.Resampling.BOX
            )
            c = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
            if c.max() > 0:
                cov.append(c)
                cats.append(cat)
        out.append(
            (np.stack(cov), np.asarray(cats, np.int64))
            if cov
            else (np.zeros((0, gh * gw), np.float32), np.zeros(0, np.int64))
        )
    return out


def dense_sample_plan(
    manifest: Manifest,
    grid: np.ndarray,
    *,
    crop: bool,
    per_image: int,
    full_images: int,
    seed: int,
    threshold: float,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per image: the token positions the extraction keeps (sorted, row-major) and their
    labels (see module doc)."""
    if per_image < 1 or full_images < 0 or not 0.0 < threshold <= 1.0:
        raise ValueError(
            f"dense_sample: per_image >= 1, full_images >= 0, threshold in (0, 1]; got"
            f" {per_image}, {full_images}, {threshold}"
        )
    pos, lab = [], []
    for i, (soft, cats) in enumerate(coverage_masks(manifest, grid, crop=crop)):
        m = int(grid[i][0]) * int(grid[i][1])
        labels = token_labels(soft, cats, threshold, m)
        if i < full_images:
            p = np.arange(m, dtype=np.int64)
        else:
            rng = np.random.default_rng([seed, i])
            p = np.sort(rng.choice(m, size=min(per_image, m), replace=False)).astype(np.int64)
        pos.append(p)
        lab.append(labels[p])
    return pos, lab


def confusion_scores(conf: np.ndarray, background: int | None) -> dict[str, np.ndarray]:
    """mIoU (classes present: row or column non-zero), foreground mIoU (without
    ``background``) and accuracy of confusion matrices ``[..., C, C]`` (rows: truth).

    >>> s = confusion_scores(np.array([[3, 1], [0, 4]]), background=0)
    >>> [round(float(s[k]), 4) for k in ("miou", "miou_fg", "acc")]
    [0.775, 0.8, 0.875]
    """
    c = np.asarray(conf, dtype=np.float64)
    tp = np.diagonal(c, axis1=-2, axis2=-1)
    rows, cols = c.sum(-1), c.sum(-2)
    union = rows + cols - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        present = rows + cols > 0
        iou = np.where(present, iou, np.nan)
        fg = iou.copy()
        if background is not None:
            fg[..., background] = np.nan
        return {
            "miou": np.nanmean(iou, axis=-1),
            "miou_fg": np.nanmean(fg, axis=-1)
            if np.isfinite(fg).any()
            else np.full(iou.shape[:-1], np.nan),
            "acc": tp.sum(-1) / c.sum((-2, -1)),
        }


def _sampled(store: Store | str) -> tuple[Store, np.ndarray, Any, np.ndarray]:
    """The store, ``dense/offsets``, the ``dense/tokens`` array ``[T, L, D]`` and the image
    of every sampled token; a store without them is an error naming the need."""
    s = Store.open(store)
    if not s.has(keys.DENSE_TOKENS):
        raise ValueError(f"{s.path}: no sampled tokens (need dense_sample)")
    offsets = s.read(keys.DENSE_OFFSETS)
    image = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return s, offsets, s.array(keys.DENSE_TOKENS), image


def _split(n: int, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean ``[n]``: the test images (a seeded ``test_fraction``, at least one each side)."""
    if not 0.0 < test_fraction < 1.0 or n < 2:
        raise DataError(
            f"dense probe: need >= 2 images and test_fraction in (0, 1), got {n}, {test_fraction}"
        )
    k = min(n - 1, max(1, round(test_fraction * n)))
    test = np.zeros(n, bool)
    test[np.random.default_rng(seed).permutation(n)[:k]] = True
    return test


def dense_probe_table(
    store: Store | str,
    manifest: Manifest,
    *,
    test_fraction: float = 0.3,
    seed: int = 0,
    epochs: int = 10,
    lrs: Sequence[float] = (0.01, 0.1, 1.0),
    batch_size: int = 1024,
    val_fraction: float = 0.1,
    statistics: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Per block: a linear probe (with the MAE protocol's non-affine BatchNorm; a grid of
    learning rates trained at once and selected on a seeded ``val_fraction`` of the training
    tokens) of each sampled token's label, trained on the tokens of the training images and
    scored on those of the test images (``test_fraction``, seeded): ``miou``, ``miou_fg``,
    ``acc`` with bootstrap intervals resampling the test images (``statistics``, §D7)."""
    from vitlib.downstream.probe import grid_accuracy, train_probe_grid
    from vitlib.stats import percentile_interval, resample_counts, settings_of

    s, offsets, tokens, image = _sampled(store)
    labels = s.read(keys.DENSE_LABEL)
    n = len(offsets) - 1
    classes = np.unique(labels)
    if len(classes) < 2:
        raise DataError(
            f"dataset {manifest.dataset!r}: the sampled tokens of {s.path} carry"
            f" {len(classes)} label(s) ({classes.tolist()}): a dense probe needs two or more"
        )
    y = np.searchsorted(classes, labels)  # background (−1), if present, is class 0
    background = 0 if classes[0] == -1 else None
    C = len(classes)
    test_img = _split(n, test_fraction, seed)
    # the fully kept images (PCA maps) enter with as many tokens as any other image
    sample = s.meta.get("dense_sample", {})
    keep = np.ones(len(labels), bool)
    for i in range(min(int(sample.get("full_images", 0)), n)):
        rows_i = np.arange(offsets[i], offsets[i + 1])
        kept = min(int(sample.get("per_image", len(rows_i))), len(rows_i))
        keep[rows_i] = False
        keep[np.random.default_rng([seed, 2, i]).choice(rows_i, kept, replace=False)] = True
    is_test = test_img[image] & keep
    train_rows = np.flatnonzero(~test_img[image] & keep)
    rng = np.random.default_rng([seed, 1])
    val_rows = np.sort(
        rng.choice(train_rows, max(1, round(val_fraction * len(train_rows))), replace=False)
    )
    fit_rows = np.setdiff1d(train_rows, val_rows)
    test_rows = np.flatnonzero(is_test)
    resamples, level, bseed = settings_of(statistics)
    test_images = np.flatnonzero(test_img)
    local = np.searchsorted(test_images, image[test_rows])  # test image of each test token
    out = []
    L = tokens.shape[1]
    for layer in range(L):
        x = np.asarray(tokens[:, layer], dtype=np.float32)  # one block of every token

        def chunks(x: np.ndarray = x) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for lo in range(0, len(fit_rows), 65536):
                r = fit_rows[lo : lo + 65536]
                yield x[r], y[r]

        grid, combos = train_probe_grid(
            chunks,
            x.shape[1],
            C,
            n_train=len(fit_rows),
            lrs=list(lrs),
            epochs=epochs,
            batch_size=batch_size,
            batchnorm=True,
            seed=seed,
            device=device,
        )
        v1, _ = grid_accuracy(grid, x[val_rows], y[val_rows], device=device)
        best = int(np.argmax(v1))
        head = grid.head(best)
        import torch

        with torch.no_grad():
            pred = head(torch.as_tensor(x[test_rows])).argmax(-1).numpy()
        cell = y[test_rows] * C + pred
        per_image = np.zeros((len(test_images), C * C))
        np.add.at(per_image, (local, cell), 1.0)
        point = confusion_scores(per_image.sum(0).reshape(C, C), background)
        ci: dict[str, tuple[float, float]] = {k: (np.nan, np.nan) for k in point}
        if resamples:
            boot = np.concatenate(
                [c @ per_image for c in resample_counts(len(test_images), resamples, bseed)]
            )
            sc = confusion_scores(boot.reshape(-1, C, C), background)
            for name, v in sc.items():
                lo, hi = percentile_interval(v[:, None], level)
                ci[name] = (float(lo[0]), float(hi[0]))
        out.append(
            {
                "layer": layer,
                **{k: float(v) for k, v in point.items()},
                **{f"{k}_ci_low": ci[k][0] for k in point},
                **{f"{k}_ci_high": ci[k][1] for k in point},
                "lr": combos[best][0],
                "val_acc": float(v1[best]),
            }
        )
    t = pd.DataFrame(out)
    for col, val in {
        "classes": C,
        "background": background is not None,
        "n_train_tokens": len(fit_rows),
        "n_test_tokens": len(test_rows),
        "n_test_images": int(test_img.sum()),
        "test_fraction": test_fraction,
        "epochs": epochs,
        "seed": seed,
    }.items():
        t[col] = val
    return t


def pca_maps(
    store: Store | str,
    manifest: Manifest,
    *,
    components: int = 3,
    fit_tokens: int = 20000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per block, the first ``components`` principal components (scikit-learn's PCA, fitted
    on up to ``fit_tokens`` sampled tokens of all images: one basis shared by the images) of
    every token of the fully kept images, each component scaled to [0, 1] between its 1st and
    99th percentile over those images. Returns ``rgb [L, F, H, W, components]`` (NaN outside
    an image's grid), ``grid [F, 2]`` and ``index [F]`` (their manifest indices)."""
    from sklearn.decomposition import PCA

    s, offsets, tokens, _ = _sampled(store)
    grids = s.read(keys.GRID)
    full_n = int(s.meta.get("dense_sample", {}).get("full_images", 0))
    full = [i for i in range(min(full_n, len(offsets) - 1))]
    if not full:
        raise ValueError(f"{s.path}: no fully kept image (dense_sample full_images = 0)")
    T, L = tokens.shape[0], tokens.shape[1]
    rng = np.random.default_rng(seed)
    fit = np.sort(rng.choice(T, size=min(fit_tokens, T), replace=False))
    H = int(max(grids[i][0] for i in full))
    W = int(max(grids[i][1] for i in full))
    rgb = np.full((L, len(full), H, W, components), np.nan, np.float32)
    for layer in range(L):
        x = np.asarray(tokens[:, layer], dtype=np.float32)
        pca = PCA(n_components=components, random_state=seed).fit(x[fit])
        proj = [pca.transform(x[offsets[i] : offsets[i + 1]]) for i in full]
        allp = np.concatenate(proj)
        lo, hi = np.percentile(allp, [1, 99], axis=0)
        for k, i in enumerate(full):
            gh, gw = (int(v) for v in grids[i])
            p = np.clip((proj[k] - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
            rgb[layer, k, :gh, :gw] = p.reshape(gh, gw, components)
    return {
        "rgb": rgb,
        "grid": np.asarray([grids[i] for i in full]),
        "index": np.asarray(full),
    }


def window_positions(pos: np.ndarray, grids: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """``[T, 2]`` (row, column) of each token inside the model's input window: the position
    its position embedding encodes. Dense views tile an image with windows at multiples of
    the window, the last row / column of tiles aligned to the image's end, the first tile
    winning where they overlap (:func:`vitlib.data.views.assemble_tiles`); other views are
    one window.

    >>> window_positions(np.array([0, 9, 10, 19]), np.array([[2, 10]] * 4), (2, 4)).tolist()
    [[0.0, 0.0], [0.0, 3.0], [1.0, 0.0], [1.0, 3.0]]
    """
    gh, gw = grids[:, 0], grids[:, 1]
    r, c = pos // gw, pos % gw
    th, tw = window

    def inside(x: np.ndarray, g: np.ndarray, t: int) -> np.ndarray:
        return np.where(x < (g // t) * t, x % t, x - (g - t))

    return np.stack([inside(r, gh, th), inside(c, gw, tw)], axis=1).astype(np.float64)


def artifact_locality_table(
    store: Store | str,
    manifest: Manifest,
    *,
    norm_factor: float = 3.0,
    test_fraction: float = 0.3,
    alpha: float = 1.0,
    seed: int = 0,
) -> pd.DataFrame:
    """How much local information high-norm "artifact" tokens keep (Darcet et al. 2024,
    §2: their position is poorly predictable from them), per block, from the sampled tokens.

    A token is an artifact when its norm exceeds ``norm_factor`` × the median norm of its
    image's sampled tokens at that block. A ridge regression (scikit-learn, standardised
    features, ``alpha``) of the token's position inside the model's window (row, column:
    what its position embedding encodes, :func:`window_positions`) from its block output is
    fitted on the normal tokens of a seeded ``1 − test_fraction`` of the images and scored on
    the normal tokens of the others and on every artifact token: ``position_error_normal``
    and ``position_error_artifact`` (mean Euclidean error in tokens), ``r2_normal``,
    ``r2_artifact``, with ``artifact_fraction`` and ``n_artifact``; NaN where a block has no
    artifact token (or too few normal ones)."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    s, offsets, tokens, image = _sampled(store)
    pos = s.read(keys.DENSE_POS)
    grids = s.read(keys.GRID)
    n = len(offsets) - 1
    yx = window_positions(pos, grids[image], tuple(s.meta["grid_hw"]))
    test_img = _split(n, test_fraction, seed)
    rows = []
    for layer in range(tokens.shape[1]):
        x = np.asarray(tokens[:, layer], dtype=np.float32)
        norm = np.linalg.norm(x, axis=1)
        med = np.zeros(n)
        for i in range(n):
            seg = norm[offsets[i] : offsets[i + 1]]
            med[i] = np.median(seg) if len(seg) else np.nan
        art = norm > norm_factor * med[image]
        fit = ~art & ~test_img[image]
        ev = ~art & test_img[image]
        res: dict[str, float] = {
            "artifact_fraction": float(art.mean()),
            "n_artifact": float(art.sum()),
        }
        if fit.sum() < 10 or ev.sum() < 2:
            res.update(
                position_error_normal=np.nan,
                position_error_artifact=np.nan,
                r2_normal=np.nan,
                r2_artifact=np.nan,
            )
        else:
            model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x[fit], yx[fit])
            for name, sel in (("normal", ev), ("artifact", art)):
                if sel.sum() < 2:
                    res[f"position_error_{name}"] = res[f"r2_{name}"] = np.nan
                    continue
                pred = model.predict(x[sel])
                res[f"position_error_{name}"] = float(np.linalg.norm(pred - yx[sel], axis=1).mean())
                res[f"r2_{name}"] = float(r2_score(yx[sel], pred))
        rows += [{"layer": layer, "metric": k, "value": v} for k, v in res.items()]
    t = pd.DataFrame(rows)
    for col, val in {
        "norm_factor": norm_factor,
        "test_fraction": test_fraction,
        "alpha": alpha,
        "seed": seed,
        "n_tokens": len(pos),
    }.items():
        t[col] = val
    return t
