"""Model zoo offline: every family's upstream checkpoint layout, written from a random model,
loads through the real loader and reproduces the source model's outputs."""

from __future__ import annotations

import argparse
import hashlib
import pickle

import pytest
import timm
import torch
from torch import nn

from vitlib.models import Capture, ModelError, build_model, get_spec, list_models, spec_from_config
from vitlib.models.build import build_network, check_dims
from vitlib.models.openclip import build_vision_tower
from vitlib.models.registry import PAPER_MODELS
from vitlib.models.weights import WeightsError, fetch_weights, read_checkpoint

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2}


def tokens(model, x):
    return Capture(model, points=("block",)).collect(x)


def assert_same_model(a, b, x):
    ca, cb = tokens(a, x), tokens(b, x)
    torch.testing.assert_close(ca.tokens["block"], cb.tokens["block"], rtol=0, atol=0)
    torch.testing.assert_close(ca.attention, cb.attention, rtol=0, atol=0)


@pytest.fixture()
def x():
    torch.manual_seed(0)
    return torch.randn(2, 3, 32, 32)


def tiny_spec(base, tmp_path, fname, **kw):
    return spec_from_config(
        f"t_{base}",
        {"base": base, "arch_kwargs": {**TINY, **kw}, "weights": {"path": str(tmp_path / fname)}},
    )


