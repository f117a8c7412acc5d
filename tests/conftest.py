from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from vitlib.data.manifest import read_imagefolder
from vitlib.data.synthetic import generate
from vitlib.models import build_model, spec_from_config

# checkpoint digests (vitlib.models.weights.sha256_cached) of a test run stay out of ~/.cache
os.environ.setdefault("VITLIB_CACHE_DIR", tempfile.mkdtemp(prefix="vitlib-test-cache-"))

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_ARCH = {
    "arch": "vit_small_patch16_224",
    "family": "random",
    "arch_kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2},
    "init_seed": 0,
}


@pytest.fixture(scope="session")
def tiny_spec():
    return spec_from_config("tiny", TINY_ARCH)


@pytest.fixture(scope="session")
def tiny_model(tiny_spec):
    return build_model(tiny_spec)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("world"), size="tiny", seed=0)


@pytest.fixture()
def tiny_manifest(tiny_world):
    return read_imagefolder(tiny_world / "imagenet" / "train", dataset="tiny", cka_batch_size=4)


@pytest.fixture(scope="session")
def spec():
    """A 2-block toy ViT (32 px, 8 px patches, 4×4 grid) shared by the task and safety tests."""
    return spec_from_config(
        "toy",
        {
            "arch": "vit_small_patch16_224",
            "family": "random",
            "init_seed": 3,
            "arch_kwargs": {
                "img_size": 32,
                "patch_size": 8,
                "embed_dim": 24,
                "depth": 2,
                "num_heads": 2,
            },
        },
    )
