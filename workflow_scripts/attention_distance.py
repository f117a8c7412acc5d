import os

from vitlib.attention.tables import attention_distance_table
from vitlib.logs import log_to

log_to(snakemake.log[0])
table = attention_distance_table(os.path.dirname(snakemake.input[0]), units=snakemake.params.units)
table.to_csv(snakemake.output[0], index=False)
