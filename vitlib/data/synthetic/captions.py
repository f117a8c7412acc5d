"""Captions of the synthetic world, written from each image's generative factors.

An image's caption names its object's class (the outline) and the nuisances drawn for it:
the object's colour and texture and the background's colour — e.g. ``"a dark blue star with
dots on a grey background"``.  The words come from a closed vocabulary (:data:`VOCAB`), so
a caption is tokenised by :func:`tokenise` without any external tokenizer.  The CLIP-style
trainer of the mini-zoo pairs each image with its caption; nothing else reads them.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

from vitlib.data.synthetic.common import CLASSES

#: Hue names by hue bin (12 bins of 30°, starting at red).
_HUES = (
    "red", "orange", "yellow", "lime", "green", "teal",
    "cyan", "azure", "blue", "purple", "magenta", "pink",
)  # fmt: skip
#: Names of the texture kinds of :func:`vitlib.data.synthetic.draw._pattern`, in kind order.
TEXTURES = (
    "rings", "zigzags", "stripes", "dots", "sectors",
    "bands", "diagonals", "grid", "waves", "checks",
)  # fmt: skip
_WORDS = ("a", "with", "on", "background", "dark", "light", "grey", "white", "black")
#: Every word a caption may contain; token id = index + 1 (0 pads), the last id ends a caption.
VOCAB: tuple[str, ...] = (*_WORDS, *_HUES, *TEXTURES, *CLASSES)
PAD, EOT = 0, len(VOCAB) + 1
CONTEXT = 12


def colour_name(rgb: Sequence[float]) -> str:
    """A one- or two-word name of an RGB colour in [0, 255]: ``grey``/``white``/``black`` for
    unsaturated colours, else ``[dark|light] <hue>``."""
    h, s, v = colorsys.rgb_to_hsv(*(float(c) / 255 for c in rgb))
    if s < 0.2:
        return "white" if v > 0.85 else "black" if v < 0.2 else "grey"
    name = _HUES[int(h * 12 + 0.5) % 12]
    return f"dark {name}" if v < 0.55 else f"light {name}" if s < 0.45 else name


def caption(k: int, colour: Sequence[float], texture: int, background: Sequence[float]) -> str:
    """The caption of an object of class ``k`` with body ``colour``, texture kind
    ``texture``, on a background of mean colour ``background``."""
    return (
        f"a {colour_name(colour)} {CLASSES[k]} with {TEXTURES[texture]}"
        f" on a {colour_name(background)} background"
    )


def tokenise(captions: Sequence[str]) -> np.ndarray:
    """``[len(captions), CONTEXT]`` int64 token ids, each caption ended by :data:`EOT`."""
    index = {w: i + 1 for i, w in enumerate(VOCAB)}
    out = np.full((len(captions), CONTEXT), PAD, np.int64)
    for i, c in enumerate(captions):
        words = c.split()
        unknown = [w for w in words if w not in index]
        if unknown or len(words) >= CONTEXT:
            raise ValueError(
                f"caption {c!r}: {'unknown words ' + repr(unknown) if unknown else 'too long'}"
                f" (vocabulary: vitlib.data.synthetic.captions.VOCAB, {CONTEXT - 1} words at most)"
            )
        out[i, : len(words)] = [index[w] for w in words]
        out[i, len(words)] = EOT
    return out


def class_only(tokens: np.ndarray) -> np.ndarray:
    """The captions ``[N, CONTEXT]`` reduced to their class word: ``"a <class>"`` + EOT
    (every caption names exactly one class)."""
    first_class = len(VOCAB) - len(CLASSES) + 1
    is_class = (tokens >= first_class) & (tokens < EOT)
    if not (is_class.sum(1) == 1).all():
        raise ValueError("every caption must name exactly one class")
    out = np.full_like(tokens, PAD)
    out[:, 0] = VOCAB.index("a") + 1
    out[:, 1] = tokens[is_class]
    out[:, 2] = EOT
    return out
