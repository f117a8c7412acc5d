# Config validation, wildcard constraints and input functions: all the Python of the
# workflow. Targets, views and captions come from the registry of analyses
# (vitlib/registry.py); nothing here lists analyses by name.
import json
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.io import report as report_flag

from vitlib import registry
from vitlib.config import (
    ConfigError,
    extract_dtype,
    main_models,
    model_spec,
    series_models,
    validate_config,
)
from vitlib.data.manifest import listing_fingerprint
from vitlib.data.readers import generated_root
from vitlib.data.views import VIEWS
from vitlib.models.weights import cached_weights_path

try:
    # relative paths are checked where jobs read them: the working directory
    validate_config(config, base_dir=os.getcwd())
except ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None

RESULTS = config["results"]
MODELS = config["models"]
#: checkpoint series → [[epoch, model], ...] (config checkpoints:; vitlib.config)
SERIES = {k: [list(p) for p in v] for k, v in series_models(config).items()}
#: The models of the main-text layout (Table 1, main figures; vitlib.config.main_models).
MAIN_MODELS = main_models(config)
DATASETS = config["datasets"]
FIG_FORMATS = config["figures"]["formats"]
FIGURES = registry.figures()
#: Figures by rule: one per model; one layout (main); main and appendix layouts in one job.
PER_MODEL_FIGURES = [n for n, (_, f) in FIGURES.items() if f.per_model]
MAIN_ONLY_FIGURES = [
    n for n, (_, f) in FIGURES.items() if not (f.per_model or f.appendix)
]
APPENDIX_FIGURES = [
    n for n, (_, f) in FIGURES.items() if f.appendix and not f.per_model
]
#: Analyses that run on the extraction device (their own table rule, with a GPU each).
GPU_ANALYSES = [a.name for a in registry.ANALYSES_LIST if a.gpu]
#: Per-model CPU analyses with a job per model, and those with one job per dataset writing
#: every model's table (vitlib.registry.Analysis.per_dataset_job).
CPU_ANALYSES = [
    a.name for a in registry.ANALYSES_LIST if not (a.gpu or a.per_dataset_job)
]
DATASET_ANALYSES = [a.name for a in registry.ANALYSES_LIST if a.per_dataset_job]


def _alternatives(names):
    return "|".join(map(re.escape, names)) or "^$"


wildcard_constraints:
    model=_alternatives(MODELS),
    dataset=_alternatives(DATASETS),
    view=_alternatives(VIEWS),
    analysis=_alternatives(registry.ANALYSES),
    figure=_alternatives(FIGURES),


def results(*parts):
    return str(Path(RESULTS, *parts))


def world_dir(dataset):
    return results("data", dataset, "world")


def dataset_root(dataset):
    ds = DATASETS[dataset]
    if "generate" in ds:
        return generated_root(world_dir(dataset), ds["kind"], ds["generate"])
    return ds["root"]


def manifest_path(dataset):
    return results("manifests", f"{dataset}.json")


def store_marker(model, dataset, view):
    """The extraction's output: the completion marker beside the Zarr store."""
    return results("features", model, dataset, f"{view}.complete.json")


def spec_params(model):
    from dataclasses import asdict

    return {k: v for k, v in asdict(model_spec(config, model)).items() if k != "paper"}


def weights_input(wildcards):
    """The checkpoint an extraction reads: a local file, a cached download, or none."""
    w = model_spec(config, wildcards.model).weights or {}
    if w.get("path"):
        return [w["path"]]
    if w.get("url"):
        return [
            str(cached_weights_path(config["weights_cache"], wildcards.model, w["url"]))
        ]
    return []


def weights_url(wildcards):
    return (model_spec(config, wildcards.model).weights or {}).get("url")


def weights_sha256(wildcards):
    return (model_spec(config, wildcards.model).weights or {}).get("sha256")


def section(analysis):
    """The config section (``analyses.<section>``) of a registered analysis."""
    return config["analyses"].get(registry.get(analysis).section, {})


def store_view(analysis):
    return registry.get(analysis).store_view(section(analysis))


