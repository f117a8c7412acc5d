"""Model specifications: what a model is, independent of how its weights are loaded.

Every model the workflow can run is a :class:`ModelSpec`.  The built-in ids follow
``<method>_<size><patch>[_<imsize>]`` (DESIGN.md §2); users add their own specs in the
config (``custom_models``), which :func:`spec_from_config` turns into the same object.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)

#: Normalisation per family (PROTOCOLS §1.4).
FAMILY_NORM: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fs": (HALF, HALF),
    "clip": (CLIP_MEAN, CLIP_STD),
    "dino": (IMAGENET_MEAN, IMAGENET_STD),
    "moco": (IMAGENET_MEAN, IMAGENET_STD),
    "mae": (IMAGENET_MEAN, IMAGENET_STD),
    "beit": (HALF, HALF),
    "random": (HALF, HALF),
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
    mid = f"{family}_{size}{patch}{suffix}"
    arch = kw.pop("arch", f"vit_{_SIZE_NAME[size]}_patch{patch}_{img}")
    return ModelSpec(
        id=mid, family=family, arch=arch, depth=kw.pop("depth", depth),
        num_heads=kw.pop("num_heads", heads), embed_dim=dim, patch_size=patch, img_size=img,
        mean=mean, std=std, **kw,
    )


def _builtin() -> dict[str, ModelSpec]:
    specs: list[ModelSpec] = []
    # The paper's 20 (PROTOCOLS §1.1), in the paper's plot order.
    for size, patch in [("s", 32), ("s", 16), ("b", 32), ("b", 16), ("b", 8), ("l", 16)]:
        specs.append(_std("fs", size, patch, paper=True))
    for size, patch in [("b", 32), ("b", 16), ("l", 14)]:
        specs.append(_std("clip", size, patch, paper=True))
    for size, patch in [("s", 16), ("s", 8), ("b", 16), ("b", 8)]:
        specs.append(_std("dino", size, patch, paper=True))
    specs.append(_std("moco", "s", 16, num_heads=12, paper=True))  # MoCo-v3 S has 12 heads
    specs.append(_std("moco", "b", 16, paper=True))
    for size, patch in [("b", 16), ("l", 16), ("h", 14)]:
        specs.append(_std("mae", size, patch, paper=True))
    for size in ("b", "l"):
        specs.append(_std("beit", size, 16, arch=f"beit_{_SIZE_NAME[size]}_patch16_224",
                          paper=True))
    # Additional configurations (PROTOCOLS §1.2) and the random baseline.
    specs.append(_std("clip", "l", 14, 336))
    for size, patch in [("b", 16), ("b", 32), ("l", 16), ("l", 32)]:
        specs.append(_std("fs", size, patch, 384))
    specs.append(_std("random", "b", 16))
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
    try:
        return _REGISTRY[model_id]
    except KeyError:
        raise KeyError(
            f"unknown model id {model_id!r}; known ids: {', '.join(_REGISTRY)}"
            " (or define it under custom_models)") from None


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
        return replace(base, id=model_id, paper=False, **fields)
    if "arch" not in cfg:
        raise ValueError(f"custom_models.{model_id}: needs 'arch' (a timm architecture) or 'base'")
    family = cfg.get("family", "timm")
    if family not in FAMILY_NORM:
        raise ValueError(f"custom_models.{model_id}.family: unknown family {family!r};"
                         f" known: {', '.join(FAMILIES)}")
    kw = dict(cfg.get("arch_kwargs", {}))
    dims = _timm_dims(cfg["arch"], kw)
    mean, std = FAMILY_NORM[family]
    return ModelSpec(
        id=model_id, family=family, arch=cfg["arch"], arch_kwargs=kw,
        mean=tuple(cfg.get("mean", mean)), std=tuple(cfg.get("std", std)),
        weights=cfg.get("weights"), init_seed=cfg.get("init_seed"),
        num_prefix_tokens=int(cfg.get("num_prefix_tokens", 1)), **dims,
    )


def _timm_dims(arch: str, kw: Mapping[str, Any]) -> dict[str, int]:
    """Depth, heads, width, patch and image size of a timm ViT architecture + overrides."""
    import timm

    try:
        # Build on the meta device: no memory, no init cost, exact constructor semantics.
        import torch

        with torch.device("meta"):
            m = timm.create_model(arch, pretrained=False, num_classes=0, **kw)
    except Exception as e:  # noqa: BLE001 - report what timm said, with the arch
        raise ValueError(f"cannot build timm architecture {arch!r} with {dict(kw)}: {e}") from e
    patch = m.patch_embed.patch_size
    img = m.patch_embed.img_size
    return dict(
        depth=len(m.blocks), num_heads=m.blocks[0].attn.num_heads, embed_dim=m.embed_dim,
        patch_size=int(patch[0]), img_size=int(img[0]),
    )
