from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

import vitlib
from vitlib.logs import finish, log_to
from vitlib.report import run_card, write_report_page

log_to(snakemake.log[0])
write_report_page(
    snakemake.output[0],
    card=run_card(
        models=snakemake.params.models,
        datasets=snakemake.params.datasets,
        settings=snakemake.params.settings,
        version=vitlib.__version__,
    ),
    parts=snakemake.input.parts,
    table6=snakemake.input.table6,
    figures=snakemake.params.figures,
)
finish()
