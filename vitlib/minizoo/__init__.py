"""The offline mini-zoo: small ViTs trained on the synthetic world, one per supervision
family of the paper (see :func:`vitlib.minizoo.train.train_model`)."""

from vitlib.minizoo.train import METHODS, train_model

__all__ = ["METHODS", "train_model"]
