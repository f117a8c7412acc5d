"""Readers for every dataset of the paper, each producing a :class:`~vitlib.data.manifest.Manifest`.

One function per on-disk format (docs/protocols.md §6); :func:`read_dataset` dispatches on the
config's ``kind``.  Every reader is deterministic whatever order the file system lists
files in, and stops with a :class:`~vitlib.data.manifest.DataError` naming the file, key or
value at fault (missing annotation file, truncated JSON, index out of range, empty class
folder).  Annotation files stay where they are: the manifest records their paths (relative
to ``root``) in ``extra`` and the per-item keys (COCO image id, DAVIS frame, retrieval role)
in ``Item.meta``; analyses read them again through :mod:`vitlib.data.annotations`.

========================  ====================================================  ===========
kind                      layout under ``root``                                  items
========================  ====================================================  ===========
``imagefolder``           ``<class>/<file>`` (ImageNet train/val)                images
``imagenet50``            the same, restricted to ``data/imagenet_50.txt``       images
``coco``                  ``images/<split>/*.jpg``, ``annotations/instances_      images with
                          <split>.json``                                         annotations
``partimagenet``          ``{train,val,test}.json``, ``<split>/<wnid>/*.JPEG``    images
``revisited``             ``<name>/gnd_<name>.pkl``, ``<name>/jpg/*.jpg``         database,
                                                                                 then queries
``davis``                 ``ImageSets/2017/<split>.txt``, ``JPEGImages/480p/``    frames
                          ``<seq>/*.jpg``, ``Annotations/480p/<seq>/*.png``
``spair``                 ``PairAnnotation/<split>/*:<cat>.json``,               images of the
                          ``JPEGImages/<cat>/*.jpg``                             drawn pairs
========================  ====================================================  ===========
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from vitlib.data.manifest import (
    DataError,
    Item,
    Manifest,
    files_identity,
    read_imagefolder,
    with_cka_batches,
)

log = logging.getLogger(__name__)

KINDS = ("imagefolder", "imagenet50", "coco", "partimagenet", "revisited", "davis", "spair")
#: Kinds whose items can be dropped without breaking the structure (pairs, queries, videos).
SKIPPABLE = ("imagefolder", "imagenet50", "coco", "partimagenet")


def load_json(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file; missing or truncated files are a :class:`DataError` naming it."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{what} {p} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{what} {p} is not valid JSON (truncated or corrupt?): {e}") from None


def _require(d: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise DataError(f"{where}: missing key {key!r}")
    return d[key]


# ---------------------------------------------------------------------------------- ImageNet-50
def imagenet50_classes() -> list[tuple[str, str]]:
    """The 50 ``(wnid, name)`` pairs of docs/protocols.md §6.2 (shipped with the package)."""
    text = resources.files("vitlib.data").joinpath("imagenet_50.txt").read_text()
    out = []
    for line in text.splitlines():
        if line.strip():
            wnid, _, name = line.strip().partition(" ")
            out.append((wnid, name))
    return out


def read_imagenet50(
    root: str | os.PathLike, *, dataset: str, per_class: int = 100, cka_batch_size: int = 0
) -> Manifest:
    """ImageNet-50 (docs/protocols.md §6.2): the 50 classes of ``imagenet_50.txt`` in sorted wnid
    order, the first ``per_class`` image files of each class in sorted name order."""
    wnids = [w for w, _ in imagenet50_classes()]
    m = read_imagefolder(
        root, dataset=dataset, per_class=per_class, classes=wnids, cka_batch_size=cka_batch_size
    )
    m.kind = "imagenet50"
    return m


# ---------------------------------------------------------------------------------- COCO
def _check_rle_sizes(images: Sequence[Any], anns: Sequence[Any], where: str) -> None:
    """An RLE segmentation carries its own ``size`` ``[height, width]``; pycocotools
    rasterises it at that size, so it must be its image entry's ``height``/``width``
    (polygons are drawn at the image entry's size and need no check).  A mismatch is a
    :class:`DataError` naming the annotation file, the annotation, the image and both sizes:
    the annotation file itself is inconsistent, so ``skip_bad_images`` does not apply."""
    sizes = {}
    for im in images:
        if isinstance(im, Mapping) and "id" in im and im.get("height") and im.get("width"):
            sizes[int(im["id"])] = (int(im["height"]), int(im["width"]))
    for a in anns:
        seg = a.get("segmentation") if isinstance(a, Mapping) else None
        if not isinstance(seg, Mapping) or "size" not in seg:
            continue
        iid = int(a.get("image_id", -1))
        want = sizes.get(iid)
        try:
            got = (int(seg["size"][0]), int(seg["size"][1]))
        except (TypeError, ValueError, IndexError):
            raise DataError(
                f"{where}: annotation {a.get('id')} of image {iid}: RLE 'size' {seg['size']!r}"
                " is not [height, width]"
            ) from None
        if want is not None and got != want:
            raise DataError(
                f"{where}: annotation {a.get('id')} of image {iid} is an RLE mask of"
                f" {got[1]}x{got[0]} (width x height) but the image entry says"
                f" {want[1]}x{want[0]}"
            )


def read_coco(
    root: str | os.PathLike,
    *,
    dataset: str,
    split: str = "val2017",
    limit: int | None = None,
    cka_batch_size: int = 0,
) -> Manifest:
    """COCO instances (docs/protocols.md §6.3): images in ascending id order, those without any
    annotation skipped, the first ``limit`` kept.  Label = contiguous index of the category
    of the image's largest annotation; ``meta`` = ``{"image_id", "width", "height"}``."""
    rootp = Path(root)
    ann_rel = f"annotations/instances_{split}.json"
    d = load_json(rootp / ann_rel, "COCO annotation file")
    where = str(rootp / ann_rel)
    images = _require(d, "images", where)
    anns = _require(d, "annotations", where)
    cats = _require(d, "categories", where)
    cat_ids = sorted(int(_require(c, "id", f"{where}: categories")) for c in cats)
    cat_index = {c: i for i, c in enumerate(cat_ids)}
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
    largest: dict[int, tuple[float, int]] = {}
    for a in anns:
        iid = int(_require(a, "image_id", f"{where}: annotation"))
        cid = int(_require(a, "category_id", f"{where}: annotation {a.get('id')}"))
        if cid not in cat_index:
            raise DataError(f"{where}: annotation {a.get('id')} has unknown category_id {cid}")
        area = float(a.get("area", 0.0))
        if iid not in largest or area > largest[iid][0]:
            largest[iid] = (area, cid)
    _check_rle_sizes(images, anns, where)
    items: list[Item] = []
    for im in sorted(images, key=lambda im: int(_require(im, "id", f"{where}: images"))):
        iid = int(im["id"])
        if iid not in largest:
            continue
        fn = _require(im, "file_name", f"{where}: image {iid}")
        items.append(
            Item(
                id=f"{iid:012d}",
                path=f"images/{split}/{fn}",
                label=cat_index[largest[iid][1]],
                meta={
                    "image_id": iid,
                    "width": int(im.get("width", 0)),
                    "height": int(im.get("height", 0)),
                },
            )
        )
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise DataError(f"{where}: no image has an annotation")
    return Manifest(
        dataset=dataset,
        kind="coco",
        root=str(rootp.resolve()),
        classes=[names[c] for c in cat_ids],
        items=with_cka_batches(items, cka_batch_size),
        cka_batch_size=cka_batch_size,
        extra={"annotations": {split: ann_rel}, "category_ids": cat_ids},
    )


# ---------------------------------------------------------------------------------- PartImageNet
PIN_SPLITS = ("train", "val", "test")


def read_partimagenet(
    root: str | os.PathLike,
    *,
    dataset: str,
    per_super: int = 500,
    splits: Sequence[str] = PIN_SPLITS,
    cka_batch_size: int = 0,
) -> Manifest:
    """PartImageNet (docs/protocols.md §6.4): up to ``per_super`` images per super-category, drawn
    round-robin over its classes (wnids in sorted order — the original used ``os.listdir``
    order, which differs between file systems), each class's images in sorted file-name
    order.  Label = super-category index (sorted names); ``meta`` = ``{"split",
    "image_id", "wnid"}``; the part annotations stay in ``<split>.json``."""
    rootp = Path(root)
    per_wnid: dict[str, list[tuple[str, str, int]]] = defaultdict(list)  # wnid -> (file, split, id)
    super_of: dict[str, str] = {}
    part_names: dict[int, str] = {}
    for split in splits:
        where = str(rootp / f"{split}.json")
        d = load_json(rootp / f"{split}.json", "PartImageNet annotation file")
        cats = {int(c["id"]): c for c in _require(d, "categories", where)}
        for cid, c in cats.items():
            part_names[cid] = f"{c.get('supercategory', '')} {c.get('name', cid)}".strip()
        first_cat: dict[int, int] = {}
        _check_rle_sizes(_require(d, "images", where), _require(d, "annotations", where), where)
        for a in _require(d, "annotations", where):
            first_cat.setdefault(int(a["image_id"]), int(a["category_id"]))
        for im in _require(d, "images", where):
            fn = str(_require(im, "file_name", f"{where}: images"))
            wnid = fn.split("/")[0] if "/" in fn else fn.split("_")[0]
            iid = int(im["id"])
            per_wnid[wnid].append((fn, split, iid))
            if wnid not in super_of and iid in first_cat:
                cid = first_cat[iid]
                if cid not in cats:
                    raise DataError(f"{where}: image {iid} annotated with unknown category {cid}")
                super_of[wnid] = str(cats[cid].get("supercategory", ""))
    if not per_wnid:
        raise DataError(f"{rootp}: the PartImageNet splits {list(splits)} list no images")
    supers = sorted(set(super_of.values()))
    items: list[Item] = []
    for si, sup in enumerate(supers):
        wnids = sorted(w for w, s in super_of.items() if s == sup)
        queues = {w: sorted(per_wnid[w]) for w in wnids}
        total = sum(len(q) for q in queues.values())
        take: dict[str, list[tuple[str, str, int]]] = {w: [] for w in wnids}
        if total <= per_super:
            take = queues
        else:
            n, pos = 0, 0
            while n < per_super:
                w = wnids[pos % len(wnids)]
                pos += 1
                if len(take[w]) < len(queues[w]):
                    take[w].append(queues[w][len(take[w])])
                    n += 1
        for w in wnids:
            for fn, split, iid in take[w]:
                items.append(
                    Item(
                        id=f"{split}/{os.path.splitext(fn)[0]}",
                        path=f"{split}/{fn}",
                        label=si,
                        meta={"split": split, "image_id": iid, "wnid": w},
                    )
                )
    return Manifest(
        dataset=dataset,
        kind="partimagenet",
        root=str(rootp.resolve()),
        classes=supers,
        items=with_cka_batches(items, cka_batch_size),
        cka_batch_size=cka_batch_size,
        extra={
            "annotations": {s: f"{s}.json" for s in splits},
            "part_names": {str(k): v for k, v in sorted(part_names.items())},
        },
    )


# ---------------------------------------------------------------------------------- Revisited
#: The only globals a ground-truth pickle may name: NumPy's array reconstruction (the
#: official ``gnd_*.pkl`` hold index arrays).  Containers, numbers and strings need none.
_PICKLE_GLOBALS = frozenset(
    {
        (mod, name)
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    }
    | {("numpy", "ndarray"), ("numpy", "dtype")}
    # protocol-2 pickles (the official files) store array bytes as latin-1 text re-encoded
    # by codecs.encode: a pure function of its arguments
    | {("_codecs", "encode")}
    # plain data types that protocols <= 2 name as globals (builtins, or __builtin__ in py2)
    | {
        (mod, name)
        for mod in ("builtins", "__builtin__")
        for name in ("bytes", "bytearray", "set", "frozenset", "complex")
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refuses to load global {module}.{name}")


def safe_pickle_load(f: Any) -> Any:
    """Unpickle data only: builtins containers, numbers, strings and NumPy arrays; any other
    global (a function, a class, ``os.system``) raises ``UnpicklingError`` before it is
    called, so no file handed in runs code."""
    return _RestrictedUnpickler(f).load()


def read_revisited(
    root: str | os.PathLike, *, dataset: str, name: str, cka_batch_size: int = 0
) -> Manifest:
    """Revisited Oxford/Paris (docs/protocols.md §6.5): ``<root>/<name>/gnd_<name>.pkl``.  Items are
    the database images (``meta.role = "db"``) followed by the queries (``"query"``); the
    ground truth (``easy``/``hard``/``junk`` database indices and ``bbx`` per query) goes to
    ``extra["gnd"]``.  Queries are not cropped to ``bbx`` (as the paper's code)."""
    base = Path(root) / name
    pkl = base / f"gnd_{name}.pkl"
    try:
        with open(pkl, "rb") as f:
            cfg = safe_pickle_load(f)
    except FileNotFoundError:
        raise DataError(f"retrieval ground truth {pkl} does not exist") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"retrieval ground truth {pkl} is corrupt: {e}") from None
    imlist = list(_require(cfg, "imlist", str(pkl)))
    qimlist = list(_require(cfg, "qimlist", str(pkl)))
    gnd_in = list(_require(cfg, "gnd", str(pkl)))
    if len(gnd_in) != len(qimlist):
        raise DataError(f"{pkl}: 'gnd' has {len(gnd_in)} entries for {len(qimlist)} queries")
    gnd = []
    for q, g in enumerate(gnd_in):
        entry: dict[str, Any] = {}
        for key in ("easy", "hard", "junk"):
            idx = [int(i) for i in g.get(key, [])]
            bad = [i for i in idx if not 0 <= i < len(imlist)]
            if bad:
                raise DataError(
                    f"{pkl}: gnd[{q}][{key!r}] has database index {bad[0]} outside"
                    f" 0..{len(imlist) - 1}"
                )
            entry[key] = idx
        entry["bbx"] = [float(v) for v in g.get("bbx", [])]
        gnd.append(entry)
    items = [Item(id=f"db/{n}", path=f"jpg/{n}.jpg", label=-1, meta={"role": "db"}) for n in imlist]
    items += [
        Item(id=f"query/{n}", path=f"jpg/{n}.jpg", label=-1, meta={"role": "query"})
        for n in qimlist
    ]
    for it in items:
        if not (base / it.path).is_file():
            raise DataError(f"{base / it.path} listed in {pkl} does not exist")
    return Manifest(
        dataset=dataset,
        kind="revisited",
        root=str(base.resolve()),
        classes=[],
        items=with_cka_batches(items, cka_batch_size),
        cka_batch_size=cka_batch_size,
        extra={"name": name, "n_db": len(imlist), "n_queries": len(qimlist), "gnd": gnd},
    )


# ---------------------------------------------------------------------------------- DAVIS
def read_davis(
    root: str | os.PathLike,
    *,
    dataset: str,
    split: str = "val",
    resolution: str = "480p",
    year: str = "2017",
    sequences: Sequence[str] | None = None,
    cka_batch_size: int = 0,
) -> Manifest:
    """DAVIS-2017 (docs/protocols.md §6.6): every frame of every sequence of
    ``ImageSets/<year>/<split>.txt`` (or ``sequences``), frames in sorted order.  Label =
    sequence index; ``meta`` = ``{"seq", "frame", "annotation"}`` (annotation path relative
    to root, or ``""`` where the frame has none)."""
    rootp = Path(root)
    if sequences is None:
        lst = rootp / "ImageSets" / year / f"{split}.txt"
        try:
            sequences = [s.strip() for s in lst.read_text().splitlines() if s.strip()]
        except FileNotFoundError:
            raise DataError(f"DAVIS sequence list {lst} does not exist") from None
        if not sequences:
            raise DataError(f"DAVIS sequence list {lst} is empty")
    items: list[Item] = []
    for si, seq in enumerate(sequences):
        fdir = rootp / "JPEGImages" / resolution / seq
        if not fdir.is_dir():
            raise DataError(f"DAVIS sequence {seq!r}: frame folder {fdir} does not exist")
        frames = sorted(f for f in os.listdir(fdir) if f.lower().endswith((".jpg", ".jpeg")))
        if not frames:
            raise DataError(f"DAVIS sequence {seq!r}: {fdir} has no .jpg frames")
        first = rootp / "Annotations" / resolution / seq / (os.path.splitext(frames[0])[0] + ".png")
        if not first.is_file():
            raise DataError(
                f"DAVIS sequence {seq!r}: first-frame annotation {first} does not exist"
            )
        for fi, f in enumerate(frames):
            stem = os.path.splitext(f)[0]
            ann = Path("Annotations") / resolution / seq / f"{stem}.png"
            items.append(
                Item(
                    id=f"{seq}/{stem}",
                    path=f"JPEGImages/{resolution}/{seq}/{f}",
                    label=si,
                    meta={
                        "seq": seq,
                        "frame": fi,
                        "annotation": str(ann) if (rootp / ann).is_file() else "",
                    },
                )
            )
    return Manifest(
        dataset=dataset,
        kind="davis",
        root=str(rootp.resolve()),
        classes=list(sequences),
        items=with_cka_batches(items, cka_batch_size),
        cka_batch_size=cka_batch_size,
        extra={"split": split, "resolution": resolution},
    )


# ---------------------------------------------------------------------------------- SPair-71k
def spair_pair_files(root: Path, split: str, category: str) -> list[Path]:
    """The pair files of ``category``: the official ``…:<cat>.json`` names, or the ``_``
    copies the original code expected (docs/protocols.md §5.4), sorted by name."""
    pdir = root / "PairAnnotation" / split
    if not pdir.is_dir():
        raise DataError(f"SPair pair folder {pdir} does not exist")
    files = [
        p
        for p in pdir.iterdir()
        if p.name.endswith(f":{category}.json") or p.name.endswith(f"_{category}.json")
    ]
    return sorted(files, key=lambda p: p.name)


def read_spair(
    root: str | os.PathLike,
    *,
    dataset: str,
    split: str = "test",
    pairs_per_category: int = 20,
    seed: int = 42,
    sampling: str = "fixed",
    categories: Sequence[str] | None = None,
    category_order: str = "sorted",
    cka_batch_size: int = 0,
) -> Manifest:
    """SPair-71k (docs/protocols.md §5.4, §6.7).  Categories = sorted folder names of
    ``ImageAnnotation``; per category ``pairs_per_category`` pair files are drawn from the
    sorted list.  ``sampling="fixed"``: without replacement by a generator seeded with
    ``[seed, category index]``; ``"faithful"``: ``np.random.seed(seed)`` once, then
    ``np.random.choice`` *with* replacement per category, as the original.  The categories
    come sorted (``category_order="sorted"``) or, as the original iterated them, in
    ``os.listdir`` order (``"listdir"``: the file system's order, which decides the pairs
    drawn by ``faithful`` sampling).  Items are the distinct images of the drawn pairs;
    ``extra["pairs"]`` holds each pair's item indices, keypoints and boxes."""
    rootp = Path(root)
    adir = rootp / "ImageAnnotation"
    if categories is None:
        if not adir.is_dir():
            raise DataError(f"SPair annotation folder {adir} does not exist")
        if category_order not in ("sorted", "listdir"):
            raise ValueError(
                f"category_order must be 'sorted' or 'listdir', got {category_order!r}"
            )
        listed = [n for n in os.listdir(adir) if (adir / n).is_dir()]
        categories = sorted(listed) if category_order == "sorted" else listed
    if not categories:
        raise DataError(f"SPair: {adir} has no category folders")
    if sampling not in ("fixed", "faithful"):
        raise ValueError(f"sampling must be 'fixed' or 'faithful', got {sampling!r}")
    legacy = np.random.RandomState(seed)
    items: list[Item] = []
    index: dict[str, int] = {}
    pairs: list[dict[str, Any]] = []

    def item_for(cat: str, imname: str, ci: int) -> int:
        stem = os.path.splitext(imname)[0]
        key = f"{cat}/{stem}"
        if key not in index:
            path = Path("JPEGImages") / cat / f"{stem}.jpg"
            if not (rootp / path).is_file():
                raise DataError(f"SPair image {rootp / path} does not exist")
            index[key] = len(items)
            items.append(Item(id=key, path=str(path), label=ci, meta={"category": cat}))
        return index[key]

    for ci, cat in enumerate(categories):
        files = spair_pair_files(rootp, split, cat)
        if not files:
            raise DataError(
                f"SPair: no {split} pair files for category {cat!r} in "
                f"{rootp / 'PairAnnotation' / split}"
            )
        if sampling == "fixed":
            rng = np.random.default_rng([seed, ci])
            chosen = rng.choice(len(files), size=min(pairs_per_category, len(files)), replace=False)
        else:
            chosen = legacy.choice(len(files), size=pairs_per_category, replace=True)
        for k in chosen:
            f = files[int(k)]
            d = load_json(f, "SPair pair file")
            where = str(f)
            if _require(d, "category", where) != cat:
                raise DataError(f"{where}: category {d['category']!r} is not {cat!r}")
            if int(d.get("mirror", 0)) != 0:
                raise DataError(f"{where}: mirror pairs are not supported")
            src_kps = np.asarray(_require(d, "src_kps", where), dtype=float).reshape(-1, 2)
            trg_kps = np.asarray(_require(d, "trg_kps", where), dtype=float).reshape(-1, 2)
            if len(src_kps) != len(trg_kps):
                raise DataError(
                    f"{where}: {len(src_kps)} source vs {len(trg_kps)} target keypoints"
                )
            pairs.append(
                {
                    "file": f.name,
                    "category": cat,
                    "src": item_for(cat, _require(d, "src_imname", where), ci),
                    "trg": item_for(cat, _require(d, "trg_imname", where), ci),
                    "src_kps": src_kps.tolist(),
                    "trg_kps": trg_kps.tolist(),
                    "kps_ids": [int(i) for i in d.get("kps_ids", range(len(src_kps)))],
                    "src_bndbox": [float(v) for v in _require(d, "src_bndbox", where)],
                    "trg_bndbox": [float(v) for v in _require(d, "trg_bndbox", where)],
                    "src_imsize": [int(v) for v in _require(d, "src_imsize", where)][:2],
                    "trg_imsize": [int(v) for v in _require(d, "trg_imsize", where)][:2],
                }
            )
    return Manifest(
        dataset=dataset,
        kind="spair",
        root=str(rootp.resolve()),
        classes=list(categories),
        items=with_cka_batches(items, cka_batch_size),
        cka_batch_size=cka_batch_size,
        extra={
            "split": split,
            "sampling": sampling,
            "seed": seed,
            "pairs": pairs,
        },
    )


# ---------------------------------------------------------------------------------- dispatch
def read_dataset(
    kind: str,
    root: str | os.PathLike,
    *,
    dataset: str,
    options: Mapping[str, Any] | None = None,
    cka_batch_size: int = 0,
) -> Manifest:
    """Read dataset ``dataset`` of ``kind`` under ``root`` with the kind's ``options``."""
    opts = dict(options or {})
    if kind == "imagefolder":
        return read_imagefolder(
            root,
            dataset=dataset,
            per_class=opts.get("per_class"),
            classes=opts.get("classes"),
            cka_batch_size=cka_batch_size,
        )
    readers: dict[str, Callable[..., Manifest]] = {
        "imagenet50": read_imagenet50,
        "coco": read_coco,
        "partimagenet": read_partimagenet,
        "revisited": read_revisited,
        "davis": read_davis,
        "spair": read_spair,
    }
    if kind not in readers:
        raise DataError(f"dataset {dataset!r}: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    opts = {k: v for k, v in opts.items() if v is not None}
    return readers[kind](root, dataset=dataset, cka_batch_size=cka_batch_size, **opts)


def check_images(
    manifest: Manifest, *, skip_bad: bool = False, decode: bool = True
) -> tuple[Manifest, list[tuple[str, str]]]:
    """Open every image of ``manifest`` (fully decoding it when ``decode``).

    An unreadable, truncated or missing file raises a :class:`DataError` naming it — or,
    with ``skip_bad``, is dropped and listed in the returned ``[(path, reason)]`` (only for
    kinds whose items stand alone, :data:`SKIPPABLE`).  CKA minibatches are re-assigned
    after dropping, so the partition still covers consecutive valid items.
    """
    from PIL import Image, UnidentifiedImageError

    bad: list[tuple[str, str]] = []
    keep: list[Item] = []
    for it in manifest.items:
        p = manifest.abspath(it)
        try:
            with Image.open(p) as im:
                if decode:
                    im.load()
                else:
                    im.verify()
        except (
            FileNotFoundError,
            UnidentifiedImageError,
            OSError,
            SyntaxError,
            Image.DecompressionBombError,  # larger than PIL's MAX_IMAGE_PIXELS guard
        ) as e:
            reason = f"{type(e).__name__}: {e}"
            if not skip_bad:
                raise DataError(
                    f"dataset {manifest.dataset!r}: cannot read image {p}: {reason}"
                    " (set skip_bad_images: true to skip unreadable images)"
                ) from None
            if manifest.kind not in SKIPPABLE:
                raise DataError(
                    f"dataset {manifest.dataset!r}: cannot read image {p}: {reason};"
                    f" skip_bad_images is not possible for kind {manifest.kind!r}"
                    " (its pairs/queries/videos would break)"
                ) from None
            bad.append((str(p), reason))
            continue
        keep.append(it)
    if bad:
        log.warning("skipped %d unreadable images of %s", len(bad), manifest.dataset)
        manifest.items = with_cka_batches(keep, manifest.cka_batch_size)
        if not keep:
            raise DataError(f"dataset {manifest.dataset!r}: no readable image left")
    return manifest, bad


def _header_size(path: Path, dataset: str) -> tuple[int, int]:
    """``(width, height)`` of an image as a view sees it (EXIF orientation applied, as
    :func:`vitlib.data.views.oriented_size`), from its header only."""
    from PIL import Image, UnidentifiedImageError

    from vitlib.data.views import oriented_size

    try:
        with Image.open(path) as im:
            h, w = oriented_size(im)
    except (FileNotFoundError, UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DataError(
            f"dataset {dataset!r}: cannot read image {path}: {type(e).__name__}: {e}"
        ) from None
    return w, h


def _mask_size(path: Path, dataset: str) -> tuple[int, int]:
    """``(width, height)`` of an annotation image as its reader sees it (no EXIF rotation:
    :func:`vitlib.data.annotations.davis_mask` reads the raw pixels), from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (FileNotFoundError, UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DataError(
            f"dataset {dataset!r}: cannot read annotation {path}: {type(e).__name__}: {e}"
        ) from None


def _wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _shape_problems(manifest: Manifest) -> list[tuple[int, str, str]]:
    """``(item index, image path, message)`` for every annotation whose size is not its
    image's (see :func:`check_annotation_shapes`)."""
    root = Path(manifest.root)
    ds = manifest.dataset
    out: list[tuple[int, str, str]] = []
    if manifest.kind in ("coco", "partimagenet"):
        files = manifest.extra.get("annotations") or {}
        entries: dict[str, dict[int, tuple[int, int]]] = {}
        if manifest.kind == "partimagenet":  # the reader does not keep sizes in the items
            for split, rel in files.items():
                d = load_json(root / rel, "PartImageNet annotation file")
                entries[split] = {
                    int(im["id"]): (int(im.get("width") or 0), int(im.get("height") or 0))
                    for im in _require(d, "images", str(root / rel))
                }
        for i, it in enumerate(manifest.items):
            split = it.meta.get("split") or next(iter(files), "")
            ann_file = root / str(files.get(split, "?"))
            iid = int(it.meta.get("image_id", -1))
            if manifest.kind == "coco":
                want = (int(it.meta.get("width") or 0), int(it.meta.get("height") or 0))
            else:
                want = entries.get(split, {}).get(iid, (0, 0))
            if not all(want):
                continue  # no size recorded: pycocotools will name the annotation
            img = manifest.abspath(it)
            got = _header_size(img, ds)
            if got != want:
                out.append(
                    (
                        i,
                        str(img),
                        f"dataset {ds!r}: annotation file {ann_file} gives image {iid} the size"
                        f" {_wh(want)} (width x height), but the image {img} is {_wh(got)}:"
                        " its masks would not line up with the pixels",
                    )
                )
    elif manifest.kind == "davis":
        for i, it in enumerate(manifest.items):
            seq = str(it.meta.get("seq"))
            rel = it.meta.get("annotation")
            if not rel:
                continue
            ann = root / str(rel)
            img = manifest.abspath(it)
            want, got = _mask_size(ann, ds), _header_size(img, ds)
            if want != got:
                out.append(
                    (
                        i,
                        str(img),
                        f"dataset {ds!r}: DAVIS annotation {ann} is {_wh(want)} (width x"
                        f" height), but its frame {img} is {_wh(got)}",
                    )
                )
            elif it.meta.get("frame") == 0:
                from vitlib.data.annotations import davis_mask

                if not davis_mask(ann).any():
                    out.append(
                        (
                            i,
                            str(img),
                            f"dataset {ds!r}: DAVIS sequence {seq!r}: first-frame annotation"
                            f" {ann} marks no object (every pixel is 0): there is nothing to"
                            " propagate and J&F would be empty",
                        )
                    )
    elif manifest.kind == "spair":
        pdir = root / "PairAnnotation" / str(manifest.extra.get("split", ""))
        sizes: dict[int, tuple[int, int]] = {}
        for p in manifest.extra.get("pairs", []):
            for role in ("src", "trg"):
                i = int(p[role])
                if i not in sizes:
                    sizes[i] = _header_size(manifest.abspath(manifest.items[i]), ds)
                want = (int(p[f"{role}_imsize"][0]), int(p[f"{role}_imsize"][1]))
                if want != sizes[i]:
                    img = manifest.abspath(manifest.items[i])
                    out.append(
                        (
                            i,
                            str(img),
                            f"dataset {ds!r}: SPair pair file {pdir / p['file']} gives"
                            f" {role}_imsize {_wh(want)} (width x height), but the image"
                            f" {img} is {_wh(sizes[i])}: its keypoints would be misplaced",
                        )
                    )
    return out


def check_annotation_shapes(
    manifest: Manifest, *, skip_bad: bool = False
) -> tuple[Manifest, list[tuple[str, str]]]:
    """Check every annotation that has an image-shaped extent against its image, from file
    headers only (no decoding), before any extraction.

    * ``coco`` / ``partimagenet``: the annotation file's ``width``/``height`` of each image
      (the size pycocotools rasterises polygons at; RLE sizes are checked against it when
      the file is read) against the image file;
    * ``davis``: every annotation PNG against its frame; a first-frame annotation without
      any object (all 0) is an error too (nothing to propagate);
    * ``spair``: each pair's ``src_imsize``/``trg_imsize`` against the images.

    Image sizes are taken after the EXIF orientation (what the views feed the model,
    :func:`vitlib.data.views.oriented_size`); annotation PNGs as stored.  A mismatch is a
    :class:`DataError` naming the annotation file, the image file and both sizes — or, with
    ``skip_bad`` and a kind whose items stand alone (:data:`SKIPPABLE`), the item is dropped
    with a warning and listed in the returned ``[(path, reason)]``, and CKA minibatches are
    re-assigned.
    """
    problems = _shape_problems(manifest)
    if not problems:
        return manifest, []
    if not skip_bad:
        i, _, msg = problems[0]
        more = f" ({len(problems) - 1} more annotations differ)" if len(problems) > 1 else ""
        hint = (
            " (set skip_bad_images: true to skip such images)" if manifest.kind in SKIPPABLE else ""
        )
        raise DataError(msg + more + hint)
    if manifest.kind not in SKIPPABLE:
        raise DataError(
            f"{problems[0][2]}; skip_bad_images is not possible for kind {manifest.kind!r}"
            " (its pairs/queries/videos would break)"
        )
    drop = {i for i, _, _ in problems}
    bad = [(img, msg) for _, img, msg in problems]
    for _, _, msg in problems:
        log.warning("skipped: %s", msg)
    keep = [it for i, it in enumerate(manifest.items) if i not in drop]
    if not keep:
        raise DataError(f"dataset {manifest.dataset!r}: no image left with matching annotations")
    manifest.items = with_cka_batches(keep, manifest.cka_batch_size)
    return manifest, bad


#: Where each kind sits in a generated synthetic world: (generator part, root below the
#: world folder).  ``{split}`` is the ``generate.split`` setting.
WORLD_LAYOUT = {
    "imagefolder": ("imagenet", "imagenet/{split}"),
    "coco": ("coco", "coco"),
    "partimagenet": ("partimagenet", "partimagenet"),
    "revisited": ("retrieval", "."),
    "davis": ("davis", "davis"),
    "spair": ("spair", "spair"),
}
#: Reader options of a generated dataset that the config does not set.
WORLD_DEFAULTS = {"revisited": {"name": "rsynth"}}
OPTION_KEYS = (
    "per_class",
    "classes",
    "split",
    "limit",
    "per_super",
    "name",
    "pairs_per_category",
    "sampling",
    "category_order",
    "seed",
)


def generated_root(world: str | os.PathLike, kind: str, generate: Mapping[str, Any]) -> str:
    if kind not in WORLD_LAYOUT:
        raise DataError(f"the synthetic world has no {kind!r} part")
    sub = WORLD_LAYOUT[kind][1].format(split=generate.get("split", "train"))
    return os.path.normpath(os.path.join(world, sub))


def build_manifest(
    dataset: str, cfg: Mapping[str, Any], root: str | os.PathLike
) -> tuple[Manifest, list[tuple[str, str]]]:
    """Read dataset ``dataset`` (a ``datasets.<name>`` config entry) under ``root``, check
    its images (``check_images``/``skip_bad_images``) and, whatever ``check_images`` says,
    every annotation's size against its image (:func:`check_annotation_shapes`, headers
    only); returns the manifest and the skipped ``[(path, reason)]``."""
    kind = cfg["kind"]
    opts = {
        **(WORLD_DEFAULTS.get(kind, {}) if "generate" in cfg else {}),
        **{k: cfg[k] for k in OPTION_KEYS if cfg.get(k) is not None},
    }
    m = read_dataset(
        kind, root, dataset=dataset, options=opts, cka_batch_size=int(cfg.get("cka_batch_size", 0))
    )
    mode = cfg.get("check_images", "decode")
    skip = bool(cfg.get("skip_bad_images", False))
    bad: list[tuple[str, str]] = []
    if mode != "none":
        m, bad = check_images(m, skip_bad=skip, decode=mode == "decode")
    m, bad_shapes = check_annotation_shapes(m, skip_bad=skip)
    m.extra["files_identity"] = files_identity(m)  # a file replaced: another digest
    return m, bad + bad_shapes
