"""Summary tables of downstream results (paper Tables 1, 5 and 6)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def table6(probe: pd.DataFrame) -> pd.DataFrame:
    """Linear-probe top-1 in the layout of the paper's Table 6: one row per model, columns
    CLS / spatial with and without BatchNorm, at the paper's block (the last; block 8 for
    BEiT) — from the long probe table, with the learning rate used (``lr``)."""
    if "metric" in probe:
        probe = probe[probe["metric"] == "top1"].rename(columns={"value": "top1"})
    from vitlib.downstream.tables import probe_layers

    paper = probe.apply(
        lambda r: probe_layers("paper", int(r["depth"]), str(r["family"]))[0], axis=1
    )
    last = probe[probe.layer == paper].copy()
    last["column"] = last["feature"].map(
        {"cls": "CLS", "spatial_mean": "Spatial", "cls+spatial_mean": "CLS+Spatial"}
    ) + last["batchnorm"].map({True: " +BN", False: ""})
    order = list(dict.fromkeys(last["model"]))
    out = last.pivot(index="model", columns="column", values="top1").reindex(order)
    if "lr" in last:  # the rate each model was probed with (the paper reduced BEiT's)
        out["lr"] = last.drop_duplicates("model").set_index("model")["lr"].reindex(order)
    return out


def best_layer(table: pd.DataFrame, metric: str, *, group: str = "model") -> pd.DataFrame:
    """Best layer per model for a per-layer metric (paper Tables 1 and 5): the 1-based layer,
    of how many, and the score there."""
    idx = table.groupby(group, sort=False)[metric].idxmax()
    bounds = [c for c in ("ci_low", "ci_high") if c in table]
    best = table.loc[idx, [group, "layer", "depth", metric, *bounds]].copy()
    best["layer"] = best["layer"] + 1
    return best.rename(
        columns={
            "layer": "best_layer",
            "depth": "of",
            metric: f"best_{metric}",
            **{b: f"best_{b}" for b in bounds},
        }
    )


def headline(table: pd.DataFrame, *, main_only: bool = False) -> pd.DataFrame:
    """The per-layer scores the summary takes from one long table, as declared by its
    analysis in the registry (:attr:`vitlib.registry.Analysis.summary`): columns ``analysis,
    dataset, view, model, family, depth, layer, metric`` (the headline's label), ``main`` (in
    the paper's Table 1), ``table`` (5, or 4 for the DAVIS view ablation) and ``value``;
    ``main_only``: the Table 1 metrics only."""
    from vitlib.registry import get

    names = table["analysis"].unique()
    if len(names) != 1:
        raise ValueError(f"a headline needs the table of one analysis, got {list(names)}")
    a = get(str(names[0]))
    if not a.summary:
        raise ValueError(f"analysis {a.name!r} declares no summary metric")
    out = []
    for h in a.summary:
        if main_only and not h.main:
            continue
        sel = table[table["metric"] == h.metric]
        label = h.label
        for col, val in h.where.items():
            if col == "k" and not (sel[col] == val).any():  # fewer neighbours than asked
                val = int(sel[col].iloc[0])
                label = f"{h.label.split(' (')[0]} (k={val})"
            sel = sel[sel[col] == val]
        keep = ["dataset", "model", "family", "depth", "layer"]
        out.append(
            sel[keep].assign(
                analysis=a.name,
                view=sel["view"] if "view" in sel else "",
                metric=label,
                main=h.main,
                table=h.table,
                value=sel["value"].astype(float),
                ci_low=sel["ci_low"].astype(float) if "ci_low" in sel else float("nan"),
                ci_high=sel["ci_high"].astype(float) if "ci_high" in sel else float("nan"),
            )
        )
    return pd.concat(out, ignore_index=True)


#: Families whose summary row is the paper's Random row: the mean over blocks, each block an
#: independent trial of noise features (the original plots averaged the blocks as trials).
NOISE_FAMILIES = frozenset({"noise"})


def summary_table(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Best layer per (dataset, metric, model) as in the paper's Tables 1 and 5, with the
    last layer's score beside it (how much an intermediate layer gains).  A noise model
    (family ``noise``) has no best layer: its ``best`` is the mean over its blocks (the
    paper's Random row) and ``best_layer`` is empty."""
    rows = []
    for t in tables:
        h = headline(t)
        for (ds, metric), g in h.groupby(["dataset", "metric"], sort=False):
            view = str(g["view"].iloc[0])
            best = best_layer(g, "value")
            last = g[g.layer == g.depth - 1].set_index("model")["value"]
            mean = g.groupby("model", sort=False)["value"].mean()
            family = g.drop_duplicates("model").set_index("model")["family"]
            for _, r in best.iterrows():
                m = r["model"]
                noise = str(family[m]) in NOISE_FAMILIES
                rows.append(
                    {
                        "analysis": str(g["analysis"].iloc[0]),
                        "dataset": ds,
                        "view": view,
                        "metric": metric,
                        "main": bool(g["main"].iloc[0]),
                        "table": int(g["table"].iloc[0]),
                        "model": m,
                        "family": str(family[m]),
                        "best_layer": pd.NA if noise else int(r["best_layer"]),
                        "of": int(r["of"]),
                        "best": float(mean[m] if noise else r["best_value"]),
                        # the bootstrap interval of the best layer's score (not of the choice
                        # of layer); none for the noise rows' mean over blocks
                        "best_ci_low": float("nan") if noise else float(r["best_ci_low"]),
                        "best_ci_high": float("nan") if noise else float(r["best_ci_high"]),
                        "last_layer": float(last.get(m, float("nan"))),
                    }
                )
    out = pd.DataFrame(rows)
    if len(out):
        out["best_layer"] = out["best_layer"].astype("Int64")
    return out


def summary_from_files(paths: list[str]) -> pd.DataFrame:
    return summary_table([pd.read_csv(p) for p in paths])


#: The paper's column order (ImageNet, ROxford/RParis, DAVIS, SPair).
PAPER_COLUMN_ORDER = ("knn", "retrieval", "davis", "spair")


def _cells(s: pd.DataFrame) -> list[str]:
    """``"score (layer)"`` per summary row (1-based best layer; noise rows: the score), with
    the score's bootstrap interval ``[low, high]`` where the table has one."""
    lo = s["best_ci_low"] if "best_ci_low" in s else pd.Series(float("nan"), s.index)
    hi = s["best_ci_high"] if "best_ci_high" in s else pd.Series(float("nan"), s.index)
    out = []
    for b, layer, a, z in zip(s["best"], s["best_layer"], lo, hi, strict=True):
        cell = f"{b:.2f}" if pd.isna(layer) else f"{b:.2f} ({int(layer)})"
        if pd.notna(a) and pd.notna(z):
            cell += f" [{a:.1f}, {z:.1f}]"
        out.append(cell)
    return out


def _row_order(s: pd.DataFrame, order: list[str] | None) -> tuple[list[str], set[str]]:
    """The models of summary rows ``s`` in ``order`` (others after, in table order), the
    noise models last (the paper's Random row), and the set of noise models."""
    present = list(dict.fromkeys(s["model"]))
    rows = [m for m in (order or []) if m in present]
    rows += [m for m in present if m not in rows]
    noise = set(s.loc[s["family"].isin(NOISE_FAMILIES), "model"])
    return [m for m in rows if m not in noise] + [m for m in rows if m in noise], noise


def paper_table(
    summary: pd.DataFrame,
    *,
    main: bool,
    models: list[str] | None = None,
    order: list[str] | None = None,
) -> pd.DataFrame:
    """The best-layer summary in the paper's layout: one row per model (noise models last,
    as its Random row), one column per (dataset, metric), cells ``"score (layer)"`` with the
    1-based best layer (noise: the mean over blocks, no layer).

    ``main``: the paper's Table 1 — the Table 1 metrics on the first dataset of each
    analysis, for ``models`` (the main-text models; ``None``: all); otherwise its Table 5 —
    every metric of every dataset, every model, with a ``layers`` column (the depth).
    ``order``: the row order (the config's model order); others follow in table order.
    """
    s = summary
    if "table" in s:  # Table 4's rows (the DAVIS view ablation) have their own table
        s = s[s["table"] == 5]
    if main:
        s = s[s["main"].astype(bool)]
        first = s.drop_duplicates("analysis").set_index("analysis")["dataset"]
        s = s[s["dataset"] == s["analysis"].map(first)]
        if models is not None:
            keep = set(models) | set(s.loc[s["family"].isin(NOISE_FAMILIES), "model"])
            s = s[s["model"].isin(keep)]
    rank = {a: i for i, a in enumerate(PAPER_COLUMN_ORDER)}
    s = s.iloc[sorted(range(len(s)), key=lambda i: rank.get(str(s["analysis"].iloc[i]), len(rank)))]
    s = s.assign(
        column=s["dataset"] + " " + s["metric"],
        cell=_cells(s),
    )
    order, noise = _row_order(s, order)
    grid = s.pivot(index="model", columns="column", values="cell")
    grid = grid.reindex(index=order, columns=list(dict.fromkeys(s["column"])))
    if not main:
        depth = s.drop_duplicates("model").set_index("model")["of"]
        grid.insert(0, "layers", [("-" if m in noise else str(depth[m])) for m in order])
    grid.index.name = "model"
    return grid.fillna("")


#: Table 4's column names for the DAVIS views (the paper's 'Normal' and 'Dense').
VIEW_COLUMNS = {"squash": "Normal", "dense": "Dense"}


def table4(summary: pd.DataFrame, *, order: list[str] | None = None) -> pd.DataFrame:
    """The paper's Table 4: DAVIS J&F at the best layer per model, non-dense ('Normal':
    frames squashed to the input size) against dense (tiled at twice the resolution), cells
    ``"score (layer)"``, one column pair per DAVIS dataset; empty when DAVIS is not run."""
    s = summary[
        (summary["analysis"].isin(["davis", "davis_normal"])) & (summary["metric"] == "J&F")
    ]
    if s.empty:
        return pd.DataFrame(index=pd.Index([], name="model"))
    s = s.assign(
        column=[
            f"{ds} {VIEW_COLUMNS.get(str(v), str(v))}" for ds, v in zip(s["dataset"], s["view"])
        ],
        cell=_cells(s),
    )
    s = s.drop_duplicates(["model", "column"])  # view: squash and normal: the same numbers
    rank = {"Normal": 0, "Dense": 1}
    cols = sorted(
        dict.fromkeys(s["column"]),
        key=lambda c: (c.rsplit(" ", 1)[0], rank.get(c.rsplit(" ", 1)[1], 2)),
    )
    rows, _ = _row_order(s, order)
    grid = s.pivot(index="model", columns="column", values="cell").reindex(index=rows, columns=cols)
    grid.index.name = "model"
    return grid.fillna("")


def to_rst(table: pd.DataFrame, title: str) -> str:
    """``table`` (index and columns as strings) as a reStructuredText ``csv-table``."""

    def q(x: object) -> str:
        return '"' + str(x).replace('"', '""') + '"'

    head = [table.index.name or ""] + [str(c) for c in table.columns]
    lines = [
        f".. csv-table:: {title}",
        "   :header: " + ", ".join(q(h) for h in head),
        "",
    ]
    for idx, row in table.iterrows():
        lines.append("   " + ", ".join(q(x) for x in [idx, *row.tolist()]))
    return "\n".join(lines) + "\n"


#: Units of the summary's scores (the paper writes mAP and J&F as fractions, top-1 and PCK
#: in percent; vitlib writes every score in percent).
UNITS = "every score in percent"


def write_paper_tables(
    summary: pd.DataFrame,
    *,
    table1: str | Path,
    table5: str | Path,
    table4_path: str | Path | None = None,
    rst: str | Path,
    models: list[str] | None = None,
    main_models: list[str] | None = None,
) -> None:
    """Write the paper's Table 1 (main models, main metrics), Table 5 (every model and
    metric) and Table 4 (the DAVIS view ablation, when run) as CSV, and as
    reStructuredText tables (the report's first page)."""
    t1 = paper_table(summary, main=True, models=main_models, order=models)
    t5 = paper_table(summary, main=False, order=models)
    t1.to_csv(table1)
    t5.to_csv(table5)
    t4 = table4(summary, order=models)
    if table4_path is not None:
        t4.to_csv(table4_path)
    note = (
        f"Best score per model and task with the 1-based best layer in parentheses ({UNITS});"
        " the noise row is the mean over its blocks (the paper's Random row)."
    )
    Path(rst).write_text(
        to_rst(t1, "Table 1 (main text): " + note)
        + "\n"
        + to_rst(t5, "Table 5 (appendix): every model, every metric.")
        + (
            "\n"
            + to_rst(
                t4,
                "Table 4 (appendix): DAVIS J&F, non-dense ('Normal': frames squashed to the"
                " input size) against dense (tiled at twice the resolution), best layer in"
                " parentheses.",
            )
            if len(t4.columns)
            else ""
        )
    )
