"""The registry of analyses: every analysis of vitlib is declared here, once.

An :class:`Analysis` says which config section drives it (``analyses.<section>``: its
datasets and settings), what it reads from a store (its capture :attr:`~Analysis.needs`,
which decide what an extraction computes), the function that makes its table, the settings
that function takes, its figures (plot function, caption, paper figure) and the metrics the
best-layer summary takes from it.  The workflow (``rules/common.smk``) derives its targets,
wildcard constraints, store views and report captions from :data:`ANALYSES`; nothing else
lists analyses.

Functions are named as ``"module:function"`` strings and imported only when called, so
reading the registry (as the Snakefile does) imports neither torch nor matplotlib.

Adding an analysis: a library function ``f(store, **settings) -> DataFrame`` (plus its
test), a plot function ``p(table, outputs, *, dpi, models)`` and one entry below; see
``CONTRIBUTING.md``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

#: How an analysis' tables relate to stores:
#: ``model``: one table per (dataset, model) from that model's store;
#: ``models``: one table per dataset from every model's store (model pairs: one job reads
#: each store once, instead of a job per pair reading two);
#: ``train_test``: one table per (test dataset, model) from a train and a test store.
Shape = Literal["model", "models", "train_test"]

#: What a store can hold, by capture need (see :mod:`vitlib.reducers`).
NEEDS = (
    "features",  # per-image CLS / mean spatial block outputs
    "token_norms",  # per-image norm of every spatial block-output token
    "attention",  # attention rows, distance and the dataset sums of the maps
    "attention_entropy",  # per-image attention entropy per head (CLS, spatial queries)
    "prefix_attention",  # per-image attention mass of CLS / spatial queries on prefix keys
    "rollout",  # per-image attention-rollout rows (CLS, mean spatial) of every block
    "grams",  # per-minibatch Gram matrices at the configured capture points
    "residual",  # skip/branch Grams and norm ratios
    "tokens",  # every spatial token of every block (token views)
    "segment_pool",  # annotation-mask-pooled block outputs, pooled in the pass (token views)
    "dense_sample",  # sampled tokens with their mask labels, every block (token views; @settings)
    "davis_propagation",  # DAVIS soft masks propagated in the pass (token views; @settings)
    "spair_transfer",  # SPair keypoints transferred in the pass (spair view)
)


@dataclass(frozen=True)
class Figure:
    """One figure of an analysis: ``figures/<dataset>/<name>.<ext>`` (or, per model,
    ``figures/<dataset>/<name>/<model>.<ext>``)."""

    name: str
    plot: str  # "module:function" called as f(data, outputs, *, dpi, models, **options)
    caption: str  # what the figure shows (report caption, reStructuredText)
    paper: str = ""  # the paper figure(s) it mirrors
    per_model: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    #: the paper's appendix figure(s) of the same data, when the figure also has the
    #: appendix layout (every model, one panel per family, x = normalised depth):
    #: ``figures/<dataset>/appendix/<name>.<ext>``; the main layout shows the main models
    appendix: str = ""
    #: keyword of the plot function → key in its analysis' config section (a figure-only
    #: choice, such as which best head the saliency figure shows)
    settings: Mapping[str, str] = field(default_factory=dict)
    #: other analyses (of the same dataset, every model) the figure also reads: the plot
    #: function then gets ``{analysis: data}`` — a long table, or for array analyses the
    #: list of every model's arrays — with its own analysis among them
    extra: tuple[str, ...] = ()
    #: a setting of its analysis' section without which the figure is not drawn (its data is
    #: optional there)
    enabled_by: str | None = None
    #: ``(setting, value)``: the figure is drawn only when ``value`` is listed in that
    #: setting of its analysis' section (one figure per measure of a list setting)
    enabled_if: tuple[str, str] | None = None

    def function(self) -> Callable[..., None]:
        return _load(self.plot)

    def enabled(self, section: Mapping[str, Any]) -> bool:
        if self.enabled_if is not None:
            key, value = self.enabled_if
            if value not in section.get(key, ()):
                return False
        return self.enabled_by is None or bool(section.get(self.enabled_by))

    def kwargs(self, section: Mapping[str, Any]) -> dict[str, Any]:
        """The plot function's keyword arguments from the config section (a key the section
        lacks leaves the plot function's default)."""
        return {kw: section[key] for kw, key in self.settings.items() if key in section}


@dataclass(frozen=True)
class Headline:
    """A per-layer score the best-layer summary (paper Tables 1 and 5) takes: rows of
    ``metric`` where the columns of ``where`` have those values."""

    metric: str
    label: str
    where: Mapping[str, Any] = field(default_factory=dict)
    #: in the paper's Table 1 (main text; the first dataset of the section) as well as in
    #: its Table 5 (appendix, every dataset)
    main: bool = False
    #: the paper table it belongs to besides Table 1: 5 (every downstream metric) or 4 (the
    #: DAVIS view ablation: non-dense against dense extraction)
    table: Literal[4, 5] = 5


