"""Checkpoint series: config expansion into per-epoch models, the epoch table from the
summary metrics, its figure, and the workflow's DAG for a series."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from vitlib.config import ConfigError, series_models, validate_config
from vitlib.downstream.series import series_figure, series_table
from vitlib.tables import tidy

DEMO = yaml.safe_load((REPO / "config.yaml").read_text())
SUP = DEMO["custom_models"]["demo_sup"]
W = str(REPO / SUP["weights"]["path"])


def _config(**series):
    return {
        "models": ["demo_sup"],
        "custom_models": {"demo_sup": {**SUP, "weights": {**SUP["weights"], "path": W}}},
        "checkpoints": series,
        "datasets": {"d": {"kind": "imagefolder", "root": "nowhere"}},
    }


def test_series_become_per_epoch_models():
    run = {"arch": SUP["arch"], "family": "timm", "arch_kwargs": SUP["arch_kwargs"]}
    cfg = _config(
        run={**run, "epochs": {20: W, 5: {"path": W, "sha256": SUP["weights"]["sha256"]}}}
    )
    out = validate_config(cfg, require_data=False)
    assert out["models"] == ["demo_sup", "run-e5", "run-e20"]  # epoch order, after the list
    assert series_models(out) == {"run": [(5, "run-e5"), (20, "run-e20")]}
    assert out["custom_models"]["run-e5"]["weights"]["sha256"] == SUP["weights"]["sha256"]
    assert out["custom_models"]["run-e20"]["family"] == "timm"
    with pytest.raises(ConfigError, match="base' or 'arch"):
        validate_config(_config(r={"epochs": {1: W}}), require_data=False)
    with pytest.raises(ConfigError, match="checkpoints"):
        validate_config(_config(r={**run, "epochs": {"x": W}}), require_data=False)


def test_series_table_and_figure(tmp_path):
    rng = np.random.default_rng(0)
    tables = []
    for e in (1, 2, 3):
        vals = rng.uniform(0, 10, 4) + 10 * e
        tables.append(
            tidy(
                pd.DataFrame(
                    {
                        "model": f"run-e{e}",
                        "family": "timm",
                        "depth": 4,
                        "dataset": "val",
                        "layer": range(4),
                        "k": 20,
                        "top1": vals,
                        "top5": 0.0,
                    }
                ),
                analysis="knn",
                metrics=("top1", "top5"),
            )
        )
    tables.append(tables[0].assign(model="other"))  # a model of no series: left out
    t = series_table(tables, {"run": [(1, "run-e1"), (2, "run-e2"), (3, "run-e3")]})
    top1 = t[t.metric == t.metric.iloc[0]]
    assert sorted(top1.epoch.unique()) == [1, 2, 3] and set(top1.model) == {
        "run-e1",
        "run-e2",
        "run-e3",
    }
    e2 = top1[top1.epoch == 2].sort_values("layer")["value"].to_numpy()
    want = tables[1][tables[1].metric == "top1"].sort_values("layer")["value"].to_numpy()
    np.testing.assert_allclose(e2, want)
    series_figure(t, [tmp_path / "s.png"])
    assert (tmp_path / "s.png").stat().st_size > 10_000


def test_workflow_plans_the_series(tmp_path):
    cfg = yaml.safe_load((REPO / "presets" / "tiny.yaml").read_text())
    cfg["checkpoints"] = {
        "sup_run": {
            "arch": SUP["arch"],
            "family": "timm",
            "arch_kwargs": SUP["arch_kwargs"],
            "epochs": {1: W, 2: W},
        }
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(tmp_path),
            "-n",
            "--quiet",
            "rules",
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "checkpoint_series" in p.stdout
