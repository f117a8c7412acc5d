"""Per-family networks and checkpoint converters (docs/protocols.md §1.3).

Every family ends up as a module the capture understands: a timm ``VisionTransformer`` /
``Beit`` (FS, DINO, MoCo-v3, MAE, BEiT, DINOv2, SigLIP, DeiT-III, random) or
:class:`~vitlib.models.openclip.OpenClipViT` (CLIP).  A converter turns an upstream
checkpoint's dict into the module's state-dict keys; :func:`load_converted` then loads it
strictly: missing keys other than the documented ones, unexpected keys and shape
mismatches all stop with the three lists.
"""

from __future__ import annotations

import math
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
        # adapt_layer_scale: DeiT-III release files name layer scale ``gamma_1``/``gamma_2``
        # (timm's own loader for them passes it too); no other layout has such keys.
        sd = checkpoint_filter_fn(sd, model, adapt_layer_scale=True)
    return {k: v for k, v in sd.items() if not k.startswith("head.")}


def dinov2_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The position embedding the original DINOv2 network (no registers) adds at a
    ``grid`` of patches: its ``interpolate_pos_encoding`` resamples the ``M × M`` patch
    positions at every forward by bicubic interpolation with ``scale_factor = (g + 0.1) / M``
    (the "+0.1" of facebookresearch/dino#8) and no antialiasing, the class position kept.
    For a fixed input size that is one tensor, computed here once (``pos_embed``: ``[1, 1 +
    M², D]``, the class position first; returned in the same layout at ``grid``).
    The register variants (and timm's loader) resample by output size with antialiasing
    instead, which gives different positions — so the released non-register checkpoints
    are converted with this function (weights format ``dinov2``)."""
    cls_pos, patch = pos_embed[:, :1], pos_embed[:, 1:]
    m = math.isqrt(patch.shape[1])
    if m * m != patch.shape[1]:
        raise CheckpointMismatch(f"pos_embed has {patch.shape[1]} patch positions: not a square")
    gh, gw = grid
    if (gh, gw) == (m, m):
        return pos_embed
    dim = patch.shape[-1]
    out = torch.nn.functional.interpolate(
        patch.float().reshape(1, m, m, dim).permute(0, 3, 1, 2),
        scale_factor=((gh + 0.1) / m, (gw + 0.1) / m),
        mode="bicubic",
    )
    if tuple(out.shape[-2:]) != (gh, gw):
        raise CheckpointMismatch(f"DINOv2 position resampling gave {tuple(out.shape[-2:])}")
    out = out.permute(0, 2, 3, 1).reshape(1, gh * gw, dim).to(pos_embed.dtype)
    return torch.cat([cls_pos, out], dim=1)


def convert_dinov2(obj: Any, model: nn.Module) -> StateDict:
    """DINOv2 without registers (release files or timm's hub copies): the position embedding
    resampled to the model's grid as the upstream network does at every forward
    (:func:`dinov2_pos_embed`), then :func:`convert_timm` (which then finds it fitting)."""
    sd = dict(_unwrap(obj, "state_dict", "model"))
    pe = sd.get("pos_embed")
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if isinstance(pe, torch.Tensor) and grid is not None:
        if getattr(model, "no_embed_class", False):
            raise CheckpointMismatch(
                "weights format 'dinov2' is the original DINOv2 layout (class position in"
                " pos_embed); this network has none: use format 'timm' (register variants)"
            )
        sd["pos_embed"] = dinov2_pos_embed(pe, (int(grid[0]), int(grid[1])))
    return convert_timm(sd, model)


_HF_VIT_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_HF_VIT_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
#: keys of transformers checkpoints the image encoder never uses
_HF_DROP = ("pooler.", "classifier.", "embeddings.mask_token", "decoder.", "lm_head.")


def convert_hf_vit(obj: Any, model: nn.Module) -> StateDict:
    """Hugging Face transformers ``ViTModel`` / ``ViTMAEModel`` checkpoints (the hub's
    layout, which ``save_pretrained`` writes: ``encoder.layer.<i>.attention.attention.
    {query,key,value}`` …, optionally under ``vit.``) → timm ``VisionTransformer`` keys;
    q, k, v are stacked into timm's ``qkv``. Pooler, classifier, MAE decoder and mask token
    are dropped (never run)."""
    sd = {k.removeprefix("vit."): v for k, v in dict(_unwrap(obj, "state_dict")).items()}
    out: StateDict = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for k, v in sd.items():
        if k.startswith(_HF_DROP):
            continue
        if k in _HF_VIT_TOP:
            out[_HF_VIT_TOP[k]] = v
            continue
        m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)", k)
        if not m:
            unknown.append(k)
            continue
        i, name, kind = m.groups()
        q = re.fullmatch(r"attention\.attention\.(query|key|value)", name)
        if q:
            qkv.setdefault((i, kind), {})[q.group(1)] = v
        elif name in _HF_VIT_BLOCK:
            out[f"blocks.{i}.{_HF_VIT_BLOCK[name]}.{kind}"] = v
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointMismatch(
            f"not a transformers ViT checkpoint: keys {unknown[:5]} have no timm counterpart"
        )
    for (i, kind), parts in qkv.items():
        if sorted(parts) != ["key", "query", "value"]:
            raise CheckpointMismatch(f"block {i}: {kind} of q/k/v incomplete ({sorted(parts)})")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]]
        )
    return out


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
    the MIM head, mask token and final norm (unused with average pooling) are dropped.

    A checkpoint in the Hugging Face transformers layout (``beit.*`` keys, the
    ``microsoft/beit-*`` hub repositories) is renamed first (:func:`hf_beit_to_unilm`), so
    both layouts load under either format name (``beit``, ``hf_beit``)."""
    sd = dict(_unwrap(obj, "model", "module"))
    if is_hf_beit(sd):
        sd = hf_beit_to_unilm(sd)
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


# transformers' BEiT names (``BeitForMaskedImageModeling`` / ``BeitModel`` /
# ``BeitForImageClassification``) → the unilm release names that timm's ``Beit`` uses; the
# inverse of ``create_rename_keys`` + ``read_in_q_k_v`` in transformers'
# ``models/beit/convert_beit_unilm_to_pytorch.py`` (v4.x), which made the hub files.
_HF_BEIT_TOP = {
    "beit.embeddings.cls_token": "cls_token",
    "beit.embeddings.mask_token": "mask_token",
    "beit.embeddings.position_embeddings": "pos_embed",
    "beit.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "beit.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "beit.encoder.relative_position_bias.relative_position_bias_table": (
        "rel_pos_bias.relative_position_bias_table"
    ),
    "beit.layernorm.weight": "norm.weight",  # BeitModel's final norm (no mean pooling)
    "beit.layernorm.bias": "norm.bias",
    "layernorm.weight": "norm.weight",  # BeitForMaskedImageModeling's norm before lm_head
    "layernorm.bias": "norm.bias",
    "beit.pooler.layernorm.weight": "fc_norm.weight",
    "beit.pooler.layernorm.bias": "fc_norm.bias",
    "lm_head.weight": "lm_head.weight",
    "lm_head.bias": "lm_head.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}
_HF_BEIT_LAYER = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "lambda_1": "gamma_1",  # transformers calls layer scale lambda (gamma is renamed on load)
    "lambda_2": "gamma_2",
    "attention.attention.query.bias": "attn.q_bias",
    "attention.attention.value.bias": "attn.v_bias",
    "attention.attention.relative_position_bias.relative_position_bias_table": (
        "attn.relative_position_bias_table"
    ),
}
_HF_LAYER_KEY = re.compile(r"beit\.encoder\.layer\.(\d+)\.(.+)")
_QKV = ("query", "key", "value")


def is_hf_beit(sd: Mapping[str, Any]) -> bool:
    """Whether ``sd`` is in the Hugging Face transformers BEiT layout."""
    return any(k.startswith("beit.") for k in sd)


def hf_beit_to_unilm(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Rename a transformers BEiT state dict to the unilm/timm names.

    Per layer, the separate ``query``/``key``/``value`` weights are stacked into
    ``attn.qkv.weight`` (the key projection has no bias; timm keeps ``q_bias``/``v_bias``),
    ``lambda_1``/``lambda_2`` become ``gamma_1``/``gamma_2``; ``relative_position_index``
    buffers are dropped (models rebuild them).  Keys it does not know keep their name, so a
    strict load reports them."""
    out: StateDict = {}
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if "relative_position_index" in k:
            continue
        if k in _HF_BEIT_TOP:
            out[_HF_BEIT_TOP[k]] = v
            continue
        m = _HF_LAYER_KEY.fullmatch(k)
        if m is None:
            out[k] = v
            continue
        i, rest = int(m.group(1)), m.group(2)
        proj = rest.removeprefix("attention.attention.").removesuffix(".weight")
        if rest.startswith("attention.attention.") and rest.endswith(".weight") and proj in _QKV:
            qkv.setdefault(i, {})[proj] = v
            continue
        base, dot, leaf = rest.rpartition(".")
        if rest in _HF_BEIT_LAYER:
            out[f"blocks.{i}.{_HF_BEIT_LAYER[rest]}"] = v
        elif dot and base in _HF_BEIT_LAYER:
            out[f"blocks.{i}.{_HF_BEIT_LAYER[base]}.{leaf}"] = v
        else:
            out[k] = v
    for i, parts in qkv.items():
        if set(parts) != set(_QKV):
            raise CheckpointMismatch(
                f"layer {i}: query/key/value weights incomplete (have {sorted(parts)})"
            )
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([parts[p] for p in _QKV], dim=0)
    return out


def convert_hf_beit(obj: Any, model: nn.Module) -> StateDict:
    """BEiT from a Hugging Face transformers checkpoint (``microsoft/beit-*`` hub repos,
    e.g. ``microsoft/beit-base-patch16-224-pt22k``: the unilm pt22k files converted by
    transformers) into timm's ``Beit``; a unilm-layout file is accepted as well."""
    return convert_beit(obj, model)


def convert_clip(obj: Any, model: nn.Module) -> StateDict:
    """OpenAI / open_clip CLIP: the ``visual.*`` keys, prefixed for :class:`OpenClipViT`.

    An open_clip model whose image tower is a timm network (``timm_model_name`` configs,
    open_clip's ``TimmModel``: ``visual.trunk.*`` + ``visual.head.*``) loads into the timm
    module itself: the trunk's keys without the prefix, the projection head dropped (the
    analyses read the tokens, never the joint embedding)."""
    sd = _unwrap(obj, "state_dict")
    vis = {k: v for k, v in sd.items() if k.startswith("visual.")}
    if not vis:
        raise CheckpointMismatch(
            f"no 'visual.*' keys: not a CLIP checkpoint (first keys: {list(sd)[:5]})"
        )
    if any(k.startswith("visual.trunk.") for k in vis) and not hasattr(model, "visual"):
        return {
            k.removeprefix("visual.trunk."): v
            for k, v in vis.items()
            if k.startswith("visual.trunk.")
        }
    return vis


CONVERTERS: dict[str, Callable[[Any, nn.Module], StateDict]] = {
    "timm": convert_timm,
    "dinov2": convert_dinov2,
    "hf_vit": convert_hf_vit,
    "dino": convert_dino,
    "moco": convert_moco,
    "mae": convert_mae,
    "beit": convert_beit,
    "hf_beit": convert_hf_beit,
    "openai_clip": convert_clip,
    "open_clip": convert_clip,
}

#: Model keys a checkpoint may lack (regexes), per format: heads the analyses never use,
#: BEiT's randomly initialised fc_norm (docs/protocols.md §1.3).
ALLOWED_MISSING: dict[str, tuple[str, ...]] = {
    "beit": (r"fc_norm\..*",),
    "hf_beit": (r"fc_norm\..*",),
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
