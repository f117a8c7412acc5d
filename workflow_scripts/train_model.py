import logging

import torch

from vitlib.config import model_spec
from vitlib.data.manifest import Manifest
from vitlib.logs import log_to
from vitlib.minizoo import train_model

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.model
tr = cfg["train"]
spec = model_spec(snakemake.config, snakemake.wildcards.model)
summary = train_model(
    tr["method"],
    Manifest.load(snakemake.input.manifest),
    arch=cfg["arch"],
    arch_kwargs=cfg.get("arch_kwargs", {}),
    out=snakemake.output.ckpt,
    epochs=tr["epochs"],
    batch_size=tr["batch_size"],
    lr=tr["lr"],
    seed=tr["seed"],
    mean=spec.mean,
    std=spec.std,
    log_path=snakemake.output.loss,
    **tr["options"],
)
logging.getLogger("train").info("done: %s", summary)
