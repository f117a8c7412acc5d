"""Views: the §4 dense tiling (hand-computed grids and tile positions), first-tile-wins
assembly, the SPair padding geometry, and token extraction against direct forwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitlib.data.manifest import Item, Manifest
from vitlib.data.views import (
    assemble_tiles,
    dense_geometry,
    dense_tiles,
    make_transform,
    pad_geometry,
    pad_pixels,
)


# (image H, W, patch) -> (resized H, W, tile rows, tile cols), by hand from docs/protocols.md §4
@pytest.mark.parametrize(
    "h,w,p,rh,rw,rows,cols",
    [
        (480, 640, 16, 448, 592, [0, 224], [0, 224, 368]),  # the §4 example
        (480, 640, 8, 448, 592, [0, 224], [0, 224, 368]),  # 597.33 -> 592 = 74·8
        (480, 640, 14, 448, 588, [0, 224], [0, 224, 364]),  # 42·14
        (480, 640, 32, 448, 576, [0, 224], [0, 224, 352]),  # 18·32
        (480, 854, 16, 448, 784, [0, 224], [0, 224, 448, 560]),  # DAVIS 480p
        (500, 375, 16, 592, 448, [0, 224, 368], [0, 224]),  # portrait
        (500, 500, 32, 448, 448, [0, 224], [0, 224]),  # square: no overlap
        (300, 1000, 8, 448, 1488, [0, 224], [0, 224, 448, 672, 896, 1120, 1264]),
    ],
)
def test_dense_geometry_matches_hand_computed(h, w, p, rh, rw, rows, cols):
    g = dense_geometry(h, w, window=224, patch=p)
    assert (g.height, g.width) == (rh, rw)
    assert g.grid == (rh // p, rw // p)
    assert sorted({r for r, _ in g.tiles}) == rows
    assert sorted({c for _, c in g.tiles}) == cols
    assert len(g.tiles) == len(rows) * len(cols)
    # row by row, left to right; every start a multiple of the patch size
    assert list(g.tiles) == [(r, c) for r in rows for c in cols]
    assert all(r % p == 0 and c % p == 0 for r, c in g.tiles)
    # the tiles cover the resized image exactly
    cover = np.zeros((rh, rw), bool)
    for r, c in g.tiles:
        cover[r : r + 224, c : c + 224] = True
    assert cover.all() and max(r for r, _ in g.tiles) + 224 == rh


def test_dense_geometry_small_window_for_small_models():
    g = dense_geometry(72, 96, window=32, patch=8)  # a 32-px toy ViT
    assert (g.height, g.width) == (64, 80)  # 96·64/72 = 85.3 -> 80
    assert g.tiles == ((0, 0), (0, 32), (0, 48), (32, 0), (32, 32), (32, 48))
    with pytest.raises(ValueError, match="multiple of the patch"):
        dense_geometry(72, 96, window=30, patch=8)


def test_assembly_first_tile_wins():
    g = dense_geometry(72, 96, window=32, patch=8)  # tiles 4×4 tokens, grid 8×10
    T = len(g.tiles)
    tok = torch.arange(T, dtype=torch.float32).reshape(T, 1, 1, 1, 1).expand(T, 2, 4, 4, 3)
    out = assemble_tiles(tok, g)
    assert out.shape == (2, 8, 10, 3)
    expect = np.full((8, 10), -1)
    for k, (r, c) in enumerate(g.tiles):
        region = expect[r // 8 : r // 8 + 4, c // 8 : c // 8 + 4]
        region[region < 0] = k
    assert (expect >= 0).all()
    np.testing.assert_array_equal(out[0, :, :, 0].numpy(), expect)
    # columns 6-7 are covered by tiles 1 (x = 32) and 2 (x = 48): tile 1 wins
    assert out[0, 0, 6, 0] == 1 and out[0, 0, 8, 0] == 2


def test_dense_tiles_are_crops_of_the_resized_image():
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8))
    g = dense_geometry(72, 96, window=32, patch=8)
    tiles = dense_tiles(im, g, (0, 0, 0), (1, 1, 1))
    full = np.asarray(im.resize((g.width, g.height), Image.Resampling.BICUBIC), np.float32) / 255
    for t, (r, c) in zip(tiles, g.tiles):
        np.testing.assert_allclose(
            t.permute(1, 2, 0).numpy(), full[r : r + 32, c : c + 32], atol=1e-6
        )


@pytest.mark.parametrize("w,h", [(640, 480), (333, 500), (224, 224), (100, 37)])
def test_pad_geometry_places_the_image_centred(w, h):
    g = pad_geometry(w, h, 224)
    assert max(g.new_w, g.new_h) == 224
    assert g.new_w == round(224 * w / max(w, h)) and g.new_h == round(224 * h / max(w, h))
    assert (g.off_x, g.off_y) == ((224 - g.new_w) // 2, (224 - g.new_h) // 2)
    im = Image.new("RGB", (w, h), (255, 255, 255))
    arr = np.asarray(pad_pixels(im, 224))
    ys, xs = np.nonzero(arr[..., 0] > 128)
    assert (xs.min(), ys.min()) == (g.off_x, g.off_y)
    assert (xs.max() + 1, ys.max() + 1) == (g.off_x + g.new_w, g.off_y + g.new_h)
    # a keypoint at the image's far corner lands at the pasted image's far corner
    np.testing.assert_allclose(
        np.array([w, h]) * g.scale + [g.off_x, g.off_y],
        [g.off_x + g.new_w, g.off_y + g.new_h],
        atol=0.51,
    )


def test_retrieval_view_thumbnails_before_the_centre_crop():
    im = Image.new("RGB", (400, 100), (10, 200, 30))
    x = make_transform("retrieval", 32, (0, 0, 0), (1, 1, 1))(im)
    assert x.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="unknown view"):
        make_transform("nope", 32, (0, 0, 0), (1, 1, 1))


def _manifest(tmp_path, sizes):
    rng = np.random.default_rng(1)
    items = []
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        items.append(Item(id=str(i), path=f"{i}.png", label=i % 2))
    return Manifest(
        dataset="v", kind="imagefolder", root=str(tmp_path), classes=["a", "b"], items=items
    )


def test_token_extraction_equals_direct_forwards(tmp_path):
    from vitlib.extract import run_extraction
    from vitlib.models.build import build_model
    from vitlib.models.capture import Capture
    from vitlib.models.registry import spec_from_config
    from vitlib.store import Store, open_store

    spec = spec_from_config(
        "t",
        {
            "arch": "vit_small_patch16_224",
            "family": "random",
            "init_seed": 0,
            "arch_kwargs": {
                "img_size": 32,
                "patch_size": 8,
                "embed_dim": 24,
                "depth": 2,
                "num_heads": 2,
            },
        },
    )
    m = _manifest(tmp_path, [(72, 96), (40, 40), (50, 120)])
    model = build_model(spec, None)
    for view in ("dense", "spair"):
        run_extraction(
            spec,
            m,
            view,
            tmp_path / f"{view}.zarr",
            batch_size=2,
            progress=False,
            feature_dtype="float32",
        )
        g = open_store(tmp_path / f"{view}.zarr")
        assert g["offsets"].shape == (4,) and int(g["offsets"][-1]) == g["tokens"].shape[0] > 0
        for i, it in enumerate(m.items):
            im = Image.open(m.abspath(it)).convert("RGB")
            if view == "dense":
                geo = dense_geometry(im.height, im.width, 32, 8)
                x = dense_tiles(im, geo, spec.mean, spec.std)
            else:
                x = make_transform("spair", 32, spec.mean, spec.std)(im)[None]
            c = Capture(model, points=("block",), attention=False).collect(x)
            blk = c.tokens["block"][1][:, 1:]  # layer 1, spatial [T, 16, D]
            got = Store(tmp_path / f"{view}.zarr").token_grid(i, 1)
            if view == "dense":
                ref = assemble_tiles(blk.reshape(len(x), 1, 4, 4, -1), geo)[0]
                assert got.shape[:2] == geo.grid
            else:
                ref = blk[0].reshape(4, 4, -1)
                np.testing.assert_allclose(
                    np.asarray(g["cls"][i, 1]), c.tokens["block"][1][0, 0].numpy(), atol=1e-5
                )
            np.testing.assert_allclose(got, ref.numpy(), atol=1e-5)


@pytest.mark.parametrize("size", [(97, 61), (61, 97), (40, 40), (20, 30)])
def test_center_view_equals_torchvision(size):
    """The view functions are plain PIL + NumPy (no torchvision import in jobs that only
    read images); they must equal torchvision's Resize + CenterCrop + ToTensor + Normalize."""
    from torchvision import transforms as T

    rng = np.random.default_rng(5)
    im = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = T.Compose(
        [
            T.Resize(32, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(32),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )(im)
    ours = make_transform("center", 32, mean, std)(im)
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)
    ref = T.Compose(
        [
            T.Resize((32, 32), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )(im)
    torch.testing.assert_close(make_transform("squash", 32, mean, std)(im), ref, atol=0, rtol=0)


def test_sixteen_bit_and_exif_orientation_are_read_as_a_viewer_shows_them(tmp_path):
    from PIL import Image

    from vitlib.data.views import load_rgb, oriented_size

    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")  # a 16-bit greyscale PNG
    rgb = np.asarray(load_rgb(tmp_path / "g16.png"))
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    expected = np.round(ramp.astype(float) * 255 / 65535)
    np.testing.assert_allclose(rgb[..., 0], expected, atol=1)  # scaled, not saturated
    assert (rgb == 255).mean() < 0.01

    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 10, 20))  # blue left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    shown = load_rgb(tmp_path / "rot.jpg")
    assert shown.size == (20, 40)  # (width, height) after the orientation
    with Image.open(tmp_path / "rot.jpg") as raw:
        assert oriented_size(raw) == (40, 20)  # (height, width), from the header
    top = np.asarray(shown)[:5].mean((0, 1))
    assert top[2] > 200 and top[0] < 60  # the blue edge is now on top
