from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

from vitlib.downstream.summary import table6
from vitlib.logs import finish, log_to
from vitlib.tables import read_tables

log_to(snakemake.log[0])
table6(read_tables(snakemake.input)).to_csv(snakemake.output[0])
finish()
