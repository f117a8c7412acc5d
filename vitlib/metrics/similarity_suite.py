"""The similarity suite: every measure, every layer × layer pair of two models, one pass.

:mod:`vitlib.metrics.similarity` defines each measure on one pair of feature matrices.  This
module evaluates all of them for every layer of one model against every layer of another
(or of itself), for the observed image correspondence and for ``P`` seeded permutations of
it (the permutation null, docs/protocols.md §D6), without recomputing anything per pair that
depends on one side only:

* per layer, once (:class:`LayerReps`): centred features and their norms, normalised
  centred RBF Grams, (rank-)standardised RDMs, FAISS neighbour lists with their kernel
  values and an ``n × n`` position map, SVCCA and PWCCA orthonormal bases;
* per permutation ``π`` of the second model's images, every layer pair at once: one product
  ``X_aᵀ Y[π]`` per layer of the first model gives linear CKA (biased and debiased) and the
  Procrustes distance of every layer of the second (block norms, batched singular values);
  kernel measures are Frobenius products of permuted ``n × n`` matrices; neighbour measures
  are table look-ups (``O(n k)`` per layer pair, no ``n × n`` mask is ever built per pair).

Every value equals the corresponding function of :mod:`vitlib.metrics.similarity` on the
same layer pair (tests/test_similarity_suite.py, to 1e-9), ``nan`` where that function gives
``nan``.  ``pwcca`` is defined here (:func:`pwcca`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vitlib.metrics.similarity import (
    _center,
    _center_gram,
    _frob_sq_cross,
    _hsic_u_linear,
    _knn,
    _l2_rows,
    _pair,
    _rbf_gram,
    _rdm_upper,
    _rows_all_equal,
    _svd_keep,
)

__all__ = [
    "DISTANCES",
    "SUITE_MEASURES",
    "LayerReps",
    "SuiteOptions",
    "pair_grids",
    "pwcca",
]

F64 = NDArray[np.float64]
_EPS = float(np.finfo(np.float64).eps)

#: Every measure of the suite, in table order.
SUITE_MEASURES: tuple[str, ...] = (
    "linear_cka",
    "linear_cka_debiased",
    "rbf_cka",
    "mutual_knn",
    "cknna",
    "svcca",
    "pwcca",
    "procrustes_distance",
    "rsa",
)
#: Measures that are distances (smaller = more similar); the rest are similarities.
DISTANCES = frozenset({"procrustes_distance"})

_LINEAR = frozenset({"linear_cka", "linear_cka_debiased", "procrustes_distance"})
_NEIGHBOURS = frozenset({"mutual_knn", "cknna"})


@dataclass(frozen=True)
class SuiteOptions:
    """The measures' own settings (the defaults of :mod:`vitlib.metrics.similarity`)."""

    k: int = 10  # neighbours of mutual_knn and cknna
    sigma_frac: float = 1.0  # RBF bandwidth as a fraction of the median distance
    keep: float = 0.99  # SVCCA: variance kept by the SVD step
    rsa_method: Literal["spearman", "pearson"] = "spearman"


# --------------------------------------------------------------------------- PWCCA


def _basis(xc: F64) -> F64 | None:
    """Orthonormal basis of the column space of centred ``xc`` (numerical rank), or None."""
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    if not (s.size and s[0] > 0.0):
        return None
    r = int((s > max(xc.shape) * _EPS * float(s[0])).sum())
    return np.ascontiguousarray(u[:, :r])


def _pwcca_from(qx: F64, ax: F64, qy: F64, ay: F64, x_side: bool) -> float:
    """PWCCA from orthonormal bases and the projections ``A = Qᵀ Xc`` of each side."""
    u, rho, vt = np.linalg.svd(qx.T @ qy, full_matrices=False)
    rho = np.clip(rho, 0.0, 1.0)
    proj = u.T @ ax if x_side else vt @ ay  # ⟨h_i, x_j⟩: canonical variate i, neuron j
    alpha = np.abs(proj).sum(axis=1)
    total = float(alpha.sum())
    if not total > 0.0:
        return float("nan")
    return float(alpha @ rho / total)


