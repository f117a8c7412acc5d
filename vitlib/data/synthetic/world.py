"""The whole world: :func:`generate` writes the parts asked for and ``world.json``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vitlib.data.synthetic.coco import generate_coco
from vitlib.data.synthetic.common import (
    CLASSES,
    KEYPOINTS,
    PART_ALIASES,
    PART_NAMES,
    PARTS,
    SIZES,
)
from vitlib.data.synthetic.davis import generate_davis
from vitlib.data.synthetic.imagenet import generate_imagenet
from vitlib.data.synthetic.partimagenet import generate_partimagenet
from vitlib.data.synthetic.retrieval import generate_retrieval
from vitlib.data.synthetic.spair import generate_spair


def _parts(parts: str | Iterable[str] | None) -> list[str]:
    if parts is None:
        return list(PARTS)
    if isinstance(parts, str):
        parts = [x for x in parts.split(",") if x.strip()]
    out = []
    for x in parts:
        x = PART_ALIASES.get(x.strip(), x.strip())
        if x not in PARTS:
            raise ValueError(f"unknown part {x!r}; known: {', '.join(PARTS)}")
        if x not in out:
            out.append(x)
    return [x for x in PARTS if x in out]


def generate(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    size: str = "tiny",
    parts: str | Iterable[str] | None = None,
    **overrides: Any,
) -> Path:
    """Generate the synthetic world of ``size`` under ``out`` and write ``out/world.json``.

    ``parts`` (default all of :data:`PARTS`; reader kinds are accepted as aliases) limits
    what is written.  ``overrides`` ``classes``, ``per_class``, ``image_size`` and
    ``per_class_val`` apply to the ImageNet part; ``split`` (a reader option) is ignored.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    known = {"classes", "per_class", "image_size", "per_class_val", "split"}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"generate() got unknown overrides {sorted(unknown)}")
    inet = {k: v for k, v in overrides.items() if k != "split" and v is not None}
    params = {**SIZES[size], **{k: v for k, v in inet.items() if k in SIZES[size]}}
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    todo = _parts(parts)
    info: dict[str, Any] = {}
    fns = {
        "coco": generate_coco,
        "partimagenet": generate_partimagenet,
        "retrieval": generate_retrieval,
        "davis": generate_davis,
        "spair": generate_spair,
    }
    for part in todo:
        if part == "imagenet":
            info[part] = generate_imagenet(outp, seed=seed, size=size, **inet)
        else:
            info[part] = fns[part](outp, seed=seed, size=size)
    world = {
        "seed": seed,
        "size": size,
        **params,
        "parts": info,
        "class_names": list(CLASSES),
        "part_names": list(PART_NAMES),
        "keypoints": list(KEYPOINTS),
    }
    (outp / "world.json").write_text(json.dumps(world, indent=1))
    return outp
