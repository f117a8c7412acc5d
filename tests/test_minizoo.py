"""The mini-zoo trainer: checkpoints in each family's layout load strictly through the zoo
and reproduce the trained backbone; training is deterministic and learns."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from vitlib.data.manifest import read_imagefolder
from vitlib.data.synthetic import generate
from vitlib.minizoo import train_model
from vitlib.minizoo.train import load_images
from vitlib.models.build import build_model
from vitlib.models.registry import spec_from_config

KW = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3}
FORMAT = {
    "supervised": ("timm", "timm"),
    "clip": ("clip", "open_clip"),
    "dino": ("dino", "dino"),
    "mae": ("mae", "mae"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("zooworld")
    generate(d, seed=0, size="tiny", parts=["imagenet"], per_class=12)
    return read_imagefolder(d / "imagenet" / "train", dataset="w")


@pytest.mark.parametrize("method", ["supervised", "clip", "dino", "mae"])
def test_checkpoint_loads_through_the_zoo_and_is_deterministic(tmp_path, world, method):
    out = []
    for run in range(2):
        s = train_model(
            method,
            world,
            arch="vit_small_patch16_224",
            arch_kwargs=KW,
            out=tmp_path / f"{run}.pth",
            recipe={"epochs": 1, "batch_size": 16, "seed": 3},
            log_path=tmp_path / f"{run}.tsv",
            progress=False,
        )
        out.append(torch.load(tmp_path / f"{run}.pth", weights_only=True))
    assert s["steps"] == 3 and np.isfinite(s["last_epoch_loss"])
    a, b = out

    def flat(d: dict) -> dict:
        return d.get("model", d.get("teacher", d.get("state_dict", d)))

    assert flat(a).keys() == flat(b).keys()
    assert all(torch.equal(flat(a)[k], flat(b)[k]) for k in flat(a))  # same seed, same weights
    fam, fmt = FORMAT[method]
    spec = spec_from_config(
        method,
        {
            "arch": "vit_small_patch16_224",
            "family": fam,
            "arch_kwargs": KW,
            "weights": {"path": str(tmp_path / "0.pth"), "format": fmt},
        },
    )
    model = build_model(spec)  # strict load
    # the loaded backbone is the trained one: compare with the checkpoint's own tensors
    sd = flat(a)
    prefix = {"dino": "backbone.", "clip": "visual.trunk."}.get(method, "")
    own = model.state_dict()
    for k, v in own.items():
        assert torch.equal(v, sd[prefix + k]), k
    with open(tmp_path / "0.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 3 and all(np.isfinite(float(r["loss"])) for r in rows)
    if method == "mae":
        assert any(k.startswith("decoder_") for k in sd) and "mask_token" in sd


def test_supervised_training_learns(tmp_path, world):
    """Without augmentation the network fits its 48 training images: the loss falls and the
    trained classifier labels them (chance 0.25; the world's classes differ only in shape)."""
    s = train_model(
        "supervised",
        world,
        arch="vit_small_patch16_224",
        arch_kwargs=KW,
        out=tmp_path / "s.pth",
        recipe={
            "epochs": 80,
            "batch_size": 16,
            "lr": 4e-3,
            "seed": 0,
            "crop_scale": 1.0,
            "jitter": 0.0,
            "grey": 0.0,
            "label_smoothing": 0.0,
        },
        progress=False,
    )
    assert s["last_epoch_loss"] < 0.5 * s["first_epoch_loss"]
    import timm

    net = timm.create_model("vit_small_patch16_224", num_classes=4, **KW)
    net.load_state_dict(torch.load(tmp_path / "s.pth", weights_only=True))
    net.eval()
    x = load_images(world, 32).float() / 255
    mean, std = torch.tensor((0.485, 0.456, 0.406)), torch.tensor((0.229, 0.224, 0.225))
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        acc = (net(x).argmax(1) == torch.tensor(world.labels)).float().mean().item()
    assert acc > 0.9


def test_unknown_method_is_refused(world, tmp_path):
    with pytest.raises(ValueError, match="method must be one of"):
        train_model(
            "byol",
            world,
            arch="vit_small_patch16_224",
            arch_kwargs=KW,
            out=tmp_path / "x.pth",
        )


def test_a_typo_in_a_training_option_is_an_error():
    from vitlib.minizoo.train import recipe_for

    r = recipe_for("dino", {"momentum": 0.95, "epochs": 3})
    assert r.momentum == 0.95 and r.epochs == 3 and r.lr == 5e-4  # the method's default lr
    with pytest.raises(ValueError, match="'momentun'.*DinoRecipe.*momentum"):
        recipe_for("dino", {"momentun": 0.95})
    with pytest.raises(ValueError, match="mask_ratio"):
        recipe_for("supervised", {"mask_ratio": 0.5})  # an MAE option
    with pytest.raises(ValueError, match="epochs: expected int"):
        recipe_for("mae", {"epochs": "ten"})
    with pytest.raises(ValueError, match="must be >= 0"):
        recipe_for("clip", {"weight_decay": -1.0})


def test_a_typo_in_a_training_option_stops_the_config(tmp_path):
    from vitlib.config import ConfigError, validate_config

    cfg = {
        "models": ["m"],
        "custom_models": {
            "m": {
                "arch": "vit_small_patch16_224",
                "family": "dino",
                "arch_kwargs": KW,
                "train": {"method": "dino", "dataset": "w", "options": {"momentun": 0.9}},
            }
        },
        "datasets": {"w": {"kind": "imagefolder", "generate": {"size": "tiny"}}},
    }
    with pytest.raises(ConfigError, match="custom_models.m.train.*'momentun'"):
        validate_config(cfg, require_data=False)


def test_captions_name_the_class_and_the_nuisances():
    from vitlib.data.synthetic.captions import EOT, VOCAB, caption, colour_name, tokenise

    assert colour_name((250, 250, 250)) == "white"
    assert colour_name((128, 128, 130)) == "grey"
    assert colour_name((255, 0, 0)) == "red"
    assert colour_name((0, 0, 100)) == "dark blue"
    c = caption(2, (255, 0, 0), 3, (20, 20, 20))
    assert c == "a red triangle with dots on a black background"
    t = tokenise([c])
    assert t.shape == (1, 12) and t[0, 9] == EOT and t[0, 10] == 0
    assert [VOCAB[i - 1] for i in t[0, :9]] == c.split()
    with pytest.raises(ValueError, match="unknown words"):
        tokenise(["a plaid triangle"])
    from vitlib.data.synthetic.captions import class_only

    short = class_only(tokenise([c, "a dark blue star with grid on a grey background"]))
    words = [[VOCAB[i - 1] for i in row if 0 < i < EOT] for row in short]
    assert words == [["a", "triangle"], ["a", "star"]] and (short[:, 2] == EOT).all()


def test_sinkhorn_knopp_targets_are_distributions_that_use_every_prototype():
    from vitlib.minizoo.dino import sinkhorn_knopp

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 16, generator=g)
    logits[:, 0] += 3.0  # a prototype every image prefers: softmax would collapse onto it
    q = sinkhorn_knopp(logits, temp=0.1, iterations=500)
    torch.testing.assert_close(q.sum(1), torch.ones(64))  # a distribution per image
    torch.testing.assert_close(q.sum(0), torch.full((16,), 64 / 16), rtol=1e-3, atol=1e-3)
    q3 = sinkhorn_knopp(logits, temp=0.1, iterations=3)  # DINOv2's count: on the way there
    torch.testing.assert_close(q3.sum(1), torch.ones(64))
    assert q3[:, 0].mean() < 0.1  # prototype 0 gets 2.9 of 64 images' mass, not all of it
    assert torch.softmax(logits / 0.1, 1)[:, 0].mean() > 0.75  # ... softmax: 78 % of the mass


