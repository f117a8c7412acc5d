from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

import logging

import torch

from vitlib.config import model_spec, recipe_options
from vitlib.data.manifest import Manifest
from vitlib.gpu_slots import gpu_job
from vitlib.logs import finish, log_to
from vitlib.minizoo import train_model
from vitlib.minizoo.train import recipe_for

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.model
tr = cfg["train"]
spec = model_spec(snakemake.config, snakemake.wildcards.model)
ext = snakemake.config["extract"]
# A GPU job (device cuda) holds one GPU of its own while it runs (CUDA_VISIBLE_DEVICES).
with gpu_job(ext["device"], ext.get("gpus"), snakemake.config["results"]) as gpu:
    summary = train_model(
        tr["method"],
        Manifest.load(snakemake.input.manifest),
        arch=cfg["arch"],
        arch_kwargs=cfg.get("arch_kwargs", {}),
        out=snakemake.output.ckpt,
        recipe=recipe_for(tr["method"], recipe_options(tr)),
        mean=spec.mean,
        std=spec.std,
        log_path=snakemake.output.loss,
        device=ext["device"],
    )
logging.getLogger("train").info("done%s: %s", "" if gpu is None else f" on GPU {gpu}", summary)
finish()
