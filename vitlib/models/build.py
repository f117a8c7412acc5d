"""Build the network of a :class:`~vitlib.models.registry.ModelSpec`, with its weights.

``build_model(spec, weights_path)`` creates the family's module (timm, or open_clip's image
tower for CLIP), randomly initialised with ``spec.init_seed`` when given, loads the
checkpoint through the family's converter (:mod:`vitlib.models.families`) and checks the
result has the spec's depth, heads, width, patch and image size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from vitlib.models.families import CONVERTERS, CheckpointMismatch, load_converted
from vitlib.models.registry import ModelSpec
from vitlib.models.weights import WeightsError, apply_key_map, read_checkpoint, verify_sha256

#: Checkpoint layout assumed for a family when ``weights.format`` is not given.
DEFAULT_FORMAT = {
    "clip": "openai_clip",
    "dino": "dino",
    "moco": "moco",
    "mae": "mae",
    "beit": "beit",
}


class ModelError(RuntimeError):
    """A model cannot be built or its weights do not fit; the message names the model."""


def is_clip(spec: ModelSpec) -> bool:
    return spec.family == "clip" and not spec.arch.startswith("vit_")


def build_network(spec: ModelSpec) -> nn.Module:
    """The family's module, randomly initialised (seeded by ``spec.init_seed`` if set); for
    the ``noise`` family, noise of the architecture's shape seeded by ``spec.init_seed``."""
    state = torch.random.get_rng_state()
    if spec.init_seed is not None:
        torch.manual_seed(int(spec.init_seed))
    try:
        if is_clip(spec):
            from vitlib.models.openclip import OpenClipViT, build_vision_tower

            return OpenClipViT(build_vision_tower(spec.arch, **dict(spec.arch_kwargs)))
        kw = dict(spec.arch_kwargs)
        # the noise baseline's own option: its attention normalised over keys or queries
        noise_attention = kw.pop("noise_attention", "keys") if spec.family == "noise" else None
        # every LayerNorm's epsilon (transformers ViTs use 1e-12 where timm uses 1e-6)
        eps = kw.pop("layer_norm_eps", None)
        net = timm.create_model(spec.arch, pretrained=False, num_classes=0, **kw)
        if eps is not None:
            for mod in net.modules():
                if isinstance(mod, nn.LayerNorm):
                    mod.eps = float(eps)
        if noise_attention is not None:  # the random-chance baseline (vitlib.models.noise)
            from vitlib.models.noise import NoiseViT

            return NoiseViT(net, seed=int(spec.init_seed or 0), attention=noise_attention)
        return net
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"model {spec.id}: cannot build {spec.arch!r}: {e}") from e
    finally:
        if spec.init_seed is not None:
            torch.random.set_rng_state(state)


def weights_format(spec: ModelSpec) -> str:
    w = spec.weights or {}
    return str(w.get("format") or DEFAULT_FORMAT.get(spec.family, "timm"))


def build_model(
    spec: ModelSpec, weights_path: str | Path | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Instantiate ``spec`` in eval mode, load ``weights_path`` (or ``spec.weights.path``)."""
    model = build_network(spec)
    w: dict[str, Any] = dict(spec.weights or {})
    path = weights_path or w.get("path")
    if path:
        fmt = weights_format(spec)
        try:
            if w.get("sha256") and w.get("path") and Path(path) == Path(w["path"]):
                # a local file with the user's sha256 (downloads are verified when fetched)
                verify_sha256(path, w["sha256"], model_id=spec.id, source="weights.path")
            obj = read_checkpoint(path, model_id=spec.id, fmt=fmt)
            if isinstance(obj, dict) and w.get("key_map"):
                obj = apply_key_map(_unwrap_top(obj), w["key_map"])
            sd = CONVERTERS[fmt](obj, model)
            load_converted(model, sd, fmt=fmt, model_id=spec.id, source=str(path))
        except (CheckpointMismatch, WeightsError) as e:
            raise ModelError(str(e)) from None
    check_dims(model, spec)
    return model.eval().to(device)


def _unwrap_top(obj: dict) -> dict:
    for k in ("state_dict", "model", "module"):
        if k in obj and isinstance(obj[k], dict):
            return obj[k]
    return obj


def check_dims(model: nn.Module, spec: ModelSpec) -> None:
    blocks = getattr(model, "blocks", None)
    got: dict[str, Any] = {
        "depth": len(blocks) if blocks is not None else None,
        "num_heads": getattr(getattr(blocks[0], "attn", None), "num_heads", None)
        if blocks
        else None,
        "embed_dim": getattr(model, "embed_dim", None),
        "num_prefix_tokens": getattr(model, "num_prefix_tokens", spec.num_prefix_tokens),
    }
    pe = getattr(model, "patch_embed", None)
    if pe is not None:
        got["patch_size"] = int(pe.patch_size[0])
        got["img_size"] = int(pe.img_size[0]) if pe.img_size is not None else spec.img_size
    else:
        got["patch_size"] = getattr(model, "patch_size", None)
        got["img_size"] = getattr(model, "img_size", None)
    bad = {
        k: (v, getattr(spec, k)) for k, v in got.items() if v is not None and v != getattr(spec, k)
    }
    if bad:
        raise ModelError(
            f"model {spec.id}: built network differs from its spec (got, expected): {bad}"
        )
