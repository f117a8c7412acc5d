from vitlib.attention.analyses import head_metrics_table
from vitlib.logs import log_to
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
head_metrics_table(
    store_from_marker(snakemake.input[0]),
    aaam_normaliser=snakemake.params.aaam_normaliser,
    spatial_cls_key=snakemake.params.spatial_cls_key,
).to_csv(snakemake.output[0], index=False)
