"""Results bundles: export → import gives the same bytes; a bundle that lies (a changed file,
a path outside the results, a link, a file not in its manifest) is refused, naming the
member, and leaves the target untouched."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from vitlib.bundle import BundleError, bundle_files, export_bundle, import_bundle


def _results(root: Path) -> Path:
    (root / "tables" / "world" / "knn").mkdir(parents=True)
    (root / "tables" / "world" / "knn" / "m.csv").write_text("a,b\n1,2\n")
    (root / "tables" / "world" / "attention_maps").mkdir(parents=True)
    (root / "tables" / "world" / "attention_maps" / "m.npz").write_bytes(b"\x00npz" * 10)
    (root / "figures" / "world").mkdir(parents=True)
    (root / "figures" / "world" / "knn.png").write_bytes(b"\x89PNG" + bytes(range(256)))
    (root / "explorer.html").write_text("<html></html>")
    (root / "features").mkdir()
    (root / "features" / "store.zarr").write_text("never bundled")
    return root


def test_export_import_round_trip(tmp_path):
    src = _results(tmp_path / "a")
    files = bundle_files(src)
    assert Path("features/store.zarr") not in files and len(files) == 4
    m = export_bundle(src, tmp_path / "b.tar.gz")
    assert set(m["files"]) == {f.as_posix() for f in files}
    # the same files give the same bundle bytes, apart from the creation time
    got = import_bundle(tmp_path / "b.tar.gz", tmp_path / "c")
    assert got["files"] == m["files"]
    for f in files:
        assert (tmp_path / "c" / f).read_bytes() == (src / f).read_bytes()
    assert not (tmp_path / "c" / "features").exists()


def _tamper(src: Path, dst: Path, edit) -> None:
    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        members = {m.name: tin.extractfile(m).read() for m in tin.getmembers()}
        for name, data in edit(members).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("changed", "sha256 differs"),
        ("outside", "not a relative path"),
        ("extra", "not in bundle.json"),
        ("missing", "listed but absent"),
        ("link", "not a regular file"),
    ],
)
def test_bundles_that_lie_are_refused(tmp_path, case, match):
    src = _results(tmp_path / "a")
    good = tmp_path / "good.tar.gz"
    export_bundle(src, good)
    bad = tmp_path / "bad.tar.gz"
    if case == "link":
        with tarfile.open(good) as tin, tarfile.open(bad, "w:gz") as tout:
            for m in tin.getmembers():
                tout.addfile(m, tin.extractfile(m))
            link = tarfile.TarInfo("tables/evil.csv")
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc/passwd"
            tout.addfile(link)
    else:

        def edit(members):
            if case == "changed":
                members["explorer.html"] = b"<html>changed</html>"
            elif case == "outside":
                members["../../escape.txt"] = b"x"
            elif case == "extra":
                members["tables/extra.csv"] = b"x"
            elif case == "missing":
                members.pop("explorer.html")
            return members

        _tamper(good, bad, edit)
    target = tmp_path / "target"
    with pytest.raises(BundleError, match=match):
        import_bundle(bad, target)
    assert not target.exists() or not any(target.rglob("*"))
    assert not (tmp_path / "escape.txt").exists()


def test_cli_round_trip(tmp_path, capsys):
    from vitlib.__main__ import main

    src = _results(tmp_path / "a")
    assert main(["bundle", "export", str(tmp_path / "b.tar.gz"), "--results", str(src)]) == 0
    assert (
        main(["bundle", "import", str(tmp_path / "b.tar.gz"), "--results", str(tmp_path / "c")])
        == 0
    )
    out = capsys.readouterr().out
    assert "4 files" in out
    manifest = json.loads(tarfile.open(tmp_path / "b.tar.gz").extractfile("bundle.json").read())
    assert manifest["format"] == 1 and "git_commit" in manifest
    assert main(["bundle", "import", str(tmp_path / "nope.tar.gz")]) == 1
