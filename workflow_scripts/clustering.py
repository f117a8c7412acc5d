import faiss

from vitlib.logs import log_to
from vitlib.metrics.tables import clustering_table
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
faiss.omp_set_num_threads(snakemake.threads)
clustering_table(
    store_from_marker(snakemake.input[0]),
    k=snakemake.params.k,
    seed=snakemake.params.seed,
    n_init=snakemake.params.n_init,
    noise=snakemake.params.noise,
).to_csv(snakemake.output[0], index=False)
