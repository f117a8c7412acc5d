import os

os.environ["OMP_NUM_THREADS"] = str(snakemake.threads)  # before torch/faiss load (if they do)

from vitlib.data.manifest import Manifest  # noqa: E402
from vitlib.logs import log_to  # noqa: E402
from vitlib.store import store_from_marker  # noqa: E402
from vitlib.tasks import task_table  # noqa: E402

log_to(snakemake.log[0])
task_table(
    snakemake.wildcards.task,
    str(store_from_marker(snakemake.input.store)),
    Manifest.load(snakemake.input.manifest),
    snakemake.params.settings,
).to_csv(snakemake.output[0], index=False)
