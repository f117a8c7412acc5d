from vitlib.attention.analyses import artifact_tokens_table
from vitlib.logs import log_to
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
artifact_tokens_table(
    store_from_marker(snakemake.input[0]),
    norm_factor=snakemake.params.norm_factor,
).to_csv(snakemake.output[0], index=False)
