from vitlib.logs import log_to
from vitlib.registry import draw_figure

log_to(snakemake.log[0])
draw_figure(
    snakemake.wildcards.figure,
    snakemake.input,
    snakemake.output,
    dpi=snakemake.params.dpi,
    models=snakemake.params.models,
    model=snakemake.wildcards.get("model"),
    layout=snakemake.params.get("layout", "main"),
    settings=snakemake.params.get("settings"),
)
