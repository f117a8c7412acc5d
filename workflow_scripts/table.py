from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

from vitlib.gpu_slots import gpu_job
from vitlib.logs import finish, log_to
from vitlib.registry import get, write_table

log_to(snakemake.log[0])
analysis = get(snakemake.wildcards.analysis)
# one table from the input stores, or (a job per dataset) one per model from its own store
tables = (
    [([m], out) for m, out in zip(snakemake.input.stores, snakemake.output)]
    if analysis.per_dataset_job
    else [(snakemake.input.stores, snakemake.output[0])]
)
# A GPU analysis (probes) on device cuda holds one GPU of its own while it runs.
with gpu_job(
    snakemake.params.device,
    snakemake.config["extract"].get("gpus"),
    snakemake.config["results"],
    enabled=analysis.gpu,
):
    for stores, out in tables:
        write_table(
            analysis.name,
            stores,
            out,
            settings=snakemake.params.settings,
            manifest=snakemake.input.manifest,
            device=snakemake.params.device,
        )
finish()
