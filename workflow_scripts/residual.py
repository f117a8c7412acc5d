from vitlib.logs import log_to
from vitlib.metrics.tables import residual_table
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
residual_table(store_from_marker(snakemake.input[0]), minmax=snakemake.params.minmax).to_csv(
    snakemake.output[0], index=False
)
