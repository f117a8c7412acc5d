from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

from vitlib.downstream.family_tests import family_tests_from_files
from vitlib.logs import finish, log_to
from vitlib.plots.downstream import family_tests_figure

log_to(snakemake.log[0])
table = family_tests_from_files(snakemake.input, **snakemake.params.settings)
table.to_csv(snakemake.output.table, index=False)
family_tests_figure(table, snakemake.output.figure, dpi=snakemake.params.dpi)
finish()
