"""The findings table (vitlib/findings.py) on hand-built long tables: each check made to hold
and to fail with numbers computed by hand, and missing tables reported as not measured."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from vitlib.findings import (
    ANALYSES,
    FINDINGS,
    describe_run,
    findings_table,
    load_tables,
    render_rst,
    write_findings,
)

FAM = {"sup": "timm", "dino": "dino", "mae": "mae", "rnd": "random", "clip": "clip"}


def curve(analysis, model, values, *, dataset="d", metric="value", depth=None, **coords):
    """A long table of one model: one row per layer (0-based) with ``values[layer]``."""
    depth = depth or len(values)
    return pd.DataFrame(
        {
            "analysis": analysis,
            "dataset": dataset,
            "view": "center",
            "model": model,
            "family": FAM[model],
            "depth": depth,
            "layer": range(len(values)),
            **coords,
            "metric": metric,
            "value": values,
        }
    )


def cat(*frames):
    return pd.concat(frames, ignore_index=True)


def row(table, n):
    return table.set_index("finding").loc[n]


def knn(model, top1, chance=25.0, dataset="v"):
    return cat(
        curve("knn", model, top1, dataset=dataset, metric="top1", k=20, feature="cls"),
        curve(
            "knn", model, [99.0] * len(top1), dataset=dataset, metric="top1", k=10, feature="cls"
        ),
        curve(
            "knn",
            model,
            [chance] * len(top1),
            dataset=dataset,
            metric="chance",
            k=20,
            feature="cls",
        ),
    )


# ------------------------------------------------------------------------------------- 1
def entropy(model, cls_entropy, uniform=2.0):
    """Two heads per layer with the same CLS entropy (the head mean is that value) plus
    spatial-query rows the check must ignore."""
    out = []
    for head in (0, 1):
        for q, vals in (("cls", cls_entropy), ("spatial", [0.1] * len(cls_entropy))):
            out.append(
                curve("attention_entropy", model, vals, metric="entropy", head=head, query=q)
            )
            out.append(
                curve(
                    "attention_entropy",
                    model,
                    [uniform] * len(vals),
                    metric="uniform_entropy",
                    head=head,
                    query=q,
                )
            )
    return cat(*out)


def test_finding_1_sparse_patterns_and_improving_knn():
    ent = cat(
        entropy("sup", [1.8, 1.0, 0.8]),  # / 2: 0.90 early, (0.50 + 0.40)/2 = 0.45 later
        entropy("dino", [1.6, 1.4, 1.2]),  # 0.80 → 0.65
        entropy("rnd", [2.0, 2.0, 2.0]),  # 1.00 → 1.00 (not a trained model)
    )
    k = cat(knn("sup", [30.0, 40.0, 55.0]), knn("dino", [50.0, 60.0, 58.0]))
    r = row(findings_table({"attention_entropy": ent, "knn": k}), 1)
    assert r.holds is True or r.holds == True  # noqa: E712 - a pandas object column
    assert "sup 0.90 → 0.45 (-0.45)" in r.evidence
    assert "dino 0.80 → 0.65" in r.evidence and "rnd 1.00 → 1.00" in r.evidence
    assert "sup 40.0 % (2/3) → 55.0 % (3/3), +15.0" in r.evidence
    assert "k-NN top-1 (k=20)" in r.evidence

    # k-NN falls from layer 2 to 3: the second half fails
    k_fall = cat(knn("sup", [30.0, 55.0, 50.0]), knn("dino", [50.0, 60.0, 58.0]))
    r = row(findings_table({"attention_entropy": ent, "knn": k_fall}), 1)
    assert r.holds == False and "-5.0" in r.evidence  # noqa: E712
    # entropy drop 0.90 → 0.85 (< 0.10): not sparse
    ent_flat = cat(entropy("sup", [1.8, 1.7, 1.7]), entropy("dino", [1.6, 1.4, 1.2]))
    r = row(findings_table({"attention_entropy": ent_flat, "knn": k}), 1)
    assert r.holds == False and "sup 0.90 → 0.85 (-0.05)" in r.evidence  # noqa: E712
    # as sparse as it should be, but a contrastive model is sparser still (0.30 < 0.45)
    ent_dino = cat(entropy("sup", [1.8, 1.0, 0.8]), entropy("dino", [1.6, 0.6, 0.6]))
    r = row(findings_table({"attention_entropy": ent_dino, "knn": k}), 1)
    assert r.holds == False and "dino 0.80 → 0.30" in r.evidence  # noqa: E712
    # no explicitly supervised model: not measured
    r = row(findings_table({"attention_entropy": entropy("dino", [1, 1, 1]), "knn": k}), 1)
    assert r.holds is None and "no explicitly supervised model" in r.evidence


# ------------------------------------------------------------------------------------- 2
def taxonomy(model, classes):
    """``classes[layer][head]``; every head has the two metric rows of the real table."""
    out = []
    for layer, heads in enumerate(classes):
        for head, c in enumerate(heads):
            for metric in ("offset_rows", "offset_cols"):
                out.append(
                    {
                        "analysis": "head_taxonomy",
                        "dataset": "d",
                        "model": model,
                        "family": FAM[model],
                        "depth": len(classes),
                        "layer": layer,
                        "head": head,
                        "class": c,
                        "direction": "",
                        "metric": metric,
                        "value": 0,
                    }
                )
    return pd.DataFrame(out)


def test_finding_2_offset_heads():
    g, o, s = "global", "offset-local", "strict-local"
    t = cat(
        taxonomy("sup", [[s, g], [o, g]]),
        taxonomy("dino", [[o, o], [g, g]]),
        taxonomy("rnd", [[g, g], [g, g]]),
    )
    r = row(findings_table({"head_taxonomy": t}), 2)
    assert r.holds == True  # noqa: E712
    assert "sup 1/4 heads, layers 2" in r.evidence
    assert "dino 2/4 heads, layers 1" in r.evidence
    assert "rnd (random baseline) 0/4 heads" in r.evidence
    # a trained model without one fails; the random baseline's heads never count
    t = cat(taxonomy("sup", [[s, g], [g, g]]), taxonomy("rnd", [[o, o], [o, o]]))
    r = row(findings_table({"head_taxonomy": t}), 2)
    assert r.holds == False and "sup 0/4 heads" in r.evidence  # noqa: E712


# ------------------------------------------------------------------------------------- 3
def distance(model, per_layer, uniform=0.5):
    """Two heads per layer at ``v ± 0.01`` (head mean ``v``), ``uniform`` column."""
    return cat(
        *(
            curve(
                "attention_distance",
                model,
                [v + d for v in per_layer],
                metric="attention_distance",
                head=h,
                uniform=uniform,
            )
            for h, d in ((0, 0.01), (1, -0.01))
        )
    )


def test_finding_3_processing_order():
    sup = distance("sup", [0.50, 0.30, 0.45])  # / 0.5: 1.00, 0.60, 0.90: mid < late < early
    mae = distance("mae", [0.50, 0.30, 0.31])  # 1.00, 0.60, 0.62: mid ≈ late < early
    r = row(findings_table({"attention_distance": cat(sup, mae)}), 3)
    assert r.holds == True  # noqa: E712
    assert "sup [explicit] 1.00/0.60/0.90: mid < late < early" in r.evidence
    assert "mae [reconstruction] 1.00/0.60/0.62: mid ≈ late < early" in r.evidence
    # same order in both groups (the numbers differ, the order does not)
    mae_same = distance("mae", [0.40, 0.20, 0.35])  # 0.80, 0.40, 0.70
    r = row(findings_table({"attention_distance": cat(sup, mae_same)}), 3)
    assert r.holds == False and "mae [reconstruction] 0.80/0.40/0.70" in r.evidence  # noqa: E712
    # the random baseline differs but is no supervision group: one group only
    rnd = distance("rnd", [0.5, 0.5, 0.5])
    r = row(findings_table({"attention_distance": cat(sup, rnd)}), 3)
    assert r.holds is None and "fewer than two supervision groups" in r.evidence


# ------------------------------------------------------------------------------------- 4
def saliency(model, cls, spatial, dataset="coco"):
    out = []
    for q, vals in (("cls", cls), ("spatial", spatial)):
        out.append(
            curve(
                "saliency",
                model,
                vals,
                dataset=dataset,
                metric="iou",
                query=q,
                head=-1,
                head_selection="per_image",
            )
        )
        out.append(
            curve(
                "saliency",
                model,
                [0.99] * len(vals),
                dataset=dataset,
                metric="iou",
                query=q,
                head=0,
                head_selection="head",
            )
        )
    return cat(*out)


def test_finding_4_saliency_by_early_to_mid_layers():
    sup = saliency("sup", [0.40, 0.50, 0.30], [0.35, 0.45, 0.52])  # max: .40 .50 .52
    rnd = saliency("rnd", [0.30, 0.32, 0.31], [0.20, 0.20, 0.20])  # best .32
    r = row(findings_table({"saliency": cat(sup, rnd)}), 4)
    # 0.50 ≥ 0.32 + 0.05 and 0.50 ≥ 0.9 × 0.52 = 0.468
    assert r.holds == True  # noqa: E712
    assert "random baseline best 0.320" in r.evidence
    assert "sup 0.500 (2/3; best 0.520 at 3/3)" in r.evidence
    rnd_high = saliency("rnd", [0.47, 0.30, 0.30], [0.2, 0.2, 0.2])  # 0.50 < 0.47 + 0.05
    r = row(findings_table({"saliency": cat(sup, rnd_high)}), 4)
    assert r.holds == False and "random baseline best 0.470" in r.evidence  # noqa: E712
    late = saliency("sup", [0.40, 0.42, 0.60], [0.3, 0.3, 0.3])  # 0.42 < 0.9 × 0.60 = 0.54
    r = row(findings_table({"saliency": cat(late, rnd)}), 4)
    assert r.holds == False and "sup 0.420 (2/3; best 0.600 at 3/3)" in r.evidence  # noqa: E712
    r = row(findings_table({"saliency": sup}), 4)
    assert r.holds is None and "no random-baseline model" in r.evidence


# ------------------------------------------------------------------------------------- 5
def test_finding_5_reconstruction_cls_is_meaningful():
    rnd = knn("rnd", [28.0, 30.0, 29.0])
    # needed: max(2 × 25, 30 + 10) = 50
    r = row(findings_table({"knn": cat(knn("mae", [40.0, 55.0, 52.0]), rnd)}), 5)
    assert r.holds == True  # noqa: E712
    assert "mae 55.0 % (2/3); needed ≥ 50.0 % (chance 25.0 %, random baseline best 30.0 %)" in (
        r.evidence
    )
    r = row(findings_table({"knn": cat(knn("mae", [40.0, 45.0, 44.0]), rnd)}), 5)
    assert r.holds == False and "mae 45.0 % (2/3)" in r.evidence  # noqa: E712
    # a strong random baseline raises the bar: max(50, 48 + 10) = 58
    strong = knn("rnd", [48.0, 40.0, 40.0])
    r = row(findings_table({"knn": cat(knn("mae", [40.0, 55.0, 52.0]), strong)}), 5)
    assert r.holds == False and "needed ≥ 58.0 %" in r.evidence  # noqa: E712
    # without a random baseline, chance alone (and said so)
    r = row(findings_table({"knn": knn("mae", [40.0, 55.0, 52.0])}), 5)
    assert r.holds == True and "no random baseline in the run: chance only" in r.evidence  # noqa: E712
    r = row(findings_table({"knn": knn("sup", [40.0, 55.0, 52.0])}), 5)
    assert r.holds is None and "no reconstruction model" in r.evidence


# ------------------------------------------------------------------------------------- 6
def clustering(model, purity, dataset="w"):
    return cat(
        curve("clustering", model, purity, dataset=dataset, metric="purity", feature="cls"),
        curve(
            "clustering",
            model,
            [0.99] * len(purity),
            dataset=dataset,
            metric="purity",
            feature="spatial",
        ),
        curve(
            "clustering",
            model,
            [0.9],
            dataset=dataset,
            metric="purity",
            feature="noise",
            depth=len(purity),
        ).assign(layer=-1),
    )


def test_finding_6_supervised_richest_contrastive_comparable():
    k = cat(
        knn("sup", [40.0, 50.0, 60.0]),
        knn("dino", [45.0, 57.0, 56.0]),
        knn("mae", [30.0, 40.0, 35.0]),
        knn("rnd", [70.0, 70.0, 70.0]),  # the baseline is not a contender
    )
    cl = cat(clustering("sup", [0.3, 0.5, 0.7]), clustering("dino", [0.3, 0.5, 0.4]))
    r = row(findings_table({"knn": k, "clustering": cl}), 6)
    assert r.holds == True  # noqa: E712
    assert (
        "k-NN top-1 (k=20) (v): sup [explicit] 60.0 > dino [contrastive] 57.0 > mae "
        "[reconstruction] 40.0" in r.evidence
    )
    assert "CLS clustering purity (w): sup [explicit] 70.0 > dino [contrastive] 50.0" in (
        r.evidence
    )
    assert "within 5.0 points or better on: k-NN top-1 (k=20) (v) (57.0 vs 60.0)" in r.evidence
    # contrastive first on an image-level measure
    k2 = cat(knn("sup", [40.0, 50.0, 60.0]), knn("dino", [45.0, 57.0, 66.0]))
    r = row(findings_table({"knn": k2, "clustering": cl}), 6)
    assert r.holds == False and "dino [contrastive] 66.0 > sup [explicit] 60.0" in r.evidence  # noqa: E712
    # explicit first everywhere but contrastive never within 5 points
    k3 = cat(knn("sup", [40.0, 50.0, 60.0]), knn("dino", [45.0, 50.0, 54.0]))
    r = row(findings_table({"knn": k3, "clustering": cl}), 6)
    assert r.holds == False and "contrastive never within 5.0 points" in r.evidence  # noqa: E712
    # ... unless part-level clustering is (segments: 61 vs 60 %)
    seg = cat(
        *(
            curve("segments", m, p, dataset="pin", metric="purity", feature="pooled", level="part")
            for m, p in (("sup", [0.5, 0.6, 0.55]), ("dino", [0.5, 0.61, 0.6]))
        )
    )
    r = row(findings_table({"knn": k3, "clustering": cl, "segments": seg}), 6)
    assert r.holds == True and "part clustering purity (pin) (61.0 vs 60.0)" in r.evidence  # noqa: E712


# ------------------------------------------------------------------------------------- 7
def test_finding_7_local_tasks_peak_mid_to_late():
    davis = cat(
        curve("davis", "sup", [50.0, 60.0, 55.0], dataset="dv", metric="JF"),  # 2/3 hit
        curve("davis", "dino", [50.0, 60.0, 65.0], dataset="dv", metric="JF"),  # 3/3 last
        curve("davis", "mae", [70.0, 60.0, 65.0], dataset="dv", metric="JF"),  # 1/3 early
        curve("davis", "rnd", [10.0, 20.0, 5.0], dataset="dv", metric="JF"),  # not counted
    )
    r = row(findings_table({"davis": davis}), 7)
    assert r.holds == False  # noqa: E712 - 1/3 < 50 %
    assert "J&F (dv): sup 2/3, dino 3/3 ✗, mae 1/3 ✗" in r.evidence
    assert "1/3 cases (33 %)" in r.evidence
    spair = cat(
        *(
            curve(
                "spair",
                m,
                [20.0, 30.0, 25.0],
                dataset="sp",
                metric="pck",
                alpha=0.1,
                category="all",
            )
            for m in ("sup", "dino", "mae")
        )
    )
    r = row(findings_table({"davis": davis, "spair": spair}), 7)
    assert r.holds == True and "4/6 cases (67 %)" in r.evidence  # noqa: E712
    assert "PCK@0.1 (sp): sup 2/3, dino 2/3, mae 2/3" in r.evidence
    # depth 12: layer 4 (1-based) is early (3·4 ≤ 12), layer 5 mid
    deep = cat(
        curve("davis", "sup", [0.0] * 3 + [9.0] + [0.0] * 8, dataset="dv", metric="JF"),
        curve("davis", "dino", [0.0] * 4 + [9.0] + [0.0] * 7, dataset="dv", metric="JF"),
    )
    r = row(findings_table({"davis": deep}), 7)
    assert "sup 4/12 ✗, dino 5/12" in r.evidence and "1/2 cases (50 %)" in r.evidence
    assert r.holds == True  # noqa: E712 - 50 % is "often"


# ------------------------------------------------------------------------------------- 8
def test_finding_8_no_single_best_method_or_layer():
    k = cat(knn("sup", [40.0, 50.0, 60.0]), knn("dino", [45.0, 55.0, 50.0]))
    davis = cat(
        curve("davis", "sup", [50.0, 60.0, 55.0], dataset="dv", metric="JF"),
        curve("davis", "dino", [50.0, 70.0, 65.0], dataset="dv", metric="JF"),
    )
    r = row(findings_table({"knn": k, "davis": davis}), 8)
    assert r.holds == True  # noqa: E712
    assert "k-NN top-1 (k=20) (v): sup* 60.0 @3/3, dino 55.0 @2/3" in r.evidence
    assert "J&F (dv): sup 60.0 @2/3, dino* 70.0 @2/3" in r.evidence
    assert "no model best on every task; best layer varies across tasks for sup" in r.evidence
    davis_sup = cat(
        curve("davis", "sup", [50.0, 80.0, 55.0], dataset="dv", metric="JF"),
        curve("davis", "dino", [50.0, 70.0, 65.0], dataset="dv", metric="JF"),
    )
    r = row(findings_table({"knn": k, "davis": davis_sup}), 8)
    assert r.holds == False and "best on every task: sup" in r.evidence  # noqa: E712
    r = row(findings_table({"knn": k}), 8)
    assert r.holds is None and "fewer than two downstream tasks" in r.evidence


# ------------------------------------------------------------------------------------- all
def test_missing_tables_are_not_measured_and_files_round_trip(tmp_path):
    t = findings_table({})
    assert list(t["finding"]) == list(range(1, 9)) and t["holds"].isna().all()
    assert t.set_index("finding").loc[1, "evidence"] == (
        "not measured: no attention_entropy, knn tables in this run"
    )
    assert t.set_index("finding").loc[7, "evidence"] == (
        "not measured: no davis or spair or segments tables in this run"
    )
    assert all(t["check"].str.len() > 40)
    # from files: only the long tables of the analyses read, the rest skipped
    curve("davis", "sup", [50.0, 60.0, 55.0], dataset="dv", metric="JF").to_csv(
        tmp_path / "a.csv", index=False
    )
    curve("davis", "dino", [50.0, 70.0, 65.0], dataset="dv", metric="JF").to_csv(
        tmp_path / "b.csv", index=False
    )
    pd.DataFrame({"model": ["x"], "best": [1.0]}).to_csv(tmp_path / "best_layers.csv")
    paths = sorted(tmp_path.glob("*.csv"))
    loaded = load_tables(paths)
    assert list(loaded) == ["davis"] and len(loaded["davis"]) == 6
    out = write_findings(paths, tmp_path / "f.csv", tmp_path / "f.rst", description="A run.")
    assert row(out, 7).holds == True  # noqa: E712 - sup 2/3, dino 2/3
    back = pd.read_csv(tmp_path / "f.csv")
    assert list(back.columns) == ["finding", "observation", "paper", "evidence", "holds", "check"]
    assert math.isnan(back.set_index("finding").loc[1, "holds"])
    rst = (tmp_path / "f.rst").read_text()
    assert rst.startswith("A run.\n") and ".. list-table::" in rst
    assert rst.count("**not measured**") == 7 and rst.count("**holds**") == 1
    # the same from the folder
    assert row(findings_table(tmp_path), 7).holds == True  # noqa: E712


def test_rst_renders_with_docutils():
    docutils = pytest.importorskip("docutils.core")
    t = findings_table({})
    html = docutils.publish_parts(render_rst(t, "Demo."), writer="html")["html_body"]
    assert html.count("not measured") >= 8 and "<table" in html


def test_every_check_names_registered_analyses_and_states_its_thresholds():
    from vitlib.registry import ANALYSES as REGISTERED

    assert set(ANALYSES) <= set(REGISTERED)
    assert [f.number for f in FINDINGS] == list(range(1, 9))
    assert "0.1 below" in FINDINGS[0].check and "≥ 1 head" in FINDINGS[1].check


def test_describe_run():
    demo = describe_run(
        {"demo_sup": "timm", "demo_dino": "dino", "demo_random": "random"},
        {"w": {"kind": "imagefolder", "generate": {}}, "c": {"kind": "coco", "generate": {}}},
        trained=["demo_sup", "demo_dino"],
    )
    assert demo.startswith("This run is the offline demo")
    assert "(ImageNet-style class folders, COCO)" in demo
    assert "demo_dino (contrastive self-supervision, family dino)" in demo
    assert "the same network untrained (demo_random)" in demo
    paper = describe_run({"fs_b16": "fs", "mae_b16": "mae"}, {"i": {"kind": "imagefolder"}})
    assert paper.startswith("This run compares 2 ViT(s)") and "on real data" in paper
