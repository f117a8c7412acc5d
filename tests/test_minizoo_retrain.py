"""Retraining the demo's supervised mini-zoo model from scratch with the exact recipe of
presets/minizoo.yaml reaches the k-NN of the checkpoint config.yaml ships (within 3 points
at the best layer), both measured by the workflow's own k-NN on the demo world.  Marked slow
(about 30 min on this project's 2-core machine); .ci/run runs it with the other slow tests."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import REPO

from vitlib.tables import wide

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def best_top1(path) -> float:
    t = wide(pd.read_csv(path))
    return float(t[t.k == 20]["top1"].max())


def test_retraining_reaches_the_shipped_checkpoints_knn(tmp_path):
    cfg = yaml.safe_load((REPO / "presets" / "minizoo.yaml").read_text())
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    shipped = dict(demo["custom_models"]["demo_sup"])
    shipped["weights"] = {**shipped["weights"], "path": str(REPO / shipped["weights"]["path"])}
    cfg["custom_models"]["shipped_sup"] = shipped
    cfg["models"] = ["demo_sup", "shipped_sup"]
    cfg["results"] = "results"
    # threads as the shipped checkpoint was trained (1): with 2 threads the float reductions
    # differ and the run lands elsewhere (measured on the 200 queries world_val had then: best
    # layer 39.5 % vs the shipped 42.5 %)
    cfg["extract"]["threads"] = 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    targets = [f"results/tables/world_val/knn/{m}.csv" for m in cfg["models"]]
    p = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path)]
        + ["--configfile", str(tmp_path / "config.yaml"), "--cores", "2", *targets],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    again, ref = (best_top1(tmp_path / t) for t in targets)
    assert abs(again - ref) <= 3.0, (again, ref)
