from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

from vitlib.findings import write_findings
from vitlib.logs import finish, log_to

log_to(snakemake.log[0])
write_findings(
    snakemake.input,
    snakemake.output.table,
    snakemake.output.text,
    description=snakemake.params.description,
)
finish()
