"""Models by name (timm:…, open_clip:…) and the capture check, offline: specs come from the
installed libraries' own configs, networks are built from them without weights."""

from __future__ import annotations

import pytest
import timm
import torch

from vitlib.config import ConfigError, validate_config
from vitlib.models.check import CaptureCheckError, check_capture
from vitlib.models.names import family_of, is_name, name_to_id
from vitlib.models.registry import get_spec

SMALL = {"embed_dim": 48, "depth": 2, "num_heads": 3}
DS = {"d": {"kind": "imagefolder", "root": "nowhere"}}


@pytest.mark.parametrize(
    ("name", "family", "arch", "img", "prefix", "fmt"),
    [
        (
            "timm:vit_small_patch16_224.augreg_in21k",
            "timm",
            "vit_small_patch16_224",
            224,
            1,
            "timm",
        ),
        (
            "timm:vit_base_patch14_dinov2.lvd142m",
            "dinov2",
            "vit_base_patch14_dinov2",
            518,
            1,
            "dinov2",
        ),
        (
            "timm:vit_base_patch14_reg4_dinov2.lvd142m",
            "dinov2",
            "vit_base_patch14_reg4_dinov2",
            518,
            5,
            "timm",
        ),
        ("timm:vit_base_patch16_224.mae", "mae", "vit_base_patch16_224", 224, 1, "timm"),
        (
            "timm:vit_base_patch16_siglip_224.webli",
            "siglip",
            "vit_base_patch16_siglip_224",
            224,
            0,
            "timm",
        ),
        (
            "timm:vit_base_patch16_clip_224.openai",
            "clip",
            "vit_base_patch16_clip_224",
            224,
            1,
            "timm",
        ),
        ("open_clip:ViT-B-16/laion2b_s34b_b88k", "clip", "ViT-B-16", 224, 1, "open_clip"),
    ],
)
def test_names_resolve_from_the_libraries_configs(name, family, arch, img, prefix, fmt):
    """Family, architecture, input size, prefix tokens, normalisation and the hub file come
    from timm's / open_clip's own pretrained configs."""
    import open_clip
    from timm.models import get_pretrained_cfg

    s = get_spec(name)
    assert is_name(name) and s.id == name_to_id(name)
    assert (s.family, s.arch, s.img_size, s.num_prefix_tokens) == (family, arch, img, prefix)
    assert s.weights["format"] == fmt and s.weights["url"].startswith("https://huggingface.co/")
    if name.startswith("timm:"):
        cfg = get_pretrained_cfg(name[5:])
        assert s.mean == tuple(cfg.mean) and s.std == tuple(cfg.std)
        assert cfg.hf_hub_id in s.weights["url"]
    else:
        a, t = name.split(":")[1].split("/")
        cfg = open_clip.get_pretrained_cfg(a, t)
        assert s.mean == tuple(cfg["mean"]) and cfg["hf_hub"].rstrip("/") in s.weights["url"]


def test_name_ids_and_errors():
    assert name_to_id("open_clip:ViT-B-16/openai") == "open_clip-ViT-B-16--openai"
    assert not is_name("dino_b16") and not is_name("vitx:y") and not is_name("timm:")
    assert is_name("hf:google/vit-base-patch16-224") and name_to_id("hf:a/b") == "hf-a--b"
    assert family_of("vit_base_patch16_224.augreg_in21k") == "timm"
    with pytest.raises(ValueError, match="no pretrained weights|tags"):
        get_spec("timm:vit_small_patch16_224.nope")
    with pytest.raises(ValueError, match="no architecture"):
        get_spec("timm:vit_nonexistent_patch3.x")
    with pytest.raises(ValueError, match="no pretrained tag"):
        get_spec("open_clip:ViT-B-16/nope")


def test_config_turns_names_into_custom_models(tmp_path):
    """A name in models: becomes its id, defined as custom_models.<id> = {base: name};
    a user's own entry for that id (a family override) is kept; errors name the key."""
    cfg = {
        "models": ["timm:vit_small_patch16_224.augreg_in21k", "timm:vit_base_patch16_224.mae"],
        "custom_models": {
            "timm-vit_base_patch16_224.mae": {
                "base": "timm:vit_base_patch16_224.mae",
                "family": "dino",
            }
        },
        "datasets": DS,
    }
    out = validate_config(cfg, require_data=False)
    assert out["models"] == [
        "timm-vit_small_patch16_224.augreg_in21k",
        "timm-vit_base_patch16_224.mae",
    ]
    assert out["custom_models"]["timm-vit_small_patch16_224.augreg_in21k"] == {
        "base": "timm:vit_small_patch16_224.augreg_in21k"
    }
    from vitlib.config import model_spec

    assert model_spec(out, "timm-vit_base_patch16_224.mae").family == "dino"
    bad = {"models": ["timm:vit_small_patch16_224.nope"], "datasets": DS}
    with pytest.raises(ConfigError, match=r"models\.0"):
        validate_config(bad, require_data=False)


@pytest.mark.parametrize(
    ("arch", "kw"),
    [
        ("vit_small_patch16_224", {"img_size": 32, "qk_norm": True}),
        ("vit_small_patch14_reg4_dinov2", {"img_size": 28}),
        ("vit_base_patch16_siglip_224", {"img_size": 32}),
        ("beit_base_patch16_224", {"img_size": 32}),
        ("deit3_small_patch16_224", {"img_size": 32}),
    ],
)
def test_capture_check_passes_on_supported_attention(arch, kw):
    m = timm.create_model(arch, pretrained=False, num_classes=0, **SMALL, **kw).eval()
    d = check_capture(m, img_size=kw["img_size"])
    assert d["checked"] and d["attention"] <= 1e-6 and d["blocks"] <= 1e-5


