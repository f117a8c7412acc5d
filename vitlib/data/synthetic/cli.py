"""The command line, ``python -m vitlib.data.synthetic --out DIR --seed N --size
{tiny,demo}`` (``--parts``, ImageNet overrides, ``--examples DIR``)."""

from __future__ import annotations

import argparse

from vitlib.data.synthetic.common import PARTS, SIZES
from vitlib.data.synthetic.examples import render_examples
from vitlib.data.synthetic.world import generate


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Generate a world (or, with ``--examples``, render the example figures of one).

    ``prog`` names the command in usage and error messages (default: argparse's)."""
    from vitlib.data import synthetic  # the package (imported by now): its docstring's title

    ap = argparse.ArgumentParser(prog=prog, description=(synthetic.__doc__ or "").split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", choices=list(SIZES), default="tiny")
    ap.add_argument("--classes", type=int)
    ap.add_argument("--per-class", type=int)
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--parts", help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument(
        "--examples",
        help="render the example figures of --out into this folder instead of generating",
    )
    a = ap.parse_args(argv)
    if a.examples:
        render_examples(a.out, a.examples)
        return
    generate(
        a.out,
        seed=a.seed,
        size=a.size,
        parts=a.parts,
        classes=a.classes,
        per_class=a.per_class,
        image_size=a.image_size,
    )
