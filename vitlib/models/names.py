"""Models by name: ``timm:<arch>.<tag>``, ``open_clip:<arch>/<pretrained>``, ``hf:<repo>``.

A name is resolved from the source library's own configuration, never from a table kept
here: timm's pretrained config (``timm.models.get_pretrained_cfg``) gives the hub file, the
input size and the normalisation, open_clip's (``open_clip.get_pretrained_cfg`` /
``get_model_config``) the same for a CLIP tower; depth, heads, width, patch and prefix
tokens come from the network the library builds (on the meta device); ``hf:`` reads the
repository's own ``config.json`` and ``preprocessor_config.json`` (through
``huggingface_hub``, i.e. the shared HF cache) for transformers ViTs (``model_type`` ``vit``
or ``vit_mae``: google/vit-*, facebook/dino-vit*, facebook/vit-mae-*), run as the timm
network of the same shape with the checkpoint converted (weights format ``hf_vit``). The
weights are the source's hub file, fetched through ``huggingface_hub`` into the shared HF
cache and pinned by sha256 like every other download (:mod:`vitlib.models.weights`).

The family (which sets the figures' colours and the defaults of family-specific settings)
is read from the name: :data:`FAMILY_HINTS` in order, the first hint found in the lower-case
name wins, else ``timm`` (supervised); open_clip names are ``clip``. A wrong guess is fixed
with ``custom_models: {<id>: {base: "<name>", family: <family>}}``.

In ``models:`` a name stands for a model whose id (its directory under ``results/``) is
:func:`name_to_id` of it: ``timm:vit_base_patch16_224.augreg_in21k`` →
``timm-vit_base_patch16_224.augreg_in21k``, ``open_clip:ViT-B-16/laion2b_s34b_b88k`` →
``open_clip-ViT-B-16--laion2b_s34b_b88k``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["FAMILY_HINTS", "HF_MODEL_TYPES", "SOURCES", "is_name", "name_to_id", "spec_from_name"]

#: The sources a name may start with.
SOURCES = ("timm", "open_clip", "hf")

#: ``(substring of the lower-case timm name, family)``, the first match wins.
FAMILY_HINTS: tuple[tuple[str, str], ...] = (
    ("dinov2", "dinov2"),
    ("siglip", "siglip"),
    ("clip", "clip"),
    ("deit3", "deit3"),
    ("beit", "beit"),
    (".mae", "mae"),
    ("dino", "dino"),
    ("mocov3", "moco"),
)

_ID_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_name(model: str) -> bool:
    """Whether ``model`` is a ``<source>:<name>`` model name (not a registry id)."""
    source, sep, rest = model.partition(":")
    return bool(sep) and source in SOURCES and bool(rest)


def name_to_id(name: str) -> str:
    """The model id a name gets (a valid directory name: ``:`` → ``-``, ``/`` → ``--``)."""
    if not is_name(name):
        raise ValueError(f"{name!r} is not a model name ({' / '.join(s + ':…' for s in SOURCES)})")
    source, _, rest = name.partition(":")
    mid = f"{source}-{rest.replace('/', '--')}"
    if not _ID_OK.match(mid):
        raise ValueError(f"model name {name!r}: characters outside [A-Za-z0-9_.-/]")
    return mid


def spec_from_name(name: str, model_id: str | None = None) -> Any:
    """The :class:`~vitlib.models.registry.ModelSpec` of a model name (see module doc)."""
    source, _, rest = name.partition(":")
    if source == "timm":
        return _timm_spec(rest, model_id or name_to_id(name))
    if source == "open_clip":
        return _open_clip_spec(rest, model_id or name_to_id(name))
    if source == "hf":
        return _hf_spec(rest, model_id or name_to_id(name))
    raise ValueError(f"model {name!r}: unknown source {source!r}; known: {', '.join(SOURCES)}")


def family_of(name: str) -> str:
    """The family a timm name suggests (:data:`FAMILY_HINTS`; default ``timm``)."""
    low = name.lower()
    return next((fam for hint, fam in FAMILY_HINTS if hint in low), "timm")


def _timm_spec(tagged: str, model_id: str) -> Any:
    import timm
    from timm.models import get_pretrained_cfg

    from vitlib.models.registry import ModelSpec, _dims, _hub

    arch, _, tag = tagged.partition(".")
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
        raise ValueError(f"timm:{tagged}: timm has no architecture {arch!r} (e.g. {close})")
    full = tagged if tag else (timm.list_pretrained(f"{arch}.*") or [arch])[0]
    try:
        cfg = get_pretrained_cfg(full)
    except RuntimeError:  # timm: "Invalid pretrained tag"
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        tags = timm.list_pretrained(f"{arch}.*")
        raise ValueError(
            f"timm:{tagged}: no pretrained weights of that name; timm's tags for {arch}:"
            f" {tags or 'none'}"
        )
    img = int(cfg.input_size[-1])
    kw: dict[str, Any] = {"img_size": img}
    dims = _dims("timm", arch, kw)
    family = family_of(full)
    # DINOv2 without registers resamples its positions as upstream (families.convert_dinov2)
    fmt = "dinov2" if arch.endswith("_dinov2") and "_reg" not in arch else "timm"
    if cfg.hf_hub_id:
        weights = {**_hub(cfg.hf_hub_id, "model.safetensors"), "timm_name": full}
        if cfg.url:
            weights["fallbacks"] = ({"url": cfg.url, "sha256": None},)
    else:
        weights = {"url": cfg.url, "timm_name": full}
    weights.update({"format": fmt, "sha256": None})
    return ModelSpec(
        id=model_id,
        family=family,
        arch=arch,
        arch_kwargs=kw,
        mean=tuple(float(v) for v in cfg.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg.std),  # type: ignore[arg-type]
        weights=weights,
        **dims,
    )


def _open_clip_spec(pair: str, model_id: str) -> Any:
    import open_clip

    from vitlib.models.registry import CLIP_MEAN, CLIP_STD, ModelSpec, _dims, _hub

    arch, sep, tag = pair.partition("/")
    if not sep or not tag:
        raise ValueError(f"open_clip:{pair}: write open_clip:<arch>/<pretrained>")
    if open_clip.get_model_config(arch) is None:
        raise ValueError(f"open_clip:{pair}: open_clip has no model {arch!r}")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = [t for a, t in open_clip.list_pretrained() if a == arch]
        raise ValueError(f"open_clip:{pair}: no pretrained tag {tag!r}; open_clip's: {tags}")
    vision = open_clip.get_model_config(arch)["vision_cfg"]
    if "timm_model_name" in vision or not isinstance(vision.get("layers"), int):
        raise ValueError(
            f"open_clip:{pair}: only open_clip's own ViT towers are supported (this one is"
            f" {vision.get('timm_model_name') or 'a ResNet'})"
        )
    dims = _dims("clip", arch, {})
    hub = str(cfg.get("hf_hub") or "").rstrip("/")
    if hub:
        weights: dict[str, Any] = {**_hub(hub, "open_clip_model.safetensors")}
        weights["fallbacks"] = (
            {"url": _hub(hub, "open_clip_pytorch_model.bin")["url"], "sha256": None},
        )
    elif cfg.get("url"):
        weights = {"url": cfg["url"]}
    else:
        raise ValueError(f"open_clip:{pair}: its pretrained config names no file")
    weights.update({"format": "open_clip", "sha256": None, "open_clip": (arch, tag)})
    return ModelSpec(
        id=model_id,
        family="clip",
        arch=arch,
        mean=tuple(float(v) for v in cfg.get("mean", CLIP_MEAN)),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg.get("std", CLIP_STD)),  # type: ignore[arg-type]
        weights=weights,
        **dims,
    )


#: transformers model types vitlib runs (the timm ViT of the same shape computes the same)
HF_MODEL_TYPES = ("vit", "vit_mae")


def _hf_read(repo: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``config.json`` and (if present) ``preprocessor_config.json`` of a hub repository,
    through ``huggingface_hub`` (the HF cache; ``HF_HUB_OFFLINE=1`` reads only the cache)."""
    import json

    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    cfg = json.loads(open(hf_hub_download(repo, "config.json")).read())
    try:
        pre = json.loads(open(hf_hub_download(repo, "preprocessor_config.json")).read())
    except EntryNotFoundError:
        pre = None
    return cfg, pre


