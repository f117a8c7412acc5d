"""Render the example figures of the synthetic world into this folder.

    python docs/world/render_examples.py [--size demo] [--seed 0] [--world DIR]

Generates the world (``demo`` size, seed 0) in a temporary folder unless ``--world`` names
an existing one, then writes ``example_{image,mask,parts,keypoints,retrieval,davis}.png`` here with
:func:`vitlib.data.synthetic.render_examples`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from vitlib.data.synthetic import SIZES, generate, render_examples

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=list(SIZES), default="demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--world", help="an existing generated world (all parts)")
    ap.add_argument("--out", default=str(HERE))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = (
            Path(a.world) if a.world else generate(Path(tmp) / "world", seed=a.seed, size=a.size)
        )
        for p in render_examples(world, a.out):
            print(f"{p}  {p.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