@dataclass(frozen=True)
class Analysis:
    name: str
    section: str  # config block analyses.<section>
    shape: Shape
    table: str  # "module:function"
    needs: frozenset[str]
    description: str
    #: keyword of the table function → key in the config section
    settings: Mapping[str, str] = field(default_factory=dict)
    view: str | None = None  # the store view it reads; None: the section's ``view``
    dataset_kinds: tuple[str, ...] = ()  # dataset kinds it can read; () any image dataset
    manifest: bool = False  # the table function takes the manifest after the store(s)
    metrics: tuple[str, ...] = ()  # wide metric columns melted by vitlib.tables.tidy
    output: Literal["csv", "npz"] = "csv"
    figures: tuple[Figure, ...] = ()
    summary: tuple[Headline, ...] = ()
    enabled_by: str | None = None  # a setting of the section that switches it off when 0
    #: the setting naming the one feature kind it reads (``features:<kind>``); None: both
    feature_setting: str | None = None
    #: the setting naming the blocks it reads (``features@<layers>``); None: every block
    layers_setting: str | None = None
    #: where a ``train_test`` analysis' training side comes from: a store of the train
    #: dataset, or a k-NN bank streamed through the model (:mod:`vitlib.downstream.knn_bank`)
    train: Literal["store", "knn_bank"] = "store"
    #: settings computed inside the extraction (its needs carry them: ``need@k=v,...``)
    need_settings: tuple[str, ...] = ()
    heavy: bool = False  # runs with analysis_threads
    gpu: bool = False  # uses the extraction device (a GPU job on GPU runs)
    paper: str = ""

    def function(self) -> Callable[..., Any]:
        return _load(self.table)

    @property
    def per_dataset_job(self) -> bool:
        """Its per-model tables are written by one job per dataset (the workflow's
        ``table_dataset`` rule) rather than one job per model: a cheap CPU analysis
        (neither heavy nor GPU) whose tables are only ever read all together (no per-model
        figure), so when one model's store changes, the job recomputes its siblings'
        tables, cheaply and to the same values, and reruns nothing downstream that a job
        per model would not (figures and summaries read every model's table anyway)."""
        return (
            self.shape == "model"
            and not (self.heavy or self.gpu)
            and not any(f.per_model for f in self.figures)
        )

    def kwargs(self, section: Mapping[str, Any]) -> dict[str, Any]:
        """The table function's keyword arguments from the config section."""
        return {kw: section[key] for kw, key in self.settings.items()}

    def enabled(self, section: Mapping[str, Any]) -> bool:
        return self.enabled_by is None or bool(section.get(self.enabled_by))

    def store_view(self, section: Mapping[str, Any]) -> str:
        return self.view or str(section["view"])


#: Settings an analysis may read besides its own section's: top-level config blocks, passed
#: whole under their name (``statistics``: the bootstrap of :mod:`vitlib.stats`).
GLOBAL_SETTINGS = ("statistics",)


