"""Weight sources, offline: every hub id, timm tag and open_clip pair the registry relies on
exists in the installed timm / open_clip and names the network the registry describes; the
transformers-layout BEiT converter reproduces the source model; the download path (hub via
huggingface_hub, fallbacks, sha256 pins) works without a network."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import replace
from pathlib import Path

import open_clip
import pytest
import timm
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from timm.models import get_pretrained_cfg

from vitlib.models import Capture, ModelError, build_model, get_spec, list_models, spec_from_config
from vitlib.models.build import build_network, check_dims
from vitlib.models.families import CONVERTERS, hf_beit_to_unilm
from vitlib.models.openclip import OpenClipViT, build_vision_tower
from vitlib.models.registry import PAPER_MODELS, _clip_dims
from vitlib.models.weights import (
    WeightsError,
    fetch_weights,
    hub_url,
    parse_hub_url,
    read_checkpoint,
    registry_fallbacks,
    weights_sources,
)

ALL = [get_spec(m) for m in list_models()]
TIMM_TAGGED = [s for s in ALL if s.weights and s.weights.get("timm_name")]
OPEN_CLIP = [s for s in ALL if s.weights and s.weights.get("open_clip")]

# Which file each paper model reads (docs/protocols.md §1.1, §1.3): the timm tag or open_clip
# pair whose hub file is the paper's network, the transformers hub repo, or the release URL.
PAPER_SOURCES = {
    "fs_s32": ("timm", "vit_small_patch32_224.augreg_in21k_ft_in1k"),
    "fs_s16": ("timm", "vit_small_patch16_224.augreg_in21k_ft_in1k"),
    "fs_b32": ("timm", "vit_base_patch32_224.augreg_in21k_ft_in1k"),
    "fs_b16": ("timm", "vit_base_patch16_224.augreg_in21k_ft_in1k"),
    "fs_b8": ("timm", "vit_base_patch8_224.augreg_in21k_ft_in1k"),
    "fs_l16": ("timm", "vit_large_patch16_224.augreg_in21k_ft_in1k"),
    "clip_b32": ("open_clip", ("ViT-B-32", "openai")),
    "clip_b16": ("open_clip", ("ViT-B-16", "openai")),
    "clip_l14": ("open_clip", ("ViT-L-14", "openai")),
    "dino_s16": ("timm", "vit_small_patch16_224.dino"),
    "dino_s8": (
        "url",
        "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_300ep_pretrain/"
        "dino_deitsmall8_300ep_pretrain.pth",
    ),
    "dino_b16": ("timm", "vit_base_patch16_224.dino"),
    "dino_b8": ("timm", "vit_base_patch8_224.dino"),
    "moco_s16": ("url", "https://dl.fbaipublicfiles.com/moco-v3/vit-s-300ep/vit-s-300ep.pth.tar"),
    "moco_b16": ("url", "https://dl.fbaipublicfiles.com/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar"),
    "mae_b16": ("timm", "vit_base_patch16_224.mae"),
    "mae_l16": ("timm", "vit_large_patch16_224.mae"),
    "mae_h14": ("timm", "vit_huge_patch14_224.mae"),
    "beit_b16": ("hf", "microsoft/beit-base-patch16-224-pt22k"),
    "beit_l16": ("hf", "microsoft/beit-large-patch16-224-pt22k"),
}

# The AugReg release files the paper's timm 0.6 resolved to (PROTOCOLS §1.3).
AUGREG_FILES = {
    "fs_s32": "S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz",
    "fs_s16": "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz",
    "fs_b32": "B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz",
    "fs_b16": "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz",
    "fs_b8": "B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz",
    "fs_l16": "L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224.npz",
}


def _source(spec):
    w = spec.weights
    if w.get("timm_name"):
        return ("timm", w["timm_name"])
    if w.get("open_clip"):
        return ("open_clip", tuple(w["open_clip"]))
    if w.get("hf_hub_id"):
        return ("hf", w["hf_hub_id"])
    return ("url", w["url"])


# ------------------------------------------------------------------------------ registry
def test_paper_models_use_the_papers_files():
    assert set(PAPER_SOURCES) == set(PAPER_MODELS)
    for mid, want in PAPER_SOURCES.items():
        assert _source(get_spec(mid)) == want, mid


def test_every_hub_source_is_consistent():
    for spec in ALL:
        if not spec.weights:
            assert spec.id in ("random_b16", "noise_b16")
            continue
        w = spec.weights
        assert w["url"].startswith("https://"), spec.id
        if "hf_hub_id" in w:
            assert parse_hub_url(w["url"]) == (
                w["hf_hub_id"],
                w["hf_revision"],
                w["hf_hub_filename"],
            )
            assert w["url"] == hub_url(w["hf_hub_id"], w["hf_hub_filename"], w["hf_revision"])
        assert w["format"] in CONVERTERS, spec.id
        for src in weights_sources(w):
            assert src.sha256 is None or len(src.sha256) == 64


@pytest.mark.parametrize("spec", TIMM_TAGGED, ids=lambda s: s.id)
def test_timm_tag_is_installed_and_names_the_hub_file(spec):
    w = spec.weights
    tag = w["timm_name"]
    assert tag in timm.list_pretrained(), tag
    cfg = get_pretrained_cfg(tag)
    assert cfg.hf_hub_id == w["hf_hub_id"]
    # timm's cfgs leave the file unset; its loader then takes model.safetensors first
    assert (cfg.hf_hub_filename or "model.safetensors") == w["hf_hub_filename"]
    assert cfg.architecture == spec.arch
    # the fallback is the release file the tag was converted from (timm's cfg url), where
    # vitlib reads its layout (not the JAX .npz archives); the tag has no other source
    fallbacks = [f["url"] for f in w.get("fallbacks", ())]
    if cfg.url and not cfg.url.endswith(".npz"):
        assert fallbacks == [cfg.url]
    else:
        assert fallbacks == []
    with torch.device("meta"):
        m = timm.create_model(tag, pretrained=False, num_classes=0, **dict(spec.arch_kwargs))
    check_dims(m, spec)  # depth, heads, width, patch, image size, prefix tokens


def test_fs_tags_are_the_augreg_files_of_the_paper():
    for mid, fname in AUGREG_FILES.items():
        cfg = get_pretrained_cfg(get_spec(mid).weights["timm_name"])
        assert cfg.url == "https://storage.googleapis.com/vit_models/augreg/" + fname, mid


def test_dino_s8_keeps_the_300_epoch_release_file():
    ours = get_spec("dino_s8").weights
    assert "300ep" in ours["url"] and "hf_hub_id" not in ours
    timm_s8 = get_pretrained_cfg("vit_small_patch8_224.dino").url
    assert "300ep" not in timm_s8 and timm_s8 != ours["url"]  # timm's hub copy is another file
    # the other file, by its own id: timm's tag, its release URL the fallback
    other = get_spec("dino_s8_800ep").weights
    assert other["timm_name"] == "vit_small_patch8_224.dino"
    assert other["fallbacks"][0]["url"] == timm_s8


@pytest.mark.parametrize("spec", OPEN_CLIP, ids=lambda s: s.id)
def test_open_clip_pair_is_installed_and_names_the_hub_file(spec):
    w = spec.weights
    arch, tag = w["open_clip"]
    assert (arch, tag) in open_clip.list_pretrained()
    assert spec.arch == arch
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    assert cfg["hf_hub"].rstrip("/") == w["hf_hub_id"]
    assert cfg.get("quick_gelu")  # as build_vision_tower builds it
    # open_clip's loader order: the safetensors file, its default .bin, then the release URL
    assert w["hf_hub_filename"] == HF_SAFE_WEIGHTS_NAME
    fb = list(w["fallbacks"])
    assert fb[0]["url"] == hub_url(w["hf_hub_id"], HF_WEIGHTS_NAME)
    assert fb[-1]["url"] == cfg["url"]
    assert fb[-1]["sha256"] == cfg["url"].split("/")[-2]  # OpenAI's URL carries the sha256
    dims = _clip_dims(arch, {})
    assert dims == {k: getattr(spec, k) for k in dims}
    with torch.device("meta"):
        check_dims(OpenClipViT(build_vision_tower(arch)), spec)
    # the same repository is timm's tag of these weights: timm agrees on the architecture
    timm_tag = w["hf_hub_id"].removeprefix("timm/")
    assert timm_tag in timm.list_pretrained()
    assert get_pretrained_cfg(timm_tag).hf_hub_id == w["hf_hub_id"]
    with torch.device("meta"):
        m = timm.create_model(timm_tag, pretrained=False, num_classes=0)
    check_dims(m, spec)


def test_beit_reads_the_transformers_pt22k_repos():
    for mid, size in (("beit_b16", "base"), ("beit_l16", "large")):
        w = get_spec(mid).weights
        assert w["hf_hub_id"] == f"microsoft/beit-{size}-patch16-224-pt22k"
        assert w["format"] == "hf_beit"
        assert w["fallbacks"][0]["url"].endswith(f"beit_{size}_patch16_224_pt22k.pth")


# ------------------------------------------------------------------------------ BEiT: HF layout
# The inverse mapping, unilm/timm → transformers, written from transformers'
# models/beit/convert_beit_unilm_to_pytorch.py (v4.46): create_rename_keys + read_in_q_k_v.
def _rename_keys(depth, has_lm_head):
    keys = []
    for i in range(depth):
        keys += [
            (f"blocks.{i}.norm1.weight", f"beit.encoder.layer.{i}.layernorm_before.weight"),
            (f"blocks.{i}.norm1.bias", f"beit.encoder.layer.{i}.layernorm_before.bias"),
            (
                f"blocks.{i}.attn.proj.weight",
                f"beit.encoder.layer.{i}.attention.output.dense.weight",
            ),
            (f"blocks.{i}.attn.proj.bias", f"beit.encoder.layer.{i}.attention.output.dense.bias"),
            (f"blocks.{i}.norm2.weight", f"beit.encoder.layer.{i}.layernorm_after.weight"),
            (f"blocks.{i}.norm2.bias", f"beit.encoder.layer.{i}.layernorm_after.bias"),
            (f"blocks.{i}.mlp.fc1.weight", f"beit.encoder.layer.{i}.intermediate.dense.weight"),
            (f"blocks.{i}.mlp.fc1.bias", f"beit.encoder.layer.{i}.intermediate.dense.bias"),
            (f"blocks.{i}.mlp.fc2.weight", f"beit.encoder.layer.{i}.output.dense.weight"),
            (f"blocks.{i}.mlp.fc2.bias", f"beit.encoder.layer.{i}.output.dense.bias"),
        ]
    keys += [
        ("cls_token", "beit.embeddings.cls_token"),
        ("patch_embed.proj.weight", "beit.embeddings.patch_embeddings.projection.weight"),
        ("patch_embed.proj.bias", "beit.embeddings.patch_embeddings.projection.bias"),
    ]
    if has_lm_head:
        keys += [
            ("mask_token", "beit.embeddings.mask_token"),
            (
                "rel_pos_bias.relative_position_bias_table",
                "beit.encoder.relative_position_bias.relative_position_bias_table",
            ),
            (
                "rel_pos_bias.relative_position_index",
                "beit.encoder.relative_position_bias.relative_position_index",
            ),
            ("norm.weight", "layernorm.weight"),
            ("norm.bias", "layernorm.bias"),
        ]
    else:
        keys += [
            ("fc_norm.weight", "beit.pooler.layernorm.weight"),
            ("fc_norm.bias", "beit.pooler.layernorm.bias"),
            ("head.weight", "classifier.weight"),
            ("head.bias", "classifier.bias"),
        ]
    return keys


def _unilm_to_hf(sd, depth, dim, has_lm_head):
    sd = dict(sd)
    for old, new in _rename_keys(depth, has_lm_head):
        sd[new] = sd.pop(old)
    for i in range(depth):
        w = sd.pop(f"blocks.{i}.attn.qkv.weight")
        pre = f"beit.encoder.layer.{i}."
        sd[pre + "attention.attention.query.weight"] = w[:dim, :]
        sd[pre + "attention.attention.query.bias"] = sd.pop(f"blocks.{i}.attn.q_bias")
        sd[pre + "attention.attention.key.weight"] = w[dim : dim * 2, :]
        sd[pre + "attention.attention.value.weight"] = w[-dim:, :]
        sd[pre + "attention.attention.value.bias"] = sd.pop(f"blocks.{i}.attn.v_bias")
        sd[pre + "lambda_1"] = sd.pop(f"blocks.{i}.gamma_1")
        sd[pre + "lambda_2"] = sd.pop(f"blocks.{i}.gamma_2")
        if not has_lm_head:
            rel = pre + "attention.attention.relative_position_bias."
            sd[rel + "relative_position_bias_table"] = sd.pop(
                f"blocks.{i}.attn.relative_position_bias_table"
            )
            sd[rel + "relative_position_index"] = sd.pop(f"blocks.{i}.attn.relative_position_index")
    return sd


def _tiny_beit(tmp_path, fname, shared, **weights):
    spec = spec_from_config(
        "t_beit",
        {
            "base": "beit_b16",
            "arch_kwargs": {
                "img_size": 32,
                "patch_size": 8,
                "embed_dim": 48,
                "depth": 2,
                "num_heads": 4,
            },
            "weights": {"path": str(tmp_path / fname), **weights},
        },
    )
    src = build_network(spec).eval()
    torch.manual_seed(3)
    table = torch.randn_like(src.blocks[0].attn.relative_position_bias_table)
    for blk in src.blocks:
        blk.attn.relative_position_bias_table.data.copy_(
            table if shared else torch.randn_like(table)
        )
        blk.gamma_1.data.uniform_(0.05, 0.2)
        blk.gamma_2.data.uniform_(0.05, 0.2)
        blk.attn.q_bias.data.normal_()
        blk.attn.v_bias.data.normal_()
    src.fc_norm.weight.data.uniform_(0.5, 1.5)
    src.fc_norm.bias.data.normal_()
    return spec, src, table


def _index(n):  # a relative_position_index buffer as the files carry it (its values do not matter)
    return torch.zeros(n, n, dtype=torch.long)


def _same_outputs(src, got, x, *, pooled):
    with torch.no_grad():
        torch.testing.assert_close(
            got.forward_features(x), src.forward_features(x), rtol=0, atol=1e-5
        )
        if pooled:
            torch.testing.assert_close(got(x), src(x), rtol=0, atol=1e-5)
    a = Capture(src, points=("block",)).collect(x)
    b = Capture(got, points=("block",)).collect(x)
    torch.testing.assert_close(b.attention, a.attention, rtol=0, atol=1e-5)
    torch.testing.assert_close(b.tokens["block"], a.tokens["block"], rtol=0, atol=1e-5)


@pytest.fixture()
def x():
    torch.manual_seed(0)
    return torch.randn(2, 3, 32, 32)


def test_hf_beit_pt22k_checkpoint_reproduces_the_model(tmp_path, x):
    """A BeitForMaskedImageModeling file (the microsoft/beit-*-pt22k layout)."""
    spec, src, shared = _tiny_beit(tmp_path, "pytorch_model.bin", shared=True)
    assert spec.weights["format"] == "hf_beit"
    unilm = {  # the unilm pt22k release: one shared table, MIM head, mask token, final norm
        k: v
        for k, v in src.state_dict().items()
        if "relative_position" not in k and not k.startswith("fc_norm")
    }
    unilm.update(
        {
            "rel_pos_bias.relative_position_bias_table": shared,
            "rel_pos_bias.relative_position_index": _index(17),
            "mask_token": torch.zeros(1, 1, 48),
            "norm.weight": torch.ones(48),
            "norm.bias": torch.zeros(48),
            "lm_head.weight": torch.randn(64, 48),
            "lm_head.bias": torch.zeros(64),
        }
    )
    hf = _unilm_to_hf(unilm, depth=2, dim=48, has_lm_head=True)
    assert not any(k.startswith(("blocks.", "rel_pos_bias")) for k in hf)
    assert "beit.encoder.layer.1.attention.attention.key.weight" in hf
    torch.save(hf, tmp_path / "pytorch_model.bin")
    got = build_model(spec)  # strict: missing / unexpected / mis-shaped keys would raise
    for blk in got.blocks:
        torch.testing.assert_close(blk.attn.relative_position_bias_table, shared)
    _same_outputs(src, got, x, pooled=False)  # fc_norm is not in a pre-training file
    # the unilm release's format name reads the same file
    unilm_fmt = replace(spec, weights={**spec.weights, "format": "beit"})
    _same_outputs(src, build_model(unilm_fmt), x, pooled=False)


def test_hf_beit_fine_tuned_layout_per_layer_tables_and_pooler(tmp_path, x):
    """A BeitForImageClassification file: a table per layer, the pooler norm (fc_norm)."""
    spec, src, _ = _tiny_beit(tmp_path, "ft.bin", shared=False, format="beit")
    sd = dict(src.state_dict())
    for i in range(2):
        sd[f"blocks.{i}.attn.relative_position_index"] = _index(17)
    sd["head.weight"], sd["head.bias"] = torch.randn(5, 48), torch.zeros(5)
    hf = _unilm_to_hf(sd, depth=2, dim=48, has_lm_head=False)
    torch.save(hf, tmp_path / "ft.bin")
    got = build_model(spec)  # format "beit" detects the transformers layout too
    _same_outputs(src, got, x, pooled=True)


def test_hf_beit_converter_renames_every_key_and_reports_strays(tmp_path):
    spec, src, _ = _tiny_beit(tmp_path, "bad.bin", shared=False)
    sd = dict(src.state_dict())
    hf = _unilm_to_hf(
        {**sd, "head.weight": torch.zeros(5, 48), "head.bias": torch.zeros(5)}
        | {f"blocks.{i}.attn.relative_position_index": _index(17) for i in range(2)},
        depth=2,
        dim=48,
        has_lm_head=False,
    )
    back = hf_beit_to_unilm(hf)
    assert set(back) == set(sd) | {"head.weight", "head.bias"}
    for k, v in sd.items():
        torch.testing.assert_close(back[k], v, rtol=0, atol=0)
    hf["beit.encoder.layer.0.attention.attention.key.bias"] = torch.zeros(48)  # no such key
    torch.save(hf, tmp_path / "bad.bin")
    with pytest.raises(ModelError, match=r"unexpected: .*attention\.attention\.key\.bias"):
        build_model(spec)


# ------------------------------------------------------------------------------ other layouts
# Every source of a model loads through its one converter (weights.format): the hub copies
# (timm / open_clip layout) and the release files the registry falls back to.
def _tiny(base, path, **kw):
    cfg = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3, **kw}
    return spec_from_config(
        f"t_{base}", {"base": base, "arch_kwargs": cfg, "weights": {"path": str(path)}}
    )


def _same(a, b, x, atol=1e-6):
    with torch.no_grad():
        torch.testing.assert_close(b.forward_features(x), a.forward_features(x), rtol=0, atol=atol)


@pytest.mark.parametrize("base", ["dino_b16", "mae_b16", "fs_b16"])
def test_timm_hub_copies_load_through_the_family_converter(tmp_path, x, base):
    from safetensors.torch import save_file

    spec = _tiny(base, tmp_path / "model.safetensors")
    src = build_network(spec).eval()
    save_file(
        {k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "model.safetensors"
    )
    _same(src, build_model(spec), x)


def test_open_clip_hub_copy_loads_the_image_tower(tmp_path, x):
    from safetensors.torch import save_file

    spec = spec_from_config(
        "t_oc",
        {
            "base": "clip_b16",
            "weights": {"path": str(tmp_path / "open_clip_model.safetensors")},
            "arch_kwargs": {
                "image_size": 32,
                "patch_size": 8,
                "width": 64,
                "layers": 2,
                "head_width": 32,
            },
        },
    )
    assert spec.weights["format"] == "open_clip"
    torch.manual_seed(7)
    tower = build_vision_tower(spec.arch, **dict(spec.arch_kwargs)).eval()
    sd = {"visual." + k: v for k, v in tower.state_dict().items()}
    sd.update(  # the rest of an open_clip CLIP state dict: text tower, logit scale
        {
            "token_embedding.weight": torch.randn(10, 32),
            "positional_embedding": torch.randn(7, 32),
            "transformer.resblocks.0.attn.in_proj_weight": torch.randn(96, 32),
            "ln_final.weight": torch.ones(32),
            "text_projection": torch.randn(32, 16),
            "logit_scale": torch.ones([]),
        }
    )
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "open_clip_model.safetensors")
    model = build_model(spec)
    with torch.no_grad():
        want = tower.transformer(tower._embeds(x))
        torch.testing.assert_close(model.forward_features(x), want, rtol=1e-5, atol=1e-5)


def test_deit3_release_layout_falls_back_through_convert_timm(tmp_path, x):
    spec = _tiny("deit3_b16", tmp_path / "deit_3.pth")
    src = build_network(spec).eval()
    for blk in src.blocks:
        blk.ls1.gamma.data.uniform_(0.5, 1.5)
        blk.ls2.gamma.data.uniform_(0.5, 1.5)
    sd = {
        k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2"): v
        for k, v in src.state_dict().items()
    }
    sd.update({"head.weight": torch.randn(10, 48), "head.bias": torch.zeros(10)})
    torch.save({"model": sd}, tmp_path / "deit_3.pth")
    _same(src, build_model(spec), x)


def test_dinov2_release_layout_falls_back_through_convert_timm(tmp_path):
    spec = spec_from_config(
        "t_v2",
        {
            "base": "dinov2reg_s14",
            "arch_kwargs": {"img_size": 28, "embed_dim": 48, "depth": 2, "num_heads": 3},
            "weights": {"path": str(tmp_path / "dinov2_vits14_reg4_pretrain.pth")},
        },
    )
    src = build_network(spec).eval()
    t = src.state_dict()
    official = {k: v for k, v in t.items() if k not in ("cls_token", "reg_token", "pos_embed")}
    official.update(  # Meta's layout: CLS inside pos_embed, registers and mask token apart
        {
            "cls_token": t["cls_token"] - 0.5,
            "pos_embed": torch.cat([torch.full_like(t["cls_token"], 0.5), t["pos_embed"]], dim=1),
            "register_tokens": t["reg_token"],
            "mask_token": torch.zeros(1, 48),
        }
    )
    torch.save(official, tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    got = build_model(spec)
    torch.testing.assert_close(got.cls_token, src.cls_token)  # (cls - 0.5) + 0.5: rounding only
    _same(src, got, torch.randn(2, 3, 28, 28), atol=1e-4)


# ------------------------------------------------------------------------------ downloads
def _blob(tmp_path, data=b"hub weights!", name="src"):
    p = tmp_path / name
    p.write_bytes(data)
    return p, hashlib.sha256(data).hexdigest()


@pytest.fixture()
def fake_hub(tmp_path, monkeypatch):
    """``huggingface_hub.hf_hub_download`` over a local HF-style cache: blobs named by their
    sha256 (the LFS etag), snapshots linking to them; ``files[(repo, filename)] = bytes``."""
    import huggingface_hub

    files: dict[tuple[str, str], bytes] = {}
    calls: list[tuple[str, str, str | None]] = []
    root = tmp_path / "hf_cache"

    def download(repo_id, filename, *, revision=None, etag_timeout=10, **_):
        calls.append((repo_id, filename, revision))
        if (repo_id, filename) not in files:
            raise OSError(f"offline: {repo_id}/{filename} not in the cache")
        data = files[(repo_id, filename)]
        blob = root / "blobs" / files.get(("etag", filename), hashlib.sha256(data).hexdigest())
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        snap = root / "snapshots" / (revision or "main") / filename
        snap.parent.mkdir(parents=True, exist_ok=True)
        snap.unlink(missing_ok=True)
        os.symlink(blob, snap)
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return files, calls


def test_hub_file_goes_through_huggingface_hub_and_its_etag(tmp_path, fake_hub):
    files, calls = fake_hub
    w = get_spec("fs_b16").weights
    files[(w["hf_hub_id"], w["hf_hub_filename"])] = b"timm weights"
    got = fetch_weights("fs_b16", w["url"], tmp_path / "cache", sha256=w["sha256"])
    assert calls == [(w["hf_hub_id"], "model.safetensors", "main")]
    assert got.name == "fs_b16-model.safetensors" and got.read_bytes() == b"timm weights"
    sha = hashlib.sha256(b"timm weights").hexdigest()
    assert got.with_name(got.name + ".sha256").read_text().strip() == sha
    assert got.with_name(got.name + ".source").read_text().strip() == w["url"]
    assert fetch_weights("fs_b16", w["url"], tmp_path / "cache") == got  # cached: no new call
    assert len(calls) == 1
    # a hub blob that does not match its own etag (a corrupt HF cache) is refused
    files[("etag", "model.safetensors")] = "0" * 64
    with pytest.raises(WeightsError, match="expected " + "0" * 64 + ", actual " + sha):
        fetch_weights("fs_b16", w["url"], tmp_path / "other")


def test_fallback_to_the_release_file_when_the_hub_fails(tmp_path, fake_hub, caplog):
    _, calls = fake_hub
    src, sha = _blob(tmp_path, b"dino release file")
    url = get_spec("dino_b16").weights["url"]
    with caplog.at_level(logging.WARNING):
        got = fetch_weights(
            "dino_b16", url, tmp_path / "cache", fallbacks=[{"url": src.as_uri(), "sha256": sha}]
        )
    assert calls and got.name == "dino_b16-model.safetensors"  # cached under the primary's name
    assert got.read_bytes() == b"dino release file" and "fallback" in caplog.text
    assert got.with_name(got.name + ".source").read_text().strip() == src.as_uri()
    src.unlink()
    fb = [{"url": src.as_uri(), "sha256": sha}]
    assert fetch_weights("dino_b16", url, tmp_path / "cache", fallbacks=fb) == got
    got.write_bytes(b"tampered")  # checked against the fallback's hash, the source it came from
    with pytest.raises(WeightsError, match="expected " + sha):
        fetch_weights("dino_b16", url, tmp_path / "cache", fallbacks=fb)


def test_all_sources_failing_names_each(tmp_path, fake_hub):
    w = get_spec("clip_b16").weights
    fb = registry_fallbacks(w["url"])  # what the workflow's download rule gets by default
    assert [s.url for s in fb] == [f["url"] for f in w["fallbacks"]]
    assert fb[-1].sha256 == "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
    with pytest.raises(WeightsError) as e:
        fetch_weights(
            "clip_b16",
            w["url"],
            tmp_path / "cache",
            fallbacks=[fb[0], {"url": "http://127.0.0.1:9/ViT-B-16.pt", "sha256": fb[-1].sha256}],
            timeout=5,
        )
    msg = str(e.value)
    assert "clip_b16" in msg and w["url"] in msg and fb[0].url in msg and "127.0.0.1:9" in msg
    assert "offline" in msg
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_user_sha256_is_honoured(tmp_path):
    src, sha = _blob(tmp_path, b"release")
    cache = tmp_path / "cache"
    got = fetch_weights("m", src.as_uri(), cache, fallbacks=[])  # pinned on first download
    # a sha256 set in the config later still applies to the cached file
    with pytest.raises(WeightsError, match="expected " + "1" * 64):
        fetch_weights("m", src.as_uri(), cache, sha256="1" * 64, fallbacks=[])
    assert fetch_weights("m", src.as_uri(), cache, sha256=sha, fallbacks=[]) == got
    # custom_models: a sha256 alone keeps the base's sources; a url or path replaces them
    spec = spec_from_config("fs_b16", {"base": "fs_b16", "weights": {"sha256": sha}})
    base = get_spec("fs_b16").weights
    assert spec.weights == {**base, "sha256": sha}
    own = spec_from_config("mine", {"base": "clip_b16", "weights": {"url": src.as_uri()}})
    assert own.weights == {"url": src.as_uri(), "format": "open_clip"}


def test_local_path_checked_against_user_sha256(tmp_path, x):
    from safetensors.torch import save_file

    cfg = {
        "base": "fs_b16",
        "arch_kwargs": {
            "img_size": 32,
            "patch_size": 8,
            "embed_dim": 48,
            "depth": 2,
            "num_heads": 3,
        },
        "weights": {"path": str(tmp_path / "w.safetensors"), "sha256": "2" * 64},
    }
    src = build_network(spec_from_config("u", cfg))
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.safetensors")
    with pytest.raises(ModelError, match="sha256 expected " + "2" * 64):
        build_model(spec_from_config("u", cfg))
    cfg["weights"]["sha256"] = hashlib.sha256((tmp_path / "w.safetensors").read_bytes()).hexdigest()
    build_model(spec_from_config("u", cfg))


def test_checkpoint_kind_is_read_from_content_not_name(tmp_path):
    from safetensors.torch import save_file

    t = {"a": torch.arange(3.0)}
    torch.save(t, tmp_path / "saved_as.safetensors")  # a .bin fallback under the primary's name
    save_file(t, tmp_path / "really.bin")
    for name in ("saved_as.safetensors", "really.bin"):
        torch.testing.assert_close(read_checkpoint(Path(tmp_path / name))["a"], t["a"])