def _hf_spec(repo: str, model_id: str) -> Any:
    from vitlib.models.registry import ModelSpec, _dims, _hub

    try:
        cfg, pre = _hf_read(repo)
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, …: say which and why
        raise ValueError(f"hf:{repo}: cannot read its config.json ({e})") from None
    mt = cfg.get("model_type")
    if mt not in HF_MODEL_TYPES:
        raise ValueError(
            f"hf:{repo}: model_type {mt!r} is not supported (supported: {HF_MODEL_TYPES});"
            " for DINOv2 and other families use their timm names (timm:…)"
        )
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hf:{repo}: hidden_act {cfg.get('hidden_act')!r}, only gelu is supported")
    size = cfg.get("image_size", 224)
    patch = cfg.get("patch_size", 16)
    D = int(cfg["hidden_size"])
    kw: dict[str, Any] = {
        "img_size": int(size if isinstance(size, int) else size[0]),
        "patch_size": int(patch if isinstance(patch, int) else patch[0]),
        "embed_dim": D,
        "depth": int(cfg["num_hidden_layers"]),
        "num_heads": int(cfg["num_attention_heads"]),
        "mlp_ratio": int(cfg["intermediate_size"]) / D,
        "qkv_bias": bool(cfg.get("qkv_bias", True)),
        "layer_norm_eps": float(cfg.get("layer_norm_eps", 1e-12)),
    }
    arch = "vit_base_patch16_224"  # the timm ViT; every dimension is set by kw
    dims = _dims("timm", arch, kw)
    family = "mae" if mt == "vit_mae" else family_of(repo.replace("/", "."))
    mean = tuple(float(v) for v in (pre or {}).get("image_mean", (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in (pre or {}).get("image_std", (0.5, 0.5, 0.5)))
    weights: dict[str, Any] = {
        **_hub(repo, "model.safetensors"),
        "fallbacks": ({"url": _hub(repo, "pytorch_model.bin")["url"], "sha256": None},),
        "format": "hf_vit",
        "sha256": None,
    }
    return ModelSpec(
        id=model_id,
        family=family,
        arch=arch,
        arch_kwargs=kw,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        weights=weights,
        **dims,
    )
