"""Linear probes: planted linear structure is learned, noise is not; deterministic."""

import numpy as np
import pytest
import torch

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
    train = probe_mod.train_probe_grid

    def spy(*a, **kw):
        seen.extend(kw["lrs"])
        return train(*a, **kw)

    monkeypatch.setattr(probe_mod, "train_probe_grid", spy)
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


def _reference_probe(
    chunks, dim, C, *, n_train, epochs, lr, batch_size, weight_decay, batchnorm, seed
):
    """The single probe written with torch's own optimiser and scheduler (the recipe the grid
    vectorises): BatchNorm (non-affine) + Linear, SGD(momentum 0.9, weight decay), cosine."""
    import math

    from torch import nn

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers = [nn.BatchNorm1d(dim, affine=False, eps=1e-6)] if batchnorm else []
    lin = nn.Linear(dim, C)
    nn.init.trunc_normal_(lin.weight, std=0.01)
    nn.init.zeros_(lin.bias)
    model = nn.Sequential(*layers, lin)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps = epochs * max(1, math.ceil(n_train / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    for _ in range(epochs):
        parts = list(chunks())
        for ci in torch.randperm(len(parts), generator=g).tolist():
            x, y = (torch.as_tensor(np.asarray(a)) for a in parts[ci])
            perm = torch.randperm(len(y), generator=g)
            for lo in range(0, len(y), batch_size):
                idx = perm[lo : lo + batch_size]
                if batchnorm and len(idx) < 2:
                    continue
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx].float()), y[idx].long()).backward()
                opt.step()
                sched.step()
    return model.eval()


def test_probe_grid_heads_train_like_single_probes():
    """Head 0 of a grid is the probe torch.optim.SGD trains (same seed, same batches, to
    float32 round-off); heads do not interact: a grid's head 0 is the same with or without
    other heads; train_probe is a grid of one."""
    from vitlib.downstream.probe import train_probe, train_probe_grid

    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0)

    def chunks():
        for i in range(0, 240, 80):
            yield x[i : i + 80], y[i : i + 80]

    xt = torch.from_numpy(x)
    for bn in (False, True):
        kw = dict(n_train=240, epochs=3, batch_size=32, batchnorm=bn, seed=3)
        one = _reference_probe(chunks, 12, 4, lr=0.05, weight_decay=1e-3, **kw)
        grid, combos = train_probe_grid(
            chunks, 12, 4, lrs=[0.05, 0.5], weight_decays=[1e-3, 0.0], **kw
        )
        assert combos == [(0.05, 1e-3), (0.05, 0.0), (0.5, 1e-3), (0.5, 0.0)]
        alone, _ = train_probe_grid(chunks, 12, 4, lrs=[0.05], weight_decays=[1e-3], **kw)
        single = train_probe(chunks, 12, 4, lr=0.05, weight_decay=1e-3, **kw)
        with torch.no_grad():
            np.testing.assert_allclose(grid.head(0)(xt), one(xt), atol=1e-5)
            np.testing.assert_allclose(grid.head(0)(xt), alone.head(0)(xt), atol=1e-6)
            np.testing.assert_allclose(single(xt), alone.head(0)(xt), atol=0)
            # another head trained differently: its own rate and decay took effect
            assert not torch.allclose(grid.head(3)(xt), one(xt), atol=1e-3)


def test_probe_table_selects_on_validation_and_cross_checks(tmp_path, tiny_manifest):
    from conftest import TINY_ARCH

    from vitlib.downstream.tables import probe_table
    from vitlib.extract import run_extraction
    from vitlib.models import spec_from_config

    spec = spec_from_config("t_sel", {**TINY_ARCH})
    out = tmp_path / "s.zarr"
    run_extraction(spec, tiny_manifest, "center", out, batch_size=8, progress=False)
    t = probe_table(
        out,
        out,
        epochs=2,
        layers=[3],
        features=("cls", "cls+spatial_mean"),
        batchnorm=(False,),
        lrs=[1e-4, 0.3],
        weight_decays=[0.0, 1e-4],
        val_fraction=0.25,
        logreg=True,
    )
    assert list(t["feature"]) == ["cls", "cls+spatial_mean"]
    assert (t["grid_size"] == 4).all() and (t["n_val"] == 8).all() and (t["n_train"] == 24).all()
    assert t["lr"].isin([1e-4, 0.3]).all() and t["val_top1"].between(0, 100).all()
    assert t["logreg_top1"].between(0, 100).all()
    with pytest.raises(ValueError, match="probe features"):
        probe_table(out, out, features=("mean",))
    # the interval: one run is the test-image bootstrap of the selected head's hits
    assert (t["top1_ci_low"] <= t["top1"]).all() and (t["top1"] <= t["top1_ci_high"]).all()
    # seeds: the mean of the independent runs (run j is the table of seed j), and its spread
    kw = dict(epochs=2, layers=[3], features=("cls",), batchnorm=(False,), lrs=[0.3])
    runs = [probe_table(out, out, seed=j, **kw)["top1"].iloc[0] for j in range(3)]
    three = probe_table(out, out, seeds=3, **kw)
    assert three["top1"].iloc[0] == pytest.approx(np.mean(runs), abs=1e-9)
    assert three["seed_std"].iloc[0] == pytest.approx(np.std(runs, ddof=1), abs=1e-9)
    assert three["top1_ci_low"].iloc[0] <= three["top1"].iloc[0] <= three["top1_ci_high"].iloc[0]
    with pytest.raises(ValueError, match="seeds"):
        probe_table(out, out, seeds=0, **kw)
