"""Model specs (registry), builders and the one-pass capture wrapper."""

from vitlib.models.build import ModelError, build_model
from vitlib.models.capture import CAPTURE_POINTS, Capture, CollectConsumer
from vitlib.models.registry import PAPER_MODELS, ModelSpec, get_spec, list_models, spec_from_config

__all__ = [
    "CAPTURE_POINTS",
    "Capture",
    "CollectConsumer",
    "ModelError",
    "ModelSpec",
    "PAPER_MODELS",
    "build_model",
    "get_spec",
    "list_models",
    "spec_from_config",
]
