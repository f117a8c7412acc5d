"""Streaming reducers: what the extraction keeps of each batch (docs/protocols.md §D1.2–D1.3).

:class:`StreamingReducer` is a :class:`~vitlib.models.capture.Consumer`.  During the forward
pass it reduces every block's tokens and attention as soon as they exist and drops them, so
nothing of size ``[L, H, N, N]`` outlives a block.  After each batch it offers three kinds of
result, each declared by :class:`ArraySpec` s so the store can lay them out generically:

per image (``[B, ...]``)
    ``feat/<point>_cls`` and ``feat/<point>_spatial_mean`` ``[L, D]`` for each token point;
    ``feat/block_token_norm`` ``[L, h·w]`` (L2 norm of every spatial block output token);
    ``attn/cls_row`` and ``attn/spatial_mean_row`` ``[L, H, h·w]`` (CLS query, and the mean
    spatial query, over spatial keys, not renormalised); ``attn/distance`` ``[L, H]``.
per CKA minibatch (``[C, ...]``, C minibatches of ``cka_batch_size`` images in this batch)
    ``gram/<point>_{cls,spatial,all}`` ``[L, n, n]``: linear Gram matrices of the CLS token,
    the flattened spatial tokens and all tokens flattened.
per dataset (sums, accumulated over batches)
    ``sums/attn_map_{all,spatial,spatial_pure,cls}`` ``[L, H, N]`` (docs/protocols.md §2.2),
    ``sums/attn_aligned`` ``[L, H, 2h−1, 2w−1]`` (§2.3, renormalised rows),
    ``sums/null_rows`` ``[L, H]`` (spatial rows with no spatial mass), ``sums/n_images``.

Adding a capture point: list it in ``token_points``; its per-image features and Grams
follow automatically.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from vitlib import keys
from vitlib.attention.core import aligned_sum, distance_template
from vitlib.store import ArraySpec

log = logging.getLogger(__name__)


def attention_entropy(attn_bhnn: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """Shannon entropy (nats) of attention rows over all keys: ``[B, H, 2]`` with the CLS
    query's entropy and the mean over spatial queries of theirs (the mean spatial query's
    without a class token); ``0 · log 0 = 0``."""
    a = attn_bhnn.float()
    ent = -torch.special.xlogy(a, a).sum(-1)  # [B, H, N]
    P = num_prefix_tokens
    spatial = ent[:, :, P:].mean(-1)
    cls = ent[:, :, 0] if P else spatial
    return torch.stack([cls, spatial], -1)


class RowBlock(NamedTuple):
    """What :func:`reduce_row_block` returns for a block of ``n`` (image, head) rows.

    Per row: ``entropy`` ``[n, 2]`` (CLS query, mean over spatial queries), ``col_spatial``
    ``[n, N]`` (the spatial query rows summed), ``cls_row`` ``[n, N]`` (the mean spatial row
    without a class token), ``distance`` ``[n]``.  Per head (``[H, ...]``, summed over the
    block's images): ``col_all`` ``[N]``
    (every query row summed), ``col_pure`` ``[N]`` (spatial rows renormalised over the
    spatial keys and any register keys, summed), ``aligned`` ``[S, S]`` (renormalised
    spatial rows summed) and ``null_rows`` (spatial rows without spatial mass).  Tensors
    that the flags did not ask for are empty."""

    entropy: torch.Tensor
    col_spatial: torch.Tensor
    cls_row: torch.Tensor
    distance: torch.Tensor
    col_all: torch.Tensor
    col_pure: torch.Tensor
    aligned: torch.Tensor
    null_rows: torch.Tensor


def reduce_row_block(
    x: torch.Tensor,
    s: torch.Tensor | None,
    d_tmpl: torch.Tensor,
    *,
    P: int,
    H: int,
    attention: bool,
    entropy: bool,
    acc: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Every reduction of one block of attention rows ``x`` ``[n, N, N]`` (n = images × H
    heads, image-major: the rows of ``H`` heads of some images) in fp32 whatever ``x``'s
    dtype; ``s``: the scores the softmax turned into ``x`` (or None); ``d_tmpl``: the spatial
    distance template ``[S, S]``; ``acc``: a running sum ``[H, S, S]`` the block's
    ``aligned`` is added to (the sum then stays in the cache from block to block instead of a
    block-sized result being written and added).  Returns the fields of
    :class:`RowBlock` (docs/protocols.md §2.2, §2.3, §2.5).  A pure function of tensors:
    ``torch.compile`` fuses it into a few passes.

    The entropy ``−Σ p log p`` from the scores needs no logarithm per entry: with ``m`` the
    row's largest score and ``p_max`` its probability, ``log p = s − m + log p_max``, so
    ``Σ p log p = Σ p (s − m) + log p_max · Σ p``.  Without scores, ``log`` of the clamped
    value (``0 · log 0 = 0``)."""
    x = x.float()
    N = x.shape[-1]
    S = N - P
    xs = x[:, P:, P:]
    mass = xs.sum(-1)  # [n, S]: the spatial rows' spatial mass
    none = x.new_zeros(0)
    ent = none
    if entropy:
        if s is None:
            plogp = (x.clamp_min(1e-30).log() * x).sum(-1)
        else:
            sf = s.float()
            spread = ((sf - sf.amax(-1, keepdim=True)) * x).sum(-1)  # Σ p (s − m) ≤ 0
            plogp = spread + x.amax(-1).log() * x.sum(-1)
        sp = -plogp[:, P:].mean(-1)
        ent = torch.stack([-plogp[:, 0] if P else sp, sp], -1)
    if not attention:
        return ent, none, none, none, none, none, none, none
    # the mass without the CLS key ("spcpure") is the spatial mass unless registers add keys
    mass_pure = mass + x[:, P:, 1:P].sum(-1) if P > 1 else mass
    inv = torch.where(mass > 0, 1.0 / mass.clamp_min(1e-30), 0.0)
    inv_pure = inv if P <= 1 else torch.where(mass_pure > 0, 1.0 / mass_pure.clamp_min(1e-30), 0.0)
    # column reductions (over queries): all rows, spatial rows, spatial rows renormalised
    # without the CLS key, the CLS row
    c_all = x.sum(1)  # [n, N]
    c_sp = c_all - x[:, :P].sum(1) if P else c_all
    cls_row = x[:, 0] if P else c_sp / S
    c_pure = (x[:, P:, :] * inv_pure[:, :, None]).sum(1)  # [n, N]
    # renormalised spatial rows Â = xs / mass: the distance per image (§2.5) from the
    # unnormalised rows, their sum over images (§2.3)
    dist = ((xs * d_tmpl).sum(-1) * inv).mean(-1)
    rows = xs * inv[:, :, None]
    nul = (mass <= 0).sum(-1)
    # per head, summed over the block's images
    aligned = rows.reshape(-1, H, S, S).sum(0)
    return (
        ent,
        c_sp,
        cls_row,
        dist,
        c_all.reshape(-1, H, N).sum(0),
        c_pure.reshape(-1, H, N).sum(0),
        aligned if acc is None else acc + aligned,
        nul.reshape(-1, H).sum(0),
    )


@functools.cache
def _compiled_row_block() -> Callable[..., tuple[torch.Tensor, ...]]:
    """:func:`reduce_row_block` under ``torch.compile`` (one per process; a graph per block
    shape and flags)."""
    return torch.compile(reduce_row_block, dynamic=False)


def _identity(x: torch.Tensor) -> tuple[int, ...]:
    """Storage, shape and strides: the same tensor seen by two hooks."""
    return (x.data_ptr(), *x.shape, *x.stride())


def _all(per_layer: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """The per-layer tensors of a batch, every layer present (checked in ``end_batch``)."""
    out = [t for t in per_layer if t is not None]
    assert len(out) == len(per_layer)
    return out


class StreamingReducer:
    """Reduce captured tensors of one batch (see module docstring).

    Parameters
    ----------
    depth, num_heads, embed_dim: network size.
    grid_hw: spatial token grid ``(h, w)``.
    num_prefix_tokens: CLS (+ registers) at the start of the sequence.
    token_points: points with per-image features (``"block"``: the block outputs).
    gram_points: points with per-minibatch Grams; besides captured points
        (:data:`~vitlib.models.capture.CAPTURE_POINTS`) the derived ``attn_branch`` /
        ``mlp_branch`` = next stream − skip (exact for every family, BEiT's γ included).
    residual_norms: per-image norm ratios skip / branch of both sub-blocks (§3.4).
    cka_batch_size: images per CKA minibatch; 0 disables Grams.
    feature_dtype: storage dtype of per-image features and attention rows.
    compile: reduce the attention with :func:`reduce_row_block` under ``torch.compile``
        (a few fused passes over each row block instead of ~17; compiled once per process
        and block shape, in seconds; the eager function where compiling fails).
    """

    def __init__(
        self,
        *,
        depth: int,
        num_heads: int,
        embed_dim: int,
        grid_hw: tuple[int, int],
        num_prefix_tokens: int = 1,
        token_points: tuple[str, ...] = ("block",),
        gram_points: tuple[str, ...] = ("block",),
        residual_norms: bool = False,
        attention: bool = True,
        entropy: bool = False,
        token_norms: bool = True,
        prefix_attention: bool = False,
        rollout: bool = False,
        cka_batch_size: int = 0,
        feature_dtype: str = "float16",
        feature_layers: dict[str, list[int]] | None = None,
        compile: bool = False,
    ) -> None:
        self.L, self.H, self.D = depth, num_heads, embed_dim
        self.grid_hw = (int(grid_hw[0]), int(grid_hw[1]))
        self.P = num_prefix_tokens
        self.S = self.grid_hw[0] * self.grid_hw[1]
        self.N = self.P + self.S
        self.points = token_points
        self.gram_points = gram_points if cka_batch_size else ()
        self.residual_norms = residual_norms
        self.attention = attention
        self.entropy = entropy
        self.token_norms = token_norms and "block" in token_points
        self.prefix_attention = prefix_attention and num_prefix_tokens > 0
        self.rollout = rollout
        self.cka_b = cka_batch_size
        self.feature_dtype = feature_dtype
        #: feature kind → 0-based blocks kept (default: both kinds, every block)
        self.feature_layers = (
            {k: list(range(depth)) for k in keys.FEATURE_KINDS}
            if feature_layers is None
            else {k: [int(b) for b in v] for k, v in feature_layers.items()}
        )
        self._feature_pos = {
            k: {b: i for i, b in enumerate(v)} for k, v in self.feature_layers.items()
        }
        self.per_image: dict[str, torch.Tensor] = {}
        self.per_chunk: dict[str, torch.Tensor] = {}
        self.sums = {s.name: np.zeros(s.shape, dtype=s.dtype) for s in self.sum_specs()}
        self._batch = 0
        #: reduce attention row blocks with the compiled :func:`reduce_row_block`
        self.compile = compile
        self._compiled: Callable[..., tuple[torch.Tensor, ...]] | None = None
        self._branch_buf: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ declarations
    def image_specs(self) -> list[ArraySpec]:
        L, H, D, S, fd = self.L, self.H, self.D, self.S, self.feature_dtype
        specs = []
        for p in self.points:
            specs += [
                ArraySpec(keys.feature(p, kind), (len(blocks), D), fd)
                for kind, blocks in self.feature_layers.items()
            ]
        if self.token_norms:  # artifact tokens (high-norm outliers) need every norm
            specs.append(ArraySpec(keys.TOKEN_NORM, (L, S), fd))
        if self.residual_norms:
            specs += [
                ArraySpec(keys.norm_ratio(sub, kind), (L,), "float32")
                for sub in ("attn", "mlp")
                for kind in ("all", "cls", "spatial")
            ]
        if self.attention:
            specs += [
                ArraySpec(keys.ATTN_CLS_ROW, (L, H, S), fd),
                ArraySpec(keys.ATTN_SPATIAL_MEAN_ROW, (L, H, S), fd),
                ArraySpec(keys.ATTN_DISTANCE, (L, H), "float32"),
            ]
        if self.entropy:
            specs.append(ArraySpec(keys.ATTN_ENTROPY, (L, H, len(keys.ENTROPY_QUERIES)), "float32"))
        if self.prefix_attention:
            specs.append(ArraySpec(keys.ATTN_PREFIX_MASS, (L, H, 2, self.P), "float32"))
        if self.rollout:
            specs += [
                ArraySpec(keys.ATTN_ROLLOUT_CLS, (L, 1, S), fd),
                ArraySpec(keys.ATTN_ROLLOUT_SPATIAL, (L, 1, S), fd),
            ]
        return specs

    @property
    def needs_attention(self) -> bool:
        """Whether the capture must deliver attention probabilities."""
        return self.attention or self.entropy or self.prefix_attention or self.rollout

    def chunk_specs(self) -> list[ArraySpec]:
        if not self.cka_b:
            return []
        b = self.cka_b
        return [
            ArraySpec(keys.gram(p, kind), (self.L, b, b), "float32")
            for p in self.gram_points
            for kind in keys.GRAM_KINDS
        ]

    def capture_points(self) -> tuple[str, ...]:
        """The capture points the :class:`~vitlib.models.capture.Capture` must deliver."""
        need = set(self.points) | set(self.gram_points)
        if need & {"attn_branch", "mlp_branch"} or self.residual_norms:
            need |= {"attn_skip", "mlp_skip", "block"}
        return tuple(p for p in ("block", "norm1", "norm2", "attn_skip", "mlp_skip") if p in need)

    def sum_specs(self) -> list[ArraySpec]:
        if not self.attention:
            return [ArraySpec(keys.SUM_N_IMAGES, (), "int64")]
        L, H, N = self.L, self.H, self.N
        h, w = self.grid_hw
        return [ArraySpec(keys.map_sum(m), (L, H, N), "float64") for m in keys.MAP_MODES] + [
            ArraySpec(keys.SUM_ALIGNED, (L, H, 2 * h - 1, 2 * w - 1), "float64"),
            ArraySpec(keys.SUM_NULL_ROWS, (L, H), "int64"),
            ArraySpec(keys.SUM_N_IMAGES, (), "int64"),
        ]

    # ------------------------------------------------------------------ consumer API
    def begin_batch(self, batch_size: int) -> None:
        self._batch = batch_size
        self._skip: torch.Tensor | None = None
        self._last_block: tuple[int, tuple[int, ...]] | None = None
        self._sq: dict[str, tuple[torch.Tensor, ...]] = {}
        self._roll: torch.Tensor | None = None  # the rollout product so far [B, N, N]
        self._roll_layer = 0
        self._chunks = batch_size // self.cka_b if self.cka_b else 0
        self._layer_sums: dict[str, list[torch.Tensor | None]] = {
            s.name: [None] * self.L for s in self.sum_specs() if s.shape
        }
        self._img: dict[str, list[torch.Tensor | None]] = {
            s.name: [None] * s.shape[0] for s in self.image_specs()
        }
        self._chk: dict[str, list[torch.Tensor | None]] = {
            s.name: [None] * self.L for s in self.chunk_specs()
        }

    def on_tokens(self, point: str, layer: int, x_bnd: torch.Tensor) -> None:
        x = x_bnd.float()
        if point in self.points:
            spatial = x[:, self.P :]
            # A model without a class token (SigLIP) is represented by its mean spatial token.
            pos = self._feature_pos
            if layer in pos.get("cls", {}):
                cls = x[:, 0] if self.P else spatial.mean(1)
                self._img[keys.feature(point, "cls")][pos["cls"][layer]] = cls
            if layer in pos.get("spatial_mean", {}):
                self._img[keys.feature(point, "spatial_mean")][pos["spatial_mean"][layer]] = (
                    spatial.mean(1)
                )
            if point == "block" and self.token_norms:
                self._img[keys.TOKEN_NORM][layer] = spatial.norm(dim=-1)
        # A block's input is the previous block's output (the same tensor in a sequential
        # stack): its Grams and norms are those already computed, not a second pass.
        same = (
            point == "attn_skip"
            and layer > 0
            and self._last_block is not None
            and self._last_block[0] == layer - 1
            and self._last_block[1] == _identity(x)
        )
        if same and self._chunks and {"block", "attn_skip"} <= set(self.gram_points):
            for kind in keys.GRAM_KINDS:
                self._chk[keys.gram("attn_skip", kind)][layer] = self._chk[
                    keys.gram("block", kind)
                ][layer - 1]
            self._sq["attn_skip"] = self._sq["block"]
        else:
            self._grams(point, layer, x)
        if point == "block":
            self._last_block = (layer, _identity(x))
        # Residual branches, derived exactly: the stream after a sub-block minus its skip.
        if point == "attn_skip":
            self._skip = x
        elif point == "mlp_skip" and self._skip is not None:
            self._branch("attn", layer, self._skip, x)
            self._skip = x
        elif point == "block" and self._skip is not None:
            self._branch("mlp", layer, self._skip, x)
            self._skip = None

    def _branch(self, sub: str, layer: int, skip: torch.Tensor, after: torch.Tensor) -> None:
        buf = self._branch_buf.get(sub)
        if buf is None or buf.shape != after.shape or buf.device != after.device:
            buf = self._branch_buf[sub] = torch.empty_like(after)
        branch = torch.sub(after, skip, out=buf)  # reused: no page faults
        self._grams(f"{sub}_branch", layer, branch)
        if self.residual_norms:
            s_sq = self._squared_norms(f"{sub}_skip", skip)
            b_sq = self._squared_norms(f"{sub}_branch", branch)
            for i, kind in enumerate(("all", "cls", "spatial")):
                ratio = s_sq[i].sqrt() / b_sq[i].sqrt().clamp_min(1e-30)
                self._img[keys.norm_ratio(sub, kind)][layer] = ratio

    def _squared_norms(self, point: str, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per image ``‖all‖², ‖cls‖², ‖spatial‖²`` of ``x`` ``[B, N, D]`` ("cls": the prefix
        tokens, the first token without any): the images of whole CKA minibatches from the
        diagonals of their Grams (computed anyway), the rest directly; all = cls + spatial."""
        P = self.P
        B = x.shape[0]
        cls_sq = x[:, : max(P, 1)].flatten(1).square().sum(1)
        got = self._sq.get(point)
        n = got[0].shape[0] if got is not None else 0
        if n == B and got is not None:
            sp_sq = got[0]
        else:
            sp_sq = x[:, P:].flatten(1).square().sum(1)
            if got is not None:  # the minibatched images from their Grams, the rest here
                sp_sq[:n] = got[0]
        all_sq = sp_sq + cls_sq if P else sp_sq
        return all_sq, cls_sq, sp_sq

    def _grams(self, point: str, layer: int, x: torch.Tensor) -> None:
        if not self._chunks or point not in self.gram_points:
            self._sq.pop(point, None)
            return
        n, B, P = self._chunks * self.cka_b, self.cka_b, self.P

        def gram(t: torch.Tensor) -> torch.Tensor:
            flat = t.reshape(self._chunks, B, -1)  # a view: tokens × channels are contiguous
            return torch.bmm(flat, flat.transpose(1, 2))

        spatial = x[:n, P:]
        g_sp = gram(spatial)
        g_cls = gram(x[:n, 0] if P else spatial.mean(1))
        # all tokens = spatial + prefix tokens (X Xᵀ adds over tokens): one read of the
        # spatial tokens, not two
        g_pre = g_cls if P == 1 else gram(x[:n, :P]) if P else None
        chk = self._chk
        chk[keys.gram(point, "cls")][layer] = g_cls
        chk[keys.gram(point, "spatial")][layer] = g_sp
        chk[keys.gram(point, "all")][layer] = g_sp if g_pre is None else g_sp + g_pre
        # ‖spatial tokens‖² of each minibatched image: the Gram's diagonal
        self._sq[point] = (g_sp.diagonal(dim1=1, dim2=2).reshape(n),)

    def _rollout(self, layer: int, fused: torch.Tensor) -> None:
        """The attention rollout of one block (§D8) from its head-mean probabilities
        ``fused`` ``[B, N, N]`` (float32; modified in place)."""
        P = self.P
        if layer != self._roll_layer:
            raise RuntimeError(f"rollout: block {layer} arrived, expected {self._roll_layer}")
        # Abnar & Zuidema (2020): heads fused by their mean, the residual as 0.5·I, rows
        # renormalised, multiplied from the first block on: R_l = Â_l R_(l-1)
        fused.mul_(0.5).diagonal(dim1=-2, dim2=-1).add_(0.5)
        fused.div_(fused.sum(-1, keepdim=True))
        self._roll = fused if self._roll is None else torch.bmm(fused, self._roll)
        self._roll_layer += 1
        r = self._roll[:, :, P:]  # over spatial keys
        sp = r[:, P:].mean(1)
        self._img[keys.ATTN_ROLLOUT_CLS][layer] = (r[:, 0] if P else sp)[:, None]
        self._img[keys.ATTN_ROLLOUT_SPATIAL][layer] = sp[:, None]

    #: the capture passes the softmax input (pre-softmax scores) along with the probabilities
    #: (:class:`~vitlib.models.capture.Capture` ``logits=True``): the entropy then needs no
    #: logarithm over the N² probabilities (see :meth:`on_attention`)
    @property
    def wants_logits(self) -> bool:
        return self.entropy

    def on_attention(
        self, layer: int, attn_bhnn: torch.Tensor, logits: torch.Tensor | None = None
    ) -> None:
        """Reduce one block's attention probabilities ``[B, H, N, N]``; ``logits``, when
        given, are the scores the softmax turned into them (same shape).  The same reductions
        as the streamed route (:class:`~vitlib.models.capture.Capture` computes the blocks of
        :meth:`attention_blocks` inside the attention module and never the whole tensor),
        over row blocks of the whole tensor."""
        if not self.needs_attention:
            return
        a = attn_bhnn
        B = a.shape[0]
        self.begin_attention(layer, B, a.device)
        for b0, b1, h0, h1 in self.attention_blocks(B, a.device):
            s = logits[b0:b1, h0:h1] if logits is not None else None
            self.attention_block(b0, b1, h0, h1, a[b0:b1, h0:h1], s)
        self.end_attention()

    def attention_blocks(self, batch: int, device: torch.device) -> list[tuple[int, int, int, int]]:
        """The blocks ``(b0, b1, h0, h1)`` (images ``b0:b1``, heads ``h0:h1``) in which one
        block's attention is reduced, in order (:meth:`_chunk_rows`): blocks of whole images,
        or head-major blocks of heads of one image (every image's heads h0…h1−1, then the
        next heads), so that those heads' running aligned sum stays in the cache."""
        H = self.H
        g = self._chunk_rows(batch * H, H, self.N, device)
        if g % H == 0:
            n = g // H
            return [(b0, min(b0 + n, batch), 0, H) for b0 in range(0, batch, n)]
        return [(b, b + 1, h0, h0 + g) for h0 in range(0, H, g) for b in range(batch)]

    def begin_attention(self, layer: int, batch: int, device: torch.device) -> None:
        """Start reducing block ``layer``'s attention of ``batch`` images."""
        B, H, N, S = batch, self.H, self.N, self.S
        z = functools.partial(torch.zeros, device=device)
        self._att: dict[str, Any] = {
            "layer": layer,
            "ent": z(B, H, 2) if self.entropy else None,
            "prefix": z(B, H, 2, self.P) if self.prefix_attention else None,
            "fused": z(B, N, N) if self.rollout else None,  # the head sum (rollout)
            "acc": None,  # the running aligned sum of the heads being reduced
            "acc_heads": None,
        }
        if self.attention:  # the per-image rows and the dataset sums
            self._att |= {
                "cls_rows": z(B, H, N),
                "col_sp": z(B, H, N),
                "dist": z(B, H),
                "col_all": z(H, N),
                "pure": z(H, N),
                "null": z(H, dtype=torch.long),
                "aligned": z(H, S, S),
            }
        if self.attention or self.entropy:
            self._att["d_tmpl"] = distance_template(self.grid_hw, device)

    def _flush_aligned(self) -> None:
        st = self._att
        if st["acc_heads"] is not None:
            h0, h1 = st["acc_heads"]
            st["aligned"][h0:h1] = st["acc"]
        st["acc"] = st["acc_heads"] = None

    def attention_block(
        self,
        b0: int,
        b1: int,
        h0: int,
        h1: int,
        p: torch.Tensor,
        s: torch.Tensor | None = None,
    ) -> None:
        """Reduce the probabilities ``p`` ``[b1 − b0, h1 − h0, N, N]`` of images ``b0:b1``,
        heads ``h0:h1`` (``s``: their scores, or None) while they sit in the cache: every
        reduction of :func:`reduce_row_block` (docs/protocols.md §D1.2), fp32 arithmetic
        whatever the forward's dtype, compiled when :attr:`compile` asks for it."""
        st = self._att
        nb, nh, N = p.shape[0], p.shape[1], p.shape[-1]
        P = self.P
        if st["prefix"] is not None:
            st["prefix"][b0:b1, h0:h1, 0] = p[:, :, 0, :P]
            st["prefix"][b0:b1, h0:h1, 1] = p[:, :, P:, :P].float().mean(2)
        if st["fused"] is not None:
            st["fused"][b0:b1] += p.sum(1, dtype=torch.float32)
        if not (self.attention or self.entropy):
            return
        if self.attention and st["acc_heads"] != (h0, h1):
            self._flush_aligned()
            st["acc"], st["acc_heads"] = st["aligned"][h0:h1], (h0, h1)
        out = self._row_block(
            p.reshape(nb * nh, N, N),
            s.reshape(nb * nh, N, N) if s is not None and self.entropy else None,
            st["d_tmpl"],
            P=P,
            H=nh,
            attention=self.attention,
            entropy=self.entropy,
            acc=st["acc"],
        )
        if st["ent"] is not None:
            st["ent"][b0:b1, h0:h1] = out.entropy.reshape(nb, nh, 2)
        if not self.attention:
            return
        st["col_sp"][b0:b1, h0:h1] = out.col_spatial.reshape(nb, nh, N)
        st["cls_rows"][b0:b1, h0:h1] = out.cls_row.reshape(nb, nh, N)
        st["dist"][b0:b1, h0:h1] = out.distance.reshape(nb, nh)
        st["col_all"][h0:h1] += out.col_all
        st["pure"][h0:h1] += out.col_pure
        st["null"][h0:h1] += out.null_rows
        st["acc"] = out.aligned

    def end_attention(self) -> None:
        """Finish the block begun by :meth:`begin_attention`: its per-image rows and dataset
        sums."""
        if self.attention:
            self._flush_aligned()
        st = self._att
        del self._att
        layer = st["layer"]
        P, S = self.P, self.S
        if st["prefix"] is not None:
            self._img[keys.ATTN_PREFIX_MASS][layer] = st["prefix"]
        if st["ent"] is not None:
            self._img[keys.ATTN_ENTROPY][layer] = st["ent"]
        if st["fused"] is not None:
            self._rollout(layer, st["fused"].div_(self.H))
        if not self.attention:
            return
        cls_q, col_sp = st["cls_rows"], st["col_sp"]
        self._img[keys.ATTN_SPATIAL_MEAN_ROW][layer] = col_sp[:, :, P:] / S
        self._img[keys.ATTN_CLS_ROW][layer] = cls_q[:, :, P:]
        self._img[keys.ATTN_DISTANCE][layer] = st["dist"]  # docs/protocols.md §2.5
        # dataset sums (docs/protocols.md §2.2): all query rows, spatial query rows, spatial rows
        # renormalised without the CLS key ("spcpure"), the CLS row — over all keys.
        ls = self._layer_sums
        ls[keys.map_sum("all")][layer] = st["col_all"] / self.N
        ls[keys.map_sum("spatial")][layer] = col_sp.sum(0) / S
        pure = st["pure"] / S
        if P:
            pure[:, 0] = 0
        ls[keys.map_sum("spatial_pure")][layer] = pure
        ls[keys.map_sum("cls")][layer] = cls_q.sum(0)
        ls[keys.SUM_ALIGNED][layer] = aligned_sum(st["aligned"], self.grid_hw)  # §2.3
        ls[keys.SUM_NULL_ROWS][layer] = st["null"]

    def _row_block(self, *args: Any, **kw: Any) -> RowBlock:
        """:func:`reduce_row_block`, compiled when :attr:`compile` asks for it; a compiler
        that fails (no C++ compiler, an unsupported backend) leaves the eager function, with
        one warning, for the rest of the run."""
        if self.compile and self._compiled is None:
            self._compiled = _compiled_row_block()
        fn = self._compiled if self.compile and self._compiled else reduce_row_block
        try:
            return RowBlock(*fn(*args, **kw))
        except Exception as e:  # noqa: BLE001 - any compiler failure: the eager function
            if fn is reduce_row_block:
                raise
            log.warning("compiled attention reductions failed (%s); reducing eagerly", e)
            self.compile = False
            return RowBlock(*reduce_row_block(*args, **kw))

    #: bytes of one fp32 row block the CPU reduces at a time (fits the cache with its scratch)
    CHUNK_BYTES = 2 << 20
    #: when one image's rows exceed CHUNK_BYTES (N = 785: 30 MB): blocks of a few heads
    #: (N = 785: one head, 2.5 MB)
    HEAD_BLOCK_BYTES = 3 << 20
    #: on a GPU: row blocks of at most this many fp32 bytes: the eager reductions write about
    #: six temporaries of the block's size (≤ 1.5 GiB in all; the compiled ones none); one
    #: block per ViT-B/16 batch of 64 (119 MB), eight per ViT-B/8 one (1.9 GB)
    GPU_BLOCK_BYTES = 256 << 20

    @staticmethod
    def _chunk_rows(rows: int, heads: int, n: int, device: torch.device) -> int:
        """(image, head) rows per block on a CPU: whole images, as many as fit
        ``CHUNK_BYTES``; when one image does not, the most heads of one image (a divisor
        of the head count, at least one) that fit ``HEAD_BLOCK_BYTES``, reduced head-major
        with their running aligned sum carried in the cache (measured on 2 cores at N = 785,
        with the entropy from the scores, per ViT-B/8 layer of 8 images: 84 ms eager and
        49 ms compiled in blocks of one head, 95 and 58 ms in blocks of two).  On a GPU whole
        images up to ``GPU_BLOCK_BYTES``."""
        per_head = 4 * n * n
        per_image = per_head * heads
        if device.type != "cpu":
            return min(rows, heads * max(1, StreamingReducer.GPU_BLOCK_BYTES // per_image))
        if per_image <= StreamingReducer.CHUNK_BYTES:
            return min(rows, heads * (StreamingReducer.CHUNK_BYTES // per_image))
        fit = [g for g in range(1, heads + 1) if heads % g == 0]
        return max([1] + [g for g in fit if g * per_head <= StreamingReducer.HEAD_BLOCK_BYTES])

    def end_batch(self) -> None:
        missing = [k for k, v in self._img.items() if any(t is None for t in v)]
        if missing:
            raise RuntimeError(f"capture did not deliver every block for {missing}")
        self.per_image = {k: torch.stack(_all(v), 1).cpu() for k, v in self._img.items()}
        self.per_chunk = {
            k: torch.stack(_all(v), 1).cpu() for k, v in self._chk.items() if self._chunks
        }
        self._batch_sums = {
            k: torch.stack(_all(v), 0).cpu().numpy() for k, v in self._layer_sums.items()
        }

    # ------------------------------------------------------------------ accumulation
    def accumulate(self) -> None:
        """Add the last batch's dataset sums to :attr:`sums` (call once per batch)."""
        for k, v in self._batch_sums.items():
            self.sums[k] += v.astype(self.sums[k].dtype)
        self.sums[keys.SUM_N_IMAGES] += self._batch

    def batch_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The last batch's per-image and per-chunk arrays, in their storage dtypes."""
        dt = {s.name: s.dtype for s in self.image_specs() + self.chunk_specs()}
        img = {k: v.numpy().astype(dt[k]) for k, v in self.per_image.items()}
        chk = {k: v.numpy().astype(dt[k]) for k, v in self.per_chunk.items()}
        return img, chk


class TokenReducer:
    """The consumer of token views: keeps the block output of every layer, its spatial
    tokens (``[B, L, N_spatial, D]``) and its CLS token (the mean spatial token without one)."""

    def __init__(self, depth: int, num_prefix_tokens: int, dtype: torch.dtype) -> None:
        self.depth, self.P, self.dtype = depth, num_prefix_tokens, dtype
        self.spatial: list[torch.Tensor | None] = []
        self.cls: list[torch.Tensor | None] = []

    def begin_batch(self, batch_size: int) -> None:
        self.spatial = [None] * self.depth
        self.cls = [None] * self.depth

    def on_tokens(self, point: str, layer: int, x_bnd: torch.Tensor) -> None:
        self.spatial[layer] = x_bnd[:, self.P :].to("cpu", self.dtype)
        self.cls[layer] = (x_bnd[:, 0] if self.P else x_bnd.mean(1)).to("cpu", self.dtype)

    def on_attention(self, layer: int, attn_bhnn: torch.Tensor) -> None:  # pragma: no cover
        pass

    def end_batch(self) -> None:
        missing = [i for i, t in enumerate(self.spatial) if t is None]
        if missing:
            raise RuntimeError(f"capture did not deliver blocks {missing}")

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L, N_spatial, D]`` and ``[B, L, D]``."""
        spatial = [t for t in self.spatial if t is not None]
        cls = [t for t in self.cls if t is not None]
        return torch.stack(spatial, 1), torch.stack(cls, 1)
