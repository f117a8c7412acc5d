"""Checkpoint files: download once into a cache, verify, and read without unsafe unpickling.

* :func:`fetch_weights` downloads a model's checkpoint into ``cache_dir/<model>/<file>``
  (atomically: a partial download never has the final name) and verifies its sha256.
  A model's weights have one or more *sources*, tried in order: the registry's ``url``
  first, then its ``fallbacks`` (:mod:`vitlib.models.registry`).  A Hugging Face hub file
  (``https://huggingface.co/<repo>/resolve/<revision>/<file>``) is fetched through
  ``huggingface_hub.hf_hub_download``, i.e. into (or straight from) the shared HF cache
  (``HF_HOME`` / ``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` reads only that cache), and linked
  or copied into ``cache_dir``; without ``huggingface_hub`` the same URL is read over plain
  HTTPS.  Any other URL is read with ``urllib``.
* Hashes.  Each source may carry a sha256 (the registry's, or one given by the user as
  ``weights.sha256``, which applies to ``weights.url``/``weights.path``); a downloaded file
  must match its source's hash.  For hub files the hub itself publishes the sha256 (the
  LFS etag, which names the blob in the HF cache): a download whose blob is named by a
  sha256 is checked against it too.  Sources that publish nothing (DINO, MoCo-v3, MAE,
  BEiT release files) are pinned on first download: the observed sha256 is recorded beside
  the file (``<file>.sha256``, with the source's URL in ``<file>.source``) and every later
  use is checked against it — or against the source's hash when one is known, so a
  ``weights.sha256`` set after the first download is still honoured.  A mismatch raises
  :class:`WeightsError` naming the model, the URL and both hashes; a machine that cannot
  download gets the model, the URLs and where to place the file.
* :func:`read_checkpoint` reads safetensors files with safetensors, everything else but
  TorchScript with ``torch.load(weights_only=True)``; the only extra type allowed is
  ``argparse.Namespace``, which the upstream MAE/BEiT/MoCo training scripts store next to
  the weights.  The kind is read from the file's first bytes, not its name (a fallback
  source may be a ``.bin`` saved under a primary's ``.safetensors`` name).
* No file runs code.  ``torch.jit.load`` is never called: a TorchScript archive (a zip
  holding ``code/`` or ``constants.pkl``; OpenAI's CLIP ``.pt`` files) is accepted only
  for the CLIP formats ``openai_clip`` and ``open_clip`` (whose registry specs fall back to
  OpenAI's release file), and even then only its tensors are read
  (:func:`read_torchscript_tensors`): ``<archive>/data.pkl`` is unpickled by an unpickler
  that knows the tensor-rebuild functions and nothing else — every TorchScript class
  becomes an inert record of its attributes, so neither its ``forward`` nor a
  ``__setstate__`` ever runs — and each storage is read from its ``<archive>/data/<key>``
  record.  Any other format given a TorchScript archive is a :class:`WeightsError`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import logging
import os
import pickle
import re
import shutil
import struct
import urllib.error
import urllib.request
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Types that upstream checkpoint pickles contain besides tensors and containers.
SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)

_HUB_URL = re.compile(r"^https://huggingface\.co/([^/?#]+/[^/?#]+)/resolve/([^/?#]+)/([^?#]+)")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class WeightsError(RuntimeError):
    """A checkpoint cannot be fetched, verified or read; the message names the model."""


@dataclass(frozen=True)
class Source:
    """One place a checkpoint can be downloaded from, with its published sha256 if any."""

    url: str
    sha256: str | None = None

    @property
    def hub(self) -> tuple[str, str, str] | None:
        """``(repo_id, revision, filename)`` of a Hugging Face hub file URL, else None."""
        return parse_hub_url(self.url)


def parse_hub_url(url: str) -> tuple[str, str, str] | None:
    """``(repo_id, revision, filename)`` of ``https://huggingface.co/<repo>/resolve/<rev>/<file>``."""
    m = _HUB_URL.match(url)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def hub_url(repo_id: str, filename: str, revision: str = "main") -> str:
    """The resolve URL of a hub file (what ``huggingface_hub.hf_hub_url`` returns)."""
    return f"https://huggingface.co/{repo_id}/resolve/{revision}/{filename}"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def digest_cache_dir() -> Path:
    """Where :func:`sha256_cached` keeps digests: ``$VITLIB_CACHE_DIR`` or
    ``~/.cache/vitlib`` (``$XDG_CACHE_HOME`` honoured), subfolder ``sha256``."""
    base = os.environ.get("VITLIB_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "vitlib"
    )
    return Path(base) / "sha256"


