import pandas as pd

from vitlib.logs import log_to
from vitlib.plots.attention_maps import artifact_figure, offset_figure, taxonomy_figure

log_to(snakemake.log[0])
table = pd.concat([pd.read_csv(p) for p in snakemake.input], ignore_index=True)
draw = {
    "attention_offset": offset_figure,
    "head_taxonomy": taxonomy_figure,
    "artifact_tokens": artifact_figure,
}[snakemake.wildcards.fig]
draw(table, snakemake.output, dpi=snakemake.params.dpi)
