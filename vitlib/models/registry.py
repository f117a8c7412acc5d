"""Model specifications: what a model is, independent of how its weights are loaded.

Every model the workflow can run is a :class:`ModelSpec`.  The built-in ids follow
``<method>_<size><patch>[_<imsize>]`` (docs/protocols.md §D2); users add their own specs in the
config (``custom_models``), which :func:`spec_from_config` turns into the same object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)

_RGB = tuple[float, float, float]

#: Normalisation per family (docs/protocols.md §1.4).
FAMILY_NORM: dict[str, tuple[_RGB, _RGB]] = {
    "fs": (HALF, HALF),
    "clip": (CLIP_MEAN, CLIP_STD),
    "dino": (IMAGENET_MEAN, IMAGENET_STD),
    "moco": (IMAGENET_MEAN, IMAGENET_STD),
    "mae": (IMAGENET_MEAN, IMAGENET_STD),
    "beit": (HALF, HALF),
    "random": (HALF, HALF),
    "noise": (HALF, HALF),
    "dinov2": (IMAGENET_MEAN, IMAGENET_STD),
    "siglip": (HALF, HALF),
    "deit3": (IMAGENET_MEAN, IMAGENET_STD),
    "timm": (IMAGENET_MEAN, IMAGENET_STD),
}

FAMILIES = tuple(FAMILY_NORM)

# (embed_dim, depth, num_heads) of the standard sizes.
_SIZES = {"s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16), "h": (1280, 32, 16)}
_SIZE_NAME = {"s": "small", "b": "base", "l": "large", "h": "huge"}


@dataclass(frozen=True)
class ModelSpec:
    """Everything the workflow needs to know about one model.

    ``arch`` is a timm architecture name (or, for CLIP, an open_clip name) and
    ``arch_kwargs`` overrides its constructor arguments; ``depth``, ``num_heads``,
    ``embed_dim``, ``patch_size`` and ``img_size`` describe the resulting network and
    are checked against the built module.
    """

    id: str
    family: str
    arch: str
    depth: int
    num_heads: int
    embed_dim: int
    patch_size: int
    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_prefix_tokens: int = 1
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, Any] | None = None  # {url | path, sha256, format, ...}
    init_seed: int | None = None  # random initialisation when no weights
    paper: bool = False

    @property
    def grid(self) -> int:
        """Token-grid edge ``K = img_size / patch_size``."""
        return self.img_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.grid**2


def _std(family: str, size: str, patch: int, img: int = 224, **kw: Any) -> ModelSpec:
    dim, depth, heads = _SIZES[size]
    mean, std = FAMILY_NORM[family]
    suffix = "" if img == 224 else f"_{img}"
    mid = kw.pop("id", f"{family}_{size}{patch}{suffix}")
    arch = kw.pop("arch", f"vit_{_SIZE_NAME[size]}_patch{patch}_{img}")
    return ModelSpec(
        id=mid,
        family=family,
        arch=arch,
        depth=kw.pop("depth", depth),
        num_heads=kw.pop("num_heads", heads),
        embed_dim=dim,
        patch_size=patch,
        img_size=img,
        mean=mean,
        std=std,
        **kw,
    )


# Weight sources (docs/protocols.md §1.3).  Each built-in model names the hub file that timm
# or open_clip itself loads for the network the paper used (timm pretrained tag
# ``timm_name``, open_clip ``(arch, pretrained)`` pair ``open_clip``; ``hf_hub_id`` /
# ``hf_hub_filename`` / ``hf_revision`` as in those libraries' pretrained configs) as its
# ``url``, downloaded through ``huggingface_hub`` (and its cache), then ``fallbacks``: the
# upstream release file, where its layout loads through the same converter.  Models with no
# hub copy of *their* file keep the release URL: DINO S/8 (the paper's 300-epoch file; timm's
# ``vit_small_patch8_224.dino`` is the other, ``dino_deitsmall8_pretrain``) and MoCo-v3 (no
# timm tag).  tests/test_weights_sources.py checks every tag, pair and URL here against the
# installed timm / open_clip, and the architectures against the tagged models.
#
# sha256: pinned here only where the source publishes it with the link — OpenAI's CLIP URLs
# carry the file's sha256 (the fallbacks of clip_*).  The hub publishes each file's sha256 as
# its LFS etag; it cannot be read offline, so hub files are checked against that etag when
# downloaded (vitlib.models.weights) and pinned on first download, as are the DINO, MoCo-v3,
# MAE and BEiT release files, which publish no hash.  A ``weights.sha256`` given in the
# config (custom_models) is always honoured.
# timm's cfgs leave hf_hub_filename unset: its loader then tries model.safetensors first.
_TIMM_FILE = "model.safetensors"
_OPEN_CLIP_FILE = "open_clip_model.safetensors"  # open_clip's first choice ...
_OPEN_CLIP_BIN = "open_clip_pytorch_model.bin"  # ... and its default (HF_WEIGHTS_NAME)
_CLIP = "https://openaipublic.azureedge.net/clip/models/{}/{}.pt"  # reported dead upstream
_DINO = "https://dl.fbaipublicfiles.com/dino/{0}/{0}.pth"
_MOCO = "https://dl.fbaipublicfiles.com/moco-v3/{0}/{0}.pth.tar"
_MAE = "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_{}.pth"
_DINOV2 = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{0}14/dinov2_vit{0}14{1}_pretrain.pth"
_JX = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/{}.pth"
_DEIT3 = "https://dl.fbaipublicfiles.com/deit/{}.pth"
# The BEiT release blob needs a SAS query string (docs/protocols.md §1.3): a fallback only.
_BEIT = "https://conversationhub.blob.core.windows.net/beit-share-public/beit/{}.pth"
# transformers' conversion of the unilm pt22k files (BeitForMaskedImageModeling layout).
_BEIT_HF = "microsoft/beit-{}-patch16-224-pt22k"
_BEIT_HF_FILE = "pytorch_model.bin"


def _hub(repo: str, filename: str, revision: str = "main") -> dict[str, Any]:
    return {
        "url": f"https://huggingface.co/{repo}/resolve/{revision}/{filename}",
        "hf_hub_id": repo,
        "hf_hub_filename": filename,
        "hf_revision": revision,
    }


def _timm_w(
    tagged: str, fmt: str = "timm", official: str | None = None, sha256: str | None = None
) -> dict[str, Any]:
    """Weights timm publishes on the hub for pretrained tag ``tagged`` (timm layout,
    safetensors); ``official``: the release file the tag was converted from (its cfg ``url``),
    the fallback."""
    w = {**_hub(f"timm/{tagged}", _TIMM_FILE), "format": fmt, "sha256": None, "timm_name": tagged}
    if official:
        w["fallbacks"] = ({"url": official, "sha256": sha256},)
    return w


def _open_clip_w(arch: str, tag: str, repo: str, official: str, sha256: str) -> dict[str, Any]:
    """open_clip pair ``(arch, tag)``: its hub file (open_clip layout), the ``.bin`` beside it,
    then the release file (OpenAI's TorchScript archive, whose URL carries its sha256)."""
    return {
        **_hub(repo, _OPEN_CLIP_FILE),
        "format": "open_clip",
        "sha256": None,
        "open_clip": (arch, tag),
        "fallbacks": (
            {"url": _hub(repo, _OPEN_CLIP_BIN)["url"], "sha256": None},
            {"url": official, "sha256": sha256},
        ),
    }


def _builtin() -> dict[str, ModelSpec]:
    specs: list[ModelSpec] = []
    # The paper's 20 (docs/protocols.md §1.1), in the paper's plot order.
    # FS: the AugReg in21k→in1k weights the paper used (timm ≥ 0.9 defaults to augreg2 for
    # some names, so the tag is pinned).  Their release files are JAX .npz archives that
    # vitlib does not read: no fallback.
    for size, patch in [("s", 32), ("s", 16), ("b", 32), ("b", 16), ("b", 8), ("l", 16)]:
        arch = f"vit_{_SIZE_NAME[size]}_patch{patch}_224"
        specs.append(
            _std("fs", size, patch, paper=True, weights=_timm_w(f"{arch}.augreg_in21k_ft_in1k"))
        )
    # CLIP: OpenAI's weights through open_clip's hub copies; OpenAI's URLs carry the sha256.
    for size, patch, name, sha in [
        ("b", 32, "ViT-B-32", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"),
        ("b", 16, "ViT-B-16", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"),
        ("l", 14, "ViT-L-14", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"),
    ]:
        repo = f"timm/vit_{_SIZE_NAME[size]}_patch{patch}_clip_224.openai"
        specs.append(
            _std(
                "clip",
                size,
                patch,
                arch=name,
                paper=True,
                weights=_open_clip_w(name, "openai", repo, _CLIP.format(sha, name), sha),
            )
        )
    for size, patch, fname, tag in [
        ("s", 16, "dino_deitsmall16_pretrain", "vit_small_patch16_224.dino"),
        ("s", 8, "dino_deitsmall8_300ep_pretrain", None),  # the 300-epoch file: not on the hub
        ("b", 16, "dino_vitbase16_pretrain", "vit_base_patch16_224.dino"),
        ("b", 8, "dino_vitbase8_pretrain", "vit_base_patch8_224.dino"),
    ]:
        official = _DINO.format(fname)
        w = (
            _timm_w(tag, "dino", official)
            if tag
            else {"url": official, "sha256": None, "format": "dino"}
        )
        specs.append(_std("dino", size, patch, paper=True, weights=w))
    # MoCo-v3 S has 12 heads (unlike timm/DINO S); fixed sin-cos position embedding.
    specs.append(
        _std(
            "moco",
            "s",
            16,
            num_heads=12,
            arch_kwargs={"num_heads": 12},
            paper=True,
            weights={"url": _MOCO.format("vit-s-300ep"), "sha256": None, "format": "moco"},
        )
    )
    specs.append(
        _std(
            "moco",
            "b",
            16,
            paper=True,
            weights={"url": _MOCO.format("vit-b-300ep"), "sha256": None, "format": "moco"},
        )
    )
    for size, patch, name in [("b", 16, "base"), ("l", 16, "large"), ("h", 14, "huge")]:
        tag = f"vit_{name}_patch{patch}_224.mae"
        specs.append(
            _std("mae", size, patch, paper=True, weights=_timm_w(tag, "mae", _MAE.format(name)))
        )
    for size in ("b", "l"):
        name = f"beit_{_SIZE_NAME[size]}_patch16_224"
        specs.append(
            _std(
                "beit",
                size,
                16,
                arch=name,
                paper=True,
                weights={
                    **_hub(_BEIT_HF.format(_SIZE_NAME[size]), _BEIT_HF_FILE),
                    "format": "hf_beit",
                    "sha256": None,
                    "fallbacks": ({"url": _BEIT.format(name + "_pt22k"), "sha256": None},),
                },
            )
        )
    # Additional configurations (docs/protocols.md §1.2).
    # DINO S/8 as released in the end (800 epochs, timm's vit_small_patch8_224.dino): the
    # paper's dino_s8 is the 300-epoch file (docs/protocols.md §8.1.11).
    specs.append(
        _std(
            "dino",
            "s",
            8,
            id="dino_s8_800ep",
            weights=_timm_w(
                "vit_small_patch8_224.dino", "dino", _DINO.format("dino_deitsmall8_pretrain")
            ),
        )
    )
    sha = "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02"
    specs.append(
        _std(
            "clip",
            "l",
            14,
            336,
            arch="ViT-L-14-336",
            weights=_open_clip_w(
                "ViT-L-14-336",
                "openai",
                "timm/vit_large_patch14_clip_336.openai",
                _CLIP.format(sha, "ViT-L-14-336px"),
                sha,
            ),
        )
    )
    for size, patch, tag, release in [
        ("b", 16, "augreg_in21k_ft_in1k", None),  # .npz release files: hub only
        ("b", 32, "augreg_in21k_ft_in1k", None),
        ("l", 16, "augreg_in21k_ft_in1k", None),
        ("l", 32, "orig_in21k_ft_in1k", _JX.format("jx_vit_large_p32_384-9b920ba8")),
    ]:
        arch = f"vit_{_SIZE_NAME[size]}_patch{patch}_384"
        specs.append(
            _std("fs", size, patch, 384, weights=_timm_w(f"{arch}.{tag}", "timm", release))
        )
    # An untrained network: a randomly initialised B/16 (what depth and architecture alone
    # give; the paper's baseline is noise, below).
    specs.append(_std("random", "b", 16, init_seed=0))
    # The paper's Random rows and chance lines: uniform noise of a B/16's feature shape for
    # every task, the noise seeded per image (vitlib.models.noise; Appendix B.3).
    specs.append(_std("noise", "b", 16, init_seed=0))
    # Modern families (through timm), evaluated at 224 like the paper's models.
    _DINOV2 = (
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{0}14/dinov2_vit{0}14{1}_pretrain.pth"
    )
    for size, name in [("s", "small"), ("b", "base"), ("l", "large")]:
        for reg in (False, True):
            arch = f"vit_{name}_patch14{'_reg4' if reg else ''}_dinov2"
            specs.append(
                _std(
                    "dinov2",
                    size,
                    14,
                    id=f"dinov2{'reg' if reg else ''}_{size}14",
                    arch=arch,
                    arch_kwargs={"img_size": 224},
                    num_prefix_tokens=5 if reg else 1,
                    # without registers, upstream resamples positions with a +0.1 offset
                    # and no antialias (vitlib.models.families.dinov2_pos_embed)
                    weights=_timm_w(
                        f"{arch}.lvd142m",
                        "timm" if reg else "dinov2",
                        _DINOV2.format(size, "_reg4" if reg else ""),
                    ),
                )
            )
    specs.append(
        _std(
            "siglip",
            "b",
            16,
            arch="vit_base_patch16_siglip_224",
            num_prefix_tokens=0,
            weights=_timm_w("vit_base_patch16_siglip_224.webli"),  # hub only (no cfg url)
        )
    )
    specs.append(
        _std(
            "deit3",
            "b",
            16,
            arch="deit3_base_patch16_224",
            weights=_timm_w(
                "deit3_base_patch16_224.fb_in22k_ft_in1k",
                "timm",
                _DEIT3.format("deit_3_base_224_21k"),
            ),
        )
    )
    return {s.id: s for s in specs}


_REGISTRY: dict[str, ModelSpec] = _builtin()

PAPER_MODELS: tuple[str, ...] = tuple(s.id for s in _REGISTRY.values() if s.paper)


def list_models() -> list[str]:
    """All built-in model ids, paper order first."""
    return list(_REGISTRY)


def get_spec(model_id: str, custom: Mapping[str, Mapping[str, Any]] | None = None) -> ModelSpec:
    """The spec of ``model_id``: a built-in id or a key of ``custom`` (config ``custom_models``)."""
    if custom and model_id in custom:
        return spec_from_config(model_id, custom[model_id])
    from vitlib.models.names import is_name, spec_from_name

    if is_name(model_id):  # timm:<arch>.<tag>, open_clip:<arch>/<tag>
        return spec_from_name(model_id)
    try:
        return _REGISTRY[model_id]
    except KeyError:
        raise KeyError(
            f"unknown model id {model_id!r}; known ids: {', '.join(_REGISTRY)}"
            " (or define it under custom_models, or name it: timm:<arch>.<tag>,"
            " open_clip:<arch>/<pretrained>)"
        ) from None


def spec_from_config(model_id: str, cfg: Mapping[str, Any]) -> ModelSpec:
    """Build a spec from a ``custom_models`` entry of the config.

    Either ``base`` (a built-in id whose fields are overridden) or ``arch`` (a timm
    architecture name) must be given; ``arch_kwargs`` are passed to the constructor and
    also determine ``depth``/``num_heads``/``embed_dim``/``patch_size``/``img_size`` when
    they set them.
    """
    cfg = dict(cfg)
    if "base" in cfg:
        base = get_spec(cfg.pop("base"))
        fields = {k: v for k, v in cfg.items() if k in ModelSpec.__dataclass_fields__}
        if "weights" in fields and base.weights:
            user = dict(fields["weights"])
            if "path" in user or "url" in user:  # another file: only its layout carries over
                kept = {k: v for k, v in base.weights.items() if k in ("format",)}
            else:  # the base's file(s), with the user's sha256 / format / key_map
                kept = dict(base.weights)
            fields["weights"] = {**kept, **user}
        if "arch_kwargs" in cfg or "arch" in cfg:
            kw = {**dict(base.arch_kwargs), **dict(cfg.get("arch_kwargs", {}))}
            fields["arch_kwargs"] = kw
            fields.update(_dims(base.family, cfg.get("arch", base.arch), kw))
        for k in ("mean", "std"):
            if k in fields:
                fields[k] = tuple(fields[k])
        return replace(base, id=model_id, paper=False, **fields)
    if "arch" not in cfg:
        raise ValueError(f"custom_models.{model_id}: needs 'arch' (a timm architecture) or 'base'")
    family = cfg.get("family", "timm")
    if family not in FAMILY_NORM:
        raise ValueError(
            f"custom_models.{model_id}.family: unknown family {family!r};"
            f" known: {', '.join(FAMILIES)}"
        )
    kw = dict(cfg.get("arch_kwargs", {}))
    dims = _dims(family, cfg["arch"], kw)
    mean, std = FAMILY_NORM[family]
    return ModelSpec(
        id=model_id,
        family=family,
        arch=cfg["arch"],
        arch_kwargs=kw,
        mean=tuple(cfg.get("mean", mean)),
        std=tuple(cfg.get("std", std)),
        weights=cfg.get("weights"),
        init_seed=cfg.get("init_seed"),
        **dims,
    )


class _ArchDims(TypedDict):
    depth: int
    num_heads: int
    embed_dim: int
    patch_size: int
    img_size: int


class _Dims(_ArchDims, total=False):
    """The :class:`ModelSpec` fields an architecture determines."""

    num_prefix_tokens: int


def _dims(family: str, arch: str, kw: Mapping[str, Any]) -> _Dims:
    """The architecture's dimensions, cached on disk: building the network (even on the meta
    device) imports torch and timm, seconds that every workflow parse would otherwise pay."""
    import json
    from importlib.metadata import PackageNotFoundError, version

    clip = family == "clip" and not arch.startswith("vit_")
    lib = "open_clip_torch" if clip else "timm"
    try:
        lib_version = version(lib)
    except PackageNotFoundError:  # pragma: no cover - both are dependencies
        lib_version = "?"
    key = json.dumps([lib, lib_version, arch, dict(kw)], sort_keys=True, default=str)
    cache = _dims_cache_path()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        dims: _Dims = known[key]
        return dims
    dims = _clip_dims(arch, kw) if clip else _timm_dims(arch, kw)
    try:  # best effort: a read-only cache only costs time
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**known, key: dims}, sort_keys=True))
        os.replace(tmp, cache)
    except OSError:
        pass
    return dims


def _dims_cache_path() -> Path:
    root = os.environ.get("VITLIB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vitlib"
    )
    return Path(root) / "arch_dims.json"


def _clip_dims(name: str, kw: Mapping[str, Any]) -> _Dims:
    """Dimensions of open_clip image tower ``name`` with ``vision_cfg`` overrides ``kw``."""
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"unknown open_clip model {name!r}")
    v = {**cfg["vision_cfg"], **kw}
    return {
        "depth": int(v["layers"]),
        "num_heads": int(v["width"]) // int(v.get("head_width", 64)),
        "embed_dim": int(v["width"]),
        "patch_size": int(v["patch_size"]),
        "img_size": int(v["image_size"]),
    }