def extract_needs(wildcards):
    """What the analyses reading this (dataset, view) need from its store; a finished store
    that holds more (an analysis was removed) keeps its needs, so it is not re-extracted.
    """
    wanted = registry.needs_for(config, wildcards.dataset, wildcards.view)
    marker = Path(store_marker(wildcards.model, wildcards.dataset, wildcards.view))
    try:
        held = json.loads(marker.read_text())["needs"]
    except (OSError, ValueError, KeyError, TypeError):
        return wanted
    spec = model_spec(config, wildcards.model)
    if held != wanted and registry.covers(held, wanted, spec.depth, spec.family):
        return held
    return wanted


def train_of(analysis, test):
    """The training dataset paired with ``test`` in the analysis section's pairs."""
    for pair in section(analysis).get("pairs", []):
        if pair["test"] == test:
            return pair["train"]
    raise WorkflowError(
        f"no analyses.{registry.get(analysis).section}.pairs entry has test dataset {test!r}"
    )


def table_path(analysis, dataset, model=None):
    a = registry.get(analysis)
    if a.shape == "models":
        return results("tables", dataset, f"{analysis}.csv")
    return results("tables", dataset, analysis, f"{model}.{a.output}")


def tables_of(analysis, dataset):
    """Every table of ``analysis`` on ``dataset`` (one per model, or one for all)."""
    a = registry.get(analysis)
    if a.shape == "models":
        return [table_path(analysis, dataset)]
    return [table_path(analysis, dataset, m) for m in MODELS]


def table_stores(wildcards):
    """The store(s) a per-model table reads (train first for train/test analyses)."""
    a = registry.get(wildcards.analysis)
    view = store_view(wildcards.analysis)
    stores = [store_marker(wildcards.model, wildcards.dataset, view)]
    if a.shape == "train_test" and a.train == "knn_bank":
        stores.insert(0, knn_bank_path(wildcards.model, wildcards.dataset))
    elif a.shape == "train_test":
        train = train_of(wildcards.analysis, wildcards.dataset)
        stores.insert(0, store_marker(wildcards.model, train, view))
    return stores


def knn_bank_path(model, test):
    """The kept neighbours of the k-NN memory bank (train set streamed, never stored)."""
    return results("knn_banks", test, f"{model}.npz")


def knn_bank_query(wildcards):
    return store_marker(wildcards.model, wildcards.dataset, store_view("knn"))


def knn_bank_train_manifest(wildcards):
    return manifest_path(train_of("knn", wildcards.dataset))


def all_model_stores(wildcards):
    view = store_view(wildcards.analysis)
    return [store_marker(m, wildcards.dataset, view) for m in MODELS]


def table_settings(wildcards):
    """The section keys the analysis' table reads (registry Analysis.settings); only these,
    so that another analysis' or a figure's setting of the same section reruns nothing.
    """
    a = registry.get(wildcards.analysis)
    sec = {
        **section(wildcards.analysis),
        **{k: config[k] for k in registry.GLOBAL_SETTINGS},
    }
    return {key: sec[key] for key in a.settings.values()}


def table_threads(wildcards):
    return config["analysis_threads"] if registry.get(wildcards.analysis).heavy else 1


def gpu_units():
    """One unit of the ``gpu`` resource for a GPU job when the device is CUDA."""
    return int(config["extract"]["device"].startswith("cuda"))


def figure_inputs(wildcards):
    analysis, fig = FIGURES[wildcards.figure]
    out = tables_of(analysis.name, wildcards.dataset)
    for other in fig.extra:
        out += tables_of(other, wildcards.dataset)
    return out


def figure_model_input(wildcards):
    analysis, _ = FIGURES[wildcards.figure]
    return table_path(analysis.name, wildcards.dataset, wildcards.model)


def figure_settings(wildcards):
    """The keys of its analysis' section a figure reads (registry Figure.settings); only
    these, so that other settings of the section do not redraw it."""
    analysis, fig = FIGURES[wildcards.figure]
    sec = section(analysis.name)
    return {key: sec[key] for key in fig.settings.values()}


def figure_caption(wildcards):
    analysis, fig = FIGURES[wildcards.figure]
    return fig.caption


