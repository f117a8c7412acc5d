"""Names, presets and plumbing every part of the synthetic world shares.

The class, part, keypoint and category names; the size presets (:data:`SIZES`,
:data:`PART_SIZES`); the per-image random streams (:func:`_rng`: no global random state) and
the writers of PNG, JPEG and JSON files with fixed settings, which make the world
byte-identical for the same arguments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CLASSES = (
    "disc",
    "square",
    "triangle",
    "cross",
    "ring",
    "bar",
    "diamond",
    "star",
    "crescent",
    "checker",
)

#: ImageNet part presets (``generate``'s ``classes``/``per_class``/``image_size`` override them).
SIZES = {
    "tiny": {"classes": 4, "per_class": 8, "image_size": 64},
    "demo": {"classes": 10, "per_class": 60, "image_size": 96},
}

#: Presets of the other parts (and of the ImageNet validation folder).
PART_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "imagenet": {"per_class_val": 4},
        "coco": {"images": 12, "width": 96, "height": 72},
        "partimagenet": {"per_class": 3, "width": 80, "height": 64},
        "retrieval": {
            "landmarks": 4,
            "easy": 3,
            "hard": 2,
            "junk": 1,
            "distractors": 8,
            "queries_per_landmark": 1,
            "width": 96,
            "height": 72,
        },
        "davis": {"val": 2, "train": 1, "frames": 8, "width": 112, "height": 64},
        "spair": {
            "categories": 3,
            "per_category": 5,
            "pairs": {"trn": 2, "val": 2, "test": 8},
            "min_side": 64,
            "max_side": 96,
        },
    },
    "demo": {
        "imagenet": {"per_class_val": 20},
        "coco": {"images": 300, "width": 160, "height": 120},
        "partimagenet": {"per_class": 20, "width": 128, "height": 96},
        "retrieval": {
            "landmarks": 12,
            "easy": 5,
            "hard": 3,
            "junk": 2,
            "distractors": 60,
            "queries_per_landmark": 2,
            "width": 160,
            "height": 120,
        },
        "davis": {"val": 6, "train": 2, "frames": 16, "width": 192, "height": 108},
        "spair": {
            "categories": 6,
            "per_category": 20,
            "pairs": {"trn": 10, "val": 6, "test": 40},
            "min_side": 96,
            "max_side": 160,
        },
    },
}

#: The parts of the world, in generation order.  Reader kinds are accepted as aliases.
PARTS = ("imagenet", "coco", "partimagenet", "retrieval", "davis", "spair")
PART_ALIASES = {
    "imagefolder": "imagenet",
    "imagenet50": "imagenet",
    "revisited": "retrieval",
    "rsynth": "retrieval",
}
_STREAM = {p: i + 1 for i, p in enumerate(PARTS)}  # second entry of every seed sequence

#: Object parts: bands across the object along its own x axis, head at +x.
PART_NAMES = ("Head", "Body", "Tail")
#: Semantic keypoints in the object frame (image convention, y down: "left" is -y when the
#: head points to +x).  All but the centre lie just inside the outline.
KEYPOINTS = (
    "head_tip",
    "head_right",
    "right",
    "tail_right",
    "tail_tip",
    "tail_left",
    "left",
    "head_left",
    "centre",
)
#: PartImageNet super-categories: consecutive pairs of classes.
SUPERCATEGORIES = tuple(
    f"{CLASSES[2 * s].capitalize()}-{CLASSES[2 * s + 1].capitalize()}"
    for s in range(len(CLASSES) // 2)
)
#: PartImageNet split of each class (round robin; train gets most).
PIN_SPLIT_CYCLE = ("train", "train", "val", "train", "test")
#: SPair categories, in order: shapes with no rotational symmetry within SPair's ±60° and
#: all keypoints on the object, so every keypoint is semantically stable.
SPAIR_CLASSES = ("triangle", "star", "cross", "diamond", "bar", "checker")
LANDMARK_NAMES = (
    "arch",
    "bridge",
    "castle",
    "dome",
    "fountain",
    "gate",
    "harbour",
    "lighthouse",
    "mill",
    "palace",
    "spire",
    "tower",
)
MOTIONS = ("dance", "drift", "spin", "glide", "roll", "sway", "hop", "float", "loop", "wander")

_PNG = {"optimize": False, "compress_level": 6}
_JPEG = {"quality": 90, "optimize": False, "subsampling": 0, "progressive": False}


def wnid(k: int) -> str:
    """The synthetic WordNet id of class ``k`` (``n9000000k``)."""
    return f"n{90000000 + k}"


def _save_jpeg(im: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, "JPEG", **_JPEG)


def _save_png(im: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, "PNG", **_PNG)


def _write_json(path: Path, obj: Any, indent: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if indent is None:
        path.write_text(json.dumps(obj, separators=(",", ":")))
    else:
        path.write_text(json.dumps(obj, indent=indent))


def _rng(seed: int, part: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _STREAM[part], *[int(k) for k in keys]])
