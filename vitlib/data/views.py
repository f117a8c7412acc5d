"""Views: how images are prepared for a model (PROTOCOLS §1.4).

``center``: bicubic (antialiased) resize of the short side to the model's image size,
centre crop, ``ToTensor``, the family's mean/std — no 256→224 ratio.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms as T

from vitlib.data.manifest import DataError, Manifest

VIEWS = ("center",)


def center_transform(img_size: int, mean: Sequence[float], std: Sequence[float]
                     ) -> Callable[[Image.Image], torch.Tensor]:
    return T.Compose([
        T.Resize(img_size, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
        T.CenterCrop(img_size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def make_transform(view: str, img_size: int, mean: Sequence[float], std: Sequence[float]
                   ) -> Callable[[Image.Image], torch.Tensor]:
    if view == "center":
        return center_transform(img_size, mean, std)
    raise ValueError(f"unknown view {view!r}; known views: {', '.join(VIEWS)}")


def load_rgb(path: str) -> Image.Image:
    """Open an image as RGB; a missing, unreadable or truncated file is a DataError naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


class ManifestDataset(Dataset):
    """Items of a manifest through a view transform; returns ``(tensor, index)``."""

    def __init__(self, manifest: Manifest, transform: Callable[[Image.Image], torch.Tensor]):
        self.manifest = manifest
        self.transform = transform

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        item = self.manifest.items[i]
        return self.transform(load_rgb(str(self.manifest.abspath(item)))), i


def view_image(path: str | "os.PathLike[str]", img_size: int):  # noqa: ANN201
    """The ``center`` view of an image before normalisation, as ``uint8 [H, W, 3]`` (for
    drawing attention over exactly the pixels the model saw)."""
    import numpy as np

    t = T.Compose([T.Resize(img_size, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                   T.CenterCrop(img_size)])
    return np.asarray(t(load_rgb(str(path))), dtype=np.uint8)