# ------------------------------------------------------------------------------ families
def test_fs_timm_safetensors(tmp_path, x):
    from safetensors.torch import save_file

    spec = tiny_spec("fs_b16", tmp_path, "model.safetensors", num_heads=3)
    src = build_network(spec)
    save_file(
        {k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "model.safetensors"
    )
    assert_same_model(src, build_model(spec), x)


def test_dino_plain_state_dict(tmp_path, x):
    spec = tiny_spec("dino_s8", tmp_path, "dino.pth", num_heads=3)
    src = build_network(spec)
    torch.save(src.state_dict(), tmp_path / "dino.pth")
    assert_same_model(src, build_model(spec), x)


def test_moco_prefixed_state_dict_with_momentum_and_heads(tmp_path, x):
    spec = tiny_spec("moco_s16", tmp_path, "vit-s-300ep.pth.tar", num_heads=12)
    assert spec.num_heads == 12
    src = build_network(spec)
    sd = {}
    for k, v in src.state_dict().items():
        sd["module.base_encoder." + k] = v
        sd["module.momentum_encoder." + k] = v + 1
    sd.update(
        {
            "module.base_encoder.head.0.weight": torch.randn(8, 48),
            "module.predictor.0.weight": torch.randn(8, 8),
        }
    )
    torch.save(
        {
            "epoch": 300,
            "arch": "vit_small",
            "state_dict": sd,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
        },
        tmp_path / "vit-s-300ep.pth.tar",
    )
    assert_same_model(src, build_model(spec), x)


def test_mae_model_key_decoder_dropped_args_allowed(tmp_path, x):
    spec = tiny_spec("mae_b16", tmp_path, "mae_pretrain_vit_base.pth", num_heads=4)
    src = build_network(spec)
    sd = dict(src.state_dict())
    sd.update(
        {
            "mask_token": torch.zeros(1, 1, 32),
            "decoder_embed.weight": torch.randn(32, 48),
            "decoder_blocks.0.attn.qkv.weight": torch.randn(96, 32),
            "decoder_norm.weight": torch.ones(32),
            "decoder_pred.weight": torch.randn(192, 32),
            "decoder_pos_embed": torch.randn(1, 17, 32),
        }
    )
    torch.save(
        {"model": sd, "args": argparse.Namespace(model="mae_vit_base_patch16")},
        tmp_path / "mae_pretrain_vit_base.pth",
    )
    assert_same_model(src, build_model(spec), x)


def test_beit_shared_relative_position_table(tmp_path, x):
    spec = tiny_spec("beit_b16", tmp_path, "beit_pt22k.pth", num_heads=4)
    src = build_network(spec)
    torch.manual_seed(3)
    shared = torch.randn_like(src.blocks[0].attn.relative_position_bias_table)
    for blk in src.blocks:  # pre-training shares one table; every block carries a copy
        blk.attn.relative_position_bias_table.data.copy_(shared)
        blk.gamma_1.data.uniform_(0.05, 0.2)  # layer scale
        blk.attn.q_bias.data.normal_()
        blk.attn.v_bias.data.normal_()
    sd = {
        k: v
        for k, v in src.state_dict().items()
        if "relative_position_bias_table" not in k and not k.startswith("fc_norm")
    }
    n = shared.shape[0]
    sd.update(
        {
            "rel_pos_bias.relative_position_bias_table": shared,
            "rel_pos_bias.relative_position_index": torch.zeros(17, 17, dtype=torch.long),
            "mask_token": torch.zeros(1, 1, 48),
            "lm_head.weight": torch.randn(8192, 48),
            "lm_head.bias": torch.zeros(8192),
            "norm.weight": torch.ones(48),
            "norm.bias": torch.zeros(48),
        }
    )
    assert n > 0
    torch.save({"model": sd}, tmp_path / "beit_pt22k.pth")
    got = build_model(spec)
    for blk in got.blocks:
        torch.testing.assert_close(blk.attn.relative_position_bias_table, shared)
    assert_same_model(src, got, x)


def _open_clip_reference(spec):
    """A plain open_clip image tower (nn.MultiheadAttention) with the spec's shape."""
    torch.manual_seed(7)
    return build_vision_tower(spec.arch, **dict(spec.arch_kwargs))


def test_clip_openai_torchscript_archive(tmp_path, x):
    spec = spec_from_config(
        "t_clip",
        {
            "base": "clip_b16",
            "weights": {"path": str(tmp_path / "ViT-B-16.pt")},
            "arch_kwargs": {
                "image_size": 32,
                "patch_size": 8,
                "width": 64,
                "layers": 2,
                "head_width": 32,
            },
        },
    )
    assert (spec.depth, spec.num_heads, spec.embed_dim, spec.grid) == (2, 2, 64, 4)
    ref = _open_clip_reference(spec).eval()

    class OpenAIClip(nn.Module):  # the archive holds the whole CLIP; we write its image tower
        def __init__(self, visual):
            super().__init__()
            self.visual = visual
            self.logit_scale = nn.Parameter(torch.ones([]))

        def forward(self, im):
            return self.visual(im)

    with torch.no_grad():
        traced = torch.jit.trace(OpenAIClip(ref), x)
    torch.jit.save(traced, tmp_path / "ViT-B-16.pt")
    model = build_model(spec)
    with torch.no_grad():
        want = ref.transformer(ref._embeds(x))  # open_clip's own fused attention
        got = model.forward_features(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    cap = tokens(model, x)
    assert cap.attention.shape == (2, 2, 2, 17, 17)
    torch.testing.assert_close(cap.tokens["block"][-1], want, rtol=1e-5, atol=1e-5)
    # the captured probabilities are the ones MultiheadAttention computes
    blk = ref.transformer.resblocks[0]
    with torch.no_grad():
        _, w = blk.attn(
            blk.ln_1(ref._embeds(x)),
            blk.ln_1(ref._embeds(x)),
            blk.ln_1(ref._embeds(x)),
            need_weights=True,
            average_attn_weights=False,
        )
    torch.testing.assert_close(cap.attention[0], w, rtol=1e-5, atol=1e-6)


def test_dinov2_registers_and_position_resampling(tmp_path, x):
    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed

    big = timm.create_model(
        "vit_small_patch14_reg4_dinov2",
        pretrained=False,
        num_classes=0,
        img_size=56,
        embed_dim=48,
        depth=2,
        num_heads=3,
    )
    save_file({k: v.contiguous() for k, v in big.state_dict().items()}, tmp_path / "w.safetensors")
    spec = spec_from_config(
        "t_v2",
        {
            "base": "dinov2reg_s14",
            "arch_kwargs": {"img_size": 28, "embed_dim": 48, "depth": 2, "num_heads": 3},
            "weights": {"path": str(tmp_path / "w.safetensors")},
        },
    )
    assert spec.num_prefix_tokens == 5 and spec.grid == 2
    m = build_model(spec)
    want = resample_abs_pos_embed(big.pos_embed, new_size=(2, 2), num_prefix_tokens=0)
    torch.testing.assert_close(m.pos_embed, want)
    c = tokens(m, torch.randn(1, 3, 28, 28))
    assert c.attention.shape[-1] == 5 + 4


def test_dinov2_without_registers_resamples_positions_as_upstream(tmp_path):
    """The original DINOv2 network interpolates its 37×37 positions at every forward
    (facebookresearch/dinov2 ``interpolate_pos_encoding``: bicubic, ``scale_factor = (g +
    0.1) / M``, no antialias); the registry's ``dinov2_*14`` must add exactly those positions
    at 224 px, not timm's load-time resampling (by size, antialiased), which differs."""
    import math

    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed

    big = timm.create_model(
        "vit_small_patch14_dinov2",
        pretrained=False,
        num_classes=0,
        img_size=14 * 9,
        embed_dim=48,
        depth=2,
        num_heads=3,
    )
    torch.nn.init.normal_(big.pos_embed)
    save_file({k: v.contiguous() for k, v in big.state_dict().items()}, tmp_path / "w.safetensors")
    spec = spec_from_config(
        "t_v2",
        {
            "base": "dinov2_s14",
            "arch_kwargs": {"img_size": 14 * 4, "embed_dim": 48, "depth": 2, "num_heads": 3},
            "weights": {"path": str(tmp_path / "w.safetensors")},
        },
    )
    assert spec.weights["format"] == "dinov2" and spec.num_prefix_tokens == 1
    m = build_model(spec)
    # upstream's interpolate_pos_encoding at w = h = 56 (its code, as released)
    pe = big.pos_embed.detach().float()
    n = pe.shape[1] - 1
    w0 = h0 = 56 // 14 + 0.1
    patch = torch.nn.functional.interpolate(
        pe[:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), 48).permute(0, 3, 1, 2),
        scale_factor=(float(w0 / math.sqrt(n)), float(h0 / math.sqrt(n))),
        mode="bicubic",
    )
    want = torch.cat([pe[:, :1], patch.permute(0, 2, 3, 1).reshape(1, -1, 48)], dim=1)
    torch.testing.assert_close(m.pos_embed, want, rtol=0, atol=0)
    timm_way = resample_abs_pos_embed(big.pos_embed, new_size=(4, 4), num_prefix_tokens=1)
    assert (m.pos_embed - timm_way).abs().max() > 0.05  # the bug this conversion fixes
    # the register layout (no class position in pos_embed) refuses this format
    reg = timm.create_model(
        "vit_small_patch14_reg4_dinov2",
        pretrained=False,
        num_classes=0,
        img_size=56,
        embed_dim=48,
        depth=2,
        num_heads=3,
    )
    from vitlib.models.families import CheckpointMismatch, convert_dinov2

    with pytest.raises(CheckpointMismatch, match="register"):
        convert_dinov2(reg.state_dict(), reg)


def test_user_checkpoint_key_map_and_strict_errors(tmp_path, x):
    src = build_network(tiny_spec("dino_s16", tmp_path, "u.pth", num_heads=3))
    sd = {"encoder." + k: v for k, v in src.state_dict().items()}
    torch.save({"model": sd}, tmp_path / "u.pth")
    cfg = {
        "arch": "vit_small_patch16_224",
        "arch_kwargs": {**TINY, "num_heads": 3},
        "weights": {"path": str(tmp_path / "u.pth"), "format": "timm", "key_map": {"encoder.": ""}},
    }
    assert_same_model(src, build_model(spec_from_config("user", cfg)), x)
    # a mismatching file: one key missing, one unexpected, one mis-shaped — all listed
    bad = dict(src.state_dict())
    bad.pop("blocks.1.mlp.fc2.bias")
    bad["blocks.0.extra"] = torch.zeros(1)
    bad["cls_token"] = torch.zeros(1, 1, 7)
    torch.save(bad, tmp_path / "bad.pth")
    cfg["weights"] = {"path": str(tmp_path / "bad.pth"), "format": "timm"}
    with pytest.raises(ModelError) as e:
        build_model(spec_from_config("user", cfg))
    msg = str(e.value)
    assert "blocks.1.mlp.fc2.bias" in msg and "blocks.0.extra" in msg and "cls_token" in msg
    assert "user" in msg and "bad.pth" in msg


def test_random_init_is_seeded():
    a = build_network(get_spec("random_b16"))
    b = build_network(get_spec("random_b16"))
    torch.testing.assert_close(a.blocks[3].attn.qkv.weight, b.blocks[3].attn.qkv.weight)
    c = build_network(spec_from_config("r1", {"base": "random_b16", "init_seed": 1}))
    assert not torch.equal(a.blocks[3].attn.qkv.weight, c.blocks[3].attn.qkv.weight)


# ------------------------------------------------------------------------------ registry
# Table 2 of the paper / docs/protocols.md §1.1: (depth, heads, width, token grid K)
PAPER_TABLE = {
    "fs_s32": (12, 6, 384, 7),
    "fs_s16": (12, 6, 384, 14),
    "fs_b32": (12, 12, 768, 7),
    "fs_b16": (12, 12, 768, 14),
    "fs_b8": (12, 12, 768, 28),
    "fs_l16": (24, 16, 1024, 14),
    "clip_b32": (12, 12, 768, 7),
    "clip_b16": (12, 12, 768, 14),
    "clip_l14": (24, 16, 1024, 16),
    "dino_s16": (12, 6, 384, 14),
    "dino_s8": (12, 6, 384, 28),
    "dino_b16": (12, 12, 768, 14),
    "dino_b8": (12, 12, 768, 28),
    "moco_s16": (12, 12, 384, 14),
    "moco_b16": (12, 12, 768, 14),
    "mae_b16": (12, 12, 768, 14),
    "mae_l16": (24, 16, 1024, 14),
    "mae_h14": (32, 16, 1280, 16),
    "beit_b16": (12, 12, 768, 14),
    "beit_l16": (24, 16, 1024, 14),
}


def test_paper_models_instantiate_with_table_2_shapes():
    assert list(PAPER_MODELS) == list(PAPER_TABLE)
    for mid, (L, H, D, K) in PAPER_TABLE.items():
        spec = get_spec(mid)
        assert (spec.depth, spec.num_heads, spec.embed_dim, spec.grid) == (L, H, D, K), mid
        with torch.device("meta"):
            m = build_network(spec)
        check_dims(m, spec)  # the built module agrees with the spec
        assert len(m.blocks) == L and m.blocks[0].attn.num_heads == H


def test_registry_covers_additional_and_modern_models():
    ids = set(list_models())
    assert {
        "clip_l14_336",
        "fs_b16_384",
        "fs_b32_384",
        "fs_l16_384",
        "fs_l32_384",
        "random_b16",
        "siglip_b16",
        "deit3_b16",
    } <= ids
    assert {f"dinov2{r}_{s}14" for r in ("", "reg") for s in "sbl"} <= ids
    assert get_spec("fs_b16").weights["timm_name"] == "vit_base_patch16_224.augreg_in21k_ft_in1k"
    assert "300ep" in get_spec("dino_s8").weights["url"]
    assert get_spec("clip_l14_336").img_size == 336 and get_spec("clip_l14_336").grid == 24
    for mid in ("dinov2reg_b14", "siglip_b16", "deit3_b16", "fs_l32_384", "clip_l14_336"):
        spec = get_spec(mid)
        with torch.device("meta"):
            check_dims(build_network(spec), spec)
    assert get_spec("siglip_b16").num_prefix_tokens == 0
    assert get_spec("fs_b16").mean == (0.5, 0.5, 0.5)
    assert get_spec("clip_b16").mean[0] == pytest.approx(0.48145466)
    assert get_spec("dino_b16").std == (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------ weights
def _file(tmp_path, data=b"weights!"):
    p = tmp_path / "src" / "ckpt.pth"
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(data)
    return p, hashlib.sha256(data).hexdigest()


def test_fetch_downloads_once_and_verifies(tmp_path):
    src, sha = _file(tmp_path)
    url = src.as_uri()
    got = fetch_weights("m1", url, tmp_path / "cache", sha256=sha)
    assert got.read_bytes() == b"weights!" and got.parent.name == "m1"
    src.unlink()  # a second call must not download again
    assert fetch_weights("m1", url, tmp_path / "cache", sha256=sha) == got


def test_fetch_reports_corrupt_file_with_both_hashes(tmp_path):
    src, sha = _file(tmp_path)
    with pytest.raises(WeightsError) as e:
        fetch_weights("m2", src.as_uri(), tmp_path / "cache", sha256="0" * 64)
    msg = str(e.value)
    assert "m2" in msg and src.as_uri() in msg and "0" * 64 in msg and sha in msg
    assert not list((tmp_path / "cache").rglob("*.pth"))  # nothing half-verified is kept


def test_fetch_offline_names_model_and_url(tmp_path):
    url = "http://127.0.0.1:9/never/there.pth"
    with pytest.raises(WeightsError, match=r"model m3: cannot download http://127\.0\.0\.1:9"):
        fetch_weights("m3", url, tmp_path / "cache", timeout=5)


def test_unpublished_hash_is_pinned_on_first_use(tmp_path):
    src, sha = _file(tmp_path)
    got = fetch_weights("m4", src.as_uri(), tmp_path / "cache")
    assert got.with_name(got.name + ".sha256").read_text().strip() == sha
    got.write_bytes(b"tampered")
    with pytest.raises(WeightsError, match="expected " + sha):
        fetch_weights("m4", src.as_uri(), tmp_path / "cache")


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_reading_never_unpickles_arbitrary_objects(tmp_path):
    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(WeightsError, match="cannot read checkpoint .*evil.pth safely"):
        read_checkpoint(p, model_id="evil")
