import pandas as pd

from vitlib.logs import log_to
from vitlib.plots.downstream import knn_figure

log_to(snakemake.log[0])
knn_figure(
    pd.concat([pd.read_csv(p) for p in snakemake.input], ignore_index=True),
    snakemake.output,
    dpi=snakemake.params.dpi,
)
