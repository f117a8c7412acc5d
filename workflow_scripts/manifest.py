from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

from vitlib.data.readers import build_manifest
from vitlib.logs import finish, log_to

log_to(snakemake.log[0])
manifest, skipped = build_manifest(
    snakemake.wildcards.dataset, snakemake.params.dataset, snakemake.params.root
)
with open(snakemake.output.skipped, "w") as f:
    f.write("path\treason\n")
    f.writelines(f"{p}\t{r}\n" for p, r in skipped)
manifest.save(snakemake.output.manifest)
finish()
