"""Does family A differ from family B at depth d? Permutation tests on the best-layer metrics.

The units are models: a family's claim ("at mid depth, supervised features beat
reconstruction features for k-NN") is about how a training method shapes networks, and the
models of a family are its replicates.  Each model's per-layer curve of a summary metric
(the headline metrics of the best-layer tables, :func:`vitlib.downstream.summary.headline`)
is read at ``bins`` normalised depths ``1/bins … 1`` (linear interpolation over ``(layer +
1) / depth``, so a 12-block and a 24-block model are compared at the same relative depth).
For every pair of families, :func:`vitlib.stats.permutation_test_layers` relabels the models
between the two families — every relabelling when they are few (an exact test), ``P`` random
ones otherwise — and adjusts across the depth bins with the max statistic (Westfall–Young),
so ``p_adjusted <= alpha`` in any bin keeps the family-wise error at ``alpha`` over the bins
of one (family pair, metric).  Noise models (family ``noise``) are left out.

With few models a test cannot reject: ``min_p`` is the smallest two-sided p-value the design
can give (``1 / C(n_a + n_b, n_a)``, twice that for equal group sizes, whose relabellings
come in mirrored pairs: 1 for one model against one, 0.1 for 3 against 2 and for 3 against
3, 0.029 for 4 against 4), reported on every row so that "not significant" is never read as
"no difference" where no test could have found one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from vitlib.downstream.summary import NOISE_FAMILIES, headline
from vitlib.stats import permutation_test_layers

__all__ = ["depth_profile", "family_tests", "family_tests_from_files"]


def depth_profile(
    layers: Sequence[int], depth: int, values: Sequence[float], bins: int
) -> np.ndarray:
    """A model's per-layer values read at normalised depths ``(1 … bins) / bins``: linear
    interpolation over ``(layer + 1) / depth`` (held constant before the first layer).

    Examples
    --------
    >>> depth_profile([0, 1, 2, 3], 4, [0.0, 1.0, 2.0, 3.0], 2).tolist()
    [1.0, 3.0]
    """
    x = (np.asarray(layers, dtype=np.float64) + 1.0) / float(depth)
    order = np.argsort(x)
    grid = np.arange(1, bins + 1, dtype=np.float64) / bins
    return np.interp(grid, x[order], np.asarray(values, dtype=np.float64)[order])


def family_tests(
    tables: Sequence[pd.DataFrame],
    *,
    bins: int = 12,
    permutations: int = 10000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Family × family permutation tests of every headline metric at every depth bin.

    Parameters
    ----------
    tables : long tables of analyses that declare best-layer metrics.
    bins : normalised-depth bins; permutations, seed : the test's relabellings when there
        are more distinct ones than ``permutations`` (else all, exactly); alpha : the
        family-wise level of ``significant``.

    Returns
    -------
    One row per (dataset, metric, family pair, bin): ``analysis, dataset, metric, family_a,
    family_b, depth`` (the bin's normalised depth), ``n_a, n_b, mean_a, mean_b, difference``
    (``mean_a − mean_b``), ``p``, ``p_adjusted`` (over the bins), ``min_p``, ``exact``,
    ``significant`` (``p_adjusted <= alpha``), ``models_a, models_b``.
    """
    if bins < 1 or permutations < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(
            f"family tests: need bins >= 1, permutations >= 1 and alpha in (0, 1),"
            f" got {bins}, {permutations}, {alpha}"
        )
    grid = np.arange(1, bins + 1) / bins
    rows: list[pd.DataFrame] = []
    # the workflow writes one table per model: the models of an analysis meet here
    every = pd.concat(list(tables), ignore_index=True) if len(tables) else pd.DataFrame()
    for _, t in every.groupby("analysis", sort=False) if len(every) else ():
        h = headline(t)
        h = h[~h["family"].astype(str).isin(NOISE_FAMILIES)]
        for (ds, metric), g in h.groupby(["dataset", "metric"], sort=False):
            profiles: dict[str, list[np.ndarray]] = {}
            members: dict[str, list[str]] = {}
            for model, m in g.groupby("model", sort=False):
                prof = depth_profile(m["layer"], int(m["depth"].iloc[0]), m["value"], bins)
                if not np.isfinite(prof).all():
                    continue  # a model without a score at some layer is left out
                fam = str(m["family"].iloc[0])
                profiles.setdefault(fam, []).append(prof)
                members.setdefault(fam, []).append(str(model))
            for fa, fb in itertools.combinations(list(profiles), 2):
                a, b = np.stack(profiles[fa]), np.stack(profiles[fb])
                d, p, padj = permutation_test_layers(a, b, permutations=permutations, seed=seed)
                exact = math.comb(len(a) + len(b), len(a)) <= permutations
                rows.append(
                    pd.DataFrame(
                        {
                            "analysis": str(g["analysis"].iloc[0]),
                            "dataset": ds,
                            "metric": metric,
                            "family_a": fa,
                            "family_b": fb,
                            "depth": grid,
                            "n_a": len(a),
                            "n_b": len(b),
                            "mean_a": a.mean(axis=0),
                            "mean_b": b.mean(axis=0),
                            "difference": d,
                            "p": p,
                            "p_adjusted": padj,
                            "min_p": _min_p(len(a), len(b), permutations),
                            "exact": exact,
                            "significant": padj <= alpha,
                            "models_a": " ".join(members[fa]),
                            "models_b": " ".join(members[fb]),
                        }
                    )
                )
    if not rows:
        return pd.DataFrame(
            columns=["analysis", "dataset", "metric", "family_a", "family_b", "depth"]
        )
    return pd.concat(rows, ignore_index=True)


def _min_p(n_a: int, n_b: int, permutations: int) -> float:
    """The smallest two-sided p-value of the relabelling test: ``1 / C(n_a + n_b, n_a)``,
    doubled when ``n_a == n_b`` (every relabelling has a mirror, the groups swapped, with
    the same ``|d|``); with sampled relabellings ``1 / (P + 1)``."""
    total = math.comb(n_a + n_b, n_a)
    if total > permutations:
        return 1.0 / (permutations + 1.0)
    return min(1.0, (2.0 if n_a == n_b else 1.0) / total)


def family_tests_from_files(paths: Sequence[str], **kwargs: object) -> pd.DataFrame:
    """:func:`family_tests` of the long tables at ``paths``."""
    return family_tests([pd.read_csv(p) for p in paths], **kwargs)  # type: ignore[arg-type]
