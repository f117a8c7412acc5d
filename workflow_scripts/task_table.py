import faiss
import torch

from vitlib.data.manifest import Manifest
from vitlib.logs import log_to
from vitlib.store import store_from_marker
from vitlib.tasks import task_table

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
faiss.omp_set_num_threads(snakemake.threads)
task_table(snakemake.wildcards.task, str(store_from_marker(snakemake.input.store)),
           Manifest.load(snakemake.input.manifest),
           snakemake.params.settings).to_csv(snakemake.output[0], index=False)