def sha256_cached(path: str | os.PathLike) -> str:
    """sha256 of a file, computed once per (path, size, mtime) and cached
    (:func:`digest_cache_dir`): a checkpoint replaced under the same name gets its new
    digest, an unchanged one costs a ``stat``."""
    p = Path(path).resolve()
    st = p.stat()
    key = hashlib.sha256(str(p).encode()).hexdigest()[:32]
    cache = digest_cache_dir() / f"{key}.json"
    ident = {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        saved = json.loads(cache.read_text())
        if {k: saved.get(k) for k in ident} == ident and saved.get("sha256"):
            return str(saved["sha256"])
    except (OSError, ValueError):
        pass
    digest = sha256_file(p)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}")
        tmp.write_text(json.dumps({**ident, "sha256": digest}))
        os.replace(tmp, cache)
    except OSError:  # a read-only home: no cache, still correct
        pass
    return digest


def weights_filename(model_id: str, url: str) -> str:
    """Cache file name: the URL's last component (hub files, whose names repeat across
    repositories — ``model.safetensors`` — get the model id first)."""
    name = url.rstrip("/").split("?")[0].rsplit("/", 1)[-1]
    return f"{model_id}-{name}" if parse_hub_url(url) else name


def cached_weights_path(cache_dir: str | os.PathLike, model_id: str, url: str) -> Path:
    return Path(cache_dir) / model_id / weights_filename(model_id, url)


def weights_sources(weights: Mapping[str, Any]) -> list[Source]:
    """The sources of a spec's ``weights``: ``url`` (with ``sha256``), then ``fallbacks``."""
    out = [Source(str(weights["url"]), weights.get("sha256"))] if weights.get("url") else []
    for fb in weights.get("fallbacks") or ():
        out.append(Source(str(fb["url"]), fb.get("sha256")))
    return out


def registry_fallbacks(url: str) -> list[Source]:
    """The fallbacks the built-in registry lists for the model whose primary URL is ``url``
    (the workflow's download rule passes only the URL and its sha256)."""
    from vitlib.models.registry import get_spec, list_models

    for mid in list_models():
        w = get_spec(mid).weights or {}
        if w.get("url") == url:
            return weights_sources(w)[1:]
    return []


def verify_sha256(path: str | os.PathLike, expected: str, *, model_id: str, source: str) -> None:
    """Raise :class:`WeightsError` unless ``path`` has sha256 ``expected`` (the digest is
    cached by path, size and mtime: checked at every use for the price of a ``stat``)."""
    actual = sha256_cached(path)
    if actual != expected:
        raise WeightsError(
            f"model {model_id}: checkpoint {path} from {source} is corrupt or not the expected"
            f" file: sha256 expected {expected}, actual {actual} (delete it to download again)"
        )


def _sidecars(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".sha256"), path.with_name(path.name + ".source")


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip() or None
    except OSError:
        return None


def _verify_cached(dest: Path, model_id: str, sources: Sequence[Source]) -> None:
    """Check a file already in the cache against the hash of the source it came from."""
    pin_file, source_file = _sidecars(dest)
    pin, came_from = _read(pin_file), _read(source_file)
    by_url = {s.url: s.sha256 for s in sources}
    if came_from in by_url:
        wanted = [by_url[came_from] or pin]
        where = came_from
    else:  # placed by hand or by an older vitlib: any source's published hash, else the pin
        wanted = [s.sha256 for s in sources if s.sha256] or [pin]
        where = sources[0].url if sources else str(dest)
    actual = sha256_file(dest)
    if wanted == [None]:
        pin_file.write_text(actual + "\n")
        log.warning(
            "model %s: %s has no published sha256; pinned %s on first use", model_id, where, actual
        )
        return
    if actual not in wanted:
        raise WeightsError(
            f"model {model_id}: checkpoint {dest} from {where} is corrupt or not the expected"
            f" file: sha256 expected {' or '.join(str(w) for w in wanted)}, actual {actual}"
            " (delete it to download again)"
        )