def _load(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return fn


def _f(name: str, plot: str, caption: str, paper: str = "", **kw: Any) -> Figure:
    return Figure(name, plot, " ".join(caption.split()), paper, **kw)


_A = "vitlib.attention.analyses"
_PA = "vitlib.plots.attention_maps"
_PD = "vitlib.plots.downstream"
_PF = "vitlib.plots.features"
_PC = "vitlib.plots.composites"
_ATTN_MAPS = (
    "One row per layer and one column per head, each cell min–max scaled (the paper's"
    " 'pre-scaled' style)."
)
_CURVES = "vitlib.plots.downstream:task_figure"
_DAVIS = "vitlib.downstream.tables:davis_table"
_DAVIS_SETTINGS = {k: k for k in ("n_last", "radius", "topk", "temperature")}
_DAVIS_TABLE_SETTINGS = {**_DAVIS_SETTINGS, "statistics": "statistics"}
#: Settings of the ``dense_sample`` need (its qualifier's order; vitlib.metrics.dense).
DENSE_SAMPLE_SETTINGS = ("per_image", "full_images", "seed", "threshold")
#: What the analyses of the sampled tokens share (section ``dense``, §D10).
_DENSE_READS: dict[str, Any] = dict(
    section="dense",
    shape="model",
    needs=frozenset({"dense_sample"}),
    need_settings=DENSE_SAMPLE_SETTINGS,
    dataset_kinds=("coco", "partimagenet"),
    manifest=True,
)

_SIMILARITY_FIGURES = (
    ("linear_cka", "Linear CKA (Kornblith et al. 2019)", "1: identical up to rotation and scale."),
    (
        "linear_cka_debiased",
        "Debiased linear CKA (unbiased HSIC, Nguyen et al. 2021)",
        "≈ 0 for independent features at any width, where the biased estimator is not.",
    ),
    ("rbf_cka", "RBF-kernel CKA (median-distance bandwidth)", "1: identical."),
    (
        "mutual_knn",
        "Mutual k-NN alignment (Huh et al. 2024)",
        "The shared fraction of each image's k nearest neighbours; chance k / (n − 1).",
    ),
    (
        "cknna",
        "CKNNA (Huh et al. 2024)",
        "CKA restricted to mutual nearest neighbours; not symmetric: the row model is"
        " the first argument above the diagonal.",
    ),
    ("svcca", "SVCCA (Raghu et al. 2017)", "Mean canonical correlation of the top-99 % subspaces."),
    (
        "pwcca",
        "PWCCA (Morcos et al. 2018)",
        "Canonical correlations weighted by the projections of the narrower side's neurons.",
    ),
    (
        "procrustes_distance",
        "Procrustes angular shape distance (Williams et al. 2021)",
        "A distance in radians: 0 identical up to rotation and scale (bright).",
    ),
    (
        "rsa",
        "RSA (correlation of correlation-distance RDMs; ``rsa_method``, default Spearman)",
        "1: same geometry.",
    ),
)

ANALYSES_LIST: tuple[Analysis, ...] = (
    Analysis(
        "attention_distance",
        section="attention_distance",
        shape="model",
        table="vitlib.attention.tables:attention_distance_table",
        needs=frozenset({"attention"}),
        description="Mean attention distance per layer and head.",
        settings={"units": "units", "statistics": "statistics"},
        view="center",
        paper="Fig. 4, 15",
        figures=(
            _f(
                "attention_distance",
                "vitlib.plots.attention:attention_distance_figure",
                """Average attention distance per layer (the paper's Figure 4; the right panel
                against normalised depth; the appendix layout, one panel per family, is its
                Figure 15). For every head, the expected distance between a spatial query token
                and the spatial tokens it attends to (CLS removed, rows renormalised), averaged
                over the query tokens and all images; dots are single heads, lines the mean
                over heads, the dashed line uniform attention over the same grid.""",
                "Fig. 4",
                appendix="Fig. 15",
            ),
        ),
    ),
    Analysis(
        "attention_maps",
        section="attention",
        shape="model",
        table=f"{_A}:average_maps",
        needs=frozenset({"attention"}),
        description="Dataset-average attention maps and aligned aggregated maps (arrays).",
        settings={
            "aaam_normaliser": "aaam_normaliser",
            "faithful_batch_size": "faithful_batch_size",
        },
        view="center",
        output="npz",
        paper="Fig. 2, 3, 14, 17, 18",
        figures=(
            _f(
                "attention_maps_cls",
                f"{_PA}:average_map_figure",
                f"Average attention of the CLS query over the spatial tokens, over every image of"
                f" the dataset (paper Figures 2 and 17). {_ATTN_MAPS}",
                "Fig. 17",
                per_model=True,
                options={"kind": "cls"},
            ),
            _f(
                "attention_maps_spatial",
                f"{_PA}:average_map_figure",
                f"Average attention of the spatial queries, renormalised without the CLS key (the"
                f" original code's 'Avg Spatial Attention', docs/protocols.md §2.2). {_ATTN_MAPS}",
                "§2.2",
                per_model=True,
                options={"kind": "spatial"},
            ),
            _f(
                "attention_heads_cls",
                f"{_PC}:cls_heads_figure",
                """Average CLS attention of a few heads (``analyses.attention.heads_shown``,
                1-based; default the first three) of every layer, the models side by side
                (paper Figure 2, which showed three heads per layer): where the models'
                attention differs, in the mid-to-late layers. Each map min–max scaled.""",
                "Fig. 2",
                settings={"heads": "heads_shown"},
            ),
            _f(
                "local_heads",
                f"{_PC}:local_heads_figure",
                """One example of each kind of local attention head per model (paper Figure 3):
                strict local, soft local, axial and offset local, as classified by the head
                taxonomy (the first head of the kind in depth order, [layer, head] 1-based),
                drawn as the aligned aggregated map with red mid-lines through the query
                position; "none" where a model has no head of that kind.""",
                "Fig. 3",
                extra=("head_taxonomy",),
            ),
            _f(
                "offset_heads",
                f"{_PC}:offset_heads_figure",
                """The most offset local head of every model (paper Figure 14: every ViT learns
                offset local heads): among the heads the taxonomy calls offset-local, the one
                with the largest attention offset (the aligned map's centre of mass, in
                tokens; a model without one shows its most offset head, said in its title), as
                its aligned aggregated map with red mid-lines through the query position.""",
                "Fig. 14",
                extra=("head_metrics", "head_taxonomy"),
                appendix="Fig. 14",
            ),
            _f(
                "attention_maps_aligned",
                f"{_PA}:average_map_figure",
                f"Aligned aggregated attention maps: every spatial query's map shifted so the query"
                f" sits at the centre, then averaged (paper Figures 3, 14 and 18). {_ATTN_MAPS}",
                "Fig. 18",
                per_model=True,
                options={"kind": "aligned"},
            ),
        ),
    ),
    Analysis(
        "head_metrics",
        section="attention",
        shape="model",
        table=f"{_A}:head_metrics_table",
        needs=frozenset({"attention"}),
        description="Per-head distance, offset, spatial→CLS attention, null rows.",
        settings={"aaam_normaliser": "aaam_normaliser", "spatial_cls_key": "spatial_cls_key"},
        view="center",
        figures=(
            _f(
                "attention_offset",
                f"{_PA}:offset_figure",
                """Average attention offset per head (docs/protocols.md §2.4): the centre of mass of
                each head's aligned map, coloured by layer. Heads far from the origin attend
                consistently to one side — the paper's "offset local attention heads".""",
                "§2.4",
            ),
        ),
    ),
    Analysis(
        "head_taxonomy",
        section="attention",
        shape="model",
        table=f"{_A}:head_taxonomy_table",
        needs=frozenset({"attention"}),
        description="Automatic head taxonomy from the aligned maps.",
        settings={"taxonomy": "taxonomy"},
        view="center",
        metrics=("offset_rows", "offset_cols"),
        figures=(
            _f(
                "head_taxonomy",
                f"{_PA}:taxonomy_figure",
                """Automatic head taxonomy (beyond the paper, which showed these by eye): each
                head's aligned map classified as strict-local, offset-local (with direction and
                offset), axial (horizontal or vertical), soft-local or global; counts per layer.
                Thresholds are in the config.""",
            ),
        ),
    ),
    Analysis(
        "artifact_tokens",
        section="attention",
        shape="model",
        table=f"{_A}:artifact_tokens_table",
        needs=frozenset({"attention", "token_norms", "prefix_attention"}),
        description="High-norm outlier tokens, register attention and token-norm histograms.",
        settings={"norm_factor": "artifact_norm_factor", "emergence": "artifact_emergence"},
        view="center",
        figures=(
            _f(
                "artifact_tokens",
                f"{_PA}:artifact_figure",
                """High-norm "artifact" tokens and registers per layer: the fraction of spatial
                tokens whose output norm is an outlier (dotted: the layer where they emerge),
                the share of the next block's CLS and mean spatial attention they draw, the
                spatial queries' attention mass on register keys and on the CLS key, and each
                model's token-norm histogram per block — models of a family side by side, so
                a network without registers sits next to its register variant.""",
            ),
        ),
    ),
    Analysis(
        "attention_entropy",
        section="attention",
        shape="model",
        table="vitlib.attention.entropy:attention_entropy_table",
        needs=frozenset({"attention_entropy"}),
        description="Attention entropy per layer and head, CLS and spatial queries.",
        view="center",
        figures=(
            _f(
                "attention_entropy",
                "vitlib.plots.attention:attention_entropy_figure",
                """Attention entropy per layer (beyond the paper): the Shannon entropy (nats) of
                each head's attention row over all keys, for the CLS query and averaged over
                the spatial queries, mean over images; dots are heads, lines the mean over
                heads, the dashed line the entropy of uniform attention. Low entropy: a head
                that attends to few tokens (local or sparse); high: a head that spreads its
                attention (global).""",
            ),
        ),
    ),
    Analysis(
        "attention_images",
        section="attention",
        shape="model",
        table=f"{_A}:attention_images",
        needs=frozenset({"attention"}),
        description="Attention of chosen single images (arrays).",
        settings={"images": "images", "queries": "queries"},
        enabled_by="images",
        view="center",
        manifest=True,
        output="npz",
        figures=(
            _f(
                "attention_images",
                f"{_PA}:image_grid_figure",
                """Attention of single images (paper Figures 11–12; the images:
                ``analyses.attention.images``, a count or item ids): the centre crop, then for
                every layer and head the CLS query's attention (left block) and the mean
                spatial query's attention (right block).""",
                "Fig. 11–12",
                per_model=True,
            ),
            _f(
                "attention_queries",
                f"{_PA}:query_grid_figure",
                """Attention of chosen query tokens of single images (the original code's
                position grids; ``analyses.attention.queries``, default top, left, centre,
                right and bottom of the token grid): per image the crop with the query
                tokens marked, then for every block (rows) the attention each query pays to
                the spatial keys (columns), head ``analyses.attention.query_head`` (default
                the first), the query's own token outlined in red.""",
                per_model=True,
                settings={"head": "query_head"},
                enabled_by="queries",
            ),
            _f(
                "attention_samples",
                f"{_PC}:sample_maps_figure",
                """CLS attention of one head of one block (``analyses.attention.sample_block``,
                default the last; ``sample_head``, default the first) for the chosen single
                images (rows) and every model (columns), the bottom row the same head's
                average over the dataset (paper Figure 13, on all models in the appendix
                layout).""",
                "Fig. 13",
                extra=("attention_maps",),
                settings={"block": "sample_block", "head": "sample_head"},
                appendix="Fig. 13",
            ),
        ),
    ),
    Analysis(
        "cka",
        section="features",
        shape="models",
        table="vitlib.metrics.tables:cka_grids_table",
        needs=frozenset({"grams"}),
        description="Layer × layer CKA between every pair of models (and each with itself).",
        settings={
            "points": "cka_points",
            "kind": "cka_kind",
            "minmax": "cka_minmax",
            "statistics": "statistics",
        },
        view="center",
        figures=(
            _f(
                "cka_grids",
                f"{_PF}:cka_grids_figure",
                """CKA similarity between every pair of layers of every pair of models (paper
                Figures 20–22; the diagonal panels are the within-model grids). Computed from the
                Gram matrices stored at extraction (unbiased minibatch CKA, paper eq. 1–2): no
                second forward pass.""",
                "Fig. 20–22",
            ),
        ),
    ),
    Analysis(
        "cka_last_layer",
        section="features",
        shape="models",
        table="vitlib.metrics.tables:last_layer_cka_table",
        needs=frozenset({"grams"}),
        description="CKA between the last layers of every model pair.",
        settings={"minmax": "cka_minmax"},
        view="center",
        figures=(
            _f(
                "cka_last_layer",
                f"{_PF}:last_layer_figure",
                """CKA between the last-layer representations of every pair of models, for all
                tokens, the CLS token and the spatial tokens (paper Figures 6 and 19).""",
                "Fig. 6, 19",
            ),
        ),
    ),
    Analysis(
        "similarity",
        section="similarity",
        shape="models",
        table="vitlib.metrics.tables:similarity_table",
        needs=frozenset({"features"}),
        description=(
            "Every similarity measure between every layer pair of every model pair, with"
            " permutation nulls."
        ),
        settings={
            k: k
            for k in (
                "measures",
                "kinds",
                "max_images",
                "permutations",
                "null_measures",
                "seed",
                "k",
                "sigma_frac",
                "keep",
                "rsa_method",
                "alpha",
            )
        },
        view="center",
        heavy=True,
        figures=(
            *(
                _f(
                    f"similarity_{m}",
                    f"{_PF}:similarity_grids_figure",
                    f"""{label} between every pair of blocks of every pair of models (beyond the
                    paper; docs/protocols.md §D6), from the stored block outputs: CLS token on
                    and above the diagonal, mean spatial token below, the row model's blocks
                    along y. A grey dot marks a cell that is not more similar than its
                    permutation null (the image correspondence shuffled,
                    ``analyses.similarity.permutations`` times, seeded; Benjamini–Hochberg
                    over the grid at ``alpha``). {note}""",
                    options={"measure": m},
                    enabled_if=("measures", m),
                )
                for m, label, note in _SIMILARITY_FIGURES
            ),
            _f(
                "similarity_best_layer",
                f"{_PF}:similarity_best_layer_figure",
                """Do corresponding depths match between models (beyond the paper)? For every
                pair of different models and every measure, each block of the first model is
                matched to the most similar block of the second (the table's ``best_for_x``);
                the cell is the mean distance between the two in normalised depth (0: every
                best match at the same relative depth). A cross: fewer than half of those
                best matches are significant against the permutation null.""",
            ),
        ),
    ),
    Analysis(
        "residual",
        section="features",
        shape="model",
        table="vitlib.metrics.tables:residual_table",
        needs=frozenset({"residual"}),
        description="Skip vs branch CKA and norm ratios per sub-block.",
        settings={"minmax": "cka_minmax"},
        view="center",
        figures=(
            _f(
                "residual",
                f"{_PF}:residual_figure",
                """Residual connections (paper Figure 23): CKA between the skip path (rows) and the
                branch output (columns) of the attention and MLP sub-blocks, and the norm ratio
                ‖skip‖ / ‖branch‖ per layer for the CLS and spatial tokens.""",
                "Fig. 23",
            ),
        ),
    ),
    Analysis(
        "clustering",
        section="features",
        shape="model",
        table="vitlib.metrics.tables:clustering_table",
        needs=frozenset({"features"}),
        description="Image-level k-means purity / NMI / ARI per layer.",
        settings={
            "k": "clustering_k",
            "seed": "clustering_seed",
            "seeds": "clustering_seeds",
            "n_init": "clustering_n_init",
            "max_iter": "clustering_max_iter",
            "tol": "clustering_tol",
            "noise": "noise",
            "statistics": "statistics",
        },
        view="center",
        heavy=True,
        figures=(
            _f(
                "clustering",
                f"{_PF}:clustering_figure",
                """Image-level clustering per layer (paper Figure 7; the appendix layout, one
                column per family against normalised depth, is its Figures 24 and 25): seeded
                k-means (FAISS, k = the number of classes unless set) on CLS (top) and
                mean-pooled spatial (bottom) features, scored by purity, NMI and ARI; the
                dash-dotted line is the same clustering of noise features, a dashed one a
                noise model's (the paper's Random row). Shaded: the bootstrap
                interval over the k-means runs (``clustering_seeds``) and the images.""",
                "Fig. 7",
                appendix="Fig. 24, 25",
            ),
        ),
    ),
    Analysis(
        "saliency",
        section="saliency",
        shape="model",
        table="vitlib.attention.saliency:saliency_table",
        needs=frozenset({"attention", "rollout"}),
        description="Attention-saliency IoU against object or part masks.",
        settings={"mass": "mass", "statistics": "statistics"},
        view="center",
        dataset_kinds=("coco", "partimagenet"),
        manifest=True,
        metrics=("iou",),
        heavy=True,
        figures=(
            _f(
                "saliency",
                _CURVES,
                """Attention-saliency IoU per layer (mirrors paper Figures 5 and 16): the
                60 %-mass region of the CLS query's (left) and the mean spatial query's (right)
                attention over the spatial tokens, compared with the union of the annotated
                object (COCO-format) or part (PartImageNet-format) masks at token resolution.
                Best head (``analyses.saliency.head_selection``): per_image, the best head of
                each image and layer, then the mean over images (the paper's "best head" mode);
                per_layer, the one head with the best mean IoU per layer. Computed from the
                stored attention rows of the centre view, no second forward pass. Beside them
                (beyond the paper): the same rows of the attention rollout (heads fused by
                their mean, the residual as 0.5·I, multiplied from the first block on,
                streamed in the capture pass), scored the same way.""",
                "Fig. 5",
                options={"task": "saliency"},
                settings={"head_selection": "head_selection"},
                appendix="Fig. 16",
            ),
        ),
    ),
    Analysis(
        "segments",
        section="segments",
        shape="model",
        table="vitlib.metrics.segfeat:segment_clustering_table",
        needs=frozenset({"segment_pool"}),
        description="Object / part feature clustering per layer.",
        settings={
            "k": "k",
            "seed": "seed",
            "seeds": "seeds",
            "n_init": "n_init",
            "max_iter": "max_iter",
            "tol": "tol",
            "noise": "noise",
            "statistics": "statistics",
        },
        dataset_kinds=("coco", "partimagenet"),
        manifest=True,
        heavy=True,
        figures=(
            _f(
                "segments",
                _CURVES,
                """Object-level (COCO-format) or part-level (PartImageNet-format) feature
                clustering per layer (mirrors paper Figures 8 and 25-27): each annotation's mask,
                resized to the image's token grid, pools the block output of every layer;
                k-means (FAISS, seeded) on the pooled features is scored against the annotation
                categories by purity, NMI and ARI. Dash-dotted: the same clustering of noise
                of the same shape (random-chance baseline); dashed: a noise model's (the
                paper's Random row). Shaded: the bootstrap interval over the
                k-means runs (``seeds``) and the annotations.""",
                "Fig. 8",
                options={"task": "segments"},
                appendix="Fig. 26, 27",
            ),
        ),
    ),
    Analysis(
        "dense_probe",
        **_DENSE_READS,
        table="vitlib.metrics.dense:dense_probe_table",
        description="Patch-level linear probes of object / part labels per layer (mIoU).",
        settings={
            "test_fraction": "test_fraction",
            "seed": "seed",
            "epochs": "epochs",
            "lrs": "lrs",
            "batch_size": "batch_size",
            "statistics": "statistics",
        },
        metrics=("miou", "miou_fg", "acc"),
        heavy=True,
        gpu=True,
        figures=(
            _f(
                "dense_probe",
                _CURVES,
                """Dense feature quality per layer (beyond the paper): a linear probe (non-affine
                BatchNorm, a learning-rate grid selected on held-out training tokens) of each
                token's object (COCO-format) or part (PartImageNet-format) label — the
                annotation covering most of the token, else background — from its block
                output, trained on tokens sampled from a seeded part of the images and
                scored on the others: mIoU over classes (background included), foreground
                mIoU and token accuracy; shaded: bootstrap intervals over the test images.""",
                options={"task": "dense_probe"},
            ),
        ),
    ),
    Analysis(
        "artifact_locality",
        **_DENSE_READS,
        table="vitlib.metrics.dense:artifact_locality_table",
        description="Position information kept by high-norm artifact tokens vs normal tokens.",
        settings={"norm_factor": "artifact_norm_factor", "seed": "seed", "alpha": "ridge_alpha"},
        heavy=True,  # reads every sampled token of every block (0.6 GB per B/16 model)
        figures=(
            _f(
                "artifact_locality",
                _CURVES,
                """Local information in artifact tokens per layer (beyond the paper; cf. ViTs
                need registers, §2): a ridge regression of each sampled token's grid position
                from its block output, fitted on normal tokens of part of the images, scored on
                normal tokens of the others (left) and on the high-norm artifact tokens
                (norm > ``artifact_norm_factor`` × the image's median; middle) as the mean
                position error in tokens; right, the share of artifact tokens.""",
                options={"task": "artifact_locality"},
            ),
        ),
    ),
    Analysis(
        "pca_maps",
        **_DENSE_READS,
        table="vitlib.metrics.dense:pca_maps",
        description="Per-layer PCA feature maps (arrays).",
        settings={"components": "components", "fit_tokens": "fit_tokens", "seed": "seed"},
        output="npz",
        figures=(
            _f(
                "pca_maps",
                "vitlib.plots.features:pca_maps_figure",
                """PCA feature maps per layer (beyond the paper): the first three principal
                components of every token's block output as RGB, one basis per block fitted
                on tokens sampled from all images of the dataset (so colours compare across
                images), each component scaled between its 1st and 99th percentile; rows
                are blocks, columns the fully kept images (``analyses.dense.full_images``).""",
                per_model=True,
            ),
        ),
    ),
    Analysis(
        "retrieval",
        section="retrieval",
        shape="model",
        table="vitlib.downstream.tables:retrieval_table",
        needs=frozenset({"features"}),
        description="Revisited Oxford/Paris mAP (Medium, Hard) per layer.",
        settings={"statistics": "statistics"},
        view="retrieval",
        dataset_kinds=("revisited",),
        manifest=True,
        metrics=("map",),
        heavy=True,
        summary=(
            Headline("map", "mAP Medium", {"protocol": "medium"}, main=True),
            Headline("map", "mAP Hard", {"protocol": "hard"}),
        ),
        figures=(
            _f(
                "retrieval",
                _CURVES,
                """Image retrieval on revisited Oxford/Paris-format data per layer (mirrors paper
                Figures 9-10 and 28-31): L2-normalised CLS tokens of each block, database ranked
                by cosine similarity (FAISS), mean average precision under the revisited
                protocol's Medium (easy + hard positives) and Hard (hard positives, easy
                ignored) setups. Bands: bootstrap intervals over the queries.""",
                "Fig. 9, 10",
                options={"task": "retrieval"},
                appendix="Fig. 29",
            ),
        ),
    ),
    Analysis(
        "davis",
        section="davis",
        shape="model",
        table=_DAVIS,
        needs=frozenset({"davis_propagation"}),
        need_settings=tuple(_DAVIS_SETTINGS),
        description="DAVIS-2017 label propagation J&F per layer.",
        settings=_DAVIS_TABLE_SETTINGS,
        dataset_kinds=("davis",),
        manifest=True,
        metrics=("J", "F", "JF"),
        heavy=True,
        summary=(
            Headline("J", "J Mean"),
            Headline("F", "F Mean"),
            Headline("JF", "J&F", main=True),
        ),
        figures=(
            _f(
                "davis",
                _CURVES,
                """DAVIS-2017-format video object segmentation by label propagation per layer
                (mirrors paper Figures 9-10 and 28-31): the first frame's mask is propagated
                through each block's token features (7 previous frames, neighbourhood radius 12,
                top-5, temperature 0.1); J (region IoU), F (boundary F-measure) and their mean
                J&F over objects, first and last frames excluded.""",
                "Fig. 9, 10",
                options={"task": "davis"},
                appendix="Fig. 30",
            ),
        ),
    ),
    Analysis(
        "davis_normal",
        section="davis",
        shape="model",
        table=_DAVIS,
        needs=frozenset({"davis_propagation"}),
        need_settings=tuple(_DAVIS_SETTINGS),
        description="DAVIS-2017 J&F per layer on frames squashed to the input size (Table 4).",
        settings=_DAVIS_TABLE_SETTINGS,
        view="squash",
        enabled_by="normal",
        dataset_kinds=("davis",),
        manifest=True,
        metrics=("J", "F", "JF"),
        heavy=True,
        summary=(Headline("JF", "J&F", table=4),),
        paper="Table 4",
        figures=(
            _f(
                "davis_views",
                f"{_PC}:davis_views_figure",
                """DAVIS label propagation J&F per layer with dense extraction (solid: frames at
                twice the input resolution, tiled) and without ('Normal', dotted: frames
                squashed to the input size), the per-layer curves behind the paper's Table 4,
                which found dense extraction better for every model.""",
                "Table 4",
                extra=("davis",),
            ),
        ),
    ),
    Analysis(
        "spair",
        section="spair",
        shape="model",
        table="vitlib.downstream.tables:spair_table",
        needs=frozenset({"spair_transfer"}),
        need_settings=("rounding",),
        description="SPair-71k keypoint transfer PCK per layer.",
        settings={
            "alphas": "alphas",
            "reference": "reference",
            "rounding": "rounding",
            "statistics": "statistics",
        },
        view="spair",
        dataset_kinds=("spair",),
        manifest=True,
        metrics=("pck",),
        heavy=True,
        summary=(
            Headline("pck", "PCK@0.1", {"alpha": 0.1, "category": "all"}, main=True),
            Headline("pck", "PCK@0.05", {"alpha": 0.05, "category": "all"}),
            Headline("pck", "PCK@0.01", {"alpha": 0.01, "category": "all"}),
        ),
        figures=(
            _f(
                "spair",
                _CURVES,
                """SPair-71k-format keypoint transfer per layer (mirrors paper Figures 9-10 and
                28-31): every source keypoint's upsampled, L2-normalised token feature is
                matched to the most similar target pixel; PCK at 0.1, 0.05 and 0.01 of the
                target bounding box's longer side, averaged over categories.""",
                "Fig. 9, 10",
                options={"task": "spair"},
                appendix="Fig. 31",
            ),
        ),
    ),
    Analysis(
        "knn",
        section="knn",
        shape="train_test",
        table="vitlib.downstream.knn_bank:knn_bank_table",
        needs=frozenset({"features"}),
        description="Weighted k-NN accuracy per layer (DINO protocol).",
        settings={"ks": "ks", "temperature": "temperature", "statistics": "statistics"},
        feature_setting="feature",
        train="knn_bank",
        metrics=("top1", "top5", "chance"),
        heavy=True,
        summary=(
            Headline("top1", "k-NN top-1 (k=20)", {"k": 20}, main=True),
            Headline("top5", "k-NN top-5 (k=20)", {"k": 20}),
        ),
        figures=(
            _f(
                "knn",
                f"{_PD}:knn_figure",
                """Weighted k-NN classification accuracy at every layer (DINO protocol: cosine
                similarity of the block's CLS token, k = 20, temperature 0.07), top-1 and top-5,
                as in the paper's Figures 9 and 28. Every layer comes from the one stored
                extraction of each model. Bands: percentile bootstrap intervals over the test
                images (``statistics``; docs/protocols.md §D7).""",
                "Fig. 9, 28",
                appendix="Fig. 28",
            ),
        ),
    ),
    Analysis(
        "probe",
        section="probe",
        shape="train_test",
        table="vitlib.downstream.tables:probe_table",
        needs=frozenset({"features"}),
        layers_setting="layers",
        description="Linear probes per layer on stored features (Table 6).",
        settings={
            "layers": "layers",
            "epochs": "epochs",
            "lr": "lr",
            "lr_factor": "lr_factor",
            "batch_size": "batch_size",
            "weight_decay": "weight_decay",
            "seed": "seed",
            "features": "features",
            "lrs": "lrs",
            "weight_decays": "weight_decays",
            "val_fraction": "val_fraction",
            "logreg": "logreg",
            "seeds": "seeds",
            "statistics": "statistics",
        },
        metrics=("top1", "top5", "chance"),
        heavy=True,
        gpu=True,
        paper="Table 6",
        figures=(
            _f(
                "probe",
                f"{_PD}:probe_figure",
                """Linear-probe top-1 accuracy at every layer (the paper's Table 6 extended to all
                layers): a linear classifier trained on stored CLS or mean-pooled spatial
                features (or both concatenated), with and without the MAE protocol's
                non-affine BatchNorm; with ``lrs``/``weight_decays`` grids, the head selected
                on a validation part of the training set; the dashed line is chance. Shaded:
                the bootstrap interval over the training seeds (``seeds``) and the test
                images.""",
                "Table 6",
            ),
        ),
    ),
)

ANALYSES: Mapping[str, Analysis] = MappingProxyType({a.name: a for a in ANALYSES_LIST})

#: The paper's section of each config section's analyses (the report's figure index).
PAPER_SECTIONS: Mapping[str, str] = MappingProxyType(
    {
        "attention_distance": "§4 Attention analysis",
        "attention": "§4 Attention analysis",
        "saliency": "§4 Attention analysis",
        "features": "§5 Feature analysis",
        "similarity": "§5 Feature analysis",
        "segments": "§5 Feature analysis",
        "dense": "§5 Feature analysis",
        "knn": "§6 Downstream tasks",
        "retrieval": "§6 Downstream tasks",
        "davis": "§6 Downstream tasks",
        "spair": "§6 Downstream tasks",
        "probe": "§6 Downstream tasks",
    }
)


def get(name: str) -> Analysis:
    try:
        return ANALYSES[name]
    except KeyError:
        raise KeyError(f"unknown analysis {name!r}; registered: {', '.join(ANALYSES)}") from None


def in_section(section: str) -> list[Analysis]:
    return [a for a in ANALYSES_LIST if a.section == section]


def sections() -> list[str]:
    return list(dict.fromkeys(a.section for a in ANALYSES_LIST))


def figures() -> dict[str, tuple[Analysis, Figure]]:
    """Every figure by name, with its analysis."""
    return {f.name: (a, f) for a in ANALYSES_LIST for f in a.figures}


def section_datasets(section: Mapping[str, Any]) -> list[str]:
    """The datasets a section's analyses produce tables for (``pairs``: the test sets)."""
    if "pairs" in section:
        return [p["test"] for p in section["pairs"]]
    return list(section.get("datasets", []))


def layer_spec(layers: str | Sequence[int]) -> str:
    """A blocks setting as a need qualifier: ``"paper"``, ``"all"`` or 1-based ``"1,4,12"``."""
    return layers if isinstance(layers, str) else ",".join(str(int(b)) for b in layers)


def resolve_layers(layers: str | Sequence[int], depth: int, family: str) -> list[int]:
    """0-based blocks of a blocks setting: ``"paper"`` — the last block, block 8 for BEiT
    (the paper's Table 6, Appendix E.4) —, ``"all"``, or 1-based blocks (list or ``"1,4"``).

    >>> resolve_layers("paper", 12, "fs"), resolve_layers("paper", 12, "beit")
    ([11], [7])
    >>> resolve_layers("2,12", 12, "fs")
    [1, 11]
    """
    if layers == "all":
        return list(range(depth))
    if layers == "paper":
        return [min(8, depth) - 1] if family == "beit" else [depth - 1]
    if isinstance(layers, str):
        try:
            layers = [int(b) for b in layers.split(",")]
        except ValueError:
            raise ValueError(
                f"blocks must be 'paper', 'all' or 1-based blocks, got {layers!r}"
            ) from None
    bad = [b for b in layers if not 1 <= b <= depth]
    if bad:
        raise ValueError(f"blocks {bad} outside 1..{depth}")
    return sorted({int(b) - 1 for b in layers})


def parse_need(need: str) -> tuple[str, str | None, str | None]:
    """``"features:cls@paper"`` → ``("features", "cls", "paper")`` (kind / blocks: None = all).

    >>> parse_need("features"), parse_need("features@1,12")
    (('features', None, None), ('features', None, '1,12'))
    """
    base, _, layers = need.partition("@")
    base, _, kind = base.partition(":")
    return base, kind or None, layers or None


def feature_layout(needs: Sequence[str], depth: int, family: str) -> dict[str, list[int]]:
    """The per-image features a store holds for ``needs``: feature kind → 0-based blocks
    (the union over every ``features[:kind][@blocks]`` need; no features need: ``{}``).

    >>> feature_layout(["attention", "features:cls", "features@paper"], 12, "beit")
    {'cls': [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 'spatial_mean': [7]}
    """
    from vitlib.keys import FEATURE_KINDS

    out: dict[str, set[int]] = {}
    for need in needs:
        base, kind, layers = parse_need(need)
        if base != "features":
            continue
        blocks = resolve_layers(layers or "all", depth, family)
        for k in (kind,) if kind else FEATURE_KINDS:
            if k not in FEATURE_KINDS:
                raise ValueError(f"need {need!r}: unknown feature kind {k!r}")
            out.setdefault(k, set()).update(blocks)
    return {k: sorted(out[k]) for k in FEATURE_KINDS if k in out}


def covers(held: Sequence[str], wanted: Sequence[str], depth: int, family: str) -> bool:
    """Whether a store extracted for ``held`` holds everything ``wanted`` reads."""
    plain = {n for n in held if parse_need(n)[0] != "features"}
    if not {n for n in wanted if parse_need(n)[0] != "features"} <= plain:
        return False
    have, want = feature_layout(held, depth, family), feature_layout(wanted, depth, family)
    return all(set(blocks) <= set(have.get(k, ())) for k, blocks in want.items())


def _qualified(a: Analysis, sec: Mapping[str, Any]) -> set[str]:
    """``a.needs`` with its features need narrowed to the kind and blocks it reads."""
    out = set()
    for need in a.needs:
        if need == "features":
            if a.feature_setting:
                need += f":{sec[a.feature_setting]}"
            if a.layers_setting:
                need += f"@{layer_spec(sec[a.layers_setting])}"
        elif a.need_settings:
            need += "@" + ",".join(f"{k}={sec[k]}" for k in a.need_settings)
        out.add(need)
    return out


def needs_for(config: Mapping[str, Any], dataset: str, view: str) -> list[str]:
    """The capture needs of every configured analysis that reads (dataset, view), features
    narrowed to the kinds and blocks they read (``features[:kind][@blocks]``)."""
    out: set[str] = set()
    for a in ANALYSES_LIST:
        sec = config["analyses"].get(a.section, {})
        read = set(section_datasets(sec))
        if a.shape == "train_test" and a.train == "store":
            read |= {p["train"] for p in sec.get("pairs", [])}
        if dataset in read and a.enabled(sec) and a.store_view(sec) == view:
            out |= _qualified(a, sec)
    if "features" in out:  # every kind, every block
        out = {n for n in out if parse_need(n)[0] != "features"} | {"features"}
    return sorted(out)


def run_table(
    name: str,
    stores: Sequence[Any],
    *,
    settings: Mapping[str, Any],
    manifest: Any = None,
    **runtime: Any,
) -> Any:
    """Compute analysis ``name`` and return its long table (or, for ``npz`` analyses, its
    arrays).  ``stores``: one store (``model``), two (``pair``; ``train_test``: train, test)
    or all models' (``models``); ``settings``: the config section; ``runtime``: extra
    keyword arguments (e.g. ``device``)."""
    from vitlib.store import Store
    from vitlib.tables import tidy

    a = get(name)
    kw = {**a.kwargs(settings), **runtime}
    opened: list[Any] = [Store.open(s) for s in stores[1 if a.train == "knn_bank" else 0 :]]
    if a.train == "knn_bank":  # the bank file of the k-NN memory bank, then the test store
        opened.insert(0, stores[0])
    args: list[Any]
    if a.shape == "models":
        args = [opened]
    else:
        args = list(opened)
    if a.manifest:
        args.append(manifest)
    out = a.function()(*args, **kw)
    if a.output == "npz":
        return out
    ident = opened[-1].identity() if a.shape in ("model", "train_test") else {}
    if a.shape == "models":
        ident = {"dataset": opened[0].dataset, "view": opened[0].view}
    return tidy(out, analysis=name, metrics=a.metrics, settings=a.kwargs(settings), identity=ident)


def write_table(
    name: str,
    markers: Sequence[str],
    out: str,
    *,
    settings: Mapping[str, Any],
    manifest: str | None = None,
    device: str = "cpu",
) -> None:
    """Compute analysis ``name`` from the stores behind completion ``markers`` (and, first,
    a k-NN bank file for ``train="knn_bank"`` analyses) and write its table (CSV) or arrays
    (NPZ) to ``out`` (what the workflow's table rules run)."""
    import numpy as np

    from vitlib.data.manifest import Manifest
    from vitlib.store import store_from_marker

    a = get(name)
    runtime: dict[str, Any] = {}
    if a.gpu:
        from vitlib.extract import resolve_device

        runtime["device"] = str(resolve_device(device))
    res = run_table(
        name,
        [store_from_marker(m) if str(m).endswith(".complete.json") else m for m in markers],
        settings=settings,
        manifest=Manifest.load(manifest) if a.manifest and manifest else None,
        **runtime,
    )
    if a.output == "npz":
        np.savez(out, **res)
    else:
        res.to_csv(out, index=False)


def draw_figure(
    name: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    dpi: int,
    models: Sequence[str],
    model: str | None = None,
    layout: str = "main",
    settings: Mapping[str, Any] | None = None,
) -> None:
    """Draw figure ``name`` from its analysis' tables (or, per model, its arrays): the
    rows of ``models`` only, in the ``main`` or (figures with :attr:`Figure.appendix`)
    the ``appendix`` layout; ``settings``: the analysis' config section (the figure's own
    :attr:`Figure.settings` are read from it)."""
    import numpy as np

    from vitlib.tables import read_tables

    a, f = figures()[name]
    if layout != "main" and not f.appendix:
        raise ValueError(f"figure {name!r} has no {layout!r} layout")

    def arrays(path: str) -> dict[str, Any]:
        with np.load(path, allow_pickle=False) as z:
            return {"model": Path(path).stem, **{k: z[k] for k in z.files}}

    data: Any
    if f.extra or (a.output == "npz" and not f.per_model):
        # several analyses or every model's arrays: {analysis: data}, by the tables' folder
        # (results/tables/<dataset>/<analysis>/<model>.<ext>)
        rank = {m: i for i, m in enumerate(models)}
        data = {}
        for other in (a.name, *f.extra):
            paths = [p for p in inputs if Path(p).parent.name == other]
            if get(other).output == "npz":
                mine = sorted(
                    (p for p in paths if Path(p).stem in rank), key=lambda p: rank[Path(p).stem]
                )
                data[other] = [arrays(p) for p in mine]
            else:
                t = read_tables(paths)
                data[other] = t[t["model"].isin(list(models))] if "model" in t else t
    elif a.output == "npz":
        data = arrays(inputs[0])
    else:
        data = read_tables(inputs)
        if "model" in data and not f.per_model:
            data = data[data["model"].isin(list(models))]
    kw = dict(f.options)
    if f.settings:
        kw.update(f.kwargs(settings or {}))
    if f.appendix:
        kw["layout"] = layout
    if f.per_model:
        kw["model"] = model or ""
    f.function()(data, outputs, dpi=dpi, models=list(models), **kw)
