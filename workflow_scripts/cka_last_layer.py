from vitlib.logs import log_to
from vitlib.metrics.tables import last_layer_cka_table
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
last_layer_cka_table(
    [store_from_marker(p) for p in snakemake.input], minmax=snakemake.params.minmax
).to_csv(snakemake.output[0], index=False)
