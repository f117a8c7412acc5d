import pandas as pd

from vitlib.logs import log_to
from vitlib.plots import features as F

log_to(snakemake.log[0])
table = pd.concat([pd.read_csv(p) for p in snakemake.input], ignore_index=True)
fig, models, out, dpi = (
    snakemake.wildcards.fig,
    snakemake.params.models,
    snakemake.output,
    snakemake.params.dpi,
)
if fig == "cka_grids":
    F.cka_grids_figure(table, models, out, dpi=dpi)
elif fig == "cka_last_layer":
    F.last_layer_figure(table, models, out, dpi=dpi)
elif fig == "residual":
    F.residual_figure(table, out, dpi=dpi)
else:
    F.clustering_figure(table, out, dpi=dpi)
