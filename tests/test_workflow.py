"""The workflow through the snakemake command line, on a tiny config in a temporary directory."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, TINY_ARCH

from vitlib.tables import wide

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def tiny_config(**extra_datasets) -> dict:
    cfg = {
        "results": "results",
        "models": ["tiny_a", "tiny_b"],
        "custom_models": {
            "tiny_a": TINY_ARCH,
            "tiny_b": {
                **TINY_ARCH,
                "init_seed": 1,
                "arch_kwargs": {**TINY_ARCH["arch_kwargs"], "depth": 2, "num_heads": 4},
            },
        },
        "datasets": {
            "toy": {
                "kind": "imagefolder",
                "cka_batch_size": 4,
                "generate": {"size": "tiny", "seed": 0, "per_class": 6},
            },
            "toy_val": {
                "kind": "imagefolder",
                "cka_batch_size": 4,
                "generate": {"size": "tiny", "seed": 1, "per_class": 2},
            },
        },
        "extract": {"batch_size": 8, "threads": 1},
        "analyses": {
            "attention_distance": {"datasets": ["toy", *extra_datasets]},
            "attention": {"datasets": ["toy"], "images": 1},
            "features": {"datasets": ["toy"], "clustering_n_init": 2},
            "knn": {"pairs": [{"train": "toy", "test": "toy_val"}], "ks": [5, 20]},
            "probe": {"pairs": [{"train": "toy", "test": "toy_val"}], "epochs": 2},
        },
        "figures": {"formats": ["pdf", "png"], "dpi": 60},
    }
    cfg["datasets"].update(extra_datasets)
    return cfg


def smk(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args],
        capture_output=True,
        text=True,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"snakemake {args} failed:\n{p.stdout}\n{p.stderr}")
    return p


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Jobs a dry run would execute, from Snakemake's job-stats table."""
    p = smk(workdir, "-n", *args)
    text = p.stdout + p.stderr
    if "Nothing to be done" in text:
        return {}
    stats = text.split("Job stats:")[1]
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)
        if m.group(1) != "total"
    }


def planned_outputs(workdir: Path, *args: str) -> set[str]:
    """Output files of the jobs a dry run would execute (relative to ``results/``)."""
    p = smk(workdir, "-n", *args)
    out: set[str] = set()
    for m in re.finditer(r"^\s+output: (.*)$", p.stdout + p.stderr, re.M):
        out |= {f.strip().removeprefix("results/") for f in m.group(1).split(",")}
    return out


