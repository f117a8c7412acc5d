"""The one table format of vitlib: long, one measured number per row.

Every analysis table is stamped by :func:`tidy`::

    analysis, dataset, view, model, family, depth, layer, [head], <coordinates>, metric, value,
    <settings>

``layer`` (and ``head``) are 0-based; a metric with an interval (:mod:`vitlib.stats`) has
``ci_low`` and ``ci_high`` beside ``value`` (``nan`` for the others); coordinates are the analysis' own axes (``k``,
``query``, ``feature``, ``protocol``, ``alpha`` …); settings are the analysis settings the
table was computed with, one column each (nested settings flattened as ``a.b``).  Figures
that want one column per metric call :func:`wide`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

#: Columns every per-model table starts with, in this order (those present).
ID_COLUMNS = ("analysis", "dataset", "view", "model", "family", "depth", "layer", "head")


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in settings.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (list, tuple)):
            out[f"{prefix}{k}"] = ",".join(map(str, v))
        else:
            out[f"{prefix}{k}"] = v
    return out


def tidy(
    table: pd.DataFrame,
    *,
    analysis: str,
    metrics: Sequence[str] = (),
    settings: Mapping[str, Any] | None = None,
    identity: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Stamp ``table`` into the long format (see module docstring).

    ``metrics``: columns of ``table`` that hold measured numbers; they are melted into
    ``metric``/``value`` (a table that already has ``metric`` and ``value`` keeps them), and
    their intervals ``<metric>_ci_low`` / ``<metric>_ci_high``, where present, into
    ``ci_low``/``ci_high``.
    ``identity``: columns to set on every row (e.g. ``Store.identity()``), unless present.
    ``settings`` that are not already columns are added as columns.
    """
    t = table.copy()
    for k, v in (identity or {}).items():
        if k not in t:
            t[k] = v
    if metrics:
        missing = [m for m in metrics if m not in t]
        if missing:
            raise ValueError(f"{analysis}: table has no metric column(s) {missing}")
        if "metric" in t or "value" in t:
            raise ValueError(f"{analysis}: table has both metric columns and metric/value")
        bounds = {f"{m}_ci_{e}" for m in metrics for e in ("low", "high")} & set(t.columns)
        ids = [c for c in t.columns if c not in metrics and c not in bounds]
        long = t.melt(id_vars=ids, value_vars=list(metrics), var_name="metric", value_name="value")
        if bounds:  # melt keeps the metrics' order: one block of rows per metric
            for e in ("low", "high"):
                long[f"ci_{e}"] = pd.concat(
                    [
                        t[f"{m}_ci_{e}"] if f"{m}_ci_{e}" in t else pd.Series(float("nan"), t.index)
                        for m in metrics
                    ],
                    ignore_index=True,
                ).to_numpy(dtype=float)
        t = long
    if "metric" not in t or "value" not in t:
        raise ValueError(f"{analysis}: table has no metric/value columns: {list(t.columns)}")
    t.insert(0, "analysis", analysis)
    for k, v in _flat(settings or {}).items():
        if k not in t and k.rsplit(".", 1)[-1] not in t:  # a nested setting already a column
            t[k] = v
    first = [c for c in ID_COLUMNS if c in t]
    measured = ["metric", "value", *(c for c in ("ci_low", "ci_high") if c in t)]
    rest = [c for c in t.columns if c not in first and c not in measured]
    coords = [c for c in rest if c not in _flat(settings or {})]
    sets = [c for c in rest if c in _flat(settings or {})]
    return t[first + coords + measured + sets].reset_index(drop=True)


def wide(table: pd.DataFrame) -> pd.DataFrame:
    """One column per metric (the inverse of the melt in :func:`tidy`), with its interval
    as ``<metric>_ci_low`` / ``<metric>_ci_high`` where the table has one; row order kept."""
    bounds = [c for c in ("ci_low", "ci_high") if c in table]
    ids = [c for c in table.columns if c not in ("metric", "value", *bounds)]
    idf = table[ids].astype(object)
    idf = idf.where(idf.notna(), "\x00missing")  # NaN coordinates still identify a row
    key, _ = pd.factorize(pd.MultiIndex.from_frame(idf))
    order = list(dict.fromkeys(key))
    rows = table.assign(_key=key)
    firsts = rows.drop_duplicates("_key").set_index("_key")[ids]
    vals = rows.pivot_table(
        index="_key", columns="metric", values="value", aggfunc="first", dropna=False, sort=False
    )
    out = firsts.join(vals)
    for b in bounds:
        ci = rows.pivot_table(
            index="_key", columns="metric", values=b, aggfunc="first", dropna=False, sort=False
        )
        ci = ci.loc[:, ci.notna().any()]  # only metrics that have an interval
        out = out.join(ci.rename(columns=lambda m, b=b: f"{m}_{b}"))
    out = out.loc[order].reset_index(drop=True)
    out.columns.name = None
    return out


def read_tables(paths: Sequence[str]) -> pd.DataFrame:
    """The concatenation of long tables written by the workflow."""
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
