"""CLIP image towers from open_clip, in a form the capture understands.

open_clip's residual blocks call ``nn.MultiheadAttention`` with ``need_weights=False`` (a
fused kernel that never forms the attention probabilities).  :class:`ProbAttention` replaces
it inside each block with the same parameters and the same arithmetic written out —
``softmax(q kᵀ / √d) v`` — passing the probabilities through an ``attn_drop`` identity that
the capture hooks, exactly like timm's attention.  :class:`OpenClipViT` exposes the blocks as
``.blocks`` and ``forward_features`` (tokens after the last block, before ``ln_post``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from open_clip.transformer import VisionTransformer


class ProbAttention(nn.Module):
    """Drop-in for a batch-first ``nn.MultiheadAttention`` (self-attention only)."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not mha.batch_first:
            raise ValueError("ProbAttention needs a batch_first MultiheadAttention")
        if mha.in_proj_weight is None:
            raise ValueError("separate q/k/v projections are not supported")
        self.num_heads = mha.num_heads
        self.head_dim = mha.embed_dim // mha.num_heads
        self.in_proj_weight = mha.in_proj_weight
        self.in_proj_bias = mha.in_proj_bias
        self.out_proj = mha.out_proj
        self.attn_drop = nn.Identity()  # hook point: its output is the attention probabilities
        self.batch_first = True
        self.fused_attn = False

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        **_: Any,
    ) -> tuple[torch.Tensor, None]:
        B, N, D = query.shape
        qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        if attn_mask is not None:
            attn = attn + attn_mask
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(B, N, D)
        return self.out_proj(x), None


class OpenClipViT(nn.Module):
    """An open_clip ``VisionTransformer`` with hookable attention.

    ``num_prefix_tokens`` = 1 (the class token); ``embed_dim``, ``patch_embed``-like
    ``patch_size``/``img_size`` are exposed for the spec checks.
    """

    def __init__(self, visual: VisionTransformer) -> None:
        super().__init__()
        if not getattr(visual.transformer, "batch_first", False):
            raise ValueError("open_clip transformer must be batch_first (open_clip >= 2.24)")
        self.visual = visual
        for blk in visual.transformer.resblocks:
            if isinstance(blk.attn, nn.MultiheadAttention):
                blk.attn = ProbAttention(blk.attn)
        self.num_prefix_tokens = 1
        self.embed_dim = visual.transformer.width
        ps = visual.patch_size
        gs = visual.grid_size
        self.patch_size = int(ps[0] if isinstance(ps, tuple) else ps)
        self.img_size = int((gs[0] if isinstance(gs, tuple) else gs) * self.patch_size)

    @property
    def blocks(self) -> nn.ModuleList:
        """The residual blocks (a property, so the state dict holds them once)."""
        return self.visual.transformer.resblocks

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v._embeds(x)
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def build_vision_tower(name: str, **overrides: Any) -> nn.Module:
    """The (randomly initialised) image tower of open_clip model ``name`` with QuickGELU
    as in OpenAI's CLIP; ``overrides`` update its ``vision_cfg`` (tests build small ones)."""
    import open_clip
    from open_clip.model import _build_vision_tower

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"unknown open_clip model {name!r}")
    vision_cfg = {**cfg["vision_cfg"], **overrides}
    return _build_vision_tower(cfg["embed_dim"], vision_cfg, quick_gelu=True)
