"""Per-family networks and checkpoint converters (docs/protocols.md §1.3).

Every family ends up as a module the capture understands: a timm ``VisionTransformer`` /
``Beit`` (FS, DINO, MoCo-v3, MAE, BEiT, DINOv2, SigLIP, DeiT-III, random) or
:class:`~vitlib.models.openclip.OpenClipViT` (CLIP).  A converter turns an upstream
checkpoint's dict into the module's state-dict keys; :func:`load_converted` then loads it
strictly: missing keys other than the documented ones, unexpected keys and shape
mismatches all stop with the three lists.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

StateDict = dict[str, torch.Tensor]


class CheckpointMismatch(RuntimeError):
    """A checkpoint does not fit its model; the message lists the offending keys."""


def _unwrap(obj: Any, *keys: str) -> Mapping[str, Any]:
    for k in keys:
        if isinstance(obj, Mapping) and k in obj and isinstance(obj[k], Mapping):
            return obj[k]
    return obj


def convert_timm(obj: Any, model: nn.Module) -> StateDict:
    """timm-layout weights (hub files); position embeddings resampled to the model's grid."""
    sd = dict(_unwrap(obj, "state_dict", "model"))
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    if isinstance(model, VisionTransformer):
        sd = checkpoint_filter_fn(sd, model)
    return {k: v for k, v in sd.items() if not k.startswith("head.")}


def convert_dino(obj: Any, model: nn.Module) -> StateDict:
    """DINO: a plain backbone state dict in timm naming (teacher backbone files)."""
    sd = dict(_unwrap(obj, "teacher", "state_dict"))
    return {
        k.removeprefix("backbone.").removeprefix("module."): v
        for k, v in sd.items()
        if not k.startswith(("head.", "backbone.head.", "module.head."))
    }


def convert_moco(obj: Any, model: nn.Module) -> StateDict:
    """MoCo-v3: ``state_dict``; keep ``module.base_encoder.`` minus its head, strip the prefix
    (momentum encoder, predictor and projection head are dropped)."""
    sd = _unwrap(obj, "state_dict")
    pre = "module.base_encoder."
    out = {
        k[len(pre) :]: v
        for k, v in sd.items()
        if k.startswith(pre) and not k.startswith(pre + "head")
    }
    if not out:
        raise CheckpointMismatch(
            f"no '{pre}*' keys: not a MoCo-v3 checkpoint (first keys: {list(sd)[:5]})"
        )
    return out


_MAE_DECODER = ("decoder_", "mask_token")


def convert_mae(obj: Any, model: nn.Module) -> StateDict:
    """MAE: ``model``; encoder keys are timm-named; the decoder is dropped (never run)."""
    sd = _unwrap(obj, "model")
    return {k: v for k, v in sd.items() if not k.startswith(_MAE_DECODER)}


def convert_beit(obj: Any, model: nn.Module) -> StateDict:
    """BEiT pt22k (docs/protocols.md §1.3): ``model``/``module``; the shared relative-position table is
    copied into every block; ``relative_position_index`` buffers are rebuilt by the model;
    the MIM head, mask token and final norm (unused with average pooling) are dropped."""
    sd = dict(_unwrap(obj, "model", "module"))
    shared = sd.pop("rel_pos_bias.relative_position_bias_table", None)
    sd = {
        k: v
        for k, v in sd.items()
        if "relative_position_index" not in k
        and not k.startswith(("lm_head.", "mask_token", "norm.", "head."))
    }
    if shared is not None:
        blocks = model.blocks  # timm's Beit: an nn.ModuleList
        assert isinstance(blocks, (nn.ModuleList, nn.Sequential))
        for i in range(len(blocks)):
            sd[f"blocks.{i}.attn.relative_position_bias_table"] = shared.clone()
    return sd


def convert_clip(obj: Any, model: nn.Module) -> StateDict:
    """OpenAI / open_clip CLIP: the ``visual.*`` keys, prefixed for :class:`OpenClipViT`."""
    sd = _unwrap(obj, "state_dict")
    vis = {k: v for k, v in sd.items() if k.startswith("visual.")}
    if not vis:
        raise CheckpointMismatch(
            f"no 'visual.*' keys: not a CLIP checkpoint (first keys: {list(sd)[:5]})"
        )
    return vis


CONVERTERS: dict[str, Callable[[Any, nn.Module], StateDict]] = {
    "timm": convert_timm,
    "dino": convert_dino,
    "moco": convert_moco,
    "mae": convert_mae,
    "beit": convert_beit,
    "openai_clip": convert_clip,
    "open_clip": convert_clip,
}

#: Model keys a checkpoint may lack (regexes), per format: heads the analyses never use,
#: BEiT's randomly initialised fc_norm (docs/protocols.md §1.3).
ALLOWED_MISSING: dict[str, tuple[str, ...]] = {
    "beit": (r"fc_norm\..*",),
}
_ALWAYS_ALLOWED = (r"head\..*",)


def load_converted(
    model: nn.Module, sd: Mapping[str, torch.Tensor], *, fmt: str, model_id: str, source: str
) -> None:
    """Strict load: report missing (beyond the documented), unexpected and mis-shaped keys."""
    own = model.state_dict()
    allowed = [re.compile(p) for p in (*ALLOWED_MISSING.get(fmt, ()), *_ALWAYS_ALLOWED)]
    missing = [k for k in own if k not in sd and not any(p.fullmatch(k) for p in allowed)]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sd
        if k in own and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        raise CheckpointMismatch(
            f"model {model_id}: checkpoint {source} ({fmt} layout) does not fit"
            f" {type(model).__name__}:\n  missing: {missing}\n  unexpected: {unexpected}\n"
            f"  mis-shaped: {shapes}"
        )
    model.load_state_dict(dict(sd), strict=False)
