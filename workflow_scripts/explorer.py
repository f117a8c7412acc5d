from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

from vitlib.explorer import explorer_data, write_explorer
from vitlib.logs import finish, log_to

log_to(snakemake.log[0])
maps = {tuple(k): p for k, p in zip(snakemake.params.map_keys, snakemake.input.maps, strict=True)}
data = explorer_data(
    summary_tables=snakemake.input.summary,
    grid_tables=snakemake.input.grids,
    attention_maps=maps,
    title=snakemake.params.title,
    models=snakemake.params.models,
)
write_explorer(data, snakemake.output[0])
finish()
