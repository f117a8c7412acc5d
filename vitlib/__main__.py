"""``python -m vitlib plan|bundle …``: commands of the library outside the workflow."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ("plan", "bundle"):
        print(
            "usage: python -m vitlib plan [--configfile PRESET] [--csv FILE]\n"
            "       python -m vitlib bundle export|import ... [--results DIR]",
            file=sys.stderr,
        )
        return 2
    if args[0] == "bundle":
        from vitlib.bundle import main as bundle_main

        return bundle_main(args[1:])
    from vitlib.plan import main as plan_main

    return plan_main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
