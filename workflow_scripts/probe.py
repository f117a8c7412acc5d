import torch

from vitlib.downstream.tables import probe_table
from vitlib.extract import resolve_device
from vitlib.logs import log_to
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
probe_table(
    store_from_marker(snakemake.input.train),
    store_from_marker(snakemake.input.test),
    device=str(resolve_device(snakemake.config["extract"]["device"])),
    **snakemake.params.settings,
).to_csv(snakemake.output[0], index=False)
