import numpy as np

from vitlib.logs import log_to
from vitlib.plots.attention_maps import map_grid_figure

log_to(snakemake.log[0])
kind = snakemake.wildcards.kind
z = np.load(snakemake.input[0])
if kind == "aligned":
    maps = z["aligned"]
    title = "Average aligned spatial attention (query at the centre)"
else:
    m = z["cls" if kind == "cls" else "spatial_pure"]
    L, H, N = m.shape
    h = int(round((N - 1) ** 0.5))  # the figures use square grids
    maps = m[..., N - h * h :].reshape(L, H, h, h)
    title = "Average CLS attention" if kind == "cls" else "Average spatial attention"
map_grid_figure(
    maps, snakemake.output, title=f"{snakemake.wildcards.model}: {title}", dpi=snakemake.params.dpi
)
