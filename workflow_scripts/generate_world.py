from vitlib.data.synthetic import generate
from vitlib.logs import log_to

log_to(snakemake.log[0])
generate(snakemake.output[0], **snakemake.params.generate)