def enabled(analysis, dataset):
    a = registry.get(analysis)
    sec = section(analysis)
    return a.enabled(sec) and dataset in registry.section_datasets(sec)


def figure_enabled(a, fig, ds):
    """The figure's analysis and extras run on ``ds`` and its own switch is on."""
    return fig.enabled(section(a.name)) and all(
        enabled(x, ds) for x in (a.name, *fig.extra)
    )


def figure_targets():
    out = []
    for name, (a, fig) in FIGURES.items():
        for ds in registry.section_datasets(section(a.name)):
            if not figure_enabled(a, fig, ds):
                continue
            if fig.per_model:
                out += expand(
                    results("figures", ds, name, "{model}.{ext}"),
                    model=MODELS,
                    ext=FIG_FORMATS,
                )
            else:
                out += expand(
                    results("figures", ds, f"{name}.{{ext}}"), ext=FIG_FORMATS
                )
            if fig.appendix:
                out += expand(
                    results("figures", ds, "appendix", f"{name}.{{ext}}"),
                    ext=FIG_FORMATS,
                )
    return out


def summary_tables():
    """Every table whose analysis declares best-layer metrics (inputs of the summary)."""
    out = []
    for a in registry.ANALYSES_LIST:
        if a.summary:
            for ds in registry.section_datasets(section(a.name)):
                if enabled(a.name, ds):
                    out += tables_of(a.name, ds)
    return out


def explorer_grid_tables():
    """The explorer's grids: the similarity suite's tables, else the CKA grids."""
    out = []
    for name in ("similarity", "cka"):
        for ds in registry.section_datasets(section(name)):
            if enabled(name, ds):
                out += tables_of(name, ds)
        if out:
            return out
    return out


def _explorer_map_pairs():
    return [
        (ds, m)
        for ds in registry.section_datasets(section("attention_maps"))
        if enabled("attention_maps", ds)
        for m in MODELS
    ]


def explorer_maps():
    """The attention-maps arrays the explorer shows, one per (dataset, model)."""
    return [table_path("attention_maps", ds, m) for ds, m in _explorer_map_pairs()]


def explorer_map_keys():
    return [list(p) for p in _explorer_map_pairs()]


def family_test_settings():
    """The family tests' keyword arguments from the ``statistics`` block."""
    st = config["statistics"]
    return {
        "bins": st["depth_bins"],
        "permutations": st["permutations"],
        "seed": st["seed"],
        "alpha": st["alpha"],
    }


def findings_tables():
    """Every table the findings table reads (the analyses named in vitlib/findings.py)."""
    from vitlib.findings import ANALYSES as FINDINGS_ANALYSES

    out = []
    for name in FINDINGS_ANALYSES:
        for ds in registry.section_datasets(section(name)):
            if enabled(name, ds):
                out += tables_of(name, ds)
    return out


def is_minizoo(mcfg):
    """A model the workflow trains, or one of the mini-zoo's shipped checkpoints."""
    path = (mcfg.get("weights") or {}).get("path", "")
    return "train" in mcfg or Path(path).parent.as_posix().endswith(
        "vitlib/minizoo/weights"
    )


def run_description():
    """What this run is (models by family, datasets), the first paragraph of the report."""
    from vitlib.findings import describe_run

    custom = config.get("custom_models", {})
    return describe_run(
        {m: model_spec(config, m).family for m in MODELS},
        DATASETS,
        trained=[m for m in MODELS if is_minizoo(custom.get(m, {}))],
    )


def effective_config(wildcards):
    """The whole configuration after defaults: a change of any value rewrites the record."""
    return config


def all_targets():
    targets = [
        results("config.effective.yaml"),
        results("report_page.rst"),
        *figure_targets(),
    ]
    if findings_tables():
        targets.append(results("tables", "summary", "findings.csv"))
    if summary_tables():
        targets.append(results("tables", "summary", "best_layers.csv"))
        targets += expand(
            results("figures", "summary", "best_layers.{ext}"), ext=FIG_FORMATS
        )
        targets.append(results("tables", "summary", "family_tests.csv"))
        if SERIES:
            targets.append(results("tables", "summary", "checkpoint_series.csv"))
        targets += expand(
            results("figures", "summary", "family_tests.{ext}"), ext=FIG_FORMATS
        )
    if summary_tables() or explorer_grid_tables() or explorer_maps():
        targets.append(results("explorer.html"))
    for ds in registry.section_datasets(section("probe")):
        targets.append(results("tables", ds, "probe_table6.csv"))
    return targets


