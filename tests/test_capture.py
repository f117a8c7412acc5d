"""The one-pass capture against independent recomputation and timm's own intermediates."""

import pytest
import timm
import torch

from vitlib.models import Capture, build_model, spec_from_config


def _recompute_attention(block, x):
    """softmax(q kᵀ · scale) from the block's own qkv weights, written out by hand."""
    attn = block.attn
    B, N, D = x.shape
    H = attn.num_heads
    hd = D // H
    y = torch.nn.functional.layer_norm(
        x, (D,), block.norm1.weight, block.norm1.bias, block.norm1.eps
    )
    qkv = y @ attn.qkv.weight.T + attn.qkv.bias
    q, k = qkv[..., :D], qkv[..., D : 2 * D]
    q = q.reshape(B, N, H, hd).transpose(1, 2)
    k = k.reshape(B, N, H, hd).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, dim=-1)


def test_attention_equals_recomputed_softmax(tiny_model):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32)
    cap = Capture(tiny_model, points=("attn_skip", "block"), attention=True)
    got = cap.collect(x)
    L = len(tiny_model.blocks)
    assert got.attention.shape == (L, 3, 2, 17, 17)
    for i, blk in enumerate(tiny_model.blocks):
        with torch.no_grad():
            ref = _recompute_attention(blk, got.tokens["attn_skip"][i])
        torch.testing.assert_close(got.attention[i], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.attention.sum(-1), torch.ones(L, 3, 2, 17))


def test_block_outputs_equal_forward_intermediates(tiny_model):
    torch.manual_seed(1)
    x = torch.randn(4, 3, 32, 32)
    got = Capture(tiny_model, points=("block",)).collect(x)

    def reference():
        with torch.no_grad():
            inter = tiny_model.forward_intermediates(
                x, intermediates_only=True, norm=False, output_fmt="NLC", return_prefix_tokens=True
            )
        return [torch.cat([prefix, spatial], dim=1) for spatial, prefix in inter]  # CLS first

    for blk in tiny_model.blocks:  # same attention kernel as the capture: bit-identical
        blk.attn.fused_attn = False
    ref = reference()
    assert len(ref) == got.tokens["block"].shape[0] == 3
    for i, r in enumerate(ref):
        torch.testing.assert_close(got.tokens["block"][i], r, rtol=0, atol=0)
    for blk in tiny_model.blocks:  # timm's default fused SDPA: equal up to rounding
        blk.attn.fused_attn = True
    for i, r in enumerate(reference()):
        torch.testing.assert_close(got.tokens["block"][i], r, rtol=1e-5, atol=1e-6)


def test_capture_restores_fused_attention_and_removes_hooks(tiny_model):
    for blk in tiny_model.blocks:
        blk.attn.fused_attn = True
    Capture(tiny_model).collect(torch.randn(1, 3, 32, 32))
    assert all(blk.attn.fused_attn for blk in tiny_model.blocks)
    assert not any(
        blk._forward_hooks or blk.attn.attn_drop._forward_hooks for blk in tiny_model.blocks
    )


def test_bf16_capture_is_close_to_fp32(tiny_model):
    x = torch.randn(2, 3, 32, 32)
    f32 = Capture(tiny_model, dtype="fp32").collect(x)
    b16 = Capture(tiny_model, dtype="bf16").collect(x)
    assert (f32.attention - b16.attention).abs().max() < 2e-2
    rel = (f32.tokens["block"] - b16.tokens["block"]).norm() / f32.tokens["block"].norm()
    assert 0 < rel < 3e-2  # bf16 really ran, and stayed close


def test_residual_points_add_up(tiny_model):
    """skip + branch of each sub-block reproduces the next stream exactly."""
    x = torch.randn(2, 3, 32, 32)
    pts = ("attn_skip", "attn_branch", "mlp_skip", "mlp_branch", "block")
    t = Capture(tiny_model, points=pts).collect(x).tokens
    torch.testing.assert_close(t["attn_skip"] + t["attn_branch"], t["mlp_skip"])
    torch.testing.assert_close(t["mlp_skip"] + t["mlp_branch"], t["block"])


def _tiny_beit():
    """A two-block BEiT (q/v biases, relative position bias) from timm's own architecture."""
    spec = spec_from_config(
        "tb",
        {
            "arch": "beit_base_patch16_224",
            "family": "beit",
            "arch_kwargs": {
                "img_size": 32,
                "patch_size": 8,
                "embed_dim": 32,
                "depth": 2,
                "num_heads": 2,
            },
        },
    )
    return build_model(spec)


def test_capture_beit_attention_includes_relative_bias():
    """A second timm family (BEiT: q/v bias, relative position bias) captures too."""
    torch.manual_seed(0)
    m = _tiny_beit()
    for blk in m.blocks:  # non-trivial relative position tables
        torch.nn.init.normal_(blk.attn.relative_position_bias_table, std=1.0)
    got = Capture(m).collect(torch.randn(2, 3, 32, 32))
    assert got.attention.shape == (2, 2, 2, 17, 17)
    torch.testing.assert_close(got.attention.sum(-1), torch.ones(2, 2, 2, 17))
    # it really is the biased attention: compare with a forward where the bias is zeroed
    for blk in m.blocks:
        blk.attn.relative_position_bias_table.data.zero_()
    unbiased = Capture(m).collect(torch.randn(2, 3, 32, 32))
    assert not torch.allclose(got.attention, unbiased.attention)


def test_bad_arguments():
    m = timm.create_model(
        "vit_small_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=1,
        num_heads=2,
    )
    with pytest.raises(ValueError, match="unknown capture point"):
        Capture(m, points=("nope",))
    with pytest.raises(ValueError, match="dtype"):
        Capture(m, dtype="int8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="blocks"):
        Capture(torch.nn.Linear(2, 2))


def test_logits_are_the_softmax_input_bias_included_and_modes_are_left(tiny_model):
    """``logits=True`` hands the consumer the attention scores: q kᵀ · scale (recomputed by
    hand), for BEiT with its relative position bias (softmax of them = the probabilities);
    every function mode is left, also when a block raises."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    got = Capture(tiny_model, points=("attn_skip",), logits=True).collect(x)
    assert got.logits is not None and got.logits.shape == got.attention.shape
    for i, blk in enumerate(tiny_model.blocks):
        with torch.no_grad():
            ref = _recompute_attention(blk, got.tokens["attn_skip"][i])
        torch.testing.assert_close(got.logits[i].softmax(-1), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.logits.softmax(-1), got.attention, rtol=0, atol=1e-7)
    plain = Capture(tiny_model).collect(x)
    assert plain.logits is None
    torch.testing.assert_close(plain.attention, got.attention, rtol=0, atol=0)

    m = _tiny_beit()
    for blk in m.blocks:
        torch.nn.init.normal_(blk.attn.relative_position_bias_table, std=1.0)
    b = Capture(m, logits=True).collect(x)
    torch.testing.assert_close(b.logits.softmax(-1), b.attention, rtol=0, atol=1e-7)
    assert float((b.logits[:, :, :, 1:, 1:].std(0)).max()) > 0

    class Boom(RuntimeError):
        pass

    def explode(_m, _i, _o):
        raise Boom

    h = tiny_model.blocks[1].attn.attn_drop.register_forward_hook(explode)
    try:
        with pytest.raises(Boom):
            Capture(tiny_model, logits=True).collect(x)
    finally:
        h.remove()
    assert not torch.overrides._get_current_function_mode_stack()
    assert not any(blk.attn._forward_pre_hooks for blk in tiny_model.blocks)
