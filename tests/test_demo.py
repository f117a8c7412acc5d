"""The demo DAG end to end at test scale (presets/tiny.yaml): synthetic world in every
format → mini-zoo training → extraction in every view → every analysis → figures → HTML
report.  Marked slow; .ci/run runs it after the default suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from vitlib.tables import wide

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

MODELS = ["demo_sup", "demo_clip", "demo_dino", "demo_mae", "demo_random", "demo_zoo_sup"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    wd = tmp_path_factory.mktemp("demo")
    cfg = yaml.safe_load((REPO / "presets" / "tiny.yaml").read_text())
    # plus the demo's shipped supervised checkpoint, loaded by path and sha256 like a user's
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())["custom_models"]["demo_sup"]
    shipped["weights"]["path"] = str(REPO / shipped["weights"]["path"])
    cfg["custom_models"]["demo_zoo_sup"] = shipped
    cfg["models"].append("demo_zoo_sup")
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for args in ([], ["--report", "results/report.html"]):
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "-s",
                str(REPO / "Snakefile"),
                "-d",
                str(wd),
                "--cores",
                "2",
                *args,
            ],
            capture_output=True,
            text=True,
        )
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return wd


def test_every_figure_and_the_report_exist(demo):
    res = demo / "results"
    figs = sorted(res.glob("figures/**/*.png"))
    # every figure the DAG plans (derived from the registry, not a hard-coded count)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(demo),
            "--summary",
        ],
        capture_output=True,
        text=True,
    )
    planned = {line.split("\t")[0] for line in p.stdout.splitlines() if ".png\t" in line}
    assert planned and {str(f.relative_to(demo)) for f in figs} == planned
    assert all(f.stat().st_size > 1000 for f in figs)
    # every registered figure is drawn at least once by the demo
    from vitlib.registry import figures

    drawn = {f.stem for f in figs} | {f.parent.name for f in figs}
    assert set(figures()) <= drawn, set(figures()) - drawn
    for ds, task in (
        ("coco", "saliency"),
        ("pin", "saliency"),
        ("coco", "segments"),
        ("pin", "segments"),
        ("rsynth", "retrieval"),
        ("davis", "davis"),
        ("spair", "spair"),
    ):
        assert (res / "figures" / ds / f"{task}.pdf").stat().st_size > 1000
    assert (res / "figures/summary/best_layers.png").exists()
    html = (res / "report.html").read_text(errors="ignore")
    assert len(html) > 100_000 and "k-NN" in html
    # the first page: what the run is, then the findings table
    findings = pd.read_csv(res / "tables/summary/findings.csv")
    assert list(findings["finding"]) == list(range(1, 9)) and findings["evidence"].notna().all()
    assert "This run is the offline demo" in html and "Evidence in this run" in html
    # the paper's Tables 1 and 5 and the figure index on the first page; appendix layouts
    t5 = pd.read_csv(res / "tables/summary/table5.csv", index_col=0)
    assert "layers" in t5.columns and len(pd.read_csv(res / "tables/summary/table1.csv"))
    assert "Table 5 (appendix)" in html and "Figures by paper section" in html
    assert (res / "figures/world_val/appendix/knn.png").stat().st_size > 1000
    # Table 4 from the same run: dense beats squashed frames for every trained model
    t4 = pd.read_csv(res / "tables/summary/table4.csv", index_col=0)
    assert list(t4.columns) == ["davis Normal", "davis Dense"]
    score = t4.apply(lambda c: c.str.split(" ").str[0].astype(float)).drop(
        index="demo_noise", errors="ignore"
    )
    assert (score["davis Dense"] > score["davis Normal"]).all(), score
    assert "Table 4 (appendix)" in html
    # the composites of Figures 2, 3, 13 and 14
    for fig in ("attention_heads_cls", "local_heads", "attention_samples", "offset_heads"):
        assert (res / f"figures/world/{fig}.png").stat().st_size > 1000, fig
    assert (res / "figures/world/appendix/attention_samples.png").exists()


def test_mini_zoo_was_trained_and_loaded(demo):
    res = demo / "results"
    trained = (
        ("demo_sup", "supervised"),
        ("demo_clip", "clip"),
        ("demo_dino", "dino"),
        ("demo_mae", "mae"),
    )
    for m, _method in trained:
        loss = pd.read_csv(res / "zoo" / f"{m}.loss.tsv", sep="\t")
        assert len(loss) > 0 and np.isfinite(loss["loss"]).all()
        from vitlib.store import open_store

        meta = open_store(res / "features" / m / "world" / "center.zarr").attrs["vitlib"]
        assert meta["weights"].endswith(f"zoo/{m}.pth")
    cfg = yaml.safe_load((demo / "config.yaml").read_text())
    assert cfg["custom_models"]["demo_sup"]["train"]["method"] == "supervised"


def test_shipped_supervised_checkpoint_knn_is_far_above_chance(demo):
    """The demo's shipped supervised checkpoint, loaded by path with its sha256 like a user's
    (the tiny networks trained here learn too little on a world whose classes differ only in
    shape): last block output, k = 10, 48 queries of 4 classes."""

    def last(m):
        knn = pd.read_csv(demo / f"results/tables/world_val/knn/{m}.csv")
        knn = wide(knn)
        row = knn[(knn.layer == knn.depth - 1) & (knn.k == 10)]
        return float(row["top1"].iloc[0]), float(knn["chance"].iloc[0]), int(knn["n_test"].iloc[0])

    sup, chance, n = last("demo_zoo_sup")
    assert chance == 25.0 and n == 48
    assert sup >= 1.8 * chance
    assert sup > last("demo_random")[0]


def test_task_tables_have_real_values(demo):
    t = demo / "results" / "tables"
    for m in MODELS:
        sal = wide(pd.read_csv(t / "coco" / "saliency" / f"{m}.csv"))
        assert sal["iou"].between(0, 1).all() and (sal["n_images"] > 0).all()
        seg = pd.read_csv(t / "pin" / "segments" / f"{m}.csv")
        assert (seg["level"] == "part").all() and seg["value"].notna().all()
        ret = wide(pd.read_csv(t / "rsynth" / "retrieval" / f"{m}.csv"))
        assert set(ret["protocol"]) == {"medium", "hard"} and ret["map"].between(0, 100).all()
        dav = wide(pd.read_csv(t / "davis" / "davis" / f"{m}.csv"))
        assert dav["JF"].between(1, 100).all() and (dav["n_sequences"] == 2).all()
        sp = wide(pd.read_csv(t / "spair" / "spair" / f"{m}.csv"))
        assert sp["pck"].between(0, 100).all() and (sp["n_pairs"] > 0).all()
        for tab in (sal, ret, dav, sp):  # the long format's identity columns
            assert list(tab.columns[:6]) == [
                "analysis",
                "dataset",
                "view",
                "model",
                "family",
                "depth",
            ]
    best = pd.read_csv(t / "summary" / "best_layers.csv")
    assert set(best["model"]) == set(MODELS)
    assert {"J&F", "PCK@0.1", "mAP Medium", "mAP Hard"} <= set(best["metric"])


def test_per_rule_benchmarks_are_recorded(demo):
    bench = demo / "results" / "benchmarks"
    for rule in ("train", "extract", "saliency", "davis", "spair", "knn", "attention_entropy"):
        assert list((bench / rule).rglob("*.tsv")), rule


def test_explorer_and_bundle_redraw_without_stores(demo, tmp_path):
    """The run's explorer exists; its bundle (no store inside) imports elsewhere and the
    redraw profile plans figures, summaries and the explorer from the tables alone."""
    from vitlib.bundle import export_bundle, import_bundle

    page = demo / "results" / "explorer.html"
    assert page.stat().st_size > 20_000 and "/*__DATA__*/" not in page.read_text()
    m = export_bundle(demo / "results", tmp_path / "run.tar.gz")
    assert not any(f.startswith("features/") for f in m["files"])
    other = tmp_path / "elsewhere"
    import_bundle(tmp_path / "run.tar.gz", other / "results")
    (other / "config.yaml").write_text((demo / "config.yaml").read_text())
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "-d",
            str(other),
            "--profile",
            str(REPO / "profiles" / "redraw"),
            "-n",
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "figure_model" in p.stdout and "explorer" in p.stdout
    assert "extract" not in p.stdout.split("Job stats")[-1]
