"""The registry of analyses is complete and coherent: every analysis has a schema block,
settings the schema knows, a caption, a figure, importable functions and a test; the long
table format round-trips."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vitlib import registry
from vitlib.config import load_schema
from vitlib.data.views import VIEWS
from vitlib.tables import ID_COLUMNS, tidy, wide

TESTS = Path(__file__).parent
SCHEMA = load_schema()["properties"]["analyses"]["properties"]


@pytest.mark.parametrize("a", registry.ANALYSES_LIST, ids=lambda a: a.name)
def test_every_analysis_is_declared_completely(a):
    assert a.section in SCHEMA, f"{a.name}: no schema block analyses.{a.section}"
    props = SCHEMA[a.section]["properties"]
    top = load_schema()["properties"]
    for key in a.settings.values():
        if key in registry.GLOBAL_SETTINGS:  # a top-level block, passed whole
            assert key in top, f"{a.name}: global setting {key!r} not in the schema"
            continue
        assert key in props, f"{a.name}: setting {key!r} not in the schema of {a.section}"
        assert "default" in props[key] or key == "images", f"{a.section}.{key} has no default"
    if a.view is None:
        assert "view" in props and set(props["view"]["enum"]) <= set(VIEWS)
    else:
        assert a.view in VIEWS
    assert a.needs and a.needs <= set(registry.NEEDS)
    assert a.description and a.figures, f"{a.name}: no figure"
    # the table function exists and takes the declared settings as keywords
    params = inspect.signature(a.function()).parameters
    for kw in a.settings:
        assert kw in params, f"{a.table} has no keyword {kw!r}"
    for f in a.figures:
        assert len(f.caption) > 80, f"{f.name}: caption too short"
        sig = inspect.signature(f.function()).parameters
        assert {"dpi", "models"} <= set(sig), f"{f.plot} lacks the figure signature"
        assert set(f.options) <= set(sig), f"{f.plot} does not take {set(f.options)}"
        assert set(f.settings) <= set(sig), f"{f.plot} does not take {set(f.settings)}"
        for key in f.settings.values():
            assert "default" in props[key], f"figure {f.name}: {a.section}.{key} no default"
        for other in f.extra:  # the other analyses it reads exist, in no other shape
            assert registry.get(other).shape == "model", f"{f.name}: extra {other}"
    # a test exercises the table function (by name)
    fn = a.table.split(":")[1]
    assert any(fn in p.read_text() for p in TESTS.glob("test_*.py") if p.name != __file__), fn


def test_names_are_unique_and_summary_metrics_are_produced():
    names = [a.name for a in registry.ANALYSES_LIST]
    figs = [f.name for a in registry.ANALYSES_LIST for f in a.figures]
    assert len(set(names)) == len(names) and len(set(figs)) == len(figs)
    for a in registry.ANALYSES_LIST:
        for h in a.summary:
            assert h.metric in a.metrics, f"{a.name}: summary metric {h.metric} not melted"


def test_unknown_analysis_names_the_registered_ones():
    with pytest.raises(KeyError, match="registered: attention_distance"):
        registry.get("entropy")


def test_needs_follow_the_configured_analyses():
    cfg = {
        "analyses": {
            "attention": {"datasets": ["a"], "view": "center", "images": 0},
            "knn": {"pairs": [{"train": "tr", "test": "a"}], "view": "center", "feature": "cls"},
            "probe": {"pairs": [{"train": "tr", "test": "a"}], "view": "center", "layers": "paper"},
            "davis": {
                "datasets": ["d"],
                "view": "dense",
                **dict(n_last=7, radius=12, topk=5, temperature=0.1),
            },
        }
    }
    assert "attention_entropy" in registry.needs_for(cfg, "a", "center")
    # queries: CLS of every block (k-NN) + both kinds at the probed blocks
    assert {"features:cls", "features@paper"} <= set(registry.needs_for(cfg, "a", "center"))
    # the k-NN bank streams the training images: only the probe reads a train store
    assert registry.needs_for(cfg, "tr", "center") == ["features@paper"]
    cfg["analyses"]["probe"]["layers"] = [2, 12]
    assert registry.needs_for(cfg, "tr", "center") == ["features@2,12"]
    # propagated in the pass: the settings are part of the extraction's identity
    assert registry.needs_for(cfg, "d", "dense") == [
        "davis_propagation@n_last=7,radius=12,topk=5,temperature=0.1"
    ]
    assert registry.needs_for(cfg, "d", "center") == []


def test_feature_layout_and_covers():
    lay = registry.feature_layout(["features:cls", "features@paper"], 12, "beit")
    assert lay == {"cls": list(range(12)), "spatial_mean": [7]}
    assert registry.feature_layout(["features@paper"], 24, "mae") == {
        "cls": [23],
        "spatial_mean": [23],
    }
    assert registry.feature_layout(["attention"], 12, "fs") == {}
    held = ["attention", "features:cls", "features@paper"]
    assert registry.covers(held, ["features:cls@3"], 12, "fs")
    assert registry.covers(held, ["attention", "features@12"], 12, "fs")
    assert not registry.covers(held, ["features@3"], 12, "fs")  # spatial_mean of block 3
    assert not registry.covers(held, ["grams"], 12, "fs")
    assert registry.covers(["features"], ["features:spatial_mean@1,2"], 12, "fs")
    with pytest.raises(ValueError, match="outside 1..12"):
        registry.feature_layout(["features@13"], 12, "fs")


def test_tidy_melts_stamps_and_wide_inverts():
    t = pd.DataFrame(
        {
            "layer": [0, 1],
            "k": [20, 20],
            "top1": [10.0, 20.0],
            "top5": [30.0, np.nan],
            "model": "m",
        }
    )
    long = tidy(
        t,
        analysis="knn",
        metrics=("top1", "top5"),
        settings={"ks": [10, 20], "opt": {"a": 1}},
        identity={"dataset": "d", "view": "center", "family": "f", "depth": 2},
    )
    assert list(long.columns[:7]) == [c for c in ID_COLUMNS if c != "head"]
    assert list(long.columns[7:]) == ["k", "metric", "value", "ks", "opt.a"]
    assert len(long) == 4 and set(long["metric"]) == {"top1", "top5"}
    back = wide(long)
    assert back["top1"].tolist() == [10.0, 20.0] and np.isnan(back["top5"].iloc[1])
    with pytest.raises(ValueError, match="no metric column"):
        tidy(t, analysis="knn", metrics=("top9",))


def test_the_worked_example_is_in_the_contributing_guide():
    text = (TESTS.parent / "CONTRIBUTING.md").read_text()
    assert "attention_entropy" in text
    importlib.import_module("vitlib.attention.entropy")


def test_per_dataset_jobs_are_cheap_and_read_only_all_together():
    """One job per dataset writes every model's table only for cheap CPU analyses whose
    tables no per-model figure reads (so a store change reruns nothing more downstream)."""
    grouped = {a.name for a in registry.ANALYSES_LIST if a.per_dataset_job}
    assert grouped == {
        "attention_distance",
        "head_metrics",
        "head_taxonomy",
        "artifact_tokens",
        "attention_entropy",
        "residual",
    }
    for a in registry.ANALYSES_LIST:
        if a.per_dataset_job:
            assert a.shape == "model" and not a.heavy and not a.gpu
        per_model_fig = any(f.per_model for f in a.figures)
        if per_model_fig or a.heavy or a.gpu:
            assert not a.per_dataset_job
