from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

from vitlib.config import write_effective_config
from vitlib.logs import finish, log_to

log_to(snakemake.log[0])
write_effective_config(snakemake.params.config, snakemake.output[0])
finish()
