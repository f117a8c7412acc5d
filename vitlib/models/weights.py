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
* :func:`read_checkpoint` reads safetensors files with safetensors, TorchScript archives
  (OpenAI CLIP) with ``torch.jit.load`` — which restores tensors and TorchScript code, not
  arbitrary Python objects — and everything else with ``torch.load(weights_only=True)``;
  the only extra type allowed is ``argparse.Namespace``, which the upstream MAE/BEiT/MoCo
  training scripts store next to the weights.  The kind is read from the file's first
  bytes, not its name (a fallback source may be a ``.bin`` saved under a primary's
  ``.safetensors`` name).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import struct
import urllib.error
import urllib.request
import zipfile
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
    """Raise :class:`WeightsError` unless ``path`` has sha256 ``expected``."""
    actual = sha256_file(path)
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


def read_checkpoint(path: str | os.PathLike, *, model_id: str = "?") -> Any:
    """Read a checkpoint file safely (see module docstring)."""
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"model {model_id}: checkpoint {p} does not exist")
    if _is_safetensors(p):
        from safetensors.torch import load_file

        return load_file(str(p))
    import torch  # only where a checkpoint is read: the workflow's parse stays torch-free

    if _is_torchscript(p):
        return dict(torch.jit.load(str(p), map_location="cpu").state_dict())
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
