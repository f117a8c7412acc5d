from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

import logging

import torch

from vitlib.config import model_spec
from vitlib.data.manifest import Manifest
from vitlib.downstream.knn_bank import stream_knn_bank
from vitlib.gpu_slots import gpu_job
from vitlib.logs import finish, log_to
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.config["extract"]
out = snakemake.output[0]
# A GPU job (device cuda) holds one GPU of its own while it runs (CUDA_VISIBLE_DEVICES).
with gpu_job(cfg["device"], cfg.get("gpus"), snakemake.config["results"]) as gpu:
    query = store_from_marker(snakemake.input.query)
    bank = stream_knn_bank(
        model_spec(snakemake.config, snakemake.wildcards.model),
        Manifest.load(snakemake.input.train_manifest),
        query,
        view=query.name.removesuffix(".zarr"),
        k_max=snakemake.params.k_max,
        feature=snakemake.params.feature,
        batch_size=snakemake.params.batch_size,
        dtype=snakemake.params.dtype,
        device=cfg["device"],
        num_workers=cfg["num_workers"],
        weights_path=snakemake.input.weights[0] if snakemake.input.weights else None,
        checkpoint=out.removesuffix(".npz") + ".checkpoint.npz",
        out=out,
        progress=False,
    )
logging.getLogger("knn_bank").info("done%s: %s", "" if gpu is None else f" on GPU {gpu}", bank.meta)
finish()
