"""``python -m vitlib plan …``: commands of the library outside the workflow."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ("plan",):
        print("usage: python -m vitlib plan [--configfile PRESET] [--csv FILE]", file=sys.stderr)
        return 2
    from vitlib.plan import main as plan_main

    return plan_main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
