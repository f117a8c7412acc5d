"""Views: how images are prepared for a model (docs/protocols.md §1.4, §4, §5.2–5.4).

A view turns an image into the model's input.  ``S`` is the model's image size and ``p``
its patch size.

==============  =====================================================================  ========
view            what the model sees                                                     store
==============  =====================================================================  ========
``center``      bicubic (antialiased) short side → S, centre crop S×S (§1.4; no          reduced
                256→224 ratio)
``retrieval``   ``thumbnail((S, S))`` (LANCZOS, long side ≤ S), then ``center`` (§5.2)  reduced
``patches``     ``center``, keeping every spatial token of every block                  tokens
``squash``      bicubic resize to S×S, aspect not kept (DAVIS non-dense, §5.3)          tokens
``spair``       long side → S (LANCZOS), zero-padded to S×S, centred (§5.4)             tokens
``dense``       short side → 2S, long side floored to a multiple of p, tiled by S×S     tokens
                windows, the last row/column shifted back to the border, first tile
                covering a token wins (§4); one token grid per image
==============  =====================================================================  ========

"reduced" views go through :class:`~vitlib.reducers.StreamingReducer` (CLS and mean
features, attention rows, distances, Grams, sums); "tokens" views keep the spatial token
features of every block (ragged: one grid per image) for mask pooling, label propagation
and keypoint matching.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vitlib.data.manifest import DataError, Manifest

if TYPE_CHECKING:
    import torch

REDUCED_VIEWS = ("center", "retrieval")
TOKEN_VIEWS = ("patches", "squash", "spair", "dense")
VIEWS = REDUCED_VIEWS + TOKEN_VIEWS
BICUBIC = Image.Resampling.BICUBIC


def to_rgb(im: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB as a viewer shows it: EXIF orientation applied
    (``ImageOps.exif_transpose``), 16/32-bit integer images scaled to 0–255 (not clipped:
    ``convert("RGB")`` alone saturates a 16-bit PNG), palettes and alpha resolved."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode != "I" or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8))
    return im.convert("RGB")


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """(height, width) after the EXIF orientation, from the header only."""
    orientation = im.getexif().get(0x0112, 1)
    h, w = im.height, im.width
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image as RGB (:func:`to_rgb`); a missing, unreadable, truncated or
    decompression-bomb file is a DataError naming it."""
    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except (FileNotFoundError, UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def _to_tensor(im: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``ToTensor`` + ``Normalize``: ``[3, H, W]`` float32, (x/255 − mean)/std."""
    import torch

    a: np.ndarray = np.asarray(im, dtype=np.float32) / 255.0
    a = (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def _normalise(
    mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    return lambda im: _to_tensor(im, mean, std)


def resize_short(im: Image.Image, size: int) -> Image.Image:
    """Bicubic resize of the short side to ``size`` (long side ``int(size·long/short)``), as
    torchvision's ``Resize(size)`` on PIL images (PIL's bicubic filter is antialiased)."""
    w, h = im.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    return im if (nw, nh) == (w, h) else im.resize((nw, nh), BICUBIC)


def center_crop(im: Image.Image, size: int) -> Image.Image:
    """Centre ``size``² crop with torchvision's rounding of the offsets."""
    w, h = im.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def center_pixels(img_size: int) -> Callable[[Image.Image], Image.Image]:
    return lambda im: center_crop(resize_short(im, img_size), img_size)


def center_transform(
    img_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    return lambda im: _to_tensor(center_pixels(img_size)(im), mean, std)


def thumbnail(im: Image.Image, size: int) -> Image.Image:
    """PIL ``thumbnail((size, size))`` with LANCZOS (the former ``ANTIALIAS``), on a copy."""
    im = im.copy()
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    return im


@dataclass(frozen=True)
class PadGeometry:
    """Where an image lands in the ``spair`` view: ``x' = x·scale + off_x`` (same for y)."""

    scale: float
    off_x: int
    off_y: int
    new_w: int
    new_h: int


def pad_geometry(width: int, height: int, size: int) -> PadGeometry:
    """Long side → ``size``, short side ``round(size·short/long)``, centred with offset
    ``int((size − new_short)/2)`` (docs/protocols.md §5.4, ``resize`` + ``preprocess_kps_pad``)."""
    if width >= height:
        nw, nh = size, int(round(size * height / width))
    else:
        nw, nh = int(round(size * width / height)), size
    return PadGeometry(
        scale=size / max(width, height),
        off_x=(size - nw) // 2,
        off_y=(size - nh) // 2,
        new_w=nw,
        new_h=nh,
    )


def pad_pixels(im: Image.Image, size: int) -> Image.Image:
    g = pad_geometry(im.width, im.height, size)
    canvas = Image.new("RGB", (size, size))
    canvas.paste(im.resize((g.new_w, g.new_h), Image.Resampling.LANCZOS), (g.off_x, g.off_y))
    return canvas


# ---------------------------------------------------------------------------------- dense tiling
@dataclass(frozen=True)
class DenseGeometry:
    """The §4 tiling of one image: resized size, token grid and tile origins (pixels)."""

    height: int
    width: int
    patch: int
    window: int
    tiles: tuple[tuple[int, int], ...]  # (top, left), row by row

    @property
    def grid(self) -> tuple[int, int]:
        return self.height // self.patch, self.width // self.patch


def dense_size(
    height: int, width: int, window: int, patch: int, tile_factor: int = 2
) -> tuple[int, int]:
    """Short side → ``window·tile_factor``; long side scaled and floored to a multiple of
    ``patch`` (docs/protocols.md §4 step 1; 480×640 at p = 16 → 448×592)."""
    short = window * tile_factor
    if height <= width:
        long = int(math.floor(short / height * width / patch)) * patch
        return short, max(long, short)
    long = int(math.floor(short / width * height / patch)) * patch
    return max(long, short), short


def dense_geometry(
    height: int, width: int, window: int, patch: int, tile_factor: int = 2
) -> DenseGeometry:
    """Tile origins of §4 step 2: ``ceil(H/window) × ceil(W/window)`` tiles on a ``window``
    grid, the last row/column shifted back to end at the border."""
    if window % patch:
        raise ValueError(f"window {window} is not a multiple of the patch size {patch}")
    h, w = dense_size(height, width, window, patch, tile_factor)
    rows = [min(window * a, max(h - window, 0)) for a in range(math.ceil(h / window))]
    cols = [min(window * b, max(w - window, 0)) for b in range(math.ceil(w / window))]
    return DenseGeometry(h, w, patch, window, tuple((r, c) for r in rows for c in cols))


def dense_tiles(
    im: Image.Image, geom: DenseGeometry, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """The tiles of ``im`` as a normalised ``[T, 3, window, window]`` batch."""
    import torch

    x = _to_tensor(im.resize((geom.width, geom.height), Image.Resampling.BICUBIC), mean, std)
    w = geom.window
    return torch.stack([x[:, r : r + w, c : c + w] for r, c in geom.tiles])


def assemble_tiles(tile_tokens: torch.Tensor, geom: DenseGeometry) -> torch.Tensor:
    """Re-assemble ``[T, L, t, t, D]`` tile token grids into ``[L, gh, gw, D]``; where tiles
    overlap, the first tile (row by row, left to right) wins (§4 step 4)."""
    gh, gw = geom.grid
    t = geom.window // geom.patch
    import torch

    L, D = tile_tokens.shape[1], tile_tokens.shape[-1]
    out = tile_tokens.new_zeros((L, gh, gw, D))
    covered = torch.zeros((gh, gw), dtype=torch.bool)
    for k, (r, c) in enumerate(geom.tiles):
        r0, c0 = r // geom.patch, c // geom.patch
        free = ~covered[r0 : r0 + t, c0 : c0 + t]
        region = out[:, r0 : r0 + t, c0 : c0 + t]
        region[:, free] = tile_tokens[k][:, free]
        covered[r0 : r0 + t, c0 : c0 + t] = True
    return out


# ---------------------------------------------------------------------------------- transforms
def make_transform(
    view: str, img_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """The per-image transform of a fixed-size view (everything but ``dense``)."""
    norm = _normalise(mean, std)
    if view in ("center", "patches"):
        return center_transform(img_size, mean, std)
    if view == "retrieval":
        return lambda im: center_transform(img_size, mean, std)(thumbnail(im, img_size))
    if view == "squash":
        return lambda im: norm(im.resize((img_size, img_size), BICUBIC))
    if view == "spair":
        return lambda im: norm(pad_pixels(im, img_size))
    if view == "dense":
        raise ValueError("the dense view is tiled: use dense_geometry/dense_tiles")
    raise ValueError(f"unknown view {view!r}; known views: {', '.join(VIEWS)}")


def view_pixels(view: str, im: Image.Image, img_size: int) -> Image.Image:
    """The pixels a fixed-size view feeds the model (before normalisation)."""
    if view in ("center", "patches"):
        return center_pixels(img_size)(im)
    if view == "retrieval":
        return center_pixels(img_size)(thumbnail(im, img_size))
    if view == "squash":
        return im.resize((img_size, img_size), Image.Resampling.BICUBIC)
    if view == "spair":
        return pad_pixels(im, img_size)
    raise ValueError(f"view {view!r} has no single-image pixels")


class ManifestDataset:
    """Items of a manifest through a view transform; returns ``(tensor, index)`` (a
    map-style dataset for ``torch.utils.data.DataLoader``)."""

    def __init__(self, manifest: Manifest, transform: Callable[[Image.Image], Any]):
        self.manifest = manifest
        self.transform = transform

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        item = self.manifest.items[i]
        return self.transform(load_rgb(self.manifest.abspath(item))), i


class DenseDataset:
    """Items of a manifest as tiles of the dense view; returns ``(tiles [T,3,w,w], index)``."""

    def __init__(
        self,
        manifest: Manifest,
        geoms: Sequence[DenseGeometry],
        mean: Sequence[float],
        std: Sequence[float],
    ):
        self.manifest, self.geoms, self.mean, self.std = manifest, geoms, mean, std

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        im = load_rgb(self.manifest.abspath(self.manifest.items[i]))
        return dense_tiles(im, self.geoms[i], self.mean, self.std), i


def image_sizes(manifest: Manifest) -> np.ndarray:
    """``[n, 2]`` (height, width) of every image, read from the file headers only."""
    out = np.zeros((len(manifest), 2), dtype=np.int64)
    for i, it in enumerate(manifest.items):
        p = manifest.abspath(it)
        try:
            with Image.open(p) as im:
                out[i] = oriented_size(im)
        except (
            FileNotFoundError,
            UnidentifiedImageError,
            OSError,
            Image.DecompressionBombError,
        ) as e:
            raise DataError(f"cannot read image {p}: {e}") from None
    return out


def view_image(path: str | os.PathLike, img_size: int, view: str = "center") -> np.ndarray:
    """A view of an image before normalisation, as ``uint8 [H, W, 3]`` (for drawing
    attention over exactly the pixels the model saw)."""
    return np.asarray(view_pixels(view, load_rgb(path), img_size), dtype=np.uint8)