def test_koleo_is_minus_the_mean_log_nearest_neighbour_distance():
    from vitlib.minizoo.dino import koleo

    # Hand-computed: three unit vectors on a circle at 0°, 90°, 100°: nearest distances
    # 2 sin(5°) (twice, the 90°/100° pair) and 2 sin(45°) (0° to 90°).
    a = torch.deg2rad(torch.tensor([0.0, 90.0, 100.0]))
    x = torch.stack([a.cos(), a.sin()], 1) * torch.tensor([[1.0], [3.0], [0.5]])  # norms drop
    d = [
        2 * math.sin(math.radians(45)),
        2 * math.sin(math.radians(5)),
        2 * math.sin(math.radians(5)),
    ]
    assert koleo(x).item() == pytest.approx(-sum(math.log(v) for v in d) / 3, rel=1e-5)
    # An independent formulation: every pairwise distance, the diagonal excluded.
    y = torch.randn(32, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    yn = torch.nn.functional.normalize(y, dim=-1)
    dist = torch.cdist(yn, yn) + torch.eye(32) * 9
    torch.testing.assert_close(koleo(y), -torch.log(dist.min(1).values).mean())
    koleo(y).backward()  # the gradient spreads the batch: a step lowers the term
    with torch.no_grad():
        assert koleo(y - 0.1 * y.grad) < koleo(y)


def test_dino_koleo_option_adds_the_term_on_each_global_crop():
    import timm

    from vitlib.minizoo.dino import Dino, koleo
    from vitlib.minizoo.train import recipe_for

    assert recipe_for("dino", {}).koleo == 0.0  # DINO's loss unless asked for
    with pytest.raises(ValueError, match="koleo"):
        recipe_for("dino", {"koleo": -0.1})

    def backbone(**e):
        torch.manual_seed(0)
        return timm.create_model("vit_small_patch16_224", pretrained=False, **KW, **e)

    g = torch.Generator().manual_seed(1)
    glob = [torch.randn(6, 3, 32, 32, generator=g) for _ in range(2)]
    loc = [torch.randn(6, 3, 16, 16, generator=g)]
    plain = Dino(recipe_for("dino", {"out_dim": 32}), backbone, 10)
    with_k = Dino(recipe_for("dino", {"out_dim": 32, "koleo": 0.25}), backbone, 10)
    with torch.no_grad():
        extra = 0.25 * sum(koleo(plain.net(v)) for v in glob)
        torch.testing.assert_close(
            with_k.distill(glob, loc), plain.distill(glob, loc) + extra, rtol=1e-5, atol=1e-6
        )
        # on the head's bottleneck instead (the MLP's output, before its normalisation)
        bn = Dino(
            recipe_for("dino", {"out_dim": 32, "koleo": 0.25, "koleo_on": "bottleneck"}),
            backbone,
            10,
        )
        extra = 0.25 * sum(koleo(plain.head.mlp(plain.net(v))) for v in glob)
        torch.testing.assert_close(
            bn.distill(glob, loc), plain.distill(glob, loc) + extra, rtol=1e-5, atol=1e-6
        )
    with pytest.raises(ValueError, match="koleo_on"):
        recipe_for("dino", {"koleo_on": "head"})


def test_hue_rotation_keeps_luma_and_composes():
    from vitlib.minizoo.augment import hue_rotate

    x = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    t = torch.tensor([0.1, 0.25, 0.5, -0.3])
    y = hue_rotate(x, t)
    torch.testing.assert_close((y * luma).sum(1), (x * luma).sum(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hue_rotate(y, -t), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hue_rotate(x, torch.ones(4)), x, rtol=1e-5, atol=1e-5)
    grey = x.mean(1, keepdim=True).expand_as(x)
    torch.testing.assert_close(hue_rotate(grey, t), grey, rtol=1e-5, atol=1e-5)  # no chroma
