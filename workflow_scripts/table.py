import os

os.environ["OMP_NUM_THREADS"] = str(snakemake.threads)  # before torch/faiss load (if they do)

from vitlib.gpu_slots import gpu_job  # noqa: E402
from vitlib.logs import finish, log_to  # noqa: E402
from vitlib.registry import get, write_table  # noqa: E402

log_to(snakemake.log[0])
# A GPU analysis (probes) on device cuda holds one GPU of its own while it runs.
with gpu_job(
    snakemake.params.device,
    snakemake.config["extract"].get("gpus"),
    snakemake.config["results"],
    enabled=get(snakemake.wildcards.analysis).gpu,
):
    write_table(
        snakemake.wildcards.analysis,
        snakemake.input.stores,
        snakemake.output[0],
        settings=snakemake.params.settings,
        manifest=snakemake.input.manifest,
        device=snakemake.params.device,
    )
finish()
