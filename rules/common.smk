# Config validation, wildcard constraints and input functions (all the Python of the workflow).
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from vitlib.config import ConfigError, model_spec, validate_config
from vitlib.data.manifest import listing_fingerprint
from vitlib.data.readers import generated_root
from vitlib.data.views import VIEWS
from vitlib.models.weights import cached_weights_path

try:
    validate_config(config, base_dir=workflow.basedir)
except ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None

RESULTS = config["results"]
MODELS = config["models"]
DATASETS = config["datasets"]
FIG_FORMATS = config["figures"]["formats"]
#: Per-dataset tasks with one table per (dataset, model) and one figure per dataset.
TASKS = ("saliency", "segments", "retrieval", "davis", "spair")


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    mx="|".join(map(re.escape, MODELS)),
    my="|".join(map(re.escape, MODELS)),
    dataset="|".join(map(re.escape, DATASETS)),
    task="|".join(TASKS),
    view="|".join(VIEWS),


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


def weights_input(model):
    """The checkpoint an extraction reads: a local file, a cached download, or none."""
    w = model_spec(config, model).weights or {}
    if w.get("path"):
        return [w["path"]]
    if w.get("url"):
        return [str(cached_weights_path(config["weights_cache"], model, w["url"]))]
    return []


def analysis(name):
    return config["analyses"].get(name, {})


def all_targets():
    targets = []
    ad = analysis("attention_distance")
    for ds in ad.get("datasets", []):
        targets += expand(
            results("figures", ds, "attention_distance.{ext}"), ext=FIG_FORMATS
        )
    at = analysis("attention")
    for ds in at.get("datasets", []):
        targets += expand(
            results("figures", ds, "{fig}.{ext}"),
            ext=FIG_FORMATS,
            fig=["attention_offset", "head_taxonomy", "artifact_tokens"],
        )
        targets += expand(
            results("figures", ds, "attention_maps", "{model}_{kind}.{ext}"),
            model=MODELS,
            kind=["cls", "spatial", "aligned"],
            ext=FIG_FORMATS,
        )
        if at["images"]:
            targets += expand(
                results("figures", ds, "attention_images", "{model}.{ext}"),
                model=MODELS,
                ext=FIG_FORMATS,
            )
    ft = analysis("features")
    for ds in ft.get("datasets", []):
        targets += expand(
            results("figures", ds, "{fig}.{ext}"),
            ext=FIG_FORMATS,
            fig=["cka_grids", "cka_last_layer", "residual", "clustering"],
        )
    kn = analysis("knn")
    for pair in kn.get("pairs", []):
        targets += expand(
            results("figures", pair["test"], "knn.{ext}"), ext=FIG_FORMATS
        )
    for task in TASKS:
        for ds in analysis(task).get("datasets", []):
            targets += expand(
                results("figures", ds, f"{task}.{{ext}}"), ext=FIG_FORMATS
            )
    if downstream_tables():
        targets.append(results("tables", "summary", "best_layers.csv"))
        targets += expand(
            results("figures", "summary", "best_layers.{ext}"), ext=FIG_FORMATS
        )
    for pair in analysis("probe").get("pairs", []):
        targets += expand(
            results("figures", pair["test"], "probe.{ext}"), ext=FIG_FORMATS
        )
        targets.append(results("tables", pair["test"], "probe_table6.csv"))
    return targets


def train_of(name, test):
    """The training dataset paired with ``test`` in analyses.<name>.pairs."""
    for pair in analysis(name).get("pairs", []):
        if pair["test"] == test:
            return pair["train"]
    raise ValueError(f"no analyses.{name}.pairs entry has test dataset {test!r}")


def model_pairs():
    """Unordered model pairs in config order, self-pairs included (within-model grids)."""
    return [(a, b) for i, a in enumerate(MODELS) for b in MODELS[i:]]


def task_view(task):
    a = analysis(task)
    return {"saliency": "center", "retrieval": "retrieval", "spair": "spair"}.get(
        task
    ) or a["view"]


def task_settings(task):
    return {k: v for k, v in analysis(task).items() if k not in ("datasets", "view")}


def downstream_tables():
    """Every per-layer downstream table of the config (inputs of the summary)."""
    out = []
    for pair in analysis("knn").get("pairs", []):
        out += [results("tables", pair["test"], "knn", f"{m}.csv") for m in MODELS]
    for task in ("retrieval", "davis", "spair"):
        for ds in analysis(task).get("datasets", []):
            out += [results("tables", ds, task, f"{m}.csv") for m in MODELS]
    return out
