"""Presets are complete on their own: loaded exactly as Snakemake loads them (a real run of
the one rule that records the effective configuration), the paper preset has the paper's
values, and nothing of the demo's config.yaml leaks in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO


def effective(preset: Path, tmp_path: Path) -> dict:
    cfg = yaml.safe_load(preset.read_text())
    for ds in cfg.get("datasets", {}).values():
        if "root" in ds:  # fake every dataset root with an empty folder
            root = tmp_path / "roots" / str(ds["root"]).lstrip("/")
            root.mkdir(parents=True, exist_ok=True)
            ds["root"] = str(root)
    faked = tmp_path / preset.name
    faked.write_text(yaml.safe_dump(cfg))
    wd = tmp_path / "wd"
    wd.mkdir()
    # a config.yaml in the working directory must NOT be merged in when --configfile is given
    (wd / "config.yaml").write_text((REPO / "config.yaml").read_text())
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(wd),
            "--configfile",
            str(faked),
            "--cores",
            "1",
            "results/config.effective.yaml",
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return yaml.safe_load((wd / "results" / "config.effective.yaml").read_text())


def test_paper_preset_has_the_papers_values(tmp_path):
    c = effective(REPO / "presets" / "paper.yaml", tmp_path)
    a = c["analyses"]
    # nothing of the demo: no mini-zoo, no generated world, the demo's knn ks not inherited
    assert c["custom_models"] == {} and not any("generate" in d for d in c["datasets"].values())
    # the paper's 20 ViTs and its noise baseline (the Random rows)
    assert len(c["models"]) == 21 and c["models"][-1] == "noise_b16"
    assert "world" not in c["datasets"]
    assert a["knn"]["ks"] == [10, 20, 100, 200] and a["knn"]["temperature"] == 0.07
    assert a["knn"]["feature"] == "cls" and a["knn"]["view"] == "center"
    assert a["features"]["clustering_n_init"] == 10 and a["features"]["clustering_k"] is None
    assert a["segments"]["k"] == 80 and a["segments"]["n_init"] == 10  # parts and objects
    assert a["probe"]["epochs"] == 20 and a["probe"]["layers"] == "paper"
    assert a["probe"]["pairs"] == [{"train": "imagenet_train", "test": "imagenet_val"}]
    assert a["saliency"]["mass"] == 0.6 and a["attention_distance"]["units"] == "normalised"
    assert a["davis"] == {**a["davis"], "n_last": 7, "radius": 12, "topk": 5, "temperature": 0.1}
    assert a["spair"]["alphas"] == [0.1, 0.05, 0.01] and a["spair"]["reference"] == "bbox"
    assert a["davis"]["view"] == "dense" and a["segments"]["view"] == "dense"
    ds = c["datasets"]
    assert ds["imagenet50"]["per_class"] == 100 and ds["imagenet50"]["cka_batch_size"] == 8
    assert len(ds["imagenet50"]["classes"]) == 50
    assert ds["coco_val2017"]["limit"] == 5000 and ds["coco_clusters"]["limit"] == 999
    assert ds["partimagenet"]["per_super"] == 500 and ds["pin_clusters"]["per_super"] == 100
    assert ds["spair71k"]["pairs_per_category"] == 20
    assert c["analysis_threads"] == 2 and c["extract"]["threads"] == 2  # not the demo's 1
    assert c["vitlib_version"]


@pytest.mark.parametrize("name", ["tiny.yaml"])
def test_other_presets_load_on_their_own(tmp_path, name):
    c = effective(REPO / "presets" / name, tmp_path)
    assert c["analyses"]["segments"]["k"] is None  # the synthetic world's category count
