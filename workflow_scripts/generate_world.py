from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

from vitlib.data.readers import WORLD_LAYOUT
from vitlib.data.synthetic import generate
from vitlib.logs import finish, log_to

log_to(snakemake.log[0])
ds = snakemake.params.dataset
gen = dict(ds["generate"])
gen.pop("split", None)
generate(snakemake.output[0], parts=[WORLD_LAYOUT[ds["kind"]][0]], **gen)
finish()
