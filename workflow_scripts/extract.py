from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

import logging

import torch

from vitlib.config import model_spec
from vitlib.data.manifest import Manifest
from vitlib.extract import run_extraction
from vitlib.gpu_slots import gpu_job
from vitlib.logs import finish, log_to
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.config["extract"]
# A GPU job (device cuda) holds one GPU of its own while it runs (CUDA_VISIBLE_DEVICES).
with gpu_job(cfg["device"], cfg.get("gpus"), snakemake.config["results"]) as gpu:
    summary = run_extraction(
        model_spec(snakemake.config, snakemake.wildcards.model),
        Manifest.load(snakemake.input.manifest),
        snakemake.wildcards.view,
        store_from_marker(snakemake.output[0]),
        batch_size=snakemake.params.batch_size,
        dtype=snakemake.params.dtype,
        feature_dtype=snakemake.params.feature_dtype,
        gram_points=tuple(snakemake.params.gram_points),
        residual_norms=snakemake.params.residual_norms,
        tile_factor=snakemake.params.tile_factor,
        shard_mb=snakemake.params.shard_mb,
        needs=snakemake.params.needs,
        device=cfg["device"],
        num_workers=cfg["num_workers"],
        compile=cfg["compile"],
        weights_path=snakemake.input.weights[0] if snakemake.input.weights else None,
    )
logging.getLogger("extract").info("done%s: %s", "" if gpu is None else f" on GPU {gpu}", summary)
finish()
