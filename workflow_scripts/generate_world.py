from vitlib.data.readers import WORLD_LAYOUT
from vitlib.data.synthetic import generate
from vitlib.logs import log_to

log_to(snakemake.log[0])
gen = dict(snakemake.params.generate)
gen.pop("split", None)
generate(snakemake.output[0], parts=[WORLD_LAYOUT[snakemake.params.kind][0]], **gen)
