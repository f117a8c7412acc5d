"""Configuration validation: JSON Schema (Draft 2020-12) with defaults, then semantic checks.

:func:`validate_config` is called by the Snakefile when it loads, so a bad config stops the
run before any job starts, with a message that names the offending key and value.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from vitlib.models.registry import get_spec, list_models, spec_from_config
from vitlib.registry import in_section


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the value at fault."""


def load_schema() -> dict[str, Any]:
    text = resources.files("vitlib").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _with_defaults(cls):  # noqa: ANN001, ANN202
    """A validator class that fills ``default`` values while validating (jsonschema FAQ)."""
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # noqa: ANN001, ANN202
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


def _strict_integers(cls):  # noqa: ANN001, ANN202
    """JSON Schema counts 8.0 as an integer; a count given as a float is a typo here."""
    checker = cls.TYPE_CHECKER.redefine(
        "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool)
    )
    return validators.extend(cls, type_checker=checker)


_Validator = _with_defaults(_strict_integers(Draft202012Validator))


def _key(path: Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _best(errors: Iterator[ValidationError]) -> ValidationError | None:
    from jsonschema.exceptions import best_match

    return best_match(errors)


def series_models(config: dict[str, Any]) -> dict[str, list[tuple[int, str]]]:
    """Checkpoint series → ``[(epoch, model id), ...]`` in epoch order."""
    return {
        name: [(int(e), f"{name}-e{int(e)}") for e in sorted(entry["epochs"], key=int)]
        for name, entry in (config.get("checkpoints") or {}).items()
    }


def _resolve_checkpoints(config: dict[str, Any], custom: dict[str, Any]) -> None:
    """Define every epoch of every checkpoint series as a custom model
    ``<series>-e<epoch>`` (the series' fields and the epoch's weights) and add it to
    ``models`` (after the models listed, in epoch order) unless listed already."""
    for name, entry in (config.get("checkpoints") or {}).items():
        if name in custom:
            raise ConfigError(f"config key 'checkpoints.{name}': also a key of custom_models")
        for epoch, mid in series_models(config)[name]:
            where = f"checkpoints.{name}.epochs.{epoch}"
            if mid in custom:
                raise ConfigError(f"config key '{where}': model id {mid!r} is a custom model too")
            ck = next(v for k, v in entry["epochs"].items() if int(k) == epoch)
            weights = {"path": ck} if isinstance(ck, str) else dict(ck)
            if "path" not in weights and "url" not in weights:
                raise ConfigError(f"config key '{where}': a path or url is needed")
            if entry.get("weights_format"):
                weights["format"] = entry["weights_format"]
            fields = {k: entry[k] for k in ("base", "arch", "family", "arch_kwargs") if k in entry}
            if "base" not in fields and "arch" not in fields:
                raise ConfigError(f"config key 'checkpoints.{name}': needs 'base' or 'arch'")
            custom[mid] = {**fields, "weights": weights}
            if mid not in config["models"]:
                config["models"].append(mid)


def _resolve_names(config: dict[str, Any], custom: dict[str, Any]) -> None:
    """Replace each model name of ``models`` / ``figures.main_models`` (``timm:…``,
    ``open_clip:…``; :mod:`vitlib.models.names`) by its id, defined as
    ``custom_models.<id> = {base: <name>}`` unless the user defined that id already (with
    the name as its base: overrides such as ``family`` stay theirs)."""
    from vitlib.models.names import is_name, name_to_id, spec_from_name

    for where, entries in (
        ("models", config["models"]),
        ("figures.main_models", config.get("figures", {}).get("main_models", [])),
    ):
        for i, name in enumerate(entries):
            if not is_name(name):
                continue
            try:
                mid = name_to_id(name)
                if mid not in custom:
                    spec_from_name(name, mid)
            except ValueError as e:
                raise ConfigError(f"config key '{where}.{i}': {e}") from None
            user = custom.setdefault(mid, {"base": name})
            if user.get("base") != name:
                raise ConfigError(
                    f"config key '{where}.{i}': {name!r} is model id {mid!r}, which"
                    f" custom_models defines with base {user.get('base')!r}"
                )
            entries[i] = mid


def validate_config(
    config: dict[str, Any], *, base_dir: str | Path = ".", require_data: bool = True
) -> dict[str, Any]:
    """Validate ``config`` in place (filling defaults) and return it.

    ``require_data=False`` skips the checks that dataset roots and checkpoint files exist
    (for planning a run before the data is on disk).

    Raises :class:`ConfigError` for the first problem found: schema violations (a negative
    count, a wrong type, an unknown key), an unknown model id, a dataset ``root`` that does
    not exist, or an analysis that names an undefined dataset.
    """
    for entry in (config.get("checkpoints") or {}).values():  # YAML reads `10:` as an int
        if isinstance(entry, dict) and isinstance(entry.get("epochs"), dict):
            entry["epochs"] = {str(k): v for k, v in entry["epochs"].items()}
    err = _best(_Validator(load_schema()).iter_errors(config))
    if err is not None:
        raise ConfigError(
            f"config key '{_key(err.absolute_path)}': value {err.instance!r} is invalid:"
            f" {err.message}"
        )
    custom = config.setdefault("custom_models", {})
    _resolve_checkpoints(config, custom)
    _resolve_names(config, custom)
    known = set(list_models()) | set(custom)
    for i, mid in enumerate(config["models"]):
        if mid not in known:
            raise ConfigError(
                f"config key 'models.{i}': unknown model id {mid!r}; built-in ids are"
                f" {', '.join(list_models())}; or define it under custom_models"
            )
    for i, mid in enumerate(config.get("figures", {}).get("main_models", [])):
        if mid not in known:
            raise ConfigError(
                f"config key 'figures.main_models.{i}': unknown model id {mid!r}; a built-in"
                " id or a key of custom_models"
            )
    for mid, mcfg in custom.items():
        if "train" in mcfg:
            tr = mcfg["train"]
            if tr["dataset"] not in config["datasets"]:
                raise ConfigError(
                    f"config key 'custom_models.{mid}.train.dataset': dataset"
                    f" {tr['dataset']!r} is not defined under datasets"
                )
            from vitlib.minizoo.train import METHODS, recipe_for  # torch: only when training

            try:
                recipe_for(tr["method"], recipe_options(tr), f"custom_models.{mid}.train")
            except ValueError as e:
                raise ConfigError(f"config key {e}") from None
            mcfg["weights"] = {
                "path": str(Path(config.get("results", "results"), "zoo", f"{mid}.pth")),
                "format": METHODS[tr["method"]].checkpoint_format,
            }
        try:
            spec_from_config(mid, mcfg)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"config key 'custom_models.{mid}': {e}") from None
        path = (mcfg.get("weights") or {}).get("path")
        if (
            require_data
            and path
            and mid in config["models"]
            and "train" not in mcfg
            and not _exists(path, base_dir)
        ):
            raise ConfigError(
                f"config key 'custom_models.{mid}.weights.path': file {path!r} does not exist"
            )
    for name, ds in config["datasets"].items():
        root = ds.get("root")
        if require_data and root is not None and not _exists(root, base_dir):
            raise ConfigError(f"config key 'datasets.{name}.root': path {root!r} does not exist")
    for aname, acfg in config.get("analyses", {}).items():
        for j, pair in enumerate(acfg.get("pairs", [])):
            for role in ("train", "test"):
                if pair[role] not in config["datasets"]:
                    raise ConfigError(
                        f"config key 'analyses.{aname}.pairs.{j}.{role}': dataset"
                        f" {pair[role]!r} is not defined under datasets"
                    )
        for j, dname in enumerate(acfg.get("datasets", [])):
            if dname not in config["datasets"]:
                raise ConfigError(
                    f"config key 'analyses.{aname}.datasets.{j}': dataset {dname!r} is not"
                    f" defined under datasets (defined: {', '.join(config['datasets'])})"
                )
            kind = config["datasets"][dname]["kind"]
            for an in in_section(aname):
                if an.dataset_kinds and kind not in an.dataset_kinds:
                    raise ConfigError(
                        f"config key 'analyses.{aname}.datasets.{j}': dataset {dname!r} is of"
                        f" kind {kind!r}; {an.name} needs one of {', '.join(an.dataset_kinds)}"
                    )
    return config


