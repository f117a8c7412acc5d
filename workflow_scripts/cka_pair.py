from vitlib.logs import log_to
from vitlib.metrics.tables import cka_pair_table
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
cka_pair_table(
    store_from_marker(snakemake.input.x),
    store_from_marker(snakemake.input.y),
    points=snakemake.params.points,
    kind=snakemake.params.kind,
    minmax=snakemake.params.minmax,
).to_csv(snakemake.output[0], index=False)
