"""Downstream tasks on finished stores: tidy per-layer tables (no forward pass)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from vitlib import keys
from vitlib.downstream.knn import accuracy_rows, knn_hits, knn_topk_streaming
from vitlib.store import Store

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch

    from vitlib.data.manifest import Manifest


def knn_table(
    train_store: Store | str,
    test_store: Store | str,
    *,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    feature: str = "cls",
    statistics: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """k-NN accuracy of every layer (DINO protocol, docs/protocols.md §5.1), with bootstrap
    intervals over the test queries (:func:`~vitlib.downstream.knn.accuracy_rows`).

    Training features are streamed layer by layer in the store's chunks; the queries of one
    layer are held in memory.  ``feature``: ``cls`` (the paper) or ``spatial_mean``.
    """
    gtr, gte = Store.open(train_store), Store.open(test_store)
    mtr, mte = gtr.meta, gte.meta
    if mtr["model"] != mte["model"]:
        raise ValueError(
            f"train store {train_store} and test store {test_store} come from"
            f" different models ({mtr['model']} vs {mte['model']})"
        )
    name = keys.feature("block", feature)
    ytr = gtr.labels
    if max(ks) > len(ytr):
        log.warning(
            "k-NN: analyses.knn.ks %s exceed the %d training images of %s: those rows use"
            " k_effective = %d",
            [k for k in ks if k > len(ytr)],
            len(ytr),
            gtr.dataset,
            len(ytr),
        )
    yte = gte.labels
    C = int(max(ytr.max(), yte.max()) + 1)
    kmax = min(max(ks), len(ytr))
    ks_eff = sorted({min(k, len(ytr)) for k in ks})
    hits = []
    # ~64 MiB of float32 train features per read (a few of the store's chunks), gathered
    # into one FAISS index of up to knn.BANK_BYTES (2 GiB) and searched once: memory stays
    # flat at any scale, and a training set that fits one bank is never merged
    step = max(gtr.array(name).chunks[0], (64 << 20) // (4 * gtr.array(name).shape[-1]))
    step -= step % gtr.array(name).chunks[0]
    for layer in range(mtr["depth"]):
        q = gte.layer(name, layer).astype(np.float32)
        sims, idx = knn_topk_streaming(
            (c.astype(np.float32) for c in gtr.layer_chunks(name, layer, step)), q, kmax
        )
        hits.append(knn_hits(sims, ytr[idx], yte, ks_eff, C, temperature))
    t = accuracy_rows(hits, ks, len(ytr), statistics)
    for col, v in {
        "train": mtr["dataset"],
        "test": mte["dataset"],
        "feature": feature,
        "temperature": temperature,
        "n_train": len(ytr),
        "n_test": len(yte),
        "chance": 100.0 / C,
    }.items():
        t[col] = v
    return t


def probe_layers(layers: str | Sequence[int], depth: int, family: str) -> list[int]:
    """0-based blocks a probe is trained on (:func:`vitlib.registry.resolve_layers`).

    >>> probe_layers("paper", 12, "fs"), probe_layers("paper", 12, "beit")
    ([11], [7])
    """
    from vitlib.registry import resolve_layers

    return resolve_layers(layers, depth, family)


#: Feature types a probe reads: the stored CLS and mean-spatial block outputs, or both
#: concatenated (DINOv2's linear evaluation also probes the CLS token with the patch mean).
PROBE_FEATURES = ("cls", "spatial_mean", "cls+spatial_mean")


def probe_table(
    train_store: Store | str,
    test_store: Store | str,
    *,
    epochs: int = 20,
    lr: float = 0.1,
    lr_factor: Mapping[str, float] | None = None,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
    layers: str | Sequence[int] = "paper",
    features: Sequence[str] = ("cls", "spatial_mean"),
    batchnorm: Sequence[bool] = (False, True),
    lrs: Sequence[float] = (),
    weight_decays: Sequence[float] = (),
    val_fraction: float = 0.1,
    logreg: bool = False,
    seeds: int = 1,
    statistics: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Linear probe accuracy for every layer × feature type × BatchNorm option.

    With one learning rate and one weight decay (``lrs``/``weight_decays`` empty: ``lr`` and
    ``weight_decay``, the paper's Table 6 protocol) the probe is trained on the whole training
    set. With a grid, every (lr, weight decay) head is trained at once on the same batches
    (:func:`~vitlib.downstream.probe.train_probe_grid`) on the training set minus a seeded
    ``val_fraction`` carved from it, the head with the best top-1 on that validation part is
    selected (ties: the first, lr-major) and its test accuracy reported, with the chosen
    ``lr``, ``weight_decay`` and its ``val_top1``. ``lr_factor``: per-family factor on every
    rate (the paper's Table 6 reduced BEiT's). ``logreg``: a cross-check column
    ``logreg_top1`` from scikit-learn's multinomial logistic regression on standardised
    features (holds the layer's training features in memory: small datasets).

    ``seeds``: independent trainings (seeds ``seed … seed + seeds − 1``: initialisation and
    batch order; the validation split stays the one of ``seed``), each selecting its own head;
    ``top1``/``top5`` are their mean, ``seed_std`` their spread, ``lr``/``weight_decay`` the
    most often chosen head. ``top1_ci_low`` … : a bootstrap interval over the runs and the
    test images (:func:`~vitlib.stats.bootstrap_runs_ci`; ``statistics``, docs §D7)."""
    import time
    from collections import Counter

    from vitlib.downstream.probe import grid_accuracy, grid_hits, train_probe_grid
    from vitlib.stats import bootstrap_runs_ci, settings_of

    if seeds < 1:
        raise ValueError(f"probe: seeds must be >= 1, got {seeds}")
    n_boot, level, boot_seed = settings_of(statistics)

    bad = [f for f in features if f not in PROBE_FEATURES]
    if bad:
        raise ValueError(f"probe features {bad}: choose from {PROBE_FEATURES}")
    gtr, gte = Store.open(train_store), Store.open(test_store)
    mtr, mte = gtr.meta, gte.meta
    ytr = gtr.labels
    yte = gte.labels
    C = int(max(ytr.max(), yte.max()) + 1)
    rows = []
    probed = probe_layers(layers, gtr.depth, gtr.family)
    factor = float((lr_factor or {}).get(gtr.family, 1.0))
    grid_lrs = [float(x) * factor for x in (lrs or [lr])]
    grid_wds = [float(x) for x in (weight_decays or [weight_decay])]
    selecting = len(grid_lrs) * len(grid_wds) > 1
    n = len(ytr)
    is_val = np.zeros(n, bool)
    if selecting:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"probe: val_fraction must be in (0, 1), got {val_fraction}")
        n_val = min(n - 1, max(1, round(val_fraction * n)))
        is_val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    for feat in features:
        kinds = feat.split("+")
        names = [keys.feature("block", k) for k in kinds]
        step = int(gtr.array(names[0]).chunks[0])
        dim = int(sum(gtr.array(nm).shape[-1] for nm in names))
        for layer in probed:

            def chunks(
                layer: int = layer, names: list[str] = names, step: int = step, val: bool = False
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
                """The layer's training chunks (or the validation part), features of every
                kind concatenated."""
                parts = zip(*(gtr.layer_chunks(nm, layer) for nm in names))
                for i, x in enumerate(parts):
                    xs = np.concatenate(x, axis=1)
                    sl = slice(i * step, i * step + len(xs))
                    keep = is_val[sl] == val
                    if keep.any():
                        yield xs[keep], ytr[sl][keep]

            xte = np.concatenate([gte.layer(nm, layer) for nm in names], axis=1).astype(np.float32)
            if selecting:
                val = list(chunks(val=True))
                xval = np.concatenate([v[0] for v in val]).astype(np.float32)
                yval = np.concatenate([v[1] for v in val])
            lr_top1 = _logreg_top1(chunks, xte, yte) if logreg else float("nan")
            for bn in batchnorm:
                t0 = time.perf_counter()
                runs = []  # per seed: (chosen head, val top-1, test hits top-1, top-5)
                for j in range(seeds):
                    grid, combos = train_probe_grid(
                        chunks,
                        dim,
                        C,
                        n_train=int((~is_val).sum()),
                        lrs=grid_lrs,
                        weight_decays=grid_wds,
                        epochs=epochs,
                        batch_size=batch_size,
                        batchnorm=bn,
                        seed=seed + j,
                        device=device,
                    )
                    best, val_top1 = 0, float("nan")
                    if selecting:
                        v1, _ = grid_accuracy(grid, xval, yval, device=device)
                        best, val_top1 = int(np.argmax(v1)), float(v1.max())
                    h1, h5 = grid_hits(grid, xte, yte, device=device)
                    runs.append((best, val_top1, h1[best], h5[best]))
                hits = np.stack([np.stack([r[2], r[3]], axis=-1) for r in runs]) * 100.0
                lo, hi = bootstrap_runs_ci(hits, resamples=n_boot, level=level, seed=boot_seed)
                chosen = Counter(r[0] for r in runs).most_common(1)[0][0]
                rows.append(
                    {
                        "layer": layer,
                        "feature": feat,
                        "batchnorm": bn,
                        "top1": float(hits[..., 0].mean()),
                        "top5": float(hits[..., 1].mean()),
                        "top1_ci_low": float(lo[0]),
                        "top1_ci_high": float(hi[0]),
                        "top5_ci_low": float(lo[1]),
                        "top5_ci_high": float(hi[1]),
                        "seed_std": float(hits[..., 0].mean(axis=1).std(ddof=1))
                        if seeds > 1
                        else float("nan"),
                        "lr": combos[chosen][0],
                        "weight_decay": combos[chosen][1],
                        "val_top1": float(np.mean([r[1] for r in runs])),
                        "grid_size": len(combos),
                        "logreg_top1": lr_top1,
                        "seconds": time.perf_counter() - t0,
                    }
                )
    t = pd.DataFrame(rows)
    for col, v in {
        "train": mtr["dataset"],
        "test": mte["dataset"],
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "seeds": seeds,
        "n_train": int((~is_val).sum()),
        "n_val": int(is_val.sum()),
        "chance": 100.0 / C,
    }.items():
        t[col] = v
    return t


def _logreg_top1(
    chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], xte: np.ndarray, yte: np.ndarray
) -> float:
    """Top-1 (%) of scikit-learn's logistic regression (lbfgs, C = 1) on standardised
    features: the probe's cross-check."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parts = list(chunks())
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(x, y)
    return float((clf.predict(xte) == yte).mean() * 100)


def _stamp(t: pd.DataFrame, meta: dict, **extra: object) -> pd.DataFrame:
    """The table's own columns (its identity is stamped by :func:`vitlib.tables.tidy`)."""
    for col, v in extra.items():
        t[col] = v
    return t


