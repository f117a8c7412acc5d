import logging

import torch

from vitlib.config import model_spec
from vitlib.data.manifest import Manifest
from vitlib.logs import log_to
from vitlib.minizoo import train_model

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
spec = model_spec(snakemake.config, snakemake.wildcards.model)
summary = train_model(
    p.method,
    Manifest.load(snakemake.input.manifest),
    arch=p.arch,
    arch_kwargs=p.arch_kwargs,
    out=snakemake.output.ckpt,
    epochs=p.epochs,
    batch_size=p.batch_size,
    lr=p.lr,
    seed=p.seed,
    mean=spec.mean,
    std=spec.std,
    log_path=snakemake.output.loss,
    **p.options,
)
logging.getLogger("train").info("done: %s", summary)