def test_capture_check_on_open_clip():
    from vitlib.models.openclip import OpenClipViT, build_vision_tower

    m = OpenClipViT(
        build_vision_tower("ViT-B-16", width=48, layers=2, head_width=16, image_size=32)
    )
    assert check_capture(m.eval(), img_size=32)["checked"]


def test_capture_check_fails_loudly_on_what_it_cannot_see():
    """Rotary attention (EVA-02) is not a recognised variant; an attention that adds a term
    the weights do not explain, and a capture that misses part of the block, are caught."""
    eva = timm.create_model(
        "eva02_small_patch14_224", pretrained=False, num_classes=0, img_size=28, **SMALL
    )
    with pytest.raises(CaptureCheckError, match="EvaAttention"):
        check_capture(eva.eval(), img_size=28, model_id="eva")

    m = timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=0, img_size=32, **SMALL
    ).eval()
    attn = m.blocks[1].attn

    def biased(x, *_, **__):  # a positional term before the softmax that no weight explains
        B, N, C = x.shape
        q, k, v = attn.qkv(x).reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        a = (q * attn.scale) @ k.transpose(-2, -1) + torch.linspace(0, 1, N)
        a = attn.attn_drop(a.softmax(dim=-1))
        return attn.proj((a @ v).transpose(1, 2).reshape(B, N, C))

    attn.forward = biased  # type: ignore[method-assign]
    with pytest.raises(CaptureCheckError, match="block 2: the captured attention"):
        check_capture(m, img_size=32, model_id="m")

    m2 = timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=0, img_size=32, **SMALL
    ).eval()
    lib = m2.forward_intermediates

    def off(*a, **k):  # the library's stream differs from what the hooks see
        return [(s + 1.0, p) for s, p in lib(*a, **k)]

    m2.forward_intermediates = off  # type: ignore[method-assign]
    with pytest.raises(CaptureCheckError, match="block 1: the captured block output"):
        check_capture(m2, img_size=32, model_id="m2")


@pytest.mark.parametrize("kind", ["vit", "vit_mae"])
def test_hf_vit_runs_what_transformers_computes(tmp_path, monkeypatch, kind):
    """hf:<repo>: a transformers ViT (and ViT-MAE) saved by transformers' own
    save_pretrained (the hub layout) is resolved from its config.json and
    preprocessor_config.json, converted, passes the capture check, and every block output
    equals transformers' hidden states (ViT-MAE unmasked, patches in order)."""
    transformers = pytest.importorskip("transformers")
    import json

    from vitlib.models import names
    from vitlib.models.build import build_model
    from vitlib.models.capture import Capture

    small = dict(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=96,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    if kind == "vit":
        ref = transformers.ViTModel(transformers.ViTConfig(**small), add_pooling_layer=False)
    else:
        ref = transformers.ViTMAEModel(transformers.ViTMAEConfig(**small, mask_ratio=0.0))
    ref.eval().save_pretrained(tmp_path)
    pre = {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6]}
    monkeypatch.setattr(
        names, "_hf_read", lambda repo: (json.loads((tmp_path / "config.json").read_text()), pre)
    )
    s = get_spec(f"hf:org/tiny-{kind}")
    assert s.id == f"hf-org--tiny-{kind}" and s.weights["format"] == "hf_vit"
    assert (s.depth, s.num_heads, s.embed_dim, s.patch_size, s.img_size) == (2, 3, 48, 8, 32)
    assert s.mean == (0.1, 0.2, 0.3) and s.family == ("mae" if kind == "vit_mae" else "timm")
    m = build_model(s, tmp_path / "model.safetensors")
    assert check_capture(m, img_size=32)["checked"]
    x = torch.randn(2, 3, 32, 32)
    got = Capture(m, points=("block",), attention=False).collect(x).tokens["block"]
    with torch.no_grad():
        kw = {"noise": torch.arange(16.0).expand(2, 16)} if kind == "vit_mae" else {}
        hs = ref(pixel_values=x, output_hidden_states=True, **kw).hidden_states
    for i in range(2):  # LayerNorm eps set from config.json (transformers: 1e-12)
        torch.testing.assert_close(got[i], hs[i + 1], rtol=1e-5, atol=1e-5)


def test_capture_check_also_checks_the_streamed_route(monkeypatch):
    """The extraction's fp32 CPU route computes timm attention itself, block by block: the
    check runs it too, so a streamed forward that drifts from timm's stops the run."""
    import vitlib.models.capture as capture

    m = timm.create_model(
        "vit_small_patch16_224", pretrained=False, num_classes=0, img_size=32, **SMALL
    ).eval()
    assert check_capture(m, img_size=32)["checked"]
    streamed = capture._streamed_attention

    def drifting(attn, consumer, layer, x, *a, **k):  # e.g. a timm update the copy lacks
        return streamed(attn, consumer, layer, x, *a, **k) * 1.01

    monkeypatch.setattr(capture, "_streamed_attention", drifting)
    with pytest.raises(CaptureCheckError, match=r"block \d+ \(streamed route\): the captured"):
        check_capture(m, img_size=32, model_id="m")
    # a module whose forward an instance patched is not streamed (nor restored to timm's)
    attn = m.blocks[0].attn
    attn.forward = attn.forward  # type: ignore[method-assign]
    assert not capture.streamable(attn)
