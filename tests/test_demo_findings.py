"""The demo itself (config.yaml: the synthetic world and the shipped mini-zoo) up to its
findings table, from a fresh results folder: the paper's observations that the demo's closing
notes claim hold, hold, and the trained models' k-NN claims are met.  Marked slow (about ten
minutes on 2 cores); .ci/run runs it after the default suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

from vitlib.tables import wide

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

#: the Table 3 observations the demo shows (docs: the closing notes of issue #18)
HOLDING = {3, 5, 6, 8}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    wd = tmp_path_factory.mktemp("demo_findings")
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    for spec in cfg["custom_models"].values():  # the shipped checkpoints, by absolute path
        if "path" in spec.get("weights", {}):
            spec["weights"]["path"] = str(REPO / spec["weights"]["path"])
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    p = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(wd)]
        + ["--cores", "2", "results/tables/summary/findings.csv"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return wd / "results"


def test_the_claimed_findings_hold(demo):
    f = pd.read_csv(demo / "tables/summary/findings.csv")
    holds = set(f.loc[f["holds"].astype(bool), "finding"].astype(int))
    assert HOLDING <= holds, f[["finding", "holds", "evidence"]].to_string()


def test_supervised_models_learn_far_above_the_untrained_network(demo):
    """Best-layer k-NN top-1 (k = 20): explicit supervision (labels, captions) and masked
    reconstruction at least 15 points above the same network untrained (issue #18)."""

    def best(m: str) -> float:
        t = wide(pd.read_csv(demo / f"tables/world_val/knn/{m}.csv"))
        return float(t[t.k == 20]["top1"].max())

    untrained = best("demo_random")
    assert best("demo_sup") >= untrained + 15
    assert best("demo_clip") >= untrained + 15
    assert best("demo_mae") >= untrained + 15
