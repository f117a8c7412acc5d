from vitlib.downstream.summary import summary_from_files
from vitlib.logs import log_to
from vitlib.plots.downstream import best_layer_figure

log_to(snakemake.log[0])
table = summary_from_files(snakemake.input)
table.to_csv(snakemake.output.table, index=False)
best_layer_figure(table, snakemake.output.figure, dpi=snakemake.params.dpi)
