"""Build the network of a :class:`~vitlib.models.registry.ModelSpec`.

So far: timm architectures, randomly initialised with a seed or loaded from a plain
state-dict file (``weights.path``).  Per-family upstream loaders live beside this module.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from vitlib.models.registry import ModelSpec


class ModelError(RuntimeError):
    """A model cannot be built or its weights do not fit; the message names the model."""


def build_model(spec: ModelSpec, weights_path: str | Path | None = None,
                device: str | torch.device = "cpu") -> nn.Module:
    """Instantiate ``spec`` (eval mode) and check it has the spec's dimensions."""
    gen_state = None
    if spec.init_seed is not None:
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(int(spec.init_seed))
    try:
        model = timm.create_model(spec.arch, pretrained=False, num_classes=0,
                                  **dict(spec.arch_kwargs))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"model {spec.id}: cannot build {spec.arch!r}: {e}") from e
    finally:
        if gen_state is not None:
            torch.random.set_rng_state(gen_state)
    path = weights_path or (spec.weights or {}).get("path")
    if path:
        load_state_dict_file(model, path, model_id=spec.id)
    check_dims(model, spec)
    return model.eval().to(device)


def load_state_dict_file(model: nn.Module, path: str | Path, *, model_id: str,
                         allowed_missing: tuple[str, ...] = ("head.weight", "head.bias")) -> None:
    """Load a plain state dict strictly (only ``allowed_missing`` may be absent)."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model {model_id}: checkpoint {p} does not exist")
    sd = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in sd and k not in allowed_missing]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise ModelError(
            f"model {model_id}: checkpoint {p} does not fit {type(model).__name__}:"
            f" missing {missing}, unexpected {unexpected}, mis-shaped {shapes}")
    model.load_state_dict(sd, strict=False)


def check_dims(model: nn.Module, spec: ModelSpec) -> None:
    blocks = getattr(model, "blocks", None)
    got = {
        "depth": len(blocks) if blocks is not None else None,
        "num_heads": getattr(getattr(blocks[0], "attn", None), "num_heads", None) if blocks else None,
        "embed_dim": getattr(model, "embed_dim", None),
        "num_prefix_tokens": getattr(model, "num_prefix_tokens", spec.num_prefix_tokens),
    }
    pe = getattr(model, "patch_embed", None)
    if pe is not None:
        got["patch_size"] = int(pe.patch_size[0])
        got["img_size"] = int(pe.img_size[0]) if pe.img_size is not None else spec.img_size
    bad = {k: (v, getattr(spec, k)) for k, v in got.items() if v is not None and v != getattr(spec, k)}
    if bad:
        raise ModelError(f"model {spec.id}: built network differs from its spec"
                         f" (got, expected): {bad}")
