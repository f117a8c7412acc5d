import numpy as np

from vitlib.logs import log_to
from vitlib.plots.attention_maps import image_grid_figure

log_to(snakemake.log[0])
z = dict(np.load(snakemake.input[0]))
image_grid_figure(
    z,
    snakemake.output,
    dpi=snakemake.params.dpi,
    title=f"{snakemake.wildcards.model}: CLS (left) and mean spatial (right) attention",
)
