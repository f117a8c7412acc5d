from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

from vitlib.downstream.series import series_figure, series_from_files
from vitlib.logs import finish, log_to

log_to(snakemake.log[0])
table = series_from_files(snakemake.input, snakemake.params.series)
table.to_csv(snakemake.output.table, index=False)
series_figure(table, snakemake.output.figure, dpi=snakemake.params.dpi)
finish()
