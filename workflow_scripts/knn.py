import faiss

from vitlib.downstream.tables import knn_table
from vitlib.logs import log_to
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
faiss.omp_set_num_threads(snakemake.threads)
knn_table(
    store_from_marker(snakemake.input.train),
    store_from_marker(snakemake.input.test),
    ks=snakemake.params.ks,
    temperature=snakemake.params.temperature,
    feature=snakemake.params.feature,
).to_csv(snakemake.output[0], index=False)
