from vitlib.attention.analyses import head_taxonomy_table
from vitlib.logs import log_to
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
head_taxonomy_table(store_from_marker(snakemake.input[0]), snakemake.params.taxonomy).to_csv(
    snakemake.output[0], index=False
)
