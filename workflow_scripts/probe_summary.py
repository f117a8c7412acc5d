import pandas as pd

from vitlib.downstream.summary import table6
from vitlib.logs import log_to
from vitlib.plots.downstream import probe_figure

log_to(snakemake.log[0])
t = pd.concat([pd.read_csv(p) for p in snakemake.input], ignore_index=True)
table6(t).to_csv(snakemake.output.table6)
probe_figure(t, snakemake.output.figure, dpi=snakemake.params.dpi)
