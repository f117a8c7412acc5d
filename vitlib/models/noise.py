"""The paper's random-chance baseline: a "network" whose every block output is noise.

The paper's Random rows (Tables 1 and 5) and chance lines (Figures 9–10, 28–31) come from
running each task on "arrays of [uniform] noise with the exact same dimensions as the
extracted feature arrays of a ViT B/16 model" (paper Appendix B.3; the original
``wrapper_random.py``, docs/protocols.md §1.6), and the plots treat the blocks as independent
random trials.  :class:`NoiseViT` makes that baseline an ordinary model of the zoo (family
``noise``): it has the token grid, depth, width and heads of the architecture it is built
from, goes through the same extraction, k-NN bank, in-pass DAVIS propagation and SPair
transfer as every other model, and so yields a noise row for *every* task from the same
code paths — no per-task special case.

The noise is a function of (seed, image, block, stream) only: each image's stream is seeded
from an exact integer checksum of its pixels (:func:`image_keys`), so a resumed or
re-batched extraction, a CPU and a GPU run, and the k-NN bank's second pass over the same
image all draw the same numbers (on the device of the pass: a CUDA run draws from CUDA's
generator, other numbers of the same distribution).  Uniform U[0, 1) as the original (``torch.rand``); the
attention "probabilities" are uniform noise normalised over the keys (``attention="keys"``:
a proper attention row) or, as the original, divided by their mean over the *query* axis
(``"queries"``, docs/protocols.md §8.1.3; a model's ``arch_kwargs: {noise_attention:
queries}``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

NoiseKind = Literal["uniform", "gaussian"]

#: Streams of one (image, block): the block output, the LayerNorm outputs, the branch
#: outputs and the attention probabilities are independent draws.
_STREAMS = {"block": 0, "norm1": 1, "norm2": 2, "ls1": 3, "ls2": 4, "attn": 5}
_MASK = (1 << 62) - 1


def image_keys(images: torch.Tensor) -> list[int]:
    """An exact integer checksum of every image of ``images`` ``[B, C, H, W]``: pixels
    quantised to 1/256, weighted by a fixed integer pattern of their position and summed in
    int64 (exact, so the same on every device and batch layout)."""
    b = images.shape[0]
    q = torch.round(images.detach().float() * 256).to(torch.int64).reshape(b, -1)
    pos = torch.arange(q.shape[1], device=q.device, dtype=torch.int64)
    w = (pos * 2654435761 + 97) % 2147483629 + 1
    keys = (q * w).sum(dim=1) + q.shape[1]
    return [int(k) & _MASK for k in keys.cpu()]


def _seed(*parts: int) -> int:
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & _MASK)) * 1099511628211) & _MASK
    return h


class _Hooked(nn.Identity):
    """An identity sub-module: capture hooks attach to it, :class:`NoiseBlock` calls it with
    noise only when something listens."""


def _listened(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


class NoiseAttention(nn.Module):
    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = _Hooked()


class NoiseBlock(nn.Module):
    """One "block": returns fresh noise of the input's shape; the sub-modules a capture can
    hook (``norm1``, ``norm2``, ``ls1``, ``ls2``, ``attn.attn_drop``) see their own noise."""

    def __init__(self, owner: NoiseViT, layer: int, num_heads: int) -> None:
        super().__init__()
        self._owner = [owner]  # not a sub-module
        self.layer = layer
        self.norm1 = _Hooked()
        self.norm2 = _Hooked()
        self.ls1 = _Hooked()
        self.ls2 = _Hooked()
        self.attn = NoiseAttention(num_heads)

    def _noise(self, stream: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        owner = self._owner[0]
        out = torch.empty((like.shape[0], *shape), dtype=torch.float32, device=like.device)
        for i, key in enumerate(owner.keys):
            g = torch.Generator(device=like.device).manual_seed(
                _seed(owner.seed, key, self.layer, _STREAMS[stream])
            )
            if owner.kind == "uniform":
                torch.rand(shape, generator=g, out=out[i])
            else:
                torch.randn(shape, generator=g, out=out[i])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape[1:])
        if _listened(self.norm2):  # its input is the mid-block stream (mlp_skip)
            self.norm2(self._noise("norm2", shape, x))
        for name in ("norm1", "ls1", "ls2"):
            m = getattr(self, name)
            if _listened(m):
                m(self._noise(name, shape, x))
        if _listened(self.attn.attn_drop):
            n = x.shape[1]
            a = self._noise("attn", (self.attn.num_heads, n, n), x)
            if self._owner[0].attention == "keys":
                self.attn.attn_drop(a / a.sum(dim=-1, keepdim=True))
            else:  # the original wrapper_random: divided by the mean over the query axis
                self.attn.attn_drop(a / a.mean(dim=-2, keepdim=True))
        return self._noise("block", shape, x)


class NoiseViT(nn.Module):
    """Noise with the geometry of ``net`` (a timm ViT): ``forward_features(images)`` runs the
    patch grid of ``net`` through ``len(net.blocks)`` :class:`NoiseBlock` s."""

    def __init__(
        self,
        net: nn.Module,
        *,
        seed: int,
        kind: NoiseKind = "uniform",
        attention: Literal["keys", "queries"] = "keys",
    ) -> None:
        super().__init__()
        if kind not in ("uniform", "gaussian"):
            raise ValueError(f"noise kind must be uniform or gaussian, not {kind!r}")
        if attention not in ("keys", "queries"):
            raise ValueError(f"noise_attention must be 'keys' or 'queries', not {attention!r}")
        self.attention = attention
        blocks = list(net.blocks)  # type: ignore[arg-type]
        self.patch_embed = net.patch_embed
        self.embed_dim = int(net.embed_dim)  # type: ignore[arg-type]
        self.num_prefix_tokens = int(getattr(net, "num_prefix_tokens", 1))
        self.seed = int(seed)
        self.kind: NoiseKind = kind
        self.keys: list[int] = []
        self.blocks = nn.ModuleList(
            NoiseBlock(self, i, int(b.attn.num_heads)) for i, b in enumerate(blocks)
        )

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        p: Any = getattr(self.patch_embed, "patch_size", 16)
        ph, pw = (p, p) if isinstance(p, int) else (int(p[0]), int(p[1]))
        n = self.num_prefix_tokens + (images.shape[-2] // ph) * (images.shape[-1] // pw)
        self.keys = image_keys(images)
        x = images.new_zeros((images.shape[0], n, self.embed_dim))
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)
