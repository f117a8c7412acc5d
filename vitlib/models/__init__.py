"""Model specs (registry), builders and the one-pass capture wrapper.

Names are imported lazily (PEP 562): reading a spec (``vitlib.models.registry``, used by
every workflow job through ``vitlib.config``) must not pay for importing torch and timm.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "ModelError": "build",
    "build_model": "build",
    "CAPTURE_POINTS": "capture",
    "Capture": "capture",
    "CollectConsumer": "capture",
    "PAPER_MODELS": "registry",
    "ModelSpec": "registry",
    "get_spec": "registry",
    "list_models": "registry",
    "spec_from_config": "registry",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"vitlib.models.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'vitlib.models' has no attribute {name!r}")