def _download_url(url: str, tmp: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
        while block := r.read(1 << 20):
            f.write(block)


def _download_hub(
    repo_id: str, revision: str, filename: str, tmp: Path, timeout: float
) -> str | None:
    """Fetch a hub file through the HF cache into ``tmp``; return the hub's published
    sha256 (the LFS etag naming the cached blob) when there is one."""
    from huggingface_hub import hf_hub_download

    got = hf_hub_download(
        repo_id=repo_id, filename=filename, revision=revision, etag_timeout=timeout
    )
    assert isinstance(got, str)
    blob = Path(got).resolve()
    try:
        os.link(blob, tmp)  # no second copy of a multi-GB file where the filesystem allows
    except OSError:
        shutil.copyfile(blob, tmp)
    return blob.name if _SHA256.match(blob.name) else None


def _download(source: Source, tmp: Path, timeout: float) -> str | None:
    hub = source.hub
    if hub is not None and importlib.util.find_spec("huggingface_hub") is not None:
        return _download_hub(*hub, tmp, timeout)
    _download_url(source.url, tmp, timeout)  # without huggingface_hub: the same URL, plainly
    return None


def fetch_weights(
    model_id: str,
    url: str,
    cache_dir: str | os.PathLike,
    *,
    sha256: str | None = None,
    timeout: float = 60.0,
    fallbacks: Sequence[Mapping[str, Any] | Source] | None = None,
) -> Path:
    """Return the verified local checkpoint of ``model_id``, downloading it once if needed.

    ``url``/``sha256`` is the primary source; ``fallbacks`` (``{url, sha256}`` mappings) are
    tried in order when it cannot be used — by default those the registry lists for ``url``.
    The file is cached under the primary URL's name whichever source provided it.
    """
    if fallbacks is None:
        more = registry_fallbacks(url)
    else:
        more = [
            f if isinstance(f, Source) else Source(str(f["url"]), f.get("sha256"))
            for f in fallbacks
        ]
    sources = [Source(url, sha256), *more]
    dest = cached_weights_path(cache_dir, model_id, url)
    if dest.exists():
        _verify_cached(dest, model_id, sources)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    errors: list[str] = []
    offline = False
    for src in sources:
        tmp.unlink(missing_ok=True)
        try:
            published = _download(src, tmp, timeout)
        except Exception as e:  # noqa: BLE001 - urllib, OSError, huggingface_hub's errors
            tmp.unlink(missing_ok=True)
            errors.append(f"cannot download {src.url} ({type(e).__name__}: {e})")
            offline = True
            continue
        actual = sha256_file(tmp)
        wanted = src.sha256 or published
        if src.sha256 and published and published != src.sha256:
            log.warning(
                "model %s: the hub publishes sha256 %s for %s, the registry %s; using the registry's",
                model_id,
                published,
                src.url,
                src.sha256,
            )
        if wanted is not None and actual != wanted:
            tmp.unlink(missing_ok=True)
            errors.append(
                f"checkpoint from {src.url} is corrupt or not the expected file:"
                f" sha256 expected {wanted}, actual {actual}"
            )
            continue
        if wanted is None:
            log.warning(
                "model %s: %s has no published sha256; pinned %s on first use",
                model_id,
                src.url,
                actual,
            )
        if src is not sources[0]:
            log.warning("model %s: %s failed; using the fallback %s", model_id, url, src.url)
        pin_file, source_file = _sidecars(dest)
        pin_file.write_text(actual + "\n")
        source_file.write_text(src.url + "\n")
        os.replace(tmp, dest)
        return dest
    hint = (
        f"; this machine may be offline: place the file at {dest} or set"
        " custom_models.<id>.weights.path"
        if offline
        else ""
    )
    raise WeightsError(f"model {model_id}: {'; '.join(errors)}{hint}")


def read_checkpoint(path: str | os.PathLike, *, model_id: str = "?", fmt: str | None = None) -> Any:
    """Read a checkpoint file safely (see module docstring); no file runs code.

    ``fmt`` is the spec's ``weights.format``: a TorchScript archive is read (its tensors
    only) when it is one of :data:`TORCHSCRIPT_FORMATS` or not given, and refused with a
    :class:`WeightsError` naming the file for any other format.
    """
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"model {model_id}: checkpoint {p} does not exist")
    if _is_safetensors(p):
        from safetensors.torch import load_file

        return load_file(str(p))
    import torch  # only where a checkpoint is read: the workflow's parse stays torch-free

    if _is_torchscript(p):
        if fmt is not None and fmt not in TORCHSCRIPT_FORMATS:
            raise WeightsError(
                f"model {model_id}: checkpoint {p} is a TorchScript archive (it holds code);"
                f" vitlib reads TorchScript only for weights.format"
                f" {' or '.join(TORCHSCRIPT_FORMATS)}, not {fmt!r}: give a state-dict file"
                " (torch.save or .safetensors) or set weights.format: openai_clip"
            )
        return read_torchscript_tensors(p, model_id=model_id)
    try:
        # an open file: torch.load would dispatch a path on its suffix (.safetensors)
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)), open(p, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - name the file and the reason
        raise WeightsError(f"model {model_id}: cannot read checkpoint {p} safely: {e}") from None


def _is_safetensors(p: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON object."""
    with open(p, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 0 < n <= p.stat().st_size - 8


def _is_torchscript(p: Path) -> bool:
    if not zipfile.is_zipfile(p):
        return False
    with zipfile.ZipFile(p) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


#: ``weights.format`` values whose checkpoints may be TorchScript archives: OpenAI's CLIP
#: release files — also the last fallback of the registry's ``open_clip``-format CLIP specs,
#: cached under the primary's name.
TORCHSCRIPT_FORMATS: tuple[str, ...] = ("openai_clip", "open_clip")

#: Storage classes a TorchScript ``data.pkl`` names (``torch.<Name>Storage``) → dtype name.
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}


@dataclass(frozen=True)
class _StorageType:
    """What ``torch.<Name>Storage`` resolves to inside a TorchScript pickle: a dtype name."""

    dtype: str


class _ScriptRecord:
    """An instance of a TorchScript class (``__torch__.*``) as plain data: its pickled
    state is kept, none of its code (``forward``, ``__setstate__``) exists or runs."""

    _qualname = "__torch__"

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _identity(value: Any, *_: Any) -> Any:
    return value


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_: Any, **__: Any) -> Any:
    """``torch._utils._rebuild_tensor_v2`` on a storage read from the archive: a strided
    view (out-of-range sizes or offsets are refused by ``as_strided``)."""
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


class _TorchScriptUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript ``data.pkl``: tensors and plain containers only."""

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _identity,
        ("collections", "OrderedDict"): OrderedDict,
        **{
            ("torch.jit._pickle", name): _identity
            for name in (
                "build_intlist",
                "build_doublelist",
                "build_boollist",
                "build_tensorlist",
                "restore_type_tag",
            )
        },
    }

    def __init__(self, data: bytes, storage: Any):
        super().__init__(io.BytesIO(data))
        self._storage = storage
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "__torch__" or module.startswith("__torch__."):
            qual = f"{module}.{name}"  # a TorchScript class: an inert record, no code
            if qual not in self._classes:
                self._classes[qual] = type(name, (_ScriptRecord,), {"_qualname": qual})
            return self._classes[qual]
        raise pickle.UnpicklingError(f"refuses to load global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        kind = pid[1]
        if not isinstance(kind, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {kind!r}")
        numel = int(pid[4]) if len(pid) >= 5 else None
        return self._storage(str(pid[2]), kind.dtype, numel)


def _tensor_leaves(obj: Any, prefix: str, out: dict[str, Any], where: str) -> None:
    """Parameters and buffers of a module tree of :class:`_ScriptRecord` (dotted names, as
    ``state_dict``): every tensor attribute, submodules recursed into."""
    import torch

    if isinstance(obj, _ScriptRecord):
        state = getattr(obj, "state", None)
        if not isinstance(state, dict):
            raise WeightsError(
                f"{where}: object {prefix.rstrip('.') or '<root>'} ({obj._qualname}) restores"
                " itself through TorchScript code (__getstate__/__setstate__); vitlib reads"
                " only modules' tensors and runs no code: export a state dict instead"
            )
        obj = state
    if not isinstance(obj, dict):
        return
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
        elif isinstance(v, _ScriptRecord):  # a submodule
            _tensor_leaves(v, f"{prefix}{k}.", out, where)


def read_torchscript_tensors(path: str | os.PathLike, *, model_id: str = "?") -> dict[str, Any]:
    """The parameters and buffers of a TorchScript archive (``torch.jit.save``; OpenAI's
    CLIP ``.pt`` files) as a flat state dict, **without** ``torch.jit.load``.

    The archive is a zip ``<name>/{data.pkl, data/<key>, code/…, constants.pkl, …}``.
    ``data.pkl`` pickles the module tree, each tensor as ``_rebuild_tensor_v2`` of a
    persistent ``('storage', torch.<Dtype>Storage, key, location, numel)`` whose bytes are
    the record ``data/<key>``.  It is unpickled by :class:`_TorchScriptUnpickler`: the
    tensor-rebuild functions and ``OrderedDict`` are the only globals it resolves, every
    ``__torch__.*`` class becomes an inert :class:`_ScriptRecord`, anything else is refused.
    ``code/`` and ``constants.pkl`` are never read.  Keys are the dotted attribute paths of
    every tensor attribute of every module (``visual.conv1.weight``), as ``state_dict``.
    An object whose state is restored by its own TorchScript ``__setstate__`` is refused
    (that is code).  Any problem is a :class:`WeightsError` naming the file.
    """
    import torch

    p = Path(path)
    where = f"model {model_id}: TorchScript archive {p}"
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
            tops = sorted(
                {n.split("/", 1)[0] for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)}
            )
            if len(tops) != 1:
                raise WeightsError(f"{where}: expected one '<name>/data.pkl' record, found {tops}")
            top = tops[0]
            order = f"{top}/byteorder"
            if order in names and z.read(order).strip() not in (b"little", b""):
                raise WeightsError(
                    f"{where}: byte order {z.read(order).strip().decode(errors='replace')!r}"
                    " is not supported (only little-endian)"
                )
            cache: dict[str, torch.Tensor] = {}

            def storage(key: str, dtype_name: str, numel: int | None) -> torch.Tensor:
                dtype = getattr(torch, dtype_name)
                if key not in cache:
                    rec = f"{top}/data/{key}"
                    if rec not in names:
                        raise WeightsError(f"{where}: tensor record {rec} is missing")
                    raw = bytearray(z.read(rec))
                    item = torch.empty((), dtype=dtype).element_size()
                    if len(raw) % item or (numel is not None and len(raw) != numel * item):
                        raise WeightsError(
                            f"{where}: tensor record {rec} has {len(raw)} bytes, not the"
                            f" {numel if numel is not None else 'whole'} × {item} of its"
                            f" {dtype_name} storage (truncated or corrupt)"
                        )
                    cache[key] = (
                        torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
                    )
                t = cache[key]
                if t.dtype != dtype:
                    raise WeightsError(f"{where}: storage {key} is read as two dtypes")
                return t

            root = _TorchScriptUnpickler(z.read(f"{top}/data.pkl"), storage).load()
    except WeightsError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, RuntimeError) as e:
        raise WeightsError(f"{where}: cannot read its tensors safely: {e}") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise WeightsError(f"{where}: malformed data.pkl: {type(e).__name__}: {e}") from None
    out: dict[str, Any] = {}
    _tensor_leaves(root, "", out, where)
    if not out:
        raise WeightsError(f"{where}: holds no tensors")
    return out


def apply_key_map(sd: Mapping[str, Any], key_map: Mapping[str, str] | None) -> dict[str, Any]:
    """Replace key prefixes: ``{"module.encoder.": ""}`` strips that prefix (first match wins)."""
    if not key_map:
        return dict(sd)
    out: dict[str, Any] = {}
    for k, v in sd.items():
        for old, new in key_map.items():
            if k.startswith(old):
                k = new + k[len(old) :]
                break
        out[k] = v
    return out
