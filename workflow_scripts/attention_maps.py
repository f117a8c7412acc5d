import numpy as np

from vitlib.attention.analyses import average_maps
from vitlib.logs import log_to
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
maps = average_maps(
    store_from_marker(snakemake.input[0]),
    aaam_normaliser=snakemake.params.aaam_normaliser,
    faithful_batch_size=snakemake.params.faithful_batch_size,
)
np.savez(
    snakemake.output[0],
    **maps,
    aaam_normaliser=snakemake.params.aaam_normaliser,
    model=snakemake.wildcards.model,
)
