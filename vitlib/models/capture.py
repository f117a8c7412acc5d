"""One-pass capture of block outputs and attention probabilities from a timm-style ViT.

A :class:`Capture` wraps a model whose transformer blocks live in ``model.blocks`` and whose
attention modules compute ``softmax(q kᵀ · scale [+ bias])`` followed by ``attn_drop``
(timm ``VisionTransformer``, ``Beit``, ``Eva`` and the families loaded through them).  One
call runs ONE forward pass and hands, block by block and while the pass is running,

* the tokens of every requested *capture point* (``[B, N, D]``, prefix tokens first), and
* the post-softmax attention probabilities of every block (``[B, H, N, N]``), and, when
  asked (``logits=True``), the scores the softmax turned into them

to a :class:`Consumer`.  Consumers reduce what they receive immediately (see
:mod:`vitlib.reducers`), so no ``[L, H, N, N]`` tensor outlives its block; the
:class:`CollectConsumer` keeps everything and exists for tests and small interactive use.

Capture points are declared in :data:`CAPTURE_POINTS`: a name, the sub-module of a block
to hook and whether its input or its output is the tensor.  Adding one is one line there.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

Dtype = Literal["fp32", "bf16", "fp16"]
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class CapturePoint:
    """Where a capture point's tensor comes from inside one block.

    ``module`` lists dotted paths relative to the block ("" is the block itself), the first
    that exists is used (timm names first, then open_clip's ``ln_1``/``ls_1`` ...); ``side``
    says whether the module's input (first positional argument) or output is taken.
    """

    module: tuple[str, ...]
    side: Literal["input", "output"]


#: Named capture points (docs/protocols.md §1.5).  ``block``: the residual stream after the block
#: (before any final norm).  ``norm1``/``norm2``: the two LayerNorm outputs (the CKA grids
#: of §3.2).  ``attn_skip``/``attn_branch``/``mlp_skip``/``mlp_branch``: skip path and
#: branch output (after layer scale) of each sub-block (the residual analysis of §3.4).
CAPTURE_POINTS: dict[str, CapturePoint] = {
    "block": CapturePoint(("",), "output"),
    "norm1": CapturePoint(("norm1", "ln_1"), "output"),
    "norm2": CapturePoint(("norm2", "ln_2"), "output"),
    "attn_skip": CapturePoint(("",), "input"),
    "attn_branch": CapturePoint(("ls1", "ls_1"), "output"),
    "mlp_skip": CapturePoint(("norm2", "ln_2"), "input"),
    "mlp_branch": CapturePoint(("ls2", "ls_2"), "output"),
}


class Consumer(Protocol):
    """Receives captured tensors during the forward pass (see :class:`Capture`)."""

    def begin_batch(self, batch_size: int) -> None: ...

    def on_tokens(self, point: str, layer: int, x_bnd: torch.Tensor) -> None: ...

    def on_attention(self, layer: int, attn_bhnn: torch.Tensor) -> None: ...

    def end_batch(self) -> None: ...


@runtime_checkable
class _HasForwardFeatures(Protocol):
    def forward_features(self, x: torch.Tensor) -> object: ...


@runtime_checkable
class _SwitchableAttention(Protocol):
    """An attention module with a fused (SDPA) path that can be switched off (timm's)."""

    fused_attn: bool


def _forward_features(model: nn.Module, images: torch.Tensor) -> object:
    """The default ``run``: ``model.forward_features(images)``."""
    if not isinstance(model, _HasForwardFeatures):
        raise TypeError(f"{type(model).__name__} has no forward_features: pass run=")
    return model.forward_features(images)


class CollectConsumer:
    """Keeps every captured tensor: ``tokens[point]`` is ``[L, B, N, D]``, ``attention``
    is ``[L, B, H, N, N]`` and ``logits`` (when the capture delivers them for every block) the
    same shape
    (float32).  Memory grows with everything; use for tests."""

    def __init__(self) -> None:
        self.tokens: dict[str, torch.Tensor] = {}
        self.attention: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self._tok: dict[str, dict[int, torch.Tensor]] = {}
        self._att: dict[int, torch.Tensor] = {}
        self._logits: dict[int, torch.Tensor] = {}

    def begin_batch(self, batch_size: int) -> None:
        self._tok, self._att, self._logits = {}, {}, {}

    def on_tokens(self, point: str, layer: int, x_bnd: torch.Tensor) -> None:
        self._tok.setdefault(point, {})[layer] = x_bnd.detach().float().clone()

    def on_attention(
        self, layer: int, attn_bhnn: torch.Tensor, logits: torch.Tensor | None = None
    ) -> None:
        self._att[layer] = attn_bhnn.detach().float().clone()
        if logits is not None:
            self._logits[layer] = logits.detach().float().clone()

    def end_batch(self) -> None:
        def stack(d: dict[int, torch.Tensor]) -> torch.Tensor | None:
            return torch.stack([d[i] for i in sorted(d)]) if d else None

        self.tokens = {p: torch.stack([d[i] for i in sorted(d)]) for p, d in self._tok.items()}
        self.attention = stack(self._att)
        # the scores only when every block delivered them
        self.logits = stack(self._logits) if len(self._logits) == len(self._att) else None


class CollectBlocks(CollectConsumer):
    """A :class:`CollectConsumer` that takes attention in pieces (a :class:`BlockConsumer`):
    one piece per (image, head), assembled into the whole tensors — what the capture check
    runs the streamed route with."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        self._heads = heads
        self._layer = 0
        self._p: dict[tuple[int, int], torch.Tensor] = {}
        self._s: dict[tuple[int, int], torch.Tensor] = {}

    def attention_blocks(self, batch: int, device: torch.device) -> list[tuple[int, int, int, int]]:
        H = self._heads
        return [(b, b + 1, h, h + 1) for h in range(H) for b in range(batch)]

    def begin_attention(self, layer: int, batch: int, device: torch.device) -> None:
        self._layer, self._p, self._s = layer, {}, {}

    def attention_block(
        self, b0: int, b1: int, h0: int, h1: int, p: torch.Tensor, s: torch.Tensor | None
    ) -> None:
        self._p[b0, h0] = p.detach().float().clone()
        if s is not None:
            self._s[b0, h0] = s.detach().float().clone()

    def end_attention(self) -> None:
        def whole(d: dict[tuple[int, int], torch.Tensor]) -> torch.Tensor:
            B = 1 + max(b for b, _ in d)
            return torch.cat(
                [torch.cat([d[b, h] for h in range(self._heads)], 1) for b in range(B)]
            )

        self.on_attention(self._layer, whole(self._p), whole(self._s) if self._s else None)


class _SoftmaxInput(torch.overrides.TorchFunctionMode):
    """Inside one attention module's forward: remembers the input of the last softmax
    (``Tensor.softmax``, ``torch.softmax`` or ``F.softmax``), i.e. the attention scores."""

    def __init__(self) -> None:
        super().__init__()
        self.last: torch.Tensor | None = None

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if getattr(func, "__name__", "") == "softmax" and args:
            self.last = args[0]
        return func(*args, **(kwargs or {}))


def _no_autocast(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Consumers reduce in the dtypes they choose, never under the forward's autocast."""
    return torch.autocast(t.device.type, enabled=False)


@runtime_checkable
class BlockConsumer(Protocol):
    """A :class:`Consumer` that can take one block's attention in pieces: the capture asks
    it for the blocks ``(b0, b1, h0, h1)`` (images ``b0:b1``, heads ``h0:h1``), computes
    each piece's probabilities ``[b1 − b0, h1 − h0, N, N]`` inside the attention module,
    hands it over with its scores and drops it before the next (see
    :class:`~vitlib.reducers.StreamingReducer`)."""

    def attention_blocks(
        self, batch: int, device: torch.device
    ) -> list[tuple[int, int, int, int]]: ...

    def begin_attention(self, layer: int, batch: int, device: torch.device) -> None: ...

    def attention_block(
        self, b0: int, b1: int, h0: int, h1: int, p: torch.Tensor, s: torch.Tensor | None
    ) -> None: ...

    def end_attention(self) -> None: ...


def streamable(attn: nn.Module) -> bool:
    """An attention module whose forward :func:`_streamed_attention` reproduces: timm's
    ``Attention`` (every ``VisionTransformer``), in eval mode, its forward not patched."""
    try:
        from timm.models.vision_transformer import Attention
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    own = "forward" in vars(attn)  # an instance's own forward (patched): not timm's
    return type(attn).forward is Attention.forward and not own and not attn.training


def _streamed_attention(
    attn: Any,
    consumer: BlockConsumer,
    layer: int,
    x: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
) -> torch.Tensor:
    """timm ``Attention.forward`` (eval mode, unfused) with the probabilities computed one
    block of (images, heads) at a time (``consumer.attention_blocks``): each block's scores
    ``q kᵀ · scale``, softmax and ``p v`` while the block sits in the cache, the consumer
    reducing it in between — the ``[B, H, N, N]`` scores and probabilities never exist whole
    (at N = 785 two 236 MB tensors per ViT-B/8 batch of 8).  The same operations as the
    module's own unfused path, so autocast gives them the same dtypes."""
    if attn_mask is not None or is_causal:
        raise NotImplementedError("streamed attention capture: masked attention")
    B, N, _ = x.shape
    H, hd = attn.num_heads, attn.head_dim
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    qkv = attn.qkv(x).reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    q = q * attn.scale
    out: torch.Tensor | None = None
    with _no_autocast(x):
        consumer.begin_attention(layer, B, x.device)
    for b0, b1, h0, h1 in consumer.attention_blocks(B, x.device):
        s = q[b0:b1, h0:h1] @ k[b0:b1, h0:h1].transpose(-2, -1)
        p = s.softmax(dim=-1)
        with _no_autocast(p):
            consumer.attention_block(b0, b1, h0, h1, p, s)
        o = p @ v[b0:b1, h0:h1]
        if out is None:
            out = o.new_empty(B, H, N, hd)
        out[b0:b1, h0:h1] = o
    with _no_autocast(x):
        consumer.end_attention()
    assert out is not None
    y = out.transpose(1, 2).reshape(B, N, H * hd)
    y = attn.norm(y) if hasattr(attn, "norm") else y
    if gate is not None:
        y = y * gate
    return attn.proj_drop(attn.proj(y))


def _get_submodule(block: nn.Module, paths: tuple[str, ...], point: str) -> nn.Module:
    for path in paths:
        if not path:
            return block
        try:
            return block.get_submodule(path)
        except AttributeError:
            continue
    raise TypeError(f"{type(block).__name__} has none of {paths} for capture point {point!r}")


class Capture:
    """Wrap a timm-style ViT so one forward pass feeds every block to a consumer.

    Parameters
    ----------
    model:
        The network; must have ``blocks`` (a sequence of transformer blocks) and, when
        ``attention`` is true, ``blocks[i].attn.attn_drop`` applied to the softmax output.
    points:
        Names from :data:`CAPTURE_POINTS` to capture.
    attention:
        Capture post-softmax attention probabilities.  Fused attention (SDPA), which never
        materialises them, is switched off on every attention module while capturing.
    dtype:
        ``"fp32"`` runs in float32; ``"bf16"``/``"fp16"`` run under autocast (the model's
        parameters stay float32).
    run:
        Callable ``run(model, images)`` that executes the forward pass; defaults to
        ``model.forward_features`` (nothing after the last block matters here).
    logits:
        Also hand the consumer the softmax's input (``on_attention(i, p, logits=s)``): the
        scores, bias included, as the attention module computed them (``None`` for a block
        whose attention calls no softmax).  They are kept alive until the attention
        module returns; :func:`vitlib.models.check.check_capture` verifies
        ``softmax(s) = p``.
    stream:
        When the consumer takes attention in pieces (:class:`BlockConsumer`, e.g. the
        extraction's :class:`~vitlib.reducers.StreamingReducer`) and a block's attention is
        timm's ``Attention``, compute its probabilities piece by piece inside the module
        (:func:`_streamed_attention`) instead of whole and hooked at ``attn_drop``: the
        consumer gets every piece with its scores (whatever ``logits``).  Other attention
        modules (BEiT's, OpenCLIP's, EVA's) and other consumers: the hooks.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        points: Sequence[str] = ("block",),
        attention: bool = True,
        dtype: Dtype = "fp32",
        run: Callable[[nn.Module, torch.Tensor], object] | None = None,
        logits: bool = False,
        stream: bool = True,
    ) -> None:
        if not hasattr(model, "blocks"):
            raise TypeError(f"{type(model).__name__} has no 'blocks': not a supported ViT")
        unknown = [p for p in points if p not in CAPTURE_POINTS]
        if unknown:
            raise ValueError(f"unknown capture point(s) {unknown}; known: {list(CAPTURE_POINTS)}")
        if dtype not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"dtype must be fp32, bf16 or fp16, not {dtype!r}")
        self.model = model.eval()
        self.blocks: list[nn.Module] = list(model.blocks)  # type: ignore[arg-type]
        self.points = tuple(points)
        self.attention = attention
        self.logits = logits and attention
        self.stream = stream
        self.dtype: Dtype = dtype
        self._run = run or _forward_features
        if attention:
            for i, blk in enumerate(self.blocks):
                attn = getattr(blk, "attn", None)
                if attn is None or not hasattr(attn, "attn_drop"):
                    raise TypeError(f"block {i} has no attn.attn_drop to hook")

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @contextlib.contextmanager
    def _hooks(self, consumer: Consumer) -> Iterator[None]:
        handles: list[torch.utils.hooks.RemovableHandle] = []
        blocks = consumer if isinstance(consumer, BlockConsumer) else None
        stream = self.stream and blocks is not None
        fused_before: list[tuple[_SwitchableAttention, bool]] = []
        streamed: list[nn.Module] = []  # attention modules whose forward is streamed
        active: list[_SoftmaxInput] = []  # function modes entered and not yet left
        try:
            for i, blk in enumerate(self.blocks):
                for name in self.points:
                    cp = CAPTURE_POINTS[name]
                    mod = _get_submodule(blk, cp.module, name)
                    if cp.side == "output":

                        def hook(
                            _m: nn.Module,
                            _inp: tuple[Any, ...],
                            out: torch.Tensor,
                            i: int = i,
                            name: str = name,
                        ) -> None:
                            with _no_autocast(out):
                                consumer.on_tokens(name, i, out)

                        handles.append(mod.register_forward_hook(hook))
                    else:

                        def pre(
                            _m: nn.Module, inp: tuple[Any, ...], i: int = i, name: str = name
                        ) -> None:
                            with _no_autocast(inp[0]):
                                consumer.on_tokens(name, i, inp[0])

                        handles.append(mod.register_forward_pre_hook(pre))
                if self.attention:
                    attn = blk.get_submodule("attn")
                    if stream and blocks is not None and streamable(attn):
                        # an instance attribute: nn.Module.__call__ runs it, hooks included
                        attn.forward = functools.partial(_streamed_attention, attn, blocks, i)
                        streamed.append(attn)
                        continue
                    if isinstance(attn, _SwitchableAttention):
                        fused_before.append((attn, attn.fused_attn))
                        attn.fused_attn = False

                    attn_drop = attn.get_submodule("attn_drop")
                    if not self.logits:

                        def ahook(
                            _m: nn.Module, _inp: tuple[Any, ...], out: torch.Tensor, i: int = i
                        ) -> None:
                            with _no_autocast(out):
                                consumer.on_attention(i, out)

                        handles.append(attn_drop.register_forward_hook(ahook))
                        continue
                    # With the scores: a function mode spans the attention module's forward
                    # (it sees the softmax's input); the consumer runs after the module
                    # returns, outside the mode, on the probabilities attn_drop received.
                    mode = _SoftmaxInput()
                    held: dict[str, torch.Tensor | None] = {}

                    def enter(
                        _m: nn.Module, _inp: Any, mode: _SoftmaxInput = mode, held: Any = held
                    ) -> None:
                        mode.last = None
                        held.clear()
                        held["inside"] = True
                        mode.__enter__()
                        active.append(mode)

                    def keep(
                        _m: nn.Module,
                        _inp: tuple[Any, ...],
                        out: torch.Tensor,
                        i: int = i,
                        mode: _SoftmaxInput = mode,
                        held: Any = held,
                    ) -> None:
                        if not held.get("inside"):  # attn_drop called outside the module
                            with _no_autocast(out):
                                consumer.on_attention(i, out)
                            return
                        s = mode.last
                        held["p"] = out
                        held["s"] = s if s is not None and s.shape == out.shape else None

                    def leave(
                        _m: nn.Module,
                        _inp: Any,
                        _out: Any,
                        i: int = i,
                        mode: _SoftmaxInput = mode,
                        held: Any = held,
                    ) -> None:
                        mode.__exit__(None, None, None)
                        active.remove(mode)
                        mode.last = None
                        p, s = held.pop("p", None), held.pop("s", None)
                        held.clear()
                        if p is not None:
                            with _no_autocast(p):
                                consumer.on_attention(i, p, logits=s)  # type: ignore[call-arg]

                    handles.append(attn.register_forward_pre_hook(enter))
                    handles.append(attn_drop.register_forward_hook(keep))
                    handles.append(attn.register_forward_hook(leave))
            yield
        finally:
            for m in reversed(active):  # an exception inside an attention module
                m.__exit__(None, None, None)
            for h in handles:
                h.remove()
            for switchable, fused in fused_before:
                switchable.fused_attn = fused
            for module in streamed:
                del module.forward

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, consumer: Consumer) -> None:
        """Run one forward pass of ``images`` ``[B, 3, H, W]`` feeding ``consumer``."""
        consumer.begin_batch(images.shape[0])
        device_type = images.device.type
        ctx = (
            torch.autocast(device_type, dtype=_AUTOCAST[self.dtype])
            if self.dtype in _AUTOCAST
            else contextlib.nullcontext()
        )
        with self._hooks(consumer), ctx:
            self._run(self.model, images)
        consumer.end_batch()

    def collect(self, images: torch.Tensor) -> CollectConsumer:
        """Convenience: run once and return everything (``[L, B, ...]`` tensors)."""
        c = CollectConsumer()
        self(images, c)
        return c
