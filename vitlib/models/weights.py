"""Checkpoint files: download once into a cache, verify, and read without unsafe unpickling.

* :func:`fetch_weights` downloads a model's checkpoint into ``cache_dir/<model>/<file>``
  (atomically: a partial download never has the final name), verifies its sha256 against
  the registry's value and raises :class:`WeightsError` naming the model, the URL and both
  hashes when they differ, or the model and the URL when the machine cannot download.
  Upstream releases that publish no hash (DINO, MoCo-v3, MAE, BEiT, timm hub files) are
  pinned on first download: the observed sha256 is recorded beside the file and every later
  use is checked against it.
* :func:`read_checkpoint` reads ``.safetensors`` with safetensors, TorchScript archives
  (OpenAI CLIP) with ``torch.jit.load`` — which restores tensors and TorchScript code, not
  arbitrary Python objects — and everything else with ``torch.load(weights_only=True)``;
  the only extra type allowed is ``argparse.Namespace``, which the upstream MAE/BEiT/MoCo
  training scripts store next to the weights.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Types that upstream checkpoint pickles contain besides tensors and containers.
SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)


class WeightsError(RuntimeError):
    """A checkpoint cannot be fetched, verified or read; the message names the model."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_filename(model_id: str, url: str) -> str:
    """Cache file name: the URL's last component (timm hub files get the model id first)."""
    name = url.rstrip("/").split("?")[0].rsplit("/", 1)[-1]
    return f"{model_id}-{name}" if name in ("model.safetensors", "pytorch_model.bin") else name


def cached_weights_path(cache_dir: str | os.PathLike, model_id: str, url: str) -> Path:
    return Path(cache_dir) / model_id / weights_filename(model_id, url)


def _verify(path: Path, model_id: str, url: str, sha256: str | None) -> None:
    actual = sha256_file(path)
    pin = path.with_name(path.name + ".sha256")
    expected = sha256 or (pin.read_text().strip() if pin.exists() else None)
    if expected is None:
        pin.write_text(actual + "\n")
        log.warning(
            "model %s: %s has no published sha256; pinned %s on first use", model_id, url, actual
        )
        return
    if actual != expected:
        raise WeightsError(
            f"model {model_id}: checkpoint {path} from {url} is corrupt or not the expected"
            f" file: sha256 expected {expected}, actual {actual}"
            " (delete it to download again)"
        )


def fetch_weights(
    model_id: str,
    url: str,
    cache_dir: str | os.PathLike,
    *,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Return the verified local checkpoint of ``model_id``, downloading it once if needed."""
    dest = cached_weights_path(cache_dir, model_id, url)
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                while block := r.read(1 << 20):
                    f.write(block)
        except (urllib.error.URLError, OSError, ValueError) as e:
            tmp.unlink(missing_ok=True)
            raise WeightsError(
                f"model {model_id}: cannot download {url} ({e}); this machine may be"
                f" offline: place the file at {dest} or set custom_models.<id>.weights.path"
            ) from None
        try:
            _verify(tmp, model_id, url, sha256)
        except WeightsError:
            tmp.unlink(missing_ok=True)
            raise
        pin = tmp.with_name(tmp.name + ".sha256")
        if pin.exists():
            os.replace(pin, dest.with_name(dest.name + ".sha256"))
        os.replace(tmp, dest)
        return dest
    _verify(dest, model_id, url, sha256)
    return dest


def read_checkpoint(path: str | os.PathLike, *, model_id: str = "?") -> Any:
    """Read a checkpoint file safely (see module docstring)."""
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"model {model_id}: checkpoint {p} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    import torch  # only where a checkpoint is read: the workflow's parse stays torch-free

    if _is_torchscript(p):
        return dict(torch.jit.load(str(p), map_location="cpu").state_dict())
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - name the file and the reason
        raise WeightsError(f"model {model_id}: cannot read checkpoint {p} safely: {e}") from None


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