def probe_tables(wildcards):
    return tables_of("probe", wildcards.dataset)


def dataset_cfg(wildcards):
    return DATASETS[wildcards.dataset]


def generated_inputs(wildcards):
    """A generated dataset's world directory (external datasets have no input)."""
    if "generate" in DATASETS[wildcards.dataset]:
        return [world_dir(wildcards.dataset)]
    return []


def dataset_root_param(wildcards):
    return dataset_root(wildcards.dataset)


def dataset_listing(wildcards):
    """The file list of an external folder: a change reruns the manifest and what depends
    on it, nothing else."""
    ds = DATASETS[wildcards.dataset]
    return "generated" if "generate" in ds else listing_fingerprint(ds["root"])


def model_cfg(wildcards):
    return config["custom_models"][wildcards.model]


def train_manifest(wildcards):
    return manifest_path(model_cfg(wildcards)["train"]["dataset"])


def extract_spec(wildcards):
    return spec_params(wildcards.model)


def report_models():
    """One row per model for the report's run card."""
    rows = []
    for m in MODELS:
        s = model_spec(config, m)
        w = dict(s.weights or {})
        if s.family == "noise":
            source = f"uniform noise (seed {s.init_seed or 0})"
        elif not w and s.init_seed is not None:
            source = f"random initialisation (seed {s.init_seed})"
        else:
            where = w.get("path") or w.get("url") or ""
            sha = w.get("sha256")
            source = Path(str(where)).name + (f" (sha256 {sha[:12]}…)" if sha else "")
        rows.append(
            {
                "model": m,
                "family": s.family,
                "depth": s.depth,
                "width": s.embed_dim,
                "heads": s.num_heads,
                "patch": s.patch_size,
                "image": s.img_size,
                "weights": source,
            }
        )
    return rows


def report_settings():
    """The run's settings for the report's run card: extraction, layouts, every section."""
    out = {
        "extract": {
            k: config["extract"][k]
            for k in ("dtype", "family_dtype", "batch_size", "device")
        },
        "figures.main_models": MAIN_MODELS,
    }
    for name, sec in config.get("analyses", {}).items():
        out[f"analyses.{name}"] = {k: v for k, v in sec.items()}
    return out


def report_figures():
    """Every figure of the run (PNG path relative to the results, paper figure, caption,
    paper section) for the report's figure index."""
    out = []
    for name, (a, fig) in FIGURES.items():
        for ds in registry.section_datasets(section(a.name)):
            if not figure_enabled(a, fig, ds):
                continue
            paths = [
                f"figures/{ds}/{name}"
                + (f"{os.sep}<model>.png" if fig.per_model else ".png")
            ]
            if fig.appendix:
                paths.append(f"figures/{ds}/appendix/{name}.png")
            for p in paths:
                appendix = "/appendix/" in p
                out.append(
                    {
                        "section": registry.PAPER_SECTIONS.get(a.section, "Other"),
                        "paper": fig.appendix if appendix else fig.paper,
                        "path": p,
                        "caption": fig.caption,
                    }
                )
    return out


def report_page_parts():
    parts = []
    if findings_tables():
        parts.append(results("tables", "summary", "findings.rst"))
    if summary_tables():
        parts.append(results("tables", "summary", "paper_tables.rst"))
    return parts


def report_table6():
    return [
        results("tables", ds, "probe_table6.csv")
        for ds in registry.section_datasets(section("probe"))
    ]


def figure_files(*parts, **report_kw):
    """A figure's outputs, one per format (``figures.formats``): the PNG (or the first
    format) enters the report with ``report_kw``, the others are written beside it."""
    shown = "png" if "png" in FIG_FORMATS else FIG_FORMATS[0]
    base = results(*parts)
    return [
        report_flag(f"{base}.{e}", **report_kw) if e == shown else f"{base}.{e}"
        for e in FIG_FORMATS
    ]