def pwcca(X: ArrayLike, Y: ArrayLike) -> float:
    """Projection-weighted CCA (Morcos, Raghu, Bengio 2018).

    Centre the columns; the canonical correlations ``ρ_i`` of the two column spaces (the
    singular values of ``Q_Xᵀ Q_Y``, ``Q`` orthonormal bases at numerical rank) are averaged
    with weights ``α_i = Σ_j |⟨h_i, x_j⟩|``: the L1 norm of the projections of the neurons
    (columns ``x_j``) of the side with fewer neurons on its unit-norm canonical variates
    ``h_i`` (the X side on a tie), ``PWCCA = Σ α_i ρ_i / Σ α_i``.

    As in the paper and unlike Google's ``pwcca.py``: the weights use the centred neurons
    (the canonical variates are centred, so this is the same as the raw neurons), the
    variates are those of the CCA itself (not re-orthonormalised after adding the neuron
    means back), and the Y side's variates come from Y (``pwcca.py`` projects ``acts1``
    there).

    Returns
    -------
    float
        In ``[0, 1]``; ``nan`` when either side has no variance. Like every CCA it tends to 1
        when ``n`` does not clearly exceed the number of neurons.

    References
    ----------
    Morcos, Raghu, Bengio (2018). Insights on representational similarity in neural
    networks with canonical correlation. NeurIPS.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 4))
    >>> round(pwcca(X, X @ np.diag([1.0, 2.0, 3.0, 4.0]) + 1.0), 12)
    1.0
    """
    x, y = _pair(X, Y, min_n=2)
    xc, yc = _center(x), _center(y)
    qx, qy = _basis(xc), _basis(yc)
    if qx is None or qy is None:
        return float("nan")
    return _pwcca_from(qx, qx.T @ xc, qy, qy.T @ yc, xc.shape[1] <= yc.shape[1])


# --------------------------------------------------------------------------- per layer


def _sparse_hsic(
    n: int,
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    kv: F64,
    lv: F64,
    both: NDArray[np.bool_],
    groups: int = 1,
    group: NDArray[np.int64] | None = None,
) -> F64:
    """``n (n − 3) HSIC_u(M∘K, M∘L)`` (platonic-rep's non-symmetric form) for masks given by
    their entries ``(rows, cols)`` with kernel values ``kv``, ``lv``; ``both``: the entry's
    transpose is in the mask too (symmetric kernels: ``tr(K̃ L̃) = Σ_{both} K_ij L_ij``).
    ``group`` splits the entries into ``groups`` independent masks (one result each)."""
    g = np.zeros(rows.shape, np.int64) if group is None else group
    tr = np.bincount(g, weights=np.where(both, kv * lv, 0.0), minlength=groups)
    sk = np.bincount(g, weights=kv, minlength=groups)
    sl = np.bincount(g, weights=lv, minlength=groups)
    colk = np.bincount(g * n + cols, weights=kv, minlength=groups * n).reshape(groups, n)
    rowl = np.bincount(g * n + rows, weights=lv, minlength=groups * n).reshape(groups, n)
    cross = np.einsum("gi,gi->g", colk, rowl)
    out: F64 = tr + sk * sl / ((n - 1) * (n - 2)) - 2.0 * cross / (n - 2)
    return out


