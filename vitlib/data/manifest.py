"""Dataset manifests: the fixed, ordered list of items every model sees.

A manifest is a JSON file written by the workflow's ``manifest`` rule::

    {"format": 1, "dataset": "toy", "kind": "imagefolder", "root": "/abs/path",
     "classes": ["a", "b"], "cka_batch_size": 8,
     "items": [{"id": "a/0001", "path": "a/0001.png", "label": 0, "cka_batch": 0}, ...]}

``id`` is stable (relative path without extension), ``path`` is relative to ``root`` and
``cka_batch`` is the CKA minibatch the item belongs to: consecutive runs of
``cka_batch_size`` items in manifest order; the ``n mod cka_batch_size`` last items get -1
and take no part in CKA.  The partition is the same for every model (docs/protocols.md §D1.3).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """Bad input data: the message names the file, key or value at fault."""


@dataclass(frozen=True)
class Item:
    id: str
    path: str
    label: int
    cka_batch: int = -1
    #: Kind-specific fields (COCO image id, DAVIS sequence and frame, retrieval role, ...).
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)


@dataclass
class Manifest:
    dataset: str
    kind: str
    root: str
    classes: list[str]
    items: list[Item]
    cka_batch_size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.items)
        if self.cka_batch_size and 0 < n < self.cka_batch_size:
            raise DataError(
                f"config key 'datasets.{self.dataset}.cka_batch_size': value"
                f" {self.cka_batch_size} is larger than the dataset's {n} items, so no CKA"
                " minibatch would be complete (every CKA value would be NaN); lower it or set 0"
            )

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [it.label for it in self.items]

    def abspath(self, item: Item) -> Path:
        return Path(self.root) / item.path

    def to_json(self) -> str:
        d = {"format": 1, **asdict(self)}
        return json.dumps(d, indent=1)

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (a half-written manifest never exists under ``path``)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, p)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise DataError(f"manifest {p} does not exist") from None
        except json.JSONDecodeError as e:
            raise DataError(f"manifest {p} is not valid JSON: {e}") from None
        fmt = d.pop("format", None)
        if fmt != 1 or "items" not in d:
            raise DataError(f"manifest {p}: not a vitlib manifest (format {fmt!r})")
        d["items"] = [Item(**it) for it in d["items"]]
        return cls(**d)

    def digest(self) -> str:
        """Hash of the item list (ids, paths, labels, partition): what extractions depend on."""
        h = hashlib.sha256()
        for it in self.items:
            h.update(f"{it.id}\t{it.path}\t{it.label}\t{it.cka_batch}\n".encode())
            if it.meta:
                h.update(json.dumps(it.meta, sort_keys=True).encode())
        if self.extra:
            h.update(json.dumps(self.extra, sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]


def assign_cka_batches(n: int, cka_batch_size: int) -> list[int]:
    """Consecutive minibatches of ``cka_batch_size``; the incomplete tail gets -1."""
    if cka_batch_size <= 0:
        return [-1] * n
    full = n - n % cka_batch_size
    return [i // cka_batch_size if i < full else -1 for i in range(n)]


def read_imagefolder(
    root: str | os.PathLike,
    *,
    dataset: str,
    per_class: int | None = None,
    classes: Sequence[str] | None = None,
    cka_batch_size: int = 0,
) -> Manifest:
    """ImageNet-style ``root/<class>/<file>`` folder (docs/protocols.md §6.1–6.2).

    Classes are the sorted sub-directory names (or ``classes``, in sorted order, for a
    subset such as ImageNet-50); label = index in that sorted list.  Within each class the
    image files are sorted by name and the first ``per_class`` taken — deterministic
    whatever order the file system lists them in.  An empty or missing class folder is an
    error naming it.
    """
    rootp = Path(root)
    if not rootp.is_dir():
        raise DataError(f"dataset {dataset!r}: image folder {rootp} does not exist")
    if classes is None:
        names = sorted(d.name for d in rootp.iterdir() if d.is_dir() and not d.name.startswith("."))
    else:
        names = sorted(classes)
    if not names:
        raise DataError(f"dataset {dataset!r}: {rootp} has no class folders")
    items: list[Item] = []
    for label, cname in enumerate(names):
        cdir = rootp / cname
        if not cdir.is_dir():
            raise DataError(f"dataset {dataset!r}: class folder {cdir} does not exist")
        files = sorted(
            f
            for f in os.listdir(cdir)
            if f.lower().endswith(IMAGE_EXTENSIONS) and (cdir / f).is_file()
        )
        if per_class is not None:
            files = files[:per_class]
        if not files:
            raise DataError(f"dataset {dataset!r}: class folder {cdir} contains no images")
        for f in files:
            rel = f"{cname}/{f}"
            items.append(Item(id=os.path.splitext(rel)[0], path=rel, label=label))
    return Manifest(
        dataset=dataset,
        kind="imagefolder",
        root=str(rootp.resolve()),
        classes=list(names),
        items=with_cka_batches(items, cka_batch_size),
        cka_batch_size=cka_batch_size,
    )


def with_cka_batches(items: Sequence[Item], cka_batch_size: int) -> list[Item]:
    """``items`` with their CKA minibatch (:func:`assign_cka_batches`) filled in."""
    parts = assign_cka_batches(len(items), cka_batch_size)
    return [replace(it, cka_batch=c) for it, c in zip(items, parts)]


def files_identity(manifest: Manifest) -> str:
    """Hash of every item file's (path, size, mtime): recorded in the manifest when it is
    built (``extra["files_identity"]``), so a file replaced under the same name changes the
    manifest's :meth:`~Manifest.digest` and with it every store's identity."""
    h = hashlib.sha256()
    for it in manifest.items:
        st = os.stat(manifest.abspath(it))
        h.update(f"{it.path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


#: Folders with at most this many entries are fingerprinted file by file (size, mtime).
LISTING_STAT_LIMIT = 20_000


def listing_fingerprint(root: str | os.PathLike) -> str:
    """Cheap fingerprint of an image folder's file list (two levels).

    The workflow passes it as a parameter of the manifest rule, so adding, removing, renaming
    or replacing (by a new file moved into place) a file reruns the manifest and what depends
    on it, and nothing else does.  It reads directory entries and each directory's mtime, not
    every file's metadata: on ImageNet's 1.28 M files that is one ``readdir`` per class
    instead of 1.28 M ``stat`` calls.  A file rewritten in place under the same name leaves
    its directory's mtime alone: in folders of up to :data:`LISTING_STAT_LIMIT` entries
    every file's size and mtime are read too, so such an edit reruns the manifest; in
    larger ones (ImageNet train) it is caught when the manifest is rebuilt, which records
    every file's identity (:func:`files_identity`) — rebuild it with
    ``--forcerun manifest`` after editing files in place.
    """
    rootp = Path(root)
    if not rootp.is_dir():
        return "missing"
    h = hashlib.sha256()
    h.update(f".:{rootp.stat().st_mtime_ns}\n".encode())
    subdirs = [d for d in os.scandir(rootp) if d.is_dir()]
    listings = {d.name: sorted(os.scandir(d.path), key=lambda e: e.name) for d in subdirs}
    small = sum(len(v) for v in listings.values()) <= LISTING_STAT_LIMIT
    for d in sorted(os.scandir(rootp), key=lambda e: e.name):
        if d.is_dir():
            h.update(f"{d.name}/:{d.stat().st_mtime_ns}\n".encode())
            for e in listings[d.name]:
                if small:
                    st = e.stat(follow_symlinks=False)
                    h.update(f"{e.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
                else:
                    h.update(f"{e.name}\n".encode())
        else:
            st = d.stat(follow_symlinks=False)  # a dangling link is listed, not followed
            h.update(f"{d.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
