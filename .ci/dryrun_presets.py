"""Gate: every preset's DAG builds (a Snakemake dry run) with every dataset root faked as an
empty folder, so a preset that names an unknown analysis, model or setting fails CI."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def dry_run(preset: Path) -> subprocess.CompletedProcess[str]:
    cfg = yaml.safe_load(preset.read_text())
    with tempfile.TemporaryDirectory() as d:
        for ds in cfg.get("datasets", {}).values():
            if "root" in ds:  # an empty folder at an absolute path in its place
                root = Path(d, "roots", str(ds["root"]).lstrip("/"))
                root.mkdir(parents=True, exist_ok=True)
                ds["root"] = str(root)
        faked = Path(d, preset.name)
        faked.write_text(yaml.safe_dump(cfg))
        smk = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", d]
        return subprocess.run(
            [*smk, "--configfile", str(faked), "-n", "--quiet", "rules"],
            capture_output=True,
            text=True,
        )


def main() -> int:
    failed = 0
    for preset in sorted((REPO / "presets").glob("*.yaml")):
        p = dry_run(preset)
        failed += p.returncode != 0
        print(f"dry run {preset.name}: {'ok' if p.returncode == 0 else 'FAILED'}")
        if p.returncode:
            print(p.stdout[-3000:], p.stderr[-3000:])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
