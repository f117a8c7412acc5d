"""Linear probes: planted linear structure is learned, noise is not; deterministic."""

import numpy as np
import pytest

from vitlib.downstream.probe import evaluate_probe, train_probe


def chunks_of(x, y, size):
    def gen():
        for lo in range(0, len(y), size):
            yield x[lo : lo + size], y[lo : lo + size]

    return gen


def planted(n, w, seed):
    """Labels = argmax of a fixed linear map of Gaussian features."""
    x = np.random.default_rng(seed).normal(size=(n, w.shape[0])).astype(np.float32)
    return x, (x @ w).argmax(1)


def test_planted_linear_structure_is_learned():
    w = np.random.default_rng(0).normal(size=(32, 5))
    xtr, ytr = planted(2000, w, seed=1)
    xte, yte = planted(500, w, seed=2)
    for bn in (False, True):
        p = train_probe(
            chunks_of(xtr, ytr, 300),
            32,
            5,
            n_train=2000,
            epochs=30,
            lr=0.5,
            batch_size=64,
            batchnorm=bn,
            seed=0,
        )
        acc = evaluate_probe(p, xte, yte)
        assert acc["top1"] > 90 and acc["top5"] == 100.0


def test_noise_stays_near_chance_and_is_deterministic():
    rng = np.random.default_rng(3)
    xtr, ytr = rng.normal(size=(1000, 16)).astype(np.float32), rng.integers(0, 10, 1000)
    xte, yte = rng.normal(size=(1000, 16)).astype(np.float32), rng.integers(0, 10, 1000)
    p1 = train_probe(chunks_of(xtr, ytr, 128), 16, 10, n_train=1000, epochs=5, seed=7)
    p2 = train_probe(chunks_of(xtr, ytr, 128), 16, 10, n_train=1000, epochs=5, seed=7)
    a1, a2 = evaluate_probe(p1, xte, yte), evaluate_probe(p2, xte, yte)
    assert a1 == a2
    assert 3 < a1["top1"] < 18  # chance is 10 %
    for t1, t2 in zip(p1.state_dict().values(), p2.state_dict().values()):
        assert (t1 == t2).all()


def test_table6_and_best_layer_layouts():
    import pandas as pd

    from vitlib.downstream.summary import best_layer, table6

    rows = [
        {
            "model": m,
            "layer": l,
            "depth": 2,
            "family": "fs",
            "feature": f,
            "batchnorm": bn,
            "top1": 10 * l + (5 if f == "cls" else 0) + (1 if bn else 0),
        }
        for m in ("a", "b")
        for l in range(2)
        for f in ("cls", "spatial_mean")
        for bn in (False, True)
    ]
    t6 = table6(pd.DataFrame(rows))
    assert list(t6.index) == ["a", "b"]
    assert t6.loc["a", "CLS +BN"] == 16 and t6.loc["b", "Spatial"] == 10
    # BEiT: the paper's Table 6 takes block 8 (Appendix E.4), not the last block
    beit = pd.DataFrame(
        [
            {
                "model": "c",
                "layer": l,
                "depth": 12,
                "family": "beit",
                "feature": f,
                "batchnorm": bn,
                "top1": float(l),
            }
            for l in range(12)
            for f in ("cls", "spatial_mean")
            for bn in (False, True)
        ]
    )
    assert (table6(beit).loc["c"] == 7.0).all()
    knn = pd.DataFrame(
        {"model": ["a", "a", "a"], "layer": [0, 1, 2], "depth": 3, "top1": [5.0, 9.0, 7.0]}
    )
    b = best_layer(knn, "top1")
    assert b.iloc[0].to_dict() == {"model": "a", "best_layer": 2, "of": 3, "best_top1": 9.0}


def test_probe_lr_factor_reduces_the_rate_of_its_family(tmp_path, tiny_manifest, monkeypatch):
    """Table 6: BEiT's probe 'required reduced LR'; the factor applies to its family only and
    the table records the rate used."""
    from conftest import TINY_ARCH

    import vitlib.downstream.probe as probe_mod
    from vitlib.downstream.tables import probe_table
    from vitlib.extract import run_extraction
    from vitlib.models import spec_from_config

    seen: list[float] = []
    train = probe_mod.train_probe

    def spy(*a, **kw):
        seen.append(kw["lr"])
        return train(*a, **kw)

    monkeypatch.setattr(probe_mod, "train_probe", spy)
    for family, want in (("beit", 0.01), ("dino", 0.1)):
        spec = spec_from_config(f"t_{family}", {**TINY_ARCH, "family": family})
        out = tmp_path / f"{family}.zarr"
        run_extraction(spec, tiny_manifest, "center", out, batch_size=8, progress=False)
        seen.clear()
        t = probe_table(
            out,
            out,
            epochs=1,
            lr=0.1,
            lr_factor={"beit": 0.1},
            layers="all",
            features=("cls",),
            batchnorm=(False,),
        )
        assert seen == pytest.approx([want] * 3)
        np.testing.assert_allclose(t["lr"], want)
