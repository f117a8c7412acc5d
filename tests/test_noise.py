"""The noise baseline (family ``noise``): the paper's Random rows from the same code paths."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_ARCH

from vitlib import keys as K
from vitlib.config import ConfigError, main_models, validate_config
from vitlib.downstream.summary import paper_table, summary_table
from vitlib.extract import run_extraction
from vitlib.models import build_model, spec_from_config
from vitlib.models.capture import Capture
from vitlib.models.noise import image_keys
from vitlib.models.registry import get_spec
from vitlib.store import Store
from vitlib.tables import tidy


@pytest.fixture(scope="module")
def noise_spec():
    return spec_from_config("tiny_noise", {**TINY_ARCH, "family": "noise"})


def test_noise_has_the_geometry_of_its_architecture(noise_spec):
    model = build_model(noise_spec)  # check_dims: depth, heads, width, patch, image size
    images = torch.randn(3, 3, 32, 32)
    c = Capture(model, points=("block", "norm1", "mlp_branch"), attention=True).collect(images)
    L, D, N, H = noise_spec.depth, noise_spec.embed_dim, noise_spec.num_tokens, 2
    assert c.tokens["block"].shape == (L, 3, N, D)
    assert c.attention is not None and c.attention.shape == (L, 3, H, N, N)
    x = c.tokens["block"]
    assert 0 <= float(x.min()) and float(x.max()) < 1  # uniform U[0, 1) as the original
    assert abs(float(x.mean()) - 0.5) < 0.01
    assert abs(float(x.var()) - 1 / 12) < 0.005
    # attention rows are distributions over the keys
    torch.testing.assert_close(c.attention.sum(-1), torch.ones(L, 3, H, N))
    # independent draws: blocks, streams and images differ
    assert not torch.equal(x[0], x[1])
    assert not torch.equal(c.tokens["norm1"][0], x[0])
    assert not torch.equal(x[:, 0], x[:, 1])
    # the registry's B/16 baseline
    assert get_spec("noise_b16").family == "noise" and get_spec("noise_b16").embed_dim == 768


def test_noise_is_a_function_of_the_image_not_the_batch(noise_spec):
    model = build_model(noise_spec)
    cap = Capture(model, points=("block",), attention=False)
    images = torch.rand(5, 3, 32, 32)
    whole = cap.collect(images).tokens["block"]
    parts = torch.cat([cap.collect(images[i : i + 2]).tokens["block"] for i in (0, 2, 4)], 1)
    reordered = cap.collect(images.flip(0)).tokens["block"].flip(1)
    assert torch.equal(whole, parts) and torch.equal(whole, reordered)
    # another seed, other noise
    other = build_model(dataclasses.replace(noise_spec, init_seed=1))
    assert not torch.equal(Capture(other, attention=False).collect(images).tokens["block"], whole)


def test_image_keys_are_exact_and_distinguish_images():
    a = torch.rand(4, 3, 16, 16)
    keys = image_keys(a)
    assert keys == image_keys(a.clone()) and len(set(keys)) == 4
    b = a.clone()
    b[2, 1, 5, 7] += 1 / 128  # one pixel, one quantisation step
    assert image_keys(b)[2] != keys[2] and image_keys(b)[:2] == keys[:2]


def test_extraction_of_noise_is_independent_of_the_batch_size(tmp_path, noise_spec, tiny_manifest):
    stores = []
    for bs in (8, 3):
        out = tmp_path / f"n{bs}.zarr"
        run_extraction(noise_spec, tiny_manifest, "center", out, batch_size=bs, progress=False)
        stores.append(Store(out))
    a, b = stores
    keys = [K.feature("block", kind) for kind in K.FEATURE_KINDS] + [K.ATTN_DISTANCE]
    assert keys
    for k in keys:
        np.testing.assert_array_equal(a.read(k), b.read(k), err_msg=k)


def _knn_table(model: str, family: str, top1: list[float]) -> pd.DataFrame:
    n = len(top1)
    return tidy(
        pd.DataFrame(
            {
                "model": model,
                "family": family,
                "depth": n,
                "layer": range(n),
                "k": 20,
                "top1": top1,
                "top5": [5 * v for v in top1],
                "chance": 10.0,
                "dataset": "val",
            }
        ),
        analysis="knn",
        metrics=("top1", "top5", "chance"),
    )


def test_random_row_is_the_mean_over_blocks_and_comes_last():
    s = summary_table(
        [
            _knn_table("nz", "noise", [9.0, 11.0, 10.0, 12.0]),
            _knn_table("a", "fs", [10.0, 30.0, 20.0]),
            _knn_table("b", "dino", [15.0, 12.0, 40.0]),
        ]
    )
    nz = s[(s.model == "nz") & (s.metric == "k-NN top-1 (k=20)")].iloc[0]
    assert nz.best == pytest.approx(10.5) and pd.isna(nz.best_layer)
    t1 = paper_table(s, main=True, models=["b"], order=["b", "a", "nz"])
    assert list(t1.index) == ["b", "nz"]  # main models, then the Random row
    assert list(t1.columns) == ["val k-NN top-1 (k=20)"]  # Table 1: the main metric only
    assert t1.loc["b"].iloc[0] == "40.00 (3)" and t1.loc["nz"].iloc[0] == "10.50"
    t5 = paper_table(s, main=False, order=["a", "b"])
    assert list(t5.index) == ["a", "b", "nz"]
    assert list(t5.columns) == ["layers", "val k-NN top-1 (k=20)", "val k-NN top-5 (k=20)"]
    assert t5.loc["a", "val k-NN top-5 (k=20)"] == "150.00 (2)"
    assert t5.loc["nz", "layers"] == "-"


def test_main_models(tmp_path):
    cfg = {
        "models": ["demo_a", "fs_b16", "noise_b16"],
        "custom_models": {"demo_a": {**TINY_ARCH}},
        "datasets": {"w": {"kind": "imagefolder", "generate": {"size": "tiny", "seed": 0}}},
    }
    validate_config(cfg)
    assert main_models(cfg) == ["fs_b16", "noise_b16"]  # the paper's B/16 default
    cfg["figures"]["main_models"] = ["dino_b16"]
    assert main_models(cfg) == ["demo_a", "fs_b16", "noise_b16"]  # none in the run: all
    bad = {**cfg, "figures": {"main_models": ["fs_b61"]}}
    with pytest.raises(ConfigError, match=r"figures\.main_models\.0.*'fs_b61'"):
        validate_config(bad)


def test_noise_attention_over_queries_is_the_original_wrapper(noise_spec):
    """arch_kwargs noise_attention: queries — the original wrapper_random divided the noise by
    its mean over the query axis (docs/protocols.md §8.1.3): every key column averages 1."""
    spec = dataclasses.replace(
        noise_spec, arch_kwargs={**noise_spec.arch_kwargs, "noise_attention": "queries"}
    )
    images = torch.rand(2, 3, 32, 32)
    a = Capture(build_model(spec), points=("block",), attention=True).collect(images).attention
    b = (
        Capture(build_model(noise_spec), points=("block",), attention=True)
        .collect(images)
        .attention
    )
    assert a is not None and b is not None
    torch.testing.assert_close(a.mean(-2), torch.ones_like(a.mean(-2)))
    assert not torch.allclose(a.sum(-1), torch.ones_like(a.sum(-1)))
    assert float(a.min()) > 0 and not torch.allclose(a, b)
    with pytest.raises(Exception, match="noise_attention"):
        bad = dataclasses.replace(
            noise_spec, arch_kwargs={**noise_spec.arch_kwargs, "noise_attention": "rows"}
        )
        build_model(bad)