def _check_manifest(meta: dict, manifest: Manifest, store: Store | str) -> None:
    if meta["manifest_digest"] != manifest.digest():
        raise ValueError(f"{store} was extracted from another manifest of {manifest.dataset!r}")


def retrieval_table(
    store: Store | str,
    manifest: Manifest,
    *,
    protocols: Sequence[str] = ("medium", "hard"),
    statistics: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Revisited-protocol mAP per layer (docs/protocols.md §5.2) from a ``retrieval`` view store:
    L2-normalised CLS features, database ranked by cosine similarity with a FAISS
    inner-product index, ``revisited_map`` per protocol; ``map_ci_low``/``map_ci_high``: the
    percentile bootstrap interval over the queries (those with positives; docs §D7)."""
    import faiss

    from vitlib.downstream.retrieval import revisited_map
    from vitlib.stats import bootstrap_ci, settings_of

    g = Store.open(store)
    meta = g.meta
    _check_manifest(meta, manifest, store)
    n_db = int(manifest.extra["n_db"])
    gnd = manifest.extra["gnd"]
    rows, aps = [], []
    for layer in range(meta["depth"]):
        x = g.layer(keys.feature("block", "cls"), layer).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(np.ascontiguousarray(x[:n_db]))
        _, ranks = index.search(np.ascontiguousarray(x[n_db:]), n_db)
        for p in protocols:
            r = revisited_map(ranks.T, gnd, p)
            aps.append(r["aps"] * 100.0)
            rows.append(
                {
                    "layer": layer,
                    "protocol": p,
                    "map": r["map"],
                    **{f"mp@{k}": v for k, v in zip(r["kappas"], r["mpr"])},
                }
            )
    t = pd.DataFrame(rows)
    resamples, level, seed = settings_of(statistics)
    if resamples and aps:
        lo, hi = bootstrap_ci(np.stack(aps, axis=1), resamples=resamples, level=level, seed=seed)
        t["map_ci_low"], t["map_ci_high"] = lo, hi
    return _stamp(t, meta, n_db=n_db, n_queries=len(gnd))


def davis_table(
    store: Store | str,
    manifest: Manifest,
    *,
    n_last: int = 7,
    radius: int = 12,
    topk: int = 5,
    temperature: float = 0.1,
    layers: Sequence[int] | None = None,
    statistics: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """DAVIS label propagation per layer (docs/protocols.md §5.3) from a ``dense`` or ``squash``
    token store: the first frame's annotation (nearest-resized to the token grid) is
    propagated with :func:`propagate_labels`, predictions are upsampled to the frame size
    and scored with J and F per object (first and last frame excluded). ``<metric>_ci_low``
    / ``_ci_high``: bootstrap intervals resampling whole sequences (their objects together;
    the statistic stays the mean over objects; docs §D7)."""
    import torch

    from vitlib.data.annotations import davis_mask
    from vitlib.downstream.davis import (
        evaluate_sequence,
        first_frame_onehot,
        propagate_labels,
        soft_to_labels,
    )

    g = Store.open(store)
    meta = g.meta
    _check_manifest(meta, manifest, store)
    if not g.is_token_view:
        raise ValueError(f"{store}: DAVIS needs a token view ('dense' or 'squash')")
    settings = {"n_last": n_last, "radius": radius, "topk": topk, "temperature": temperature}
    in_pass = g.has(keys.DAVIS_SOFT)
    if in_pass and meta.get("davis") != settings:
        raise ValueError(
            f"{store} propagated DAVIS labels with {meta.get('davis')}, not {settings}:"
            " re-extract it (the workflow does when analyses.davis changes)"
        )
    offsets = g.read(keys.OFFSETS)
    grids = g.read(keys.GRID)
    patch = int(meta["spec"]["patch_size"])
    root = manifest.root
    seqs: dict[str, list[int]] = {}
    for i, it in enumerate(manifest.items):
        seqs.setdefault(it.meta["seq"], []).append(i)
    per_obj = []
    for seq, idx in seqs.items():
        gh, gw = (int(v) for v in grids[idx[0]])
        gts = []
        for i in idx:
            a = manifest.items[i].meta.get("annotation")
            if not a:
                raise ValueError(f"DAVIS {seq}: frame {manifest.items[i].id} has no annotation")
            gts.append(davis_mask(f"{root}/{a}"))
        gt = np.stack(gts)
        onehot = first_frame_onehot(gt[0], (gh, gw))
        C = onehot.shape[0]
        lo, hi = offsets[idx[0]], offsets[idx[-1] + 1]  # frames contiguous
        for layer in layers if layers is not None else range(meta["depth"]):
            if in_pass:  # propagated during the extraction: [T·gh·gw, C_max] at this layer
                sm = np.asarray(g.array(keys.DAVIS_SOFT)[lo:hi, layer, :C])
                soft = torch.from_numpy(sm.reshape(len(idx), gh, gw, C)).permute(0, 3, 1, 2)
            else:
                tok = np.asarray(
                    g.array(keys.TOKENS)[lo:hi, layer], dtype=np.float32
                )  # one layer's chunks
                feats = torch.from_numpy(tok.reshape(len(idx), gh, gw, -1))
                soft = propagate_labels(
                    feats, onehot, n_last=n_last, radius=radius, topk=topk, temperature=temperature
                )
            pred = soft_to_labels(soft, patch, gt.shape[1:])
            pred[0] = gt[0]  # frame 0's annotation is copied, as the original
            for obj, s in evaluate_sequence(pred, gt).items():
                per_obj.append({"layer": layer, "seq": seq, "object": obj, **s})
    t = pd.DataFrame(per_obj)
    agg = t.groupby("layer", as_index=False)[["J", "F"]].mean()
    agg["JF"] = (agg["J"] + agg["F"]) / 2
    agg[["J", "F", "JF"]] *= 100
    from vitlib.stats import bootstrap_ci, settings_of

    resamples, level, seed = settings_of(statistics)
    if resamples and len(t):
        t["JF"] = (t["J"] + t["F"]) / 2
        per_seq = t.groupby(["seq", "layer"])[["J", "F", "JF"]].mean().unstack("layer")
        weight = t[t.layer == t.layer.iloc[0]].groupby("seq").size().reindex(per_seq.index)
        for m in ("J", "F", "JF"):
            v = per_seq[m].reindex(columns=agg["layer"]).to_numpy() * 100  # [S, L]
            lo, hi = bootstrap_ci(
                v, resamples=resamples, level=level, seed=seed, weights=weight.to_numpy()
            )
            agg[f"{m}_ci_low"], agg[f"{m}_ci_high"] = lo, hi
    return _stamp(
        agg,
        meta,
        view=meta["view"],
        n_sequences=len(seqs),
        n_objects=int(len(t) // max(1, t["layer"].nunique())),
        n_last=n_last,
        radius=radius,
        topk=topk,
        temperature=temperature,
    )


def spair_dense_map(tokens: torch.Tensor, grid_hw: tuple[int, int], size: int) -> torch.Tensor:
    """``[D, S·S]`` descriptors of every pixel of the ``spair`` view: token features
    ``[gh·gw, D]`` L2-normalised, bilinearly upsampled to S×S, L2-normalised again."""
    import torch.nn.functional as F

    gh, gw = grid_hw
    x = F.normalize(tokens.float().reshape(gh, gw, -1), dim=-1).permute(2, 0, 1)[None]
    up = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0]
    return F.normalize(up, dim=0).reshape(up.shape[0], -1)


#: Bytes of dense SPair maps kept for reuse while transferring one layer's pairs (an image
#: is the source or target of several pairs; ViT-B at 224 px: 154 MB a map, so about 3).
SPAIR_MAP_CACHE_BYTES = 512 * 2**20


class SpairMaps:
    """:func:`spair_dense_map` of (image, layer) computed once while its pairs are
    transferred, least recently used dropped beyond ``budget`` bytes (the most recent map
    is always kept): the same maps, bitwise, as computing them per pair."""

    def __init__(
        self,
        tokens: Callable[[int, int], torch.Tensor],
        grid_of: Callable[[int], tuple[int, int]],
        size: int,
        budget: int = SPAIR_MAP_CACHE_BYTES,
    ) -> None:
        from collections import OrderedDict

        self.tokens, self.grid_of, self.size, self.budget = tokens, grid_of, size, budget
        self._maps: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self.computed = 0

    def __call__(self, image: int, layer: int) -> torch.Tensor:
        key = (image, layer)
        if key in self._maps:
            self._maps.move_to_end(key)
            return self._maps[key]
        m = spair_dense_map(self.tokens(image, layer), self.grid_of(image), self.size)
        self.computed += 1
        self._maps[key] = m
        held = sum(t.numel() * t.element_size() for t in self._maps.values())
        while held > self.budget and len(self._maps) > 1:
            _, old = self._maps.popitem(last=False)
            held -= old.numel() * old.element_size()
        return m


def spair_view_kps(kps: Sequence[Sequence[float]], imsize: Sequence[int], size: int) -> np.ndarray:
    """Keypoints ``[K, 2]`` (x, y) of an image in the ``spair`` view's pixel coordinates."""
    from vitlib.data.views import pad_geometry

    geo = pad_geometry(int(imsize[0]), int(imsize[1]), size)
    return np.asarray(kps, float).reshape(-1, 2) * geo.scale + np.array([geo.off_x, geo.off_y])


#: Where a source keypoint's descriptor is read (``analyses.spair.rounding``): the original's
#: ``(int(x), round(y))`` (``faithful``) or both coordinates rounded (``nearest``).
SPAIR_ROUNDING = ("faithful", "nearest")


def spair_transfer(  # noqa: ANN201
    src_map: torch.Tensor,
    trg_map: torch.Tensor,
    src_kps: np.ndarray,
    size: int,
    rounding: str = "faithful",
):
    """Predicted target pixels ``[K, 2]`` (x, y, float) of source keypoints in view pixels:
    the most similar target pixel (cosine) of each source keypoint's descriptor, read at
    ``(int(x), round(y))`` (``rounding="faithful"``) or ``(round(x), round(y))``
    (``"nearest"``)."""
    if rounding not in SPAIR_ROUNDING:
        raise ValueError(f"SPair rounding must be one of {SPAIR_ROUNDING}, got {rounding!r}")
    x = src_kps[:, 0] if rounding == "faithful" else np.round(src_kps[:, 0])
    xs = np.clip(x.astype(int), 0, size - 1)
    ys = np.clip(np.round(src_kps[:, 1]).astype(int), 0, size - 1)
    desc = src_map[:, ys * size + xs]  # [D, K]
    best = (desc.T @ trg_map).argmax(1).cpu().numpy()
    return np.stack([best % size, best // size], 1).astype(float)


def spair_rounding(needs: Sequence[str]) -> str:
    """The rounding of a ``spair_transfer@rounding=…`` need among ``needs`` (``faithful``
    when unqualified).

    >>> spair_rounding(["tokens", "spair_transfer@rounding=nearest"])
    'nearest'
    """
    for n in needs:
        name, _, qual = n.partition("@")
        if name == "spair_transfer" and qual:
            kv = dict(part.split("=", 1) for part in qual.split(","))
            if set(kv) != {"rounding"} or kv["rounding"] not in SPAIR_ROUNDING:
                raise ValueError(f"need {n!r}: expected spair_transfer@rounding={SPAIR_ROUNDING}")
            return kv["rounding"]
    return "faithful"


def spair_table(
    store: Store | str,
    manifest: Manifest,
    *,
    alphas: Sequence[float] = (0.1, 0.05, 0.01),
    reference: str = "bbox",
    rounding: str = "faithful",
    statistics: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """SPair keypoint transfer per layer (docs/protocols.md §5.4) from a ``spair`` token store:
    per-token L2-normalised features bilinearly upsampled to the S×S input, each source
    keypoint's descriptor matched to the most similar target pixel (cosine), PCK per
    category against the target box's longer side (``reference="bbox"``) or the image
    size (``"image"``), averaged over categories. ``pck_ci_low``/``pck_ci_high``: bootstrap
    intervals resampling image pairs (keypoints of a pair stay together), each category's
    PCK and their mean recomputed per resample (docs §D7)."""
    import torch

    from vitlib.data.views import pad_geometry
    from vitlib.downstream.keypoints import pck

    g = Store.open(store)
    meta = g.meta
    _check_manifest(meta, manifest, store)
    if meta["view"] != "spair":
        raise ValueError(f"{store}: SPair needs the 'spair' view, not {meta['view']!r}")
    S = int(meta["spec"]["img_size"])
    offsets = g.read(keys.OFFSETS)
    grids = g.read(keys.GRID)
    in_pass: dict[int, np.ndarray] = {}
    if g.has(keys.SPAIR_PRED):  # transferred during the extraction: [K, L, 2] per pair
        done = spair_rounding(meta.get("needs", []))
        if done != rounding:
            raise ValueError(
                f"{store}: its keypoints were transferred with rounding {done!r} during the"
                f" extraction, the table asks for {rounding!r}"
            )
        pair_of, pred_all = g.read(keys.SPAIR_PAIR), g.array(keys.SPAIR_PRED)
        order = np.argsort(pair_of, kind="stable")
        bounds = np.searchsorted(pair_of[order], np.arange(len(manifest.extra["pairs"]) + 1))
        all_pred = np.asarray(pred_all[...])
        in_pass = {
            j: all_pred[order[bounds[j] : bounds[j + 1]]]
            for j in range(len(manifest.extra["pairs"]))
        }

    def tokens(i: int, layer: int) -> torch.Tensor:
        x = np.asarray(g.array(keys.TOKENS)[offsets[i] : offsets[i + 1], layer], dtype=np.float32)
        return torch.from_numpy(x)

    maps_of = SpairMaps(tokens, lambda i: (int(grids[i][0]), int(grids[i][1])), S)
    rows = []
    pair_cat: list[str] = []  # per pair with keypoints: its category, keypoints, and the
    pair_kps: list[int] = []  # correct keypoints per layer and alpha (the bootstrap's items)
    pair_correct: dict[int, list[list[float]]] = {}
    for layer in range(meta["depth"]):
        errs: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for j, p in enumerate(manifest.extra["pairs"]):
            src = spair_view_kps(p["src_kps"], p["src_imsize"], S)
            trg = spair_view_kps(p["trg_kps"], p["trg_imsize"], S)
            scale = pad_geometry(int(p["trg_imsize"][0]), int(p["trg_imsize"][1]), S).scale
            if not len(src):
                continue
            if in_pass:
                pred = in_pass[j][:, layer].astype(float)
            else:
                pred = spair_transfer(
                    maps_of(int(p["src"]), layer), maps_of(int(p["trg"]), layer), src, S, rounding
                )
            x1, y1, x2, y2 = p["trg_bndbox"]
            ref = max(x2 - x1, y2 - y1) * scale if reference == "bbox" else float(S)
            errs.setdefault(p["category"], []).append((pred, trg, np.full(len(trg), ref)))
            if layer == 0:
                pair_cat.append(str(p["category"]))
                pair_kps.append(len(trg))
            pair_correct.setdefault(j, []).append(
                [len(trg) * pck(pred, trg, np.full(len(trg), ref), a) for a in alphas]
            )
        for a in alphas:
            per_cat = {
                c: pck(
                    np.concatenate([e[0] for e in v]),
                    np.concatenate([e[1] for e in v]),
                    np.concatenate([e[2] for e in v]),
                    a,
                )
                for c, v in errs.items()
            }
            # "all": the mean over categories (the paper's number), then each category
            rows.append(
                {
                    "layer": layer,
                    "alpha": a,
                    "category": "all",
                    "pck": 100 * float(np.mean(list(per_cat.values()))),
                }
            )
            rows += [
                {"layer": layer, "alpha": a, "category": c, "pck": 100 * v}
                for c, v in per_cat.items()
            ]
    t = pd.DataFrame(rows)
    if pair_cat:
        correct = np.array([pair_correct[j] for j in sorted(pair_correct)])  # [P, L, A]
        _spair_intervals(
            t, correct, np.array(pair_kps, float), np.array(pair_cat), alphas, statistics
        )
    return _stamp(t, meta, reference=reference, n_pairs=len(manifest.extra["pairs"]))


def _spair_intervals(
    t: pd.DataFrame,
    correct: np.ndarray,
    kps: np.ndarray,
    cats: np.ndarray,
    alphas: Sequence[float],
    statistics: Mapping[str, Any] | None,
) -> None:
    """Add ``pck_ci_low``/``pck_ci_high`` to the SPair rows ``t`` (in place): resample the
    pairs, recompute every category's PCK (correct / keypoints of its resampled pairs) and
    their mean, per layer and alpha."""
    from vitlib.stats import percentile_interval, resample_counts, settings_of

    resamples, level, seed = settings_of(statistics)
    if not resamples:
        return
    P, L, A = correct.shape
    names = sorted(set(cats))
    flat = correct.reshape(P, L * A)
    samples = np.empty((resamples, len(names) + 1, L * A))
    start = 0
    for counts in resample_counts(P, resamples, seed):
        b = slice(start, start + len(counts))
        per = []
        for c, name in enumerate(names):
            m = cats == name
            with np.errstate(invalid="ignore", divide="ignore"):
                v = (counts[:, m] @ flat[m]) / (counts[:, m] @ kps[m])[:, None]
            samples[b, c + 1] = v * 100
            per.append(v)
        with np.errstate(invalid="ignore"):
            samples[b, 0] = np.nanmean(np.stack(per), axis=0) * 100  # a category may drop out
        start += len(counts)
    lo, hi = percentile_interval(samples, level)  # [1 + C, L·A]
    index = {"all": 0, **{n: i + 1 for i, n in enumerate(names)}}
    amap = {float(a): i for i, a in enumerate(alphas)}
    rows = [index[str(c)] for c in t["category"]]
    cols = [int(layer) * A + amap[float(a)] for layer, a in zip(t["layer"], t["alpha"])]
    t["pck_ci_low"], t["pck_ci_high"] = lo[rows, cols], hi[rows, cols]
