from vitlib.attention.tables import attention_distance_table
from vitlib.logs import log_to
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
table = attention_distance_table(
    store_from_marker(snakemake.input[0]), units=snakemake.params.units
)
table.to_csv(snakemake.output[0], index=False)
