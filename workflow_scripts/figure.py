from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

from vitlib.logs import finish, log_to
from vitlib.registry import draw_figure

log_to(snakemake.log[0])
# one job, one or both layouts (main / appendix) of the figure: {layout: models shown}
for layout, models in snakemake.params.layouts.items():
    draw_figure(
        snakemake.wildcards.figure,
        snakemake.input,
        getattr(snakemake.output, layout),
        dpi=snakemake.params.dpi,
        models=models,
        model=snakemake.wildcards.get("model"),
        layout=layout,
        settings=snakemake.params.get("settings"),
    )
finish()