def write_config(workdir: Path, cfg: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> Path:
    """The tiny workflow, with tiny_b loaded from a user checkpoint file (DINO layout)."""
    import torch

    from vitlib.models import spec_from_config
    from vitlib.models.build import build_network

    wd = tmp_path_factory.mktemp("wf")
    cfg = tiny_config()
    spec_b = spec_from_config("tiny_b", {**cfg["custom_models"]["tiny_b"], "init_seed": 5})
    torch.save(build_network(spec_b).state_dict(), wd / "tiny_b.pth")
    cfg["custom_models"]["tiny_b"]["weights"] = {"path": str(wd / "tiny_b.pth"), "format": "dino"}
    write_config(wd, cfg)
    smk(wd)
    return wd


def test_full_run_produces_real_outputs(done_run):
    res = done_run / "results"
    for ext in ("pdf", "png"):
        f = res / "figures" / "toy" / f"attention_distance.{ext}"
        assert f.stat().st_size > 1000
    assert (res / "figures/toy/attention_distance.png").read_bytes()[:4] == b"\x89PNG"
    for model, depth, heads in (("tiny_a", 3, 2), ("tiny_b", 2, 4)):
        t = pd.read_csv(res / "tables" / "toy" / "attention_distance" / f"{model}.csv")
        assert len(t) == depth * heads
        assert set(t["layer"]) == set(range(depth)) and set(t["head"]) == set(range(heads))
        assert (t["n_images"] == 24).all()  # 4 classes × 6 images
        assert t["value"].between(0.05, np.sqrt(2)).all()
        assert (res / "features" / model / "toy" / "center.complete.json").exists()
    from vitlib.store import open_store

    # attention analyses: tables with real values, every figure rendered
    tax = wide(pd.read_csv(res / "tables/toy/head_taxonomy/tiny_a.csv"))
    assert len(tax) == 3 * 2 and tax["class"].notna().all()
    assert (tax["analysis"] == "head_taxonomy").all() and (tax["model"] == "tiny_a").all()
    ent = pd.read_csv(res / "tables/toy/attention_entropy/tiny_a.csv")
    e = ent[ent.metric == "entropy"]["value"]
    assert len(e) == 3 * 2 * 2 and e.between(0, np.log(17) + 1e-6).all()
    hm = pd.read_csv(res / "tables/toy/head_metrics/tiny_b.csv")
    assert set(hm["metric"]) >= {"attention_distance", "offset", "spatial_cls_attention"}
    maps = np.load(res / "tables/toy/attention_maps/tiny_a.npz")
    np.testing.assert_allclose(maps["cls"].sum(-1), 1.0, rtol=1e-4)
    # feature analyses: the within-model grid is symmetric with a unit diagonal
    cka = pd.read_csv(res / "tables/toy/cka.csv")  # one job per dataset, every pair
    g = (
        cka[(cka.model_x == "tiny_a") & (cka.model_y == "tiny_a")]
        .pivot(index="row", columns="col", values="value")
        .to_numpy()
    )
    assert g.shape == (6, 6) and np.allclose(np.diag(g), 1.0) and np.allclose(g, g.T)
    pairs = set(zip(cka.model_x, cka.model_y))  # unordered pairs in config order
    assert pairs == {("tiny_a", "tiny_a"), ("tiny_a", "tiny_b"), ("tiny_b", "tiny_b")}
    cl = pd.read_csv(res / "tables/toy/clustering/tiny_b.csv")
    assert set(cl["feature"]) == {"cls", "spatial", "noise"} and cl["value"].notna().all()
    knn = wide(pd.read_csv(res / "tables/toy_val/knn/tiny_a.csv"))
    assert len(knn) == 3 * 2 and knn["top1"].between(0, 100).all() and (knn["n_test"] == 8).all()
    assert (res / "figures/toy_val/knn.png").stat().st_size > 1000
    t6 = pd.read_csv(res / "tables/toy_val/probe_table6.csv", index_col=0)
    assert list(t6.index) == ["tiny_a", "tiny_b"] and t6.shape[1] == 5  # 4 probes, lr
    assert t6.to_numpy().min() >= 0 and t6.to_numpy().max() <= 100
    for f in (
        "cka_grids",
        "cka_last_layer",
        "residual",
        "clustering",
        "attention_offset",
        "head_taxonomy",
        "artifact_tokens",
        "attention_entropy",
        "attention_maps_aligned/tiny_a",
        "attention_images/tiny_b",
    ):
        assert (res / "figures" / "toy" / f"{f}.png").stat().st_size > 1000, f

    meta = open_store(res / "features" / "tiny_b" / "toy" / "center.zarr").attrs["vitlib"]
    assert meta["weights"].endswith("tiny_b.pth")  # the user checkpoint was the input
    # benchmark files record per-rule time
    assert list((res / "benchmarks" / "extract").rglob("*.tsv"))


def test_second_run_does_nothing(done_run):
    assert planned_jobs(done_run) == {}


def test_analysis_setting_reruns_only_that_analysis(done_run):
    cfg = yaml.safe_load((done_run / "config.yaml").read_text())
    original = copy.deepcopy(cfg)
    cfg["analyses"]["attention_distance"]["units"] = "tokens"
    before = pd.read_csv(done_run / "results/tables/toy/attention_distance/tiny_a.csv")
    write_config(done_run, cfg)
    try:
        jobs = planned_jobs(done_run)
        # the two tables (one job per dataset: a cheap analysis), their figure (main and
        # appendix layouts in one job), the findings that read them, the report's first page
        # (it lists the settings) and the record of the effective configuration
        assert jobs == {
            "table_dataset": 1,
            "figure_layouts": 1,
            "findings": 1,
            "report_page": 1,
            "effective_config": 1,
            "all": 1,
        }
        assert planned_outputs(done_run) == {
            "config.effective.yaml",
            "report_page.rst",
            "tables/summary/findings.csv",
            "tables/summary/findings.rst",
            "tables/toy/attention_distance/tiny_a.csv",
            "tables/toy/attention_distance/tiny_b.csv",
            "figures/toy/attention_distance.pdf",
            "figures/toy/attention_distance.png",
            "figures/toy/appendix/attention_distance.pdf",
            "figures/toy/appendix/attention_distance.png",
        }
        smk(done_run)
        after = pd.read_csv(done_run / "results/tables/toy/attention_distance/tiny_a.csv")
        # 4×4 grid: token units = unit-square units × (K − 1)
        np.testing.assert_allclose(after["value"], before["value"] * 3, rtol=1e-9)
        assert (after["units"] == "tokens").all()
    finally:
        write_config(done_run, original)


def test_figure_setting_redraws_only_that_figure(done_run):
    """A figure-only setting (Figure 2's heads) redraws that figure and nothing else: the
    tables of its section read only their own settings."""
    cfg = yaml.safe_load((done_run / "config.yaml").read_text())
    original = copy.deepcopy(cfg)
    before = planned_outputs(done_run)  # what an earlier test left to do, if anything
    cfg["analyses"]["attention"]["heads_shown"] = [2]
    write_config(done_run, cfg)
    try:
        # the figure, and the records of the settings (the run card, the effective config)
        new = planned_outputs(done_run) - before
        assert new - {"report_page.rst", "config.effective.yaml"} == {
            "figures/toy/attention_heads_cls.pdf",
            "figures/toy/attention_heads_cls.png",
        }, new
    finally:
        write_config(done_run, original)


def test_one_figure_target_builds_only_what_it_needs(tmp_path):
    other = {
        "kind": "imagefolder",
        "cka_batch_size": 4,
        "generate": {"size": "tiny", "seed": 1, "per_class": 4},
    }
    write_config(tmp_path, tiny_config(other=other))
    assert planned_jobs(tmp_path)["extract"] == 6  # three datasets for `all`
    jobs = planned_jobs(tmp_path, "results/figures/other/attention_distance.pdf")
    assert jobs == {
        "generate_world": 1,
        "manifest": 1,
        "extract": 2,
        "table_dataset": 1,  # both models' tables
        "figure_layouts": 1,  # both layouts of the figure
    }


def test_bad_config_stops_before_any_job(tmp_path):
    cfg = tiny_config()
    cfg["models"].append("fs_b99")
    cfg["extract"]["batch_size"] = 8
    write_config(tmp_path, cfg)
    p = smk(tmp_path, check=False)
    assert p.returncode != 0
    err = p.stdout + p.stderr
    assert "models.2" in err and "fs_b99" in err
    assert not (tmp_path / "results").exists()

    cfg = tiny_config()
    cfg["extract"]["batch_size"] = -1
    write_config(tmp_path, cfg)
    p = smk(tmp_path, check=False)
    assert p.returncode != 0 and "extract.batch_size" in p.stdout + p.stderr


def test_external_imagefolder_file_list_change_reruns_manifest(tmp_path, tiny_world):
    """A real (non-generated) folder: adding an image reruns the manifest and its dependents."""
    data = tmp_path / "data"
    shutil.copytree(tiny_world / "imagenet" / "train", data)
    cfg = tiny_config()
    cfg["datasets"]["toy"] = {
        "kind": "imagefolder",
        "root": str(data),
        "cka_batch_size": 4,
        "per_class": 3,
    }
    write_config(tmp_path / "wd", cfg)
    smk(tmp_path / "wd")
    assert planned_jobs(tmp_path / "wd") == {}
    shutil.copy(data / "disc" / "0000.png", data / "disc" / "0000b.png")
    jobs = planned_jobs(tmp_path / "wd")
    assert jobs["manifest"] == 1 and jobs["extract"] == 2


def test_removing_an_analysis_never_reextracts_adding_one_reextracts_its_stores(done_run):
    cfg = yaml.safe_load((done_run / "config.yaml").read_text())
    original = copy.deepcopy(cfg)
    try:
        # fewer needs on every store (no attention on toy, no probe on toy/toy_val)
        del cfg["analyses"]["attention"], cfg["analyses"]["probe"]
        write_config(done_run, cfg)
        assert "extract" not in planned_jobs(done_run)
        # the probe on every block needs the mean spatial token of every block of the
        # queries (toy_val held it at the probed block only): those two stores, nothing else
        cfg = copy.deepcopy(original)
        cfg["analyses"]["probe"]["layers"] = "all"
        write_config(done_run, cfg)
        out = planned_outputs(done_run)
        assert {o for o in out if o.startswith("features/")} == {
            "features/tiny_a/toy_val/center.complete.json",
            "features/tiny_b/toy_val/center.complete.json",
        }
    finally:
        write_config(done_run, original)


def test_plan_equals_the_stores_on_disk(done_run, monkeypatch):
    """The plan's bytes and chunk files per array are those the extraction wrote."""
    from vitlib import registry
    from vitlib.plan import load_config, plan, plan_store

    monkeypatch.chdir(done_run)
    cfg = load_config(["config.yaml"], base_dir=done_run)
    plans, totals = plan(cfg)
    banks = [p for p in plans if p.view == "knn_bank"]
    plans = [p for p in plans if p.view != "knn_bank"]
    assert totals["stores"] == len(plans) == 4  # 2 models × (toy, toy_val) centre view
    assert totals["knn_banks"] == len(banks) == 2  # toy streamed against toy_val, per model
    for b in banks:  # kept neighbours only: the planned arrays plus the .npz's small overhead
        on_disk = (done_run / "results" / "knn_banks" / "toy_val" / f"{b.model}.npz").stat().st_size
        assert b.bytes <= on_disk <= b.bytes + 8192, (b.model, on_disk, b.bytes)
    for p in plans:
        store = done_run / "results" / "features" / p.model / p.dataset / f"{p.view}.zarr"
        assert p.images == {"toy": 24, "toy_val": 8}[p.dataset]
        for name, planned in p.arrays.items():
            chunks = [f for f in (store / name / "c").rglob("*") if f.is_file()]
            on_disk = sum(f.stat().st_size for f in chunks)
            if name.startswith("sums/"):  # small, written once, compressed
                assert on_disk <= planned, (p.dataset, name)  # all-zero: no chunk
            else:
                assert on_disk == planned, (p.dataset, name)
        # one file per shard (sums: one each, none when all zero)
        files = [f for f in store.rglob("*") if f.is_file() and "/c/" in str(f)]
        n_sums = sum(name.startswith("sums/") for name in p.arrays)
        sums = [f for f in files if "/sums/" in str(f)]
        assert len(files) - len(sums) == p.files - n_sums, (p.dataset, sorted(map(str, files)))
        assert len(sums) <= n_sums
        assert sorted(p.needs) == registry.needs_for(cfg, p.dataset, p.view)
    # the k-NN/probe query set needs features only: no attention arrays in its store
    val = plan_store(
        cfg, "tiny_a", "toy_val", "center", registry.needs_for(cfg, "toy_val", "center")
    )
    assert not any(k.startswith("attn/") for k in val.arrays)
    assert not (done_run / "results/features/tiny_a/toy_val/center.zarr/attn").exists()
