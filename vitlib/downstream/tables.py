"""Downstream tasks on finished stores: tidy per-layer tables (no forward pass)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from vitlib.downstream.knn import knn_accuracy, knn_topk_streaming
from vitlib.store import open_store, read_layer, store_meta


def knn_table(train_store: str, test_store: str, *, ks: Sequence[int] = (10, 20, 100, 200),
              temperature: float = 0.07, feature: str = "cls") -> pd.DataFrame:
    """k-NN accuracy of every layer (DINO protocol, PROTOCOLS §5.1).

    Training features are streamed layer by layer in the store's chunks; the queries of one
    layer are held in memory.  ``feature``: ``cls`` (the paper) or ``spatial_mean``.
    """
    gtr, gte = open_store(train_store), open_store(test_store)
    mtr, mte = store_meta(gtr), store_meta(gte)
    if mtr["model"] != mte["model"]:
        raise ValueError(f"train store {train_store} and test store {test_store} come from"
                         f" different models ({mtr['model']} vs {mte['model']})")
    name = f"feat/block_{feature}"
    ytr = np.asarray(gtr["labels"][...])
    yte = np.asarray(gte["labels"][...])
    C = int(max(ytr.max(), yte.max()) + 1)
    kmax = min(max(ks), len(ytr))
    ks_eff = sorted({min(k, len(ytr)) for k in ks})
    rows = []
    for layer in range(mtr["depth"]):
        q = np.asarray(gte[name][:, layer], dtype=np.float32)
        sims, idx = knn_topk_streaming(
            (c.astype(np.float32) for c in read_layer(gtr, name, layer)), q, kmax)
        acc = knn_accuracy(sims, ytr[idx], yte, ks_eff, C, temperature)
        for k in ks:
            a = acc[min(k, len(ytr))]
            rows.append({"layer": layer, "k": k, "top1": a["top1"], "top5": a["top5"]})
    t = pd.DataFrame(rows)
    for col, v in {"model": mtr["model"], "family": mtr["spec"]["family"],
                   "depth": mtr["depth"], "train": mtr["dataset"], "test": mte["dataset"],
                   "feature": feature, "temperature": temperature, "n_train": len(ytr),
                   "n_test": len(yte), "chance": 100.0 / C}.items():
        t[col] = v
    return t


def probe_table(train_store: str, test_store: str, *, epochs: int = 20, lr: float = 0.1,
                batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0,
                features: Sequence[str] = ("cls", "spatial_mean"),
                batchnorm: Sequence[bool] = (False, True), device: str = "cpu") -> pd.DataFrame:
    """Linear probe accuracy for every layer × feature kind × BatchNorm option."""
    import time

    from vitlib.downstream.probe import evaluate_probe, train_probe

    gtr, gte = open_store(train_store), open_store(test_store)
    mtr, mte = store_meta(gtr), store_meta(gte)
    ytr = np.asarray(gtr["labels"][...])
    yte = np.asarray(gte["labels"][...])
    C = int(max(ytr.max(), yte.max()) + 1)
    rows = []
    for feat in features:
        name = f"feat/block_{feat}"
        step = gtr[name].chunks[0]
        for layer in range(mtr["depth"]):
            def chunks(layer: int = layer, name: str = name):  # noqa: ANN202
                for i, x in enumerate(read_layer(gtr, name, layer)):
                    yield x, ytr[i * step:i * step + len(x)]
            xte = np.asarray(gte[name][:, layer], dtype=np.float32)
            for bn in batchnorm:
                t0 = time.perf_counter()
                probe = train_probe(chunks, mtr["embed_dim"], C, n_train=len(ytr), epochs=epochs,
                                    lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                                    batchnorm=bn, seed=seed, device=device)
                acc = evaluate_probe(probe, xte, yte, device=device)
                rows.append({"layer": layer, "feature": feat, "batchnorm": bn, **acc,
                             "seconds": time.perf_counter() - t0})
    t = pd.DataFrame(rows)
    for col, v in {"model": mtr["model"], "family": mtr["spec"]["family"], "depth": mtr["depth"],
                   "train": mtr["dataset"], "test": mte["dataset"], "epochs": epochs, "lr": lr,
                   "batch_size": batch_size, "weight_decay": weight_decay, "seed": seed,
                   "chance": 100.0 / C}.items():
        t[col] = v
    return t
