"""Results bundles: a run's tables, figures, explorer and provenance in one file.

``python -m vitlib bundle export [--results DIR] OUT.tar.gz`` packs what a run produced that
is not a feature store: every table (``tables/**``: CSV and the small ``.npz`` arrays the
figures and the explorer read), every figure, ``explorer.html``, the report page and the
effective configuration, with ``bundle.json``: the sha256 and size of every file, the
vitlib version and, when the results sit in a git checkout, its commit. A paper-preset run
packs to tens of megabytes (the stores it leaves out are terabytes).

``python -m vitlib bundle import IN.tar.gz [--results DIR]`` unpacks a bundle safely: only
regular files at relative paths inside the results directory (no links, devices, absolute
paths or ``..``), every file present in ``bundle.json`` with its sha256, nothing else;
unpacked beside the target first and moved into place only when all of it checked out.
The figures, tables and explorer can then be redrawn without any store or GPU::

    snakemake --cores 2 --allowed-rules figure figure_layouts figure_model best_layers \\
        family_tests explorer findings report_page effective_config --forcerun figure ...

(``--allowed-rules`` makes the imported tables the workflow's sources; docs §D9).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["BundleError", "bundle_files", "export_bundle", "import_bundle"]

#: What a bundle holds, relative to the results directory (globs).
INCLUDE = (
    "tables/**/*.csv",
    "tables/**/*.npz",
    "tables/**/*.rst",
    "figures/**/*.png",
    "figures/**/*.pdf",
    "figures/**/*.svg",
    "explorer.html",
    "report_page.rst",
    "config.effective.yaml",
)
MANIFEST = "bundle.json"
FORMAT = 1


class BundleError(RuntimeError):
    """A bundle that cannot be trusted or read; the message names the member at fault."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle_files(results: str | Path) -> list[Path]:
    """The files of ``results`` a bundle holds (sorted, relative paths)."""
    root = Path(results)
    out: set[Path] = set()
    for pattern in INCLUDE:
        out.update(p.relative_to(root) for p in root.glob(pattern) if p.is_file())
    return sorted(out)


def _git_commit(where: Path) -> str | None:
    try:
        r = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def export_bundle(results: str | Path, out: str | Path) -> dict[str, Any]:
    """Pack ``results`` into the gzip tar ``out``; returns the manifest."""
    from importlib.metadata import PackageNotFoundError, version

    root = Path(results)
    files = bundle_files(root)
    if not files:
        raise BundleError(f"{root}: no tables, figures or explorer to bundle")
    try:
        vitlib_version = version("vitlib")
    except PackageNotFoundError:  # pragma: no cover - an uninstalled checkout
        vitlib_version = "unknown"
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "vitlib": vitlib_version,
        "git_commit": _git_commit(root.resolve().parent),
        "files": {},
    }
    tmp = Path(f"{out}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tmp, "w:gz") as tar:
        for rel in files:
            data = (root / rel).read_bytes()
            manifest["files"][rel.as_posix()] = {"sha256": _sha256(data), "bytes": len(data)}
            _add(tar, rel.as_posix(), data)
        _add(tar, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    tmp.replace(out)
    return manifest


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0  # the same bundle bytes for the same files
    tar.addfile(info, io.BytesIO(data))


def _safe_name(name: str) -> str:
    p = Path(name)
    if p.is_absolute() or ".." in p.parts or name.startswith(("/", "\\")) or not p.parts:
        raise BundleError(f"bundle member {name!r}: not a relative path inside the bundle")
    return p.as_posix()


def import_bundle(bundle: str | Path, results: str | Path) -> dict[str, Any]:
    """Unpack ``bundle`` into ``results`` after checking every member (see module doc);
    returns the manifest. Existing files of the same names are replaced."""
    root = Path(results)
    try:
        tar = tarfile.open(bundle, "r:*")
    except (OSError, tarfile.TarError) as e:
        raise BundleError(f"{bundle}: not a readable bundle ({e})") from None
    with tar:
        members = tar.getmembers()
        for m in members:
            _safe_name(m.name)
            if not m.isfile():
                raise BundleError(f"bundle member {m.name!r}: not a regular file (links refused)")
        by_name = {m.name: m for m in members}
        if MANIFEST not in by_name:
            raise BundleError(f"{bundle}: no {MANIFEST}")
        manifest = json.loads(_read(tar, by_name[MANIFEST]))
        if manifest.get("format") != FORMAT:
            raise BundleError(
                f"{bundle}: bundle format {manifest.get('format')!r}, expected {FORMAT}"
            )
        listed = manifest.get("files", {})
        extra = sorted(set(by_name) - set(listed) - {MANIFEST})
        missing = sorted(set(listed) - set(by_name))
        if extra or missing:
            raise BundleError(
                f"{bundle}: members not in {MANIFEST}: {extra[:5]}; listed but absent: {missing[:5]}"
            )
        staging = Path(f"{root}.import-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for name, meta in listed.items():
                data = _read(tar, by_name[name])
                if _sha256(data) != meta["sha256"] or len(data) != meta["bytes"]:
                    raise BundleError(f"bundle member {name!r}: sha256 differs from {MANIFEST}")
                dest = staging / _safe_name(name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
            for f in _walk(staging):
                target = root / f.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return dict(manifest)


def _read(tar: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(m)
    if f is None:
        raise BundleError(f"bundle member {m.name!r}: unreadable")
    return f.read()


def _walk(d: Path) -> Iterable[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file())


def main(argv: list[str]) -> int:
    """``bundle export|import`` (see module doc)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m vitlib bundle")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="pack a run's tables, figures and explorer")
    ex.add_argument("out")
    ex.add_argument("--results", default="results")
    im = sub.add_parser("import", help="unpack a bundle into a results directory")
    im.add_argument("bundle")
    im.add_argument("--results", default="results")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "export":
            m = export_bundle(a.results, a.out)
            size = Path(a.out).stat().st_size
            print(f"{a.out}: {len(m['files'])} files, {size / 1e6:.1f} MB")
        else:
            m = import_bundle(a.bundle, a.results)
            print(f"{a.results}: {len(m['files'])} files from {a.bundle} (vitlib {m['vitlib']})")
    except BundleError as e:
        print(f"error: {e}")
        return 1
    return 0
