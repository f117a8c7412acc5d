import pandas as pd

from vitlib.logs import log_to
from vitlib.plots.attention import attention_distance_figure

log_to(snakemake.log[0])
table = pd.concat([pd.read_csv(p) for p in snakemake.input], ignore_index=True)
attention_distance_figure(table, snakemake.output, dpi=snakemake.params.dpi)
