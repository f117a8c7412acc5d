import os

os.environ["OMP_NUM_THREADS"] = str(snakemake.threads)  # before torch/faiss load (if they do)

from vitlib.logs import log_to  # noqa: E402
from vitlib.registry import write_table  # noqa: E402

log_to(snakemake.log[0])
write_table(
    snakemake.wildcards.analysis,
    snakemake.input.stores,
    snakemake.output[0],
    settings=snakemake.params.settings,
    manifest=snakemake.input.manifest,
    device=snakemake.params.device,
)