def _timm_dims(arch: str, kw: Mapping[str, Any]) -> _Dims:
    """Depth, heads, width, patch and image size of a timm ViT architecture + overrides."""
    import timm
    from torch import nn

    try:
        # Build on the meta device: no memory, no init cost, exact constructor semantics.
        import torch

        build_kw = {k: v for k, v in kw.items() if k != "layer_norm_eps"}  # vitlib's own
        with torch.device("meta"):
            m = timm.create_model(arch, pretrained=False, num_classes=0, **build_kw)
    except Exception as e:  # noqa: BLE001 - report what timm said, with the arch
        raise ValueError(f"cannot build timm architecture {arch!r} with {dict(kw)}: {e}") from e
    # torch types module attributes as ``Tensor | Module``; timm ViTs hold these kinds there.
    patch_embed = m.get_submodule("patch_embed")
    patch = patch_embed.patch_size
    img = patch_embed.img_size
    blocks = m.blocks
    assert isinstance(blocks, (nn.Sequential, nn.ModuleList))
    num_heads = blocks[0].get_submodule("attn").num_heads
    embed_dim = m.embed_dim
    assert isinstance(patch, tuple) and isinstance(img, tuple)
    assert isinstance(num_heads, int) and isinstance(embed_dim, int)
    return {
        "depth": len(blocks),
        "num_heads": num_heads,
        "embed_dim": embed_dim,
        "patch_size": int(patch[0]),
        "img_size": int(img[0]),
        "num_prefix_tokens": int(getattr(m, "num_prefix_tokens", 1)),
    }
