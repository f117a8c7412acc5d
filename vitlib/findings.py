"""The findings table: the paper's main observations, checked against a run's own tables.

The paper (Teaching Matters, CVPR 2023) summarises its results in Table 3; its first eight
rows are the main-paper observations (Sections 4–6).  :func:`findings_table` turns each of
them into an operational check on the long tables of a run (:mod:`vitlib.tables`) and says,
with the numbers it used, whether the observation holds in that run.  The checks, their
thresholds (the constants below) and the reading of every observation were fixed before any
run's numbers were looked at; a finding that does not hold is reported as such, and one whose
tables are missing (or whose run lacks the models it speaks about) is ``holds = None`` with
the reason in ``evidence``.

Conventions shared by the checks:

* **Supervision groups** by the ``family`` column (:data:`GROUPS`): explicit supervision
  (FS / timm / DeiT-III, CLIP, SigLIP), contrastive self-supervision (DINO, DINOv2, MoCo),
  reconstruction (MAE, BEiT) and the untrained random baseline (``random``).  "All ViTs"
  means every *trained* model (family not ``random``); the random baseline is the reference
  where a claim says "meaningful" or "differentiate".
* **Depth thirds** by the 1-based layer ``l`` of a model of depth ``L``: early ``3l ≤ L``,
  mid ``L < 3l ≤ 2L``, late ``3l > 2L``; "mid-to-late" is mid or late, "early-to-mid" early
  or mid.  Layers are printed 1-based as ``l/L``.
* **Best layer**: the first layer reaching a model's highest score.
* **Downstream scores** are the best-layer summary's headline metrics
  (:attr:`vitlib.registry.Analysis.summary`, via :func:`vitlib.downstream.summary.headline`):
  k-NN top-1 (k = 20), retrieval mAP (Medium), DAVIS J&F, SPair PCK@0.1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# ------------------------------------------------------------------------------ thresholds
#: Finding 1: the CLS query's attention entropy, as a fraction of the entropy of uniform
#: attention (log N), averaged over the mid-to-late layers, must lie at least this far below
#: its average over the early layers ("devolves into sparse patterns").
SRP_ENTROPY_DROP = 0.10
#: Finding 1: k-NN top-1 (points) gained from the first mid-to-late layer to the last
#: ("the quality of features continues to improve in these layers").
KNN_MIN_GAIN = 1.0
#: Finding 2: offset-local heads (head taxonomy) every trained model must have.
OFFSET_MIN_HEADS = 1
#: Finding 3: two depth thirds whose mean attention distances differ by less than this
#: fraction of the distance of uniform attention count as equally local.
ORDER_TOLERANCE = 0.05
#: Finding 4: the best early-to-mid saliency IoU must exceed the random baseline's best IoU
#: (any layer) by this much ...
SALIENCY_MARGIN = 0.05
#: ... and reach this fraction of the model's best IoU over all layers (the plateau is
#: reached by the early-to-mid layers).
SALIENCY_PLATEAU = 0.90
#: Finding 5: "meaningful" CLS = best-layer k-NN top-1 at least this multiple of chance ...
MEANINGFUL_CHANCE_FACTOR = 2.0
#: ... and at least this many points above the random baseline's best layer.
MEANINGFUL_RANDOM_MARGIN = 10.0
#: Finding 6: "comparable" = the best contrastive model within this many points (k-NN top-1
#: %, clustering purity in %) of the best explicitly supervised model.
COMPARABLE_POINTS = 5.0
#: Finding 7: "often" = at least this fraction of (trained model, local task) cases.
OFTEN_FRACTION = 0.5

# ------------------------------------------------------------------------------ groups
EXPLICIT = "explicit"
CONTRASTIVE = "contrastive"
RECONSTRUCTION = "reconstruction"
RANDOM = "random"
#: Supervision group of every family the project knows (others: no group).
GROUPS: Mapping[str, str] = {
    "fs": EXPLICIT,
    "timm": EXPLICIT,
    "deit3": EXPLICIT,
    "clip": EXPLICIT,
    "siglip": EXPLICIT,
    "dino": CONTRASTIVE,
    "dinov2": CONTRASTIVE,
    "moco": CONTRASTIVE,
    "mae": RECONSTRUCTION,
    "beit": RECONSTRUCTION,
    "random": RANDOM,
    "noise": RANDOM,  # the paper's noise baseline (vitlib.models.noise)
}
GROUP_NAMES = {
    EXPLICIT: "explicit supervision",
    CONTRASTIVE: "contrastive self-supervision",
    RECONSTRUCTION: "reconstruction self-supervision",
    RANDOM: "random baseline (untrained network or noise)",
}

Tables = Mapping[str, pd.DataFrame]
Verdict = tuple[bool | None, str]


def group_of(family: str) -> str:
    """The supervision group of a family (``""`` for an unknown family)."""
    return GROUPS.get(str(family), "")


# ------------------------------------------------------------------------------ helpers
def _early(layer: int, depth: int) -> bool:
    return 3 * (layer + 1) <= depth


def _mid_to_late(layer: int, depth: int) -> bool:
    return 3 * (layer + 1) > depth


def _early_to_mid(layer: int, depth: int) -> bool:
    return 3 * (layer + 1) <= 2 * depth


def _third(layer: int, depth: int) -> str:
    return "early" if _early(layer, depth) else "mid" if _early_to_mid(layer, depth) else "late"


def _lay(layer: int, depth: int) -> str:
    return f"{int(layer) + 1}/{int(depth)}"


def _models(t: pd.DataFrame) -> pd.DataFrame:
    """One row per model: ``model, family, depth, group`` (table order)."""
    m = t.drop_duplicates("model")[["model", "family", "depth"]].copy()
    m["group"] = m["family"].map(group_of)
    return m.reset_index(drop=True)


def _trained(t: pd.DataFrame) -> list[str]:
    return [r.model for r in _models(t).itertuples() if r.group != RANDOM]


def _random(t: pd.DataFrame) -> list[str]:
    return [r.model for r in _models(t).itertuples() if r.group == RANDOM]


def _in(t: pd.DataFrame, group: str) -> list[str]:
    return [r.model for r in _models(t).itertuples() if r.group == group]


def _per_layer(t: pd.DataFrame) -> pd.DataFrame:
    """Mean ``value`` per ``dataset, model, family, depth, layer`` (over heads etc.)."""
    keys = ["dataset", "model", "family", "depth", "layer"]
    return t.groupby(keys, sort=False, as_index=False)["value"].mean()


def _best(curve: pd.DataFrame) -> pd.Series:
    """The row of the first layer reaching the highest ``value`` of one model's curve."""
    c = curve.dropna(subset=["value"]).sort_values("layer")
    return c.loc[c["value"].idxmax()]