def recipe_options(train: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe options of a model's ``train`` section: its ``options`` with ``epochs``,
    ``batch_size``, ``lr`` (unless null: the method's default) and ``seed``."""
    top = {k: train[k] for k in ("epochs", "batch_size", "lr", "seed") if k in train}
    if top.get("lr") is None:
        top.pop("lr", None)
    return {**dict(train.get("options") or {}), **top}


def _exists(path: str, base_dir: str | Path) -> bool:
    p = Path(path)
    return (p if p.is_absolute() else Path(base_dir) / p).exists()


def model_spec(config: Mapping[str, Any], model_id: str):  # noqa: ANN201
    """The :class:`~vitlib.models.registry.ModelSpec` of ``model_id`` under ``config``."""
    return get_spec(model_id, config.get("custom_models", {}))


def extract_dtype(config: Mapping[str, Any], model_id: str) -> str:
    """The forward dtype of ``model_id``: ``extract.family_dtype`` of its family, else
    ``extract.dtype``."""
    ex = config["extract"]
    return str(ex.get("family_dtype", {}).get(model_spec(config, model_id).family, ex["dtype"]))


def write_effective_config(config: Mapping[str, Any], path: str | Path) -> None:
    """Write the configuration a run used (after defaults) with the vitlib version, so that
    every result folder says what produced it."""
    import datetime

    import vitlib

    header = (
        f"# The effective configuration of this run (schema defaults filled in).\n"
        f"# vitlib {vitlib.__version__}, written {datetime.datetime.now().isoformat(timespec='seconds')}\n"
    )
    body = yaml.safe_dump({"vitlib_version": vitlib.__version__, **dict(config)}, sort_keys=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(header + body)


def main_models(config: Mapping[str, Any]) -> list[str]:
    """The run's models of the main-text layout (``figures.main_models``, in the run's
    order; none of them in the run: every model), plus the run's noise models (family
    ``noise``), which join every layout as the Random reference."""
    listed = set(config["figures"]["main_models"])
    models = list(config["models"])
    main = [m for m in models if m in listed] or models
    noise = [m for m in models if model_spec(config, m).family == "noise" and m not in main]
    return main + noise
