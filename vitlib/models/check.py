"""The capture check: does the capture see what the network computes?

Every extraction runs it on the network it has just built, before the first batch
(:func:`check_capture`): one seeded random batch at the model's input size goes through

* the :class:`~vitlib.models.capture.Capture` (block outputs, the first LayerNorm's output,
  the post-softmax attention of every block), and
* the library's own forward (timm's or open_clip's ``forward_intermediates``, with the
  fused attention kernels the library uses by default),

and two identities must hold at every block:

1. **Attention**: the captured probabilities, and the softmax of the captured scores (the
   entropy's exact shortcut reads them), equal ``softmax(q kᵀ · scale + bias)``
   recomputed here from the block's own projection weights applied to the captured
   LayerNorm output (:func:`attention_from_weights`): timm's ``Attention`` (q/k norms
   included), BEiT's (its q/v biases and relative position bias, shared or per block) and
   open_clip's multi-head attention. An attention module of any other kind (rotary
   embeddings, windowed, pooled …) is not recognised and the check fails, naming it.
2. **Block outputs**: the captured residual stream equals the library's intermediate
   outputs (prefix tokens included).

Both routes of the capture are checked: the hooked one and, where a block's attention is
timm's ``Attention``, the streamed one (:func:`~vitlib.models.capture._streamed_attention`,
which the extraction runs on a CPU in fp32 and which computes the attention itself).
A failure raises :class:`CaptureCheckError` naming the model, the block (and the route) and
the size of the difference, so an unsupported variant stops the run instead of producing
wrong maps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CaptureCheckError", "attention_from_weights", "check_capture"]


class CaptureCheckError(RuntimeError):
    """The capture does not see what the network computes (or cannot be checked)."""


def attention_from_weights(model: nn.Module, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``softmax(q kᵀ · scale [+ bias])`` ``[B, H, N, N]`` of ``block`` on its attention
    input ``x`` ``[B, N, D]`` (the first LayerNorm's output), from the block's weights."""
    attn: Any = block.get_submodule("attn")  # the attribute names differ by variant
    kind = type(attn).__name__
    module = type(attn).__module__
    B, N, _ = x.shape
    bias: torch.Tensor | None = None
    if kind == "ProbAttention":  # open_clip's nn.MultiheadAttention, made hookable
        w, b = attn.in_proj_weight, attn.in_proj_bias
        heads = int(attn.num_heads)
        qkv = F.linear(x, w, b)
        scale = (qkv.shape[-1] // 3 // heads) ** -0.5
        q, k = qkv.reshape(B, N, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)[:2]
    elif kind == "Attention" and module == "timm.models.beit":
        q_bias = getattr(attn, "q_bias", None)
        if q_bias is None:
            qkv = attn.qkv(x)
        else:
            qkv = F.linear(x, attn.qkv.weight, torch.cat((q_bias, attn.k_bias, attn.v_bias)))
        heads = int(attn.num_heads)
        q, k = qkv.reshape(B, N, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)[:2]
        scale = float(attn.scale)
        if getattr(attn, "relative_position_bias_table", None) is not None:
            bias = attn._get_rel_pos_bias()
        shared: Any = getattr(model, "rel_pos_bias", None)
        if shared is not None:
            bias = shared() if bias is None else bias + shared()
    elif kind == "Attention" and hasattr(attn, "qkv") and hasattr(attn, "q_norm"):
        heads = int(attn.num_heads)
        qkv = attn.qkv(x)
        q, k = qkv.reshape(B, N, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)[:2]
        q, k = attn.q_norm(q), attn.k_norm(k)
        scale = float(attn.scale)
    else:
        raise CaptureCheckError(
            f"attention module {module}.{kind} is not a supported variant (timm Attention,"
            " BEiT Attention, open_clip MultiheadAttention): its probabilities cannot be"
            " checked, so they are not captured"
        )
    logits = (q.float() * scale) @ k.float().transpose(-2, -1)
    if bias is not None:
        logits = logits + bias.float()
    return logits.softmax(dim=-1)


def _library_intermediates(model: Any, x: torch.Tensor) -> list[torch.Tensor]:
    """The library's own per-block residual stream ``[B, N, D]`` (prefix tokens first)."""
    depth = len(model.blocks)
    visual = getattr(model, "visual", None)
    if visual is not None and hasattr(visual, "forward_intermediates"):  # open_clip
        out = visual.forward_intermediates(
            x, indices=depth, intermediates_only=True, output_fmt="NLC", output_extra_tokens=True
        )
        spatial, prefix = out["image_intermediates"], out["image_intermediates_prefix"]
        return [torch.cat([p, s], dim=1) for p, s in zip(prefix, spatial, strict=True)]
    if hasattr(model, "forward_intermediates"):  # timm VisionTransformer, Beit, Eva
        out = model.forward_intermediates(
            x,
            indices=depth,
            return_prefix_tokens=True,
            norm=False,
            output_fmt="NLC",
            intermediates_only=True,
        )
        res = []
        for item in out:
            spatial, prefix = item if isinstance(item, tuple) else (item, None)
            res.append(spatial if prefix is None else torch.cat([prefix, spatial], dim=1))
        return res
    raise CaptureCheckError(
        f"{type(model).__name__} has no forward_intermediates: its block outputs cannot be"
        " checked against the library"
    )


def _compare(
    model: Any,
    model_id: str,
    route: str,
    got: Any,
    ref_blocks: list[torch.Tensor],
    atol: float,
) -> tuple[float, float]:
    """The two identities of the module doc on one capture route's output ``got`` (a
    :class:`~vitlib.models.capture.CollectConsumer`); the largest differences."""
    assert got.attention is not None
    worst_attn = 0.0
    for i, blk in enumerate(model.blocks):
        ref = attention_from_weights(model, blk, got.tokens["norm1"][i])
        d = float((got.attention[i] - ref).abs().max())
        if got.logits is not None:  # None: a softmax the capture does not see (then unused)
            d = max(d, float((got.logits[i].softmax(-1) - ref).abs().max()))
        worst_attn = max(worst_attn, d)
        if not d <= atol:
            raise CaptureCheckError(
                f"model {model_id}: block {i + 1}{route}: the captured attention differs from"
                f" softmax recomputed from the block's own q/k weights by {d:.3g} (> {atol}):"
                f" {type(blk.attn).__module__}.{type(blk.attn).__name__} computes its"
                " attention in a way the capture does not see"
            )
    worst_block = 0.0
    for i, ref_b in enumerate(ref_blocks):
        mine = got.tokens["block"][i]
        if mine.shape != ref_b.shape:
            raise CaptureCheckError(
                f"model {model_id}: block {i + 1}{route}: captured tokens {tuple(mine.shape)}"
                f" but the library's intermediate output is {tuple(ref_b.shape)}"
            )
        d = float((mine - ref_b.float()).abs().max() / ref_b.float().abs().max().clamp_min(1e-12))
        worst_block = max(worst_block, d)
        if not d <= atol:
            raise CaptureCheckError(
                f"model {model_id}: block {i + 1}{route}: the captured block output differs"
                f" from the library's own intermediate output by {d:.3g} (relative, > {atol})"
            )
    return worst_attn, worst_block


@torch.inference_mode()
def check_capture(
    model: Any,
    *,
    img_size: int,
    model_id: str = "?",
    batch: int = 2,
    seed: int = 0,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Run the capture check on ``model`` (see module doc); returns the largest differences
    ``{"attention": …, "blocks": …}`` or raises :class:`CaptureCheckError`. Attention is
    compared absolutely (probabilities), block outputs relative to their largest value."""
    from vitlib.models.capture import Capture, CollectBlocks, CollectConsumer, streamable

    if type(model).__name__ == "NoiseViT":  # noise features: no network to check
        return {"attention": 0.0, "blocks": 0.0, "checked": False}
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, img_size, img_size, generator=g).to(device)
    ref_blocks = _library_intermediates(model, x)
    worst_attn = worst_block = 0.0
    routes = [("", Capture(model, points=("block", "norm1"), attention=True, logits=True))]
    if any(streamable(blk.attn) for blk in model.blocks):  # the extraction's fp32 CPU route
        routes.append(
            (" (streamed route)", Capture(model, points=("block", "norm1"), attention=True))
        )
    for route, cap in routes:
        if route:
            got: CollectConsumer = CollectBlocks(model.blocks[0].attn.num_heads)
            cap(x, got)
        else:
            got = cap.collect(x)
        a, b = _compare(model, model_id, route, got, ref_blocks, atol)
        worst_attn, worst_block = max(worst_attn, a), max(worst_block, b)
    return {"attention": worst_attn, "blocks": worst_block, "checked": True}