def _headline(t: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 metric the best-layer summary takes from ``t`` (k-NN top-1 at
    k = 20, retrieval mAP Medium, DAVIS J&F, SPair PCK@0.1), with the label in ``metric``."""
    from vitlib.downstream.summary import headline

    h = headline(t, main_only=True)
    return h[h["metric"] == h["metric"].iloc[0]].reset_index(drop=True)


def _f(x: float, nd: int = 1) -> str:
    return f"{x:.{nd}f}"


@dataclass(frozen=True)
class Finding:
    """One observation of the paper's Table 3 and its check on a run's tables."""

    number: int
    observation: str
    paper: str
    check: str  # the operational criterion, in words (thresholds from the constants above)
    needs: tuple[str, ...]  # analyses whose tables the check reads (all required)
    evaluate: Callable[[Tables], Verdict]
    any_of: tuple[str, ...] = ()  # of these, at least one is required
    optional: tuple[str, ...] = ()  # read when present

    def analyses(self) -> tuple[str, ...]:
        return self.needs + self.any_of + self.optional


# ------------------------------------------------------------------------------ 1
def _check_sparse_patterns(tables: Tables) -> Verdict:
    ent = tables["attention_entropy"]
    cls = ent[ent["query"] == "cls"]
    e = cls[cls["metric"] == "entropy"].merge(
        cls[cls["metric"] == "uniform_entropy"][
            ["dataset", "model", "layer", "head", "value"]
        ].rename(columns={"value": "uniform"}),
        on=["dataset", "model", "layer", "head"],
    )
    e = e.assign(value=e["value"] / e["uniform"])
    explicit = _in(e, EXPLICIT)
    if not explicit:
        return None, "no explicitly supervised model (family fs/timm/deit3/clip/siglip) in the run"
    knn = _headline(tables["knn"])
    label = str(knn["metric"].iloc[0])
    ok = True
    parts = []
    for ds, g in _per_layer(e).groupby("dataset", sort=False):
        stats: dict[str, tuple[float, float]] = {}
        for m, c in g.groupby("model", sort=False):
            early = c[[_early(r.layer, r.depth) for r in c.itertuples()]]["value"]
            late = c[[_mid_to_late(r.layer, r.depth) for r in c.itertuples()]]["value"]
            if len(early) and len(late):
                stats[str(m)] = (float(early.mean()), float(late.mean()))
        trained_other = [m for m in _trained(g) if m not in explicit and m in stats]
        items = []
        for m in explicit:
            if m not in stats:
                return None, f"{m}: too shallow for early and mid-to-late layers ({ds})"
            early_m, late_m = stats[m]
            sparser = all(late_m < stats[o][1] for o in trained_other)
            ok &= late_m <= early_m - SRP_ENTROPY_DROP and sparser
            items.append(f"{m} {_f(early_m, 2)} → {_f(late_m, 2)} ({late_m - early_m:+.2f})")
        others = [
            f"{m} {_f(stats[m][0], 2)} → {_f(stats[m][1], 2)}" for m in stats if m not in explicit
        ]
        parts.append(
            f"CLS-attention entropy / log N, early → mid-to-late mean ({ds}): "
            + ", ".join(items)
            + (f"; others: {', '.join(others)}" if others else "")
        )
    for ds, g in knn.groupby("dataset", sort=False):
        items = []
        for m in explicit:
            c = g[g["model"] == m].sort_values("layer")
            c = c[[_mid_to_late(r.layer, r.depth) for r in c.itertuples()]]
            if c.empty:
                return None, f"no {label} table of {m} on {ds}"
            first, last = c.iloc[0], c.iloc[-1]
            gain = float(last["value"] - first["value"])
            ok &= gain >= KNN_MIN_GAIN
            items.append(
                f"{m} {_f(first['value'])} % ({_lay(first['layer'], first['depth'])}) → "
                f"{_f(last['value'])} % ({_lay(last['layer'], last['depth'])}), {gain:+.1f}"
            )
        parts.append(f"{label} ({ds}): " + ", ".join(items))
    return bool(ok), "; ".join(parts)


# ------------------------------------------------------------------------------ 2
def _check_offset_heads(tables: Tables) -> Verdict:
    t = tables["head_taxonomy"]
    heads = t.drop_duplicates(["dataset", "model", "layer", "head"])
    if not _trained(heads):
        return None, "no trained model in the run"
    ok = True
    parts = []
    for ds, g in heads.groupby("dataset", sort=False):
        items = []
        for r in _models(g).itertuples():
            c = g[g["model"] == r.model]
            off = c[c["class"] == "offset-local"]
            n = len(off)
            if r.group != RANDOM:
                ok &= n >= OFFSET_MIN_HEADS
            where = sorted({int(x) + 1 for x in off["layer"]})
            tag = " (random baseline)" if r.group == RANDOM else ""
            layers = f", layers {','.join(map(str, where))}" if where else ""
            items.append(f"{r.model}{tag} {n}/{len(c)} heads{layers}")
        parts.append(f"offset-local heads ({ds}): " + ", ".join(items))
    return bool(ok), "; ".join(parts)


# ------------------------------------------------------------------------------ 3
def _order(means: Mapping[str, float], tol: float) -> tuple[tuple[int, int, int], str]:
    """Sign pattern (mid − early, late − mid, late − early; 0 within ``tol``) and the thirds
    from most local to most global (``≈``: within ``tol`` of the previous one)."""

    def sgn(x: float) -> int:
        return 0 if abs(x) < tol else (1 if x > 0 else -1)

    e, m, la = means["early"], means["mid"], means["late"]
    sig = (sgn(m - e), sgn(la - m), sgn(la - e))
    ranked = sorted(means, key=lambda k: means[k])
    text = ranked[0]
    for a, b in zip(ranked, ranked[1:]):
        text += (" ≈ " if abs(means[b] - means[a]) < tol else " < ") + b
    return sig, text


def _check_processing_order(tables: Tables) -> Verdict:
    t = tables["attention_distance"]
    t = t[t["metric"] == "attention_distance"]
    if "uniform" in t:
        t = t.assign(value=t["value"] / t["uniform"])
    if not _trained(t):
        return None, "no trained model in the run"
    ok = False
    parts = []
    n_groups = 0
    for ds, g in _per_layer(t).groupby("dataset", sort=False):
        sigs: dict[str, tuple[str, tuple[int, int, int]]] = {}
        items = []
        for r in _models(g).itertuples():
            c = g[g["model"] == r.model]
            thirds = c.assign(third=[_third(x.layer, x.depth) for x in c.itertuples()])
            means = thirds.groupby("third")["value"].mean().to_dict()
            if set(means) != {"early", "mid", "late"}:
                items.append(f"{r.model} too shallow")
                continue
            sig, text = _order(means, ORDER_TOLERANCE)
            nums = "/".join(_f(means[k], 2) for k in ("early", "mid", "late"))
            tag = r.group or "no group"
            items.append(f"{r.model} [{tag}] {nums}: {text}")
            if r.group and r.group != RANDOM:
                sigs[r.model] = (r.group, sig)
        groups = {gr for gr, _ in sigs.values()}
        n_groups = max(n_groups, len(groups))
        ok |= any(ga != gb and sa != sb for ga, sa in sigs.values() for gb, sb in sigs.values())
        parts.append(
            f"attention distance / uniform, early/mid/late mean, most local → most global ({ds}): "
            + "; ".join(items)
        )
    if n_groups < 2:
        return None, "fewer than two supervision groups among the trained models: " + "; ".join(
            parts
        )
    return bool(ok), "; ".join(parts)


# ------------------------------------------------------------------------------ 4
def _check_saliency(tables: Tables) -> Verdict:
    t = tables["saliency"]
    t = t[(t["metric"] == "iou") & (t["head_selection"] == "per_image")]
    if not _trained(t):
        return None, "no trained model in the run"
    if not _random(t):
        return None, "no random-baseline model (family random) to compare the IoU with"
    keys = ["dataset", "model", "family", "depth", "layer"]
    curve = t.groupby(keys, sort=False, as_index=False)["value"].max()  # the better query
    ok = True
    parts = []
    for ds, g in curve.groupby("dataset", sort=False):
        rand = g[g["model"].isin(_random(g))]
        if rand.empty:
            return None, f"no random-baseline saliency table on {ds}"
        ref = float(rand["value"].max())
        items = []
        for m in _trained(g):
            c = g[g["model"] == m]
            em = c[[_early_to_mid(r.layer, r.depth) for r in c.itertuples()]]
            b_em, b_all = _best(em), _best(c)
            v_em, v_all = float(b_em["value"]), float(b_all["value"])
            ok &= v_em >= ref + SALIENCY_MARGIN and v_em >= SALIENCY_PLATEAU * v_all
            items.append(
                f"{m} {_f(v_em, 3)} ({_lay(b_em['layer'], b_em['depth'])}; best "
                f"{_f(v_all, 3)} at {_lay(b_all['layer'], b_all['depth'])})"
            )
        parts.append(
            f"best early-to-mid IoU ({ds}; random baseline best {_f(ref, 3)}): " + ", ".join(items)
        )
    return bool(ok), "; ".join(parts)


# ------------------------------------------------------------------------------ 5
def _check_reconstruction_cls(tables: Tables) -> Verdict:
    t = tables["knn"]
    if "feature" in t:
        t = t[t["feature"] == "cls"]
        if t.empty:
            return None, "the k-NN tables are not of CLS features (analyses.knn.feature)"
    recon = _in(t, RECONSTRUCTION)
    if not recon:
        return None, "no reconstruction model (family mae/beit) in the run"
    chance = t[t["metric"] == "chance"].groupby("dataset")["value"].first()
    knn = _headline(t)
    label = str(knn["metric"].iloc[0])
    ok = True
    parts = []
    for ds, g in knn.groupby("dataset", sort=False):
        rand = g[g["model"].isin(_random(g))]
        floor = MEANINGFUL_CHANCE_FACTOR * float(chance[ds])
        ref = ""
        if not rand.empty:
            r_best = float(rand["value"].max())
            floor = max(floor, r_best + MEANINGFUL_RANDOM_MARGIN)
            ref = f", random baseline best {_f(r_best)} %"
        else:
            ref = ", no random baseline in the run: chance only"
        items = []
        for m in recon:
            b = _best(g[g["model"] == m])
            ok &= float(b["value"]) >= floor
            items.append(f"{m} {_f(b['value'])} % ({_lay(b['layer'], b['depth'])})")
        parts.append(
            f"best-layer {label} ({ds}): {', '.join(items)}; needed ≥ {_f(floor)} % "
            f"(chance {_f(chance[ds])} %{ref})"
        )
    return bool(ok), "; ".join(parts)


# ------------------------------------------------------------------------------ 6
def _semantic_measures(tables: Tables) -> list[tuple[str, str, pd.DataFrame]]:
    """(name, kind, per-layer curves in %) of the semantic measures of finding 6:
    ``kind`` ``image`` (k-NN top-1, CLS clustering purity) or ``local`` (object / part
    clustering purity)."""
    out = []
    knn = tables["knn"]
    if "feature" in knn:
        knn = knn[knn["feature"] == "cls"]
    if not knn.empty:
        h = _headline(knn)
        for ds, g in h.groupby("dataset", sort=False):
            out.append((f"{g['metric'].iloc[0]} ({ds})", "image", g))
    cl = tables["clustering"]
    cl = cl[(cl["feature"] == "cls") & (cl["metric"] == "purity")]
    for ds, g in _per_layer(cl).groupby("dataset", sort=False):
        out.append((f"CLS clustering purity ({ds})", "image", g.assign(value=100 * g["value"])))
    seg = tables.get("segments")
    if seg is not None and not seg.empty:
        seg = seg[(seg["feature"] == "pooled") & (seg["metric"] == "purity")]
        for (ds, level), g in seg.groupby(["dataset", "level"], sort=False):
            g = _per_layer(g)
            out.append(
                (f"{level} clustering purity ({ds})", "local", g.assign(value=100 * g["value"]))
            )
    return out


def _check_supervised_richest(tables: Tables) -> Verdict:
    measures = _semantic_measures(tables)
    if not measures:
        return None, "no CLS k-NN or CLS clustering purity rows in the tables"
    allm = pd.concat([g for _, _, g in measures], ignore_index=True)
    if not _in(allm, EXPLICIT) or not _in(allm, CONTRASTIVE):
        return None, (
            "needs explicitly supervised (fs/timm/deit3/clip/siglip) and contrastive"
            " (dino/dinov2/moco) models in the run"
        )
    top_ok = True
    comparable = []
    parts = []
    for name, kind, g in measures:
        best = {
            m: float(_best(c)["value"])
            for m, c in g.groupby("model", sort=False)
            if group_of(str(c["family"].iloc[0])) not in ("", RANDOM)
        }
        ranked = sorted(best, key=lambda m: -best[m])
        groups = {m: group_of(str(g[g["model"] == m]["family"].iloc[0])) for m in best}
        if kind == "image":
            top_ok &= groups[ranked[0]] == EXPLICIT
        e = max(best[m] for m in best if groups[m] == EXPLICIT)
        c = max(best[m] for m in best if groups[m] == CONTRASTIVE)
        if c >= e - COMPARABLE_POINTS:
            comparable.append(f"{name} ({_f(c)} vs {_f(e)})")
        parts.append(f"{name}: " + " > ".join(f"{m} [{groups[m]}] {_f(best[m])}" for m in ranked))
    ok = top_ok and bool(comparable)
    tail = (
        f"contrastive within {_f(COMPARABLE_POINTS)} points or better on: " + ", ".join(comparable)
        if comparable
        else f"contrastive never within {_f(COMPARABLE_POINTS)} points of explicit"
    )
    return ok, "best layer, %: " + "; ".join(parts) + "; " + tail


# ------------------------------------------------------------------------------ 7
def _local_tasks(tables: Tables) -> list[tuple[str, pd.DataFrame]]:
    out = []
    for name in ("davis", "spair"):
        t = tables.get(name)
        if t is not None and not t.empty:
            h = _headline(t)
            for ds, g in h.groupby("dataset", sort=False):
                out.append((f"{g['metric'].iloc[0]} ({ds})", g))
    seg = tables.get("segments")
    if seg is not None and not seg.empty:
        seg = seg[(seg["feature"] == "pooled") & (seg["metric"] == "purity")]
        for (ds, level), g in seg.groupby(["dataset", "level"], sort=False):
            out.append((f"{level} clustering purity ({ds})", _per_layer(g)))
    return out


def _check_local_mid_to_late(tables: Tables) -> Verdict:
    tasks = _local_tasks(tables)
    n = hits = 0
    parts = []
    for name, g in tasks:
        items = []
        for m in _trained(g):
            b = _best(g[g["model"] == m])
            layer, depth = int(b["layer"]), int(b["depth"])
            hit = _mid_to_late(layer, depth) and layer < depth - 1
            n += 1
            hits += hit
            items.append(f"{m} {_lay(layer, depth)}{'' if hit else ' ✗'}")
        parts.append(f"{name}: " + ", ".join(items))
    if n == 0:
        return None, "no trained model in the local-task tables"
    return hits >= OFTEN_FRACTION * n, (
        f"best layer (✗: early or last) — {'; '.join(parts)}; mid-to-late and not last in "
        f"{hits}/{n} cases ({100 * hits / n:.0f} %)"
    )


# ------------------------------------------------------------------------------ 8
def _check_no_single_best(tables: Tables) -> Verdict:
    tasks = []
    for name in ("knn", "retrieval", "davis", "spair"):
        t = tables.get(name)
        if t is not None and not t.empty:
            if name == "knn" and "feature" in t:
                t = t[t["feature"] == "cls"]
            h = _headline(t)
            for ds, g in h.groupby("dataset", sort=False):
                tasks.append((f"{g['metric'].iloc[0]} ({ds})", g))
    if len(tasks) < 2:
        return None, "fewer than two downstream tasks in the run"
    winners: list[set[str]] = []
    layers: dict[str, set[int]] = {}
    parts = []
    for name, g in tasks:
        best = {m: _best(g[g["model"] == m]) for m in _trained(g)}
        if not best:
            return None, f"no trained model in {name}"
        top = max(float(b["value"]) for b in best.values())
        win = {m for m, b in best.items() if float(b["value"]) == top}
        winners.append(win)
        for m, b in best.items():
            layers.setdefault(m, set()).add(int(b["layer"]))
        parts.append(
            f"{name}: "
            + ", ".join(
                f"{m}{'*' if m in win else ''} {_f(b['value'])} @{_lay(b['layer'], b['depth'])}"
                for m, b in best.items()
            )
        )
    if len(layers) < 2:
        return None, "fewer than two trained models in the downstream tables"
    one_model = set.intersection(*winners)
    varied = sorted(m for m, ls in layers.items() if len(ls) > 1)
    ok = not one_model and bool(varied)
    summary = (
        f"best on every task: {', '.join(sorted(one_model))}"
        if one_model
        else "no model best on every task"
    )
    summary += (
        f"; best layer varies across tasks for {', '.join(varied)}"
        if varied
        else "; every model's best layer is the same on every task"
    )
    return ok, "best layer (* best model) — " + "; ".join(parts) + "; " + summary


# ------------------------------------------------------------------------------ the table
FINDINGS: tuple[Finding, ...] = (
    Finding(
        1,
        "The attention maps of explicitly supervised ViTs devolve into sparse repeating"
        " patterns in the mid-to-late layers, while their features keep improving there.",
        "§4.1, Fig. 2",
        f"For every explicitly supervised model (fs/timm/deit3/clip/siglip): the CLS query's"
        f" attention entropy (fraction of log N, mean over heads) averaged over the"
        f" mid-to-late layers is ≥ {SRP_ENTROPY_DROP} below its early-layer average and below"
        f" the mid-to-late average of every other trained model; and its k-NN top-1 gains"
        f" ≥ {KNN_MIN_GAIN} point(s) from the first mid-to-late layer to the last.",
        ("attention_entropy", "knn"),
        _check_sparse_patterns,
    ),
    Finding(
        2,
        "All ViTs learn offset local attention heads.",
        "§4.2, Fig. 3",
        f"Every trained model has ≥ {OFFSET_MIN_HEADS} head classified offset-local by the"
        f" head taxonomy (aligned aggregated attention maps); the random baseline's count is"
        f" shown for reference.",
        ("head_taxonomy",),
        _check_offset_heads,
    ),
    Finding(
        3,
        "ViTs process local and global information in different orders depending on their"
        " supervision.",
        "§4.3, Fig. 4",
        f"Per model, mean attention distance (over heads; ÷ the distance of uniform"
        f" attention) of the early, mid and late thirds; a model's order is the signs of"
        f" mid−early, late−mid, late−early (differences < {ORDER_TOLERANCE} count as equal)."
        f" Holds when two trained models of different supervision groups have different"
        f" orders (needs ≥ 2 groups).",
        ("attention_distance",),
        _check_processing_order,
    ),
    Finding(
        4,
        "All ViTs differentiate salient foreground objects by the early-to-mid layers.",
        "§4.4, Fig. 5",
        f"Saliency IoU per layer (best head per image, the better of the CLS and spatial"
        f" queries): for every trained model and dataset, the best early-to-mid IoU is"
        f" ≥ the random baseline's best IoU + {SALIENCY_MARGIN} and ≥ {SALIENCY_PLATEAU} × the"
        f" model's best IoU over all layers.",
        ("saliency",),
        _check_saliency,
    ),
    Finding(
        5,
        "Reconstruction-based methods learn semantically meaningful CLS representations.",
        "§5.1, 5.2, Fig. 6, 7",
        f"For every reconstruction model (mae/beit): best-layer k-NN top-1 of the CLS token"
        f" ≥ max({MEANINGFUL_CHANCE_FACTOR:g} × chance, the random baseline's best layer +"
        f" {MEANINGFUL_RANDOM_MARGIN:g} points).",
        ("knn",),
        _check_reconstruction_cls,
    ),
    Finding(
        6,
        "Explicitly supervised features are the most semantically rich; contrastive"
        " self-supervised features are comparable or better in some cases.",
        "§5.2, 5.3, Fig. 7, 8",
        f"Best-layer scores of trained models: an explicitly supervised model is first on"
        f" every image-level measure (k-NN top-1, CLS clustering purity); and the best"
        f" contrastive model (dino/dinov2/moco) is within {COMPARABLE_POINTS:g} points of (or"
        f" above) the best explicit one on at least one measure (image, object or part"
        f" level).",
        ("knn", "clustering"),
        _check_supervised_richest,
        optional=("segments",),
    ),
    Finding(
        7,
        "For localized tasks, the best performance often comes from a mid-to-late layer.",
        "§6.2, Fig. 10, Table 1",
        f"Over every (trained model, local task) case — DAVIS J&F, SPair PCK@0.1, object and"
        f" part clustering purity — the best layer is mid-to-late and not the last in"
        f" ≥ {OFTEN_FRACTION:.0%} of the cases.",
        (),
        _check_local_mid_to_late,
        any_of=("davis", "spair", "segments"),
    ),
    Finding(
        8,
        "There is no single best training method or layer for all downstream tasks.",
        "§6.3, Fig. 9, 10, Table 1",
        "Downstream headline scores (k-NN top-1, retrieval mAP Medium, DAVIS J&F, SPair"
        " PCK@0.1; ≥ 2 tasks): no trained model is best on every task, and some trained"
        " model's best layer differs between tasks.",
        (),
        _check_no_single_best,
        any_of=("knn", "retrieval", "davis", "spair"),
    ),
)

#: Every analysis whose tables some check reads (the workflow's inputs of the findings).
ANALYSES: tuple[str, ...] = tuple(dict.fromkeys(a for f in FINDINGS for a in f.analyses()))

COLUMNS = ("finding", "observation", "paper", "evidence", "holds", "check")


def _present(tables: Tables, name: str) -> bool:
    t = tables.get(name)
    return t is not None and not t.empty


def findings_table(tables: Tables | str | os.PathLike[str]) -> pd.DataFrame:
    """One row per main-paper observation: ``finding, observation, paper, evidence, holds,
    check`` (``holds``: True, False, or None when the run lacks what the check needs —
    ``evidence`` then says what).

    ``tables``: analysis name → its long tables concatenated (every dataset and model), or a
    folder of the workflow's tables (``results/tables``, see :func:`load_tables`).
    """
    if isinstance(tables, (str, os.PathLike)):
        tables = load_tables(sorted(Path(tables).rglob("*.csv")))
    rows = []
    for f in FINDINGS:
        missing = [a for a in f.needs if not _present(tables, a)]
        if f.any_of and not any(_present(tables, a) for a in f.any_of):
            missing.append(" or ".join(f.any_of))
        if missing:
            holds: bool | None = None
            evidence = f"not measured: no {', '.join(missing)} tables in this run"
        else:
            holds, evidence = f.evaluate(tables)
        rows.append(
            {
                "finding": f.number,
                "observation": f.observation,
                "paper": f.paper,
                "evidence": evidence,
                "holds": holds,
                "check": f.check,
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def load_tables(paths: Iterable[str | os.PathLike[str]]) -> dict[str, pd.DataFrame]:
    """The long tables among ``paths`` that a check reads, concatenated per analysis (files
    of other analyses, or not in the long format, are skipped)."""
    parts: dict[str, list[pd.DataFrame]] = {}
    for p in paths:
        t = pd.read_csv(p)
        if "analysis" not in t or t.empty:
            continue
        for name, g in t.groupby("analysis", sort=False):
            if name in ANALYSES:
                parts.setdefault(str(name), []).append(g)
    return {k: pd.concat(v, ignore_index=True) for k, v in parts.items()}


# ------------------------------------------------------------------------------ rendering
_KINDS = {
    "imagefolder": "ImageNet-style class folders",
    "coco": "COCO",
    "partimagenet": "PartImageNet",
    "revisited": "revisited Oxford/Paris",
    "davis": "DAVIS-2017",
    "spair": "SPair-71k",
}


def describe_run(
    models: Mapping[str, str],
    datasets: Mapping[str, Mapping[str, Any]],
    trained: Collection[str] = (),
) -> str:
    """A paragraph saying what a run is: ``models`` id → family (in order), ``datasets`` the
    config's datasets (``kind``; ``generate`` for a synthetic one), ``trained`` the models
    the workflow trains itself (the mini-zoo).

    >>> print(describe_run({"a": "timm", "r": "random"},
    ...                    {"w": {"kind": "imagefolder", "generate": {}}}, trained=["a"]))
    This run is the offline demo: a synthetic world generated in every dataset format it uses (ImageNet-style class folders) and a mini-zoo of small ViTs trained on it, one per supervision family — a (explicit supervision, family timm) — plus the same network untrained (r) as the random-chance baseline. Its numbers test the paper's observations at toy scale; they are not the paper's results.
    """
    kinds = list(
        dict.fromkeys(_KINDS.get(str(d.get("kind")), str(d.get("kind"))) for d in datasets.values())
    )
    synthetic = bool(datasets) and all("generate" in d for d in datasets.values())
    rand = [m for m, f in models.items() if group_of(f) == RANDOM]
    real = [m for m in models if m not in rand]
    zoo = bool(real) and all(m in trained for m in real)

    def who(ms: Sequence[str]) -> str:
        return ", ".join(
            f"{m} ({GROUP_NAMES.get(group_of(models[m]), 'no supervision group')}, family"
            f" {models[m]})"
            for m in ms
        )

    if synthetic and zoo:
        text = (
            "This run is the offline demo: a synthetic world generated in every dataset format"
            f" it uses ({', '.join(kinds)}) and a mini-zoo of small ViTs trained on it, one per"
            f" supervision family — {who(real)}"
        )
        untrained = ", ".join(m for m in rand if models[m] != "noise")
        noise = ", ".join(m for m in rand if models[m] == "noise")
        base = [f"the same network untrained ({untrained})"] if untrained else []
        base += [f"noise features of its shape ({noise})"] if noise else []
        if base:
            text += " — plus " + " and ".join(base)
            text += (
                " as random-chance baselines" if len(base) > 1 else " as the random-chance baseline"
            )
        return text + (
            ". Its numbers test the paper's observations at toy scale; they are not the"
            " paper's results."
        )
    src = (
        "synthetic"
        if synthetic
        else "real"
        if not any("generate" in d for d in datasets.values())
        else "real and synthetic"
    )
    text = f"This run compares {len(real)} ViT(s) — {who(real)}"
    if rand:
        text += f" — and the random-chance baseline ({', '.join(rand)})"
    return text + f" on {src} data ({', '.join(kinds)})."


def _verdict(holds: Any) -> str:
    if holds is None or (isinstance(holds, float) and np.isnan(holds)):
        return "not measured"
    return "holds" if bool(holds) else "does not hold"


def _cell(text: str, indent: str) -> str:
    return ("\n" + indent).join(str(text).splitlines()) or "–"


def render_rst(table: pd.DataFrame, description: str = "") -> str:
    """The findings as reStructuredText: ``description`` (a paragraph, see
    :func:`describe_run`), then a list-table: observation (paper section), the run's
    evidence with the check that judged it, and the verdict."""
    out = []
    if description:
        out += [description, ""]
    out += [
        "Each main-paper observation of the paper's Table 3, checked on this run's own tables"
        " (criteria and thresholds: ``vitlib/findings.py``; fixed before looking at any"
        " run's numbers).",
        "",
        ".. list-table:: Findings",
        "   :header-rows: 1",
        "   :widths: 4 30 50 16",
        "",
        "   * - #",
        "     - Observation (paper)",
        "     - Evidence in this run",
        "     - Verdict",
    ]
    ind = "       "
    for r in table.itertuples():
        out += [
            f"   * - {r.finding}",
            f"     - {_cell(r.observation, ind)} ({r.paper})",
            f"     - {_cell(r.evidence, ind)}",
            "",
            f"       *Check:* {_cell(r.check, ind)}",
            f"     - **{_verdict(r.holds)}**",
        ]
    return "\n".join(out) + "\n"


def write_findings(
    paths: Sequence[str | os.PathLike[str]],
    table_out: str | os.PathLike[str],
    text_out: str | os.PathLike[str],
    *,
    description: str = "",
) -> pd.DataFrame:
    """Findings from the workflow's table files to a CSV and its reStructuredText."""
    t = findings_table(load_tables(paths))
    t.to_csv(table_out, index=False)
    Path(text_out).write_text(render_rst(t, description))
    return t