class LayerReps:
    """What the suite needs of every layer of one model (one token kind), computed once.

    Parameters
    ----------
    feats : array ``[n, L, d]`` or a sequence of ``L`` arrays ``[n, d_l]``
        The features of every layer for the same ``n`` images.
    measures : the measures to prepare (a subset of :data:`SUITE_MEASURES`).
    options : the measures' settings.
    """

    def __init__(
        self,
        feats: ArrayLike | Sequence[ArrayLike],
        measures: Sequence[str] = SUITE_MEASURES,
        options: SuiteOptions | None = None,
    ) -> None:
        unknown = [m for m in measures if m not in SUITE_MEASURES]
        if unknown:
            raise ValueError(f"unknown measures {unknown}; choose from {SUITE_MEASURES}")
        self.measures = tuple(m for m in SUITE_MEASURES if m in measures)
        self.options = opt = options or SuiteOptions()
        if isinstance(feats, np.ndarray) and feats.ndim == 3:
            layers = [feats[:, i, :] for i in range(feats.shape[1])]
        else:
            layers = list(feats)  # type: ignore[arg-type]
        xs = [np.asarray(x, dtype=np.float64) for x in layers]
        if not xs:
            raise ValueError("no layers")
        n = xs[0].shape[0]
        for i, x in enumerate(xs):
            if x.ndim != 2 or x.shape[0] != n:
                raise ValueError(f"layer {i}: expected [n={n}, d], got {x.shape}")
            if not np.isfinite(x).all():
                raise ValueError(f"layer {i}: features must be finite (found NaN or inf)")
        if n < 4:
            raise ValueError(f"need at least 4 images, got {n}")
        self.n, self.L = n, len(xs)
        want = set(self.measures)
        self.dims = np.array([x.shape[1] for x in xs])
        if want & _LINEAR:
            xcs = [_center(x) for x in xs]
            self.xcat = np.ascontiguousarray(np.concatenate(xcs, axis=1))
            self.offsets = np.concatenate([[0], np.cumsum(self.dims)[:-1]])
            self.fro = np.array([np.sqrt(_frob_sq_cross(xc, xc)) for xc in xcs])
            self.fnorm = np.array([np.linalg.norm(xc) for xc in xcs])
            self.kd = np.stack([np.einsum("ij,ij->i", xc, xc) for xc in xcs], axis=1)  # [n, L]
            self.hu = np.array(
                [_hsic_u_linear(xc, xc) if n >= 4 else np.nan for xc in xcs]
            )  # n(n-3) HSIC_u(K, K)
        self._dense: dict[str, tuple[NDArray[np.int64], F64]] = {}
        # the n × n forms are built when first used and may be released (release()) by
        # callers short of memory: keep the features they are built from
        self._xs = xs if want & {"rbf_cka", "rsa"} else []
        if want & _NEIGHBOURS:
            self._neighbours(xs)
        if "svcca" in want:
            self.svq = []
            for x in xs:
                a = _svd_keep(_center(x), opt.keep)
                self.svq.append(None if a is None else np.linalg.qr(a)[0])
        if "pwcca" in want:
            self.pwq: list[F64 | None] = []
            self.pwa: list[F64 | None] = []
            for x in xs:
                xc = _center(x)
                q = _basis(xc)
                self.pwq.append(q)
                self.pwa.append(None if q is None else q.T @ xc)

    @property
    def nbytes(self) -> int:
        """Memory held by the precomputed forms (the Grams of linear CKA counted once built)."""
        total = 0
        for v in vars(self).values():
            for a in v.values() if isinstance(v, dict) else v if isinstance(v, list) else [v]:
                if isinstance(a, tuple):
                    a = a[1]
                if isinstance(a, np.ndarray):
                    total += a.nbytes
        return total

    def dense(self, form: str) -> tuple[NDArray[np.int64], F64]:
        """The layers where ``form`` (``gram``, ``rbf`` or ``rdm``) is defined and their
        symmetric ``n × n`` matrices packed (:func:`_pack`: the diagonal, then the strict
        upper triangle row by row), ``[len(layers), n (n + 1) / 2]`` (built on first use)."""
        if form not in self._dense:
            if form == "gram":  # centred linear Grams Xc Xcᵀ (linear CKA through n × n)
                xcs = np.split(self.xcat, self.offsets[1:], axis=1)
                mats: Iterator[F64 | None] = (_pack(xc @ xc.T) for xc in xcs)
            elif form == "rbf":
                mats = (self._rbf(x) for x in self._xs)
            elif form == "rdm":
                mats = (self._rdm(x) for x in self._xs)
            else:
                raise ValueError(f"unknown n × n form {form!r}")
            ok, rows = [], []
            for i, m in enumerate(mats):
                if m is not None:
                    ok.append(i)
                    rows.append(m)
            n = self.n
            stack = np.stack(rows) if rows else np.empty((0, n * (n + 1) // 2))
            self._dense[form] = (np.array(ok, dtype=np.int64), stack)
        return self._dense[form]

    def release(self, form: str | None = None) -> None:
        """Drop the ``n × n`` form (default: all of them); built again when next used."""
        for f in [form] if form else list(self._dense):
            self._dense.pop(f, None)

    # dense n × n forms: value = scale · ⟨A, B⟩_F
    def _rbf(self, x: F64) -> F64 | None:
        K = _rbf_gram(_center(x), self.options.sigma_frac)
        if K is None:
            return None
        Kc = _center_gram(K)
        norm = float(np.sqrt(np.einsum("ij,ij->", Kc, Kc)))
        return _pack(Kc) / norm if norm > 0.0 else None

    def _rdm(self, x: F64) -> F64 | None:
        a = _rdm_upper(x)
        if a is None:
            return None
        if self.options.rsa_method == "spearman":
            from scipy.stats import rankdata

            a = rankdata(a).astype(np.float64)
        a = a - a.mean()
        norm = float(np.sqrt(a @ a))
        if not norm > 0.0:
            return None
        # packed (:func:`_pack`) with a zero diagonal: ⟨A, B⟩_F = 2 Σ_{i<j}, the
        # correlation is half of it
        return np.concatenate([np.zeros(self.n), a / norm])

    def _neighbours(self, xs: list[F64]) -> None:
        n, k = self.n, int(self.options.k)
        if not 1 <= k <= n - 1:
            raise ValueError(f"k must be in [1, n − 1] = [1, {n - 1}], got {k}")
        if "cknna" in self.measures and k < 2:
            raise ValueError("CKNNA requires k >= 2")
        dtype = np.int8 if k < 127 else (np.int16 if k < 2**15 - 1 else np.int32)
        self.nb_ok = np.zeros(self.L, bool)
        self.nb_idx = np.zeros((self.L, n, k), np.int64)  # neighbours of each image
        self.nb_val = np.zeros((self.L, n, k))  # cosine to each neighbour
        self.nb_pos = np.zeros((self.L, n, n), dtype)  # 1 + position of j in i's list, or 0
        self.nb_self = np.full(self.L, np.nan)  # n(n-3) HSIC_u(M_X∘K, M_X∘K)
        rows = np.repeat(np.arange(n), k)
        for i, x in enumerate(xs):
            xn = _l2_rows(x)
            if _rows_all_equal(xn):
                continue
            idx = _knn(xn, k)
            self.nb_ok[i] = True
            self.nb_idx[i] = idx
            self.nb_val[i] = np.einsum("id,ikd->ik", xn, xn[idx])
            self.nb_pos[i][np.arange(n)[:, None], idx] = np.arange(1, k + 1, dtype=dtype)
            cols = idx.ravel()
            both = self.nb_pos[i][cols, rows] > 0
            v = self.nb_val[i].ravel()
            self.nb_self[i] = _sparse_hsic(n, rows, cols, v, v, both)[0]


# --------------------------------------------------------------------------- pairs


def _nan_grid(lx: int, ly: int, p: int) -> F64:
    return np.full((p, lx, ly), np.nan)


def _blocks(c: F64, offsets: NDArray[np.int64]) -> F64:
    """Per-column-block sums of squares of ``c`` ``[dx, Σd]`` → ``[len(offsets)]``."""
    return np.add.reduceat(np.einsum("ij,ij->j", c, c), offsets)


def _svdvals_blocks(
    c: F64, dims: NDArray[np.int64], offsets: NDArray[np.int64]
) -> list[NDArray[np.floating]]:
    if (dims == dims[0]).all():
        stack = c.reshape(c.shape[0], len(dims), int(dims[0])).transpose(1, 0, 2)
        return list(np.linalg.svd(stack, compute_uv=False))
    return [np.linalg.svd(c[:, o : o + d], compute_uv=False) for o, d in zip(offsets, dims)]


def pair_grids(
    rx: LayerReps,
    ry: LayerReps,
    perms: NDArray[np.int64] | None = None,
    measures: Sequence[str] | None = None,
    *,
    release: bool = False,
) -> dict[str, F64]:
    """Every measure for every layer of ``rx`` (rows) against every layer of ``ry`` (columns).

    Parameters
    ----------
    rx, ry : the two models' :class:`LayerReps` (the same ``n`` images, in the same order).
    perms : ``[P, n]`` permutations of the images; the second model's row ``i`` is replaced
        by its row ``perms[p, i]`` (the null: the image correspondence shuffled).
    measures : default every measure both sides prepared.
    release : drop each ``n × n`` form of both sides once used (``3 L n (n + 1) / 2 × 8`` bytes per side
        at most otherwise kept for their next pair; they are rebuilt when needed).

    Returns
    -------
    dict
        measure → ``[1 + P, L_x, L_y]``: index 0 the observed values, then one grid per
        permutation.
    """
    if rx.n != ry.n:
        raise ValueError(f"the two models have different image counts: {rx.n} != {ry.n}")
    n = rx.n
    names = [m for m in (measures or rx.measures) if m in rx.measures and m in ry.measures]
    perm_list: list[NDArray[np.int64] | None] = [None]
    if perms is not None:
        perms = np.asarray(perms, dtype=np.int64)
        if perms.ndim != 2 or perms.shape[1] != n:
            raise ValueError(f"perms must be [P, n={n}], got {perms.shape}")
        perm_list += list(perms)
    P = len(perm_list)
    out = {m: _nan_grid(rx.L, ry.L, P) for m in names}
    want = set(names)
    ident = np.arange(n)
    work: dict[str, Any] = {}  # buffers reused across permutations
    # one measure family at a time over every permutation, so at most one n × n form of each
    # side (and its gather buffer) is needed at once
    perms_of = [(p, ident if perm is None else perm) for p, perm in enumerate(perm_list)]
    if want & _LINEAR:
        for p, pi in perms_of:
            _linear(rx, ry, pi, p, out, want, work)
        _done(rx, ry, "gram", work, release)
    for m, form, scale in (("rbf_cka", "rbf", 1.0), ("rsa", "rdm", 0.5)):
        if m in want:
            for p, pi in perms_of:
                _dense(rx, ry, form, pi, p == 0, scale, out[m][p], work)
            _done(rx, ry, form, work, release)
    if want & _NEIGHBOURS:
        for p, pi in perms_of:
            _neighbour_measures(rx, ry, pi, p, out, want)
    if "svcca" in want:
        for p, pi in perms_of:
            _cca(rx.svq, ry.svq, pi, out["svcca"][p], None, None, None)
    if "pwcca" in want:
        side = rx.dims[:, None] <= ry.dims[None, :]
        for p, pi in perms_of:
            _cca(rx.pwq, ry.pwq, pi, out["pwcca"][p], rx.pwa, ry.pwa, side)
    return out


def _done(rx: LayerReps, ry: LayerReps, form: str, work: dict[str, Any], release: bool) -> None:
    work.pop(form, None)
    if release:
        rx.release(form)
        ry.release(form)


def _linear(
    rx: LayerReps,
    ry: LayerReps,
    pi: NDArray[np.int64],
    p: int,
    out: dict[str, F64],
    want: set,
    work: dict[str, Any],
) -> None:
    n = rx.n
    cka = want & {"linear_cka", "linear_cka_debiased"}
    # ||X_aᵀ Y_b[π]||²_F for every layer pair: through the n × n Grams when that is cheaper
    # than the cross-covariances (n small against the widths), else from X_aᵀ Y[π]
    by_gram = rx.L * ry.L * n * n + ry.L * n * n < n * rx.dims.sum() * ry.dims.sum()
    sq = np.full((rx.L, ry.L), np.nan)
    if cka and by_gram:
        _dense(rx, ry, "gram", pi, p == 0, 1.0, sq, work)
    ycat = ry.xcat[pi] if (cka and not by_gram) or "procrustes_distance" in want else None
    for a in range(rx.L):
        if ycat is None:
            break
        xa = rx.xcat[:, rx.offsets[a] : rx.offsets[a] + rx.dims[a]]
        c = xa.T @ ycat  # [dx, Σdy]
        if cka and not by_gram:
            sq[a] = _blocks(c, ry.offsets)
        if "procrustes_distance" in want:
            vals = _svdvals_blocks(c, ry.dims, ry.offsets)
            nuc = np.array([float(v.sum()) for v in vals])
            den = rx.fnorm[a] * ry.fnorm
            with np.errstate(divide="ignore", invalid="ignore"):
                cos = np.where(den > 0, nuc / den, np.nan)
            out["procrustes_distance"][p, a] = np.arccos(np.clip(cos, -1.0, 1.0))
    if "linear_cka" in want:
        den = rx.fro[:, None] * ry.fro[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            out["linear_cka"][p] = np.where(den > 0, sq / den, np.nan)
    if "linear_cka_debiased" in want:
        # unbiased HSIC of centred linear Grams: K̃ 1 = −diag K, so every term but tr(K̃ L̃)
        # is a function of the diagonals
        cross = rx.kd.T @ ry.kd[pi]  # [Lx, Ly]: Σ_i K_ii L_π(i)π(i)
        sx, sy = rx.kd.sum(axis=0), ry.kd.sum(axis=0)
        h = (sq - cross) + np.outer(sx, sy) / ((n - 1) * (n - 2)) - 2.0 * cross / (n - 2)
        ok = (rx.hu[:, None] > 0) & (ry.hu[None, :] > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            den = np.sqrt(rx.hu[:, None] * ry.hu[None, :])
            out["linear_cka_debiased"][p] = np.where(ok, h / den, np.nan)


def _pack(m: F64) -> F64:
    """A symmetric ``n × n`` matrix as its diagonal followed by its strict upper triangle
    (row by row): ``⟨A, B⟩_F = Σ diag + 2 Σ upper`` (:func:`_dense`) reads half the data."""
    n = m.shape[0]
    return np.concatenate([np.diagonal(m), m[np.triu_indices(n, k=1)]])


def _packed_index(pi: NDArray[np.int64]) -> NDArray[np.signedinteger]:
    """Where entry ``k`` of the packed ``B[π, π]`` sits in the packed ``B`` (B symmetric):
    the diagonal ``B[π_i, π_i]`` at ``π_i``; ``B[π_i, π_j]`` (i < j) at the strict-upper
    position of ``(u, v) = (min, max)(π_i, π_j)``, ``n + u n − u (u + 1) / 2 + v − u − 1``
    (int32 while the packed length fits)."""
    n = len(pi)
    dt = np.int32 if n * (n + 1) // 2 < 2**31 - 1 else np.int64
    p = pi.astype(dt)
    iu, ju = np.triu_indices(n, k=1)
    a, b = p[iu], p[ju]
    u = np.minimum(a, b)
    v = np.maximum(a, b)
    v -= u
    v += n - 1
    v += u * n
    v -= u * (u + 1) // 2
    return np.concatenate([p, v])


_INDEX_CACHE_BYTES = 256 << 20  # packed gather indices kept across the n × n forms of a pair


def _dense(
    rx: LayerReps,
    ry: LayerReps,
    form: str,
    pi: NDArray[np.int64],
    identity: bool,
    scale: float,
    grid: F64,
    work: dict[str, Any],
) -> None:
    """``grid[a, b] = scale · ⟨A_a, B_b[π, π]⟩_F`` for every pair of defined matrices of
    ``form`` (symmetric, packed: :func:`_pack`): one gather of the packed halves per matrix of
    the second side into a reused buffer (fresh pages cost more than the gather itself), two
    matrix products for all pairs (diagonal, then twice the strict upper triangle)."""
    ok_x, flat = rx.dense(form)
    ok_y, other = ry.dense(form)
    if not ok_x.size or not ok_y.size:
        return
    n = rx.n
    if not identity:
        # one index per permutation, kept for the pair's other forms while they fit
        cache: dict[bytes, np.ndarray] = work.setdefault("where", {})
        key = pi.tobytes()
        where = cache.get(key)
        if where is None:
            where = _packed_index(pi)
            if (len(cache) + 1) * where.nbytes <= _INDEX_CACHE_BYTES:
                cache[key] = where
        buf = work.get(form)
        if buf is None or buf.shape != other.shape:
            buf = work[form] = np.empty_like(other)
        for b in range(other.shape[0]):
            np.take(other[b], where, out=buf[b])
        other = buf
    prod = flat[:, :n] @ other[:, :n].T + 2.0 * (flat[:, n:] @ other[:, n:].T)
    grid[np.ix_(ok_x, ok_y)] = scale * prod


def _neighbour_measures(
    rx: LayerReps, ry: LayerReps, pi: NDArray[np.int64], p: int, out: dict[str, F64], want: set
) -> None:
    n, k = rx.n, int(rx.options.k)
    if int(ry.options.k) != k:
        raise ValueError(f"the two sides use different k: {k} != {ry.options.k}")
    ok_y = np.flatnonzero(ry.nb_ok)
    if not rx.nb_ok.any() or not ok_y.size:
        return
    inv = np.empty_like(pi)
    inv[pi] = np.arange(n)
    ly = ok_y.size
    # y's neighbour lists under the permutation: image i's neighbours are inv[N_y(π i)]
    cols = inv[ry.nb_idx[ok_y][:, pi, :]]  # [ly, n, k]
    lval = ry.nb_val[ok_y][:, pi, :]
    rows = np.broadcast_to(np.arange(n)[None, :, None], cols.shape)
    group = np.broadcast_to(np.arange(ly)[:, None, None], cols.shape)
    # is (j, i) in y's (permuted) mask: π i among the neighbours of π j
    y_t = ry.nb_pos[ok_y[:, None, None], pi[cols], pi[rows]] > 0
    for a in np.flatnonzero(rx.nb_ok):
        pos = rx.nb_pos[a][rows, cols]  # [ly, n, k]
        mutual = pos > 0
        hits = mutual.sum(axis=(1, 2))
        if "mutual_knn" in want:
            out["mutual_knn"][p, a, ok_y] = hits / (n * k)
        if "cknna" in want:
            r, c, g = rows[mutual], cols[mutual], group[mutual]
            kv = rx.nb_val[a][r, pos[mutual] - 1]
            lv = lval[mutual]
            both = (rx.nb_pos[a][c, r] > 0) & y_t[mutual]
            s = _sparse_hsic(n, r, c, kv, lv, both, groups=ly, group=g)
            den = rx.nb_self[a] * ry.nb_self[ok_y]
            with np.errstate(divide="ignore", invalid="ignore"):
                out["cknna"][p, a, ok_y] = np.where(den > 0, s / np.sqrt(den), np.nan)


def _cca(
    qxs: list[F64 | None],
    qys: list[F64 | None],
    pi: NDArray[np.int64],
    grid: F64,
    axs: list[F64 | None] | None,
    ays: list[F64 | None] | None,
    side: NDArray[np.bool_] | None,
) -> None:
    """SVCCA (``axs`` None: mean canonical correlation) or PWCCA on orthonormal bases."""
    qyp = [None if q is None else q[pi] for q in qys]
    for a, qx in enumerate(qxs):
        if qx is None:
            continue
        for b, qy in enumerate(qyp):
            if qy is None:
                continue
            if axs is None or ays is None or side is None:
                rho = np.linalg.svd(qx.T @ qy, compute_uv=False)
                grid[a, b] = float(np.clip(rho, 0.0, 1.0).mean())
            else:
                grid[a, b] = _pwcca_from(qx, axs[a], qy, ays[b], bool(side[a, b]))  # type: ignore[arg-type]
