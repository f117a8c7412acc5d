from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

from pathlib import Path

from vitlib.logs import finish, log_to
from vitlib.models.weights import fetch_weights

log_to(snakemake.log[0])
out = Path(snakemake.output[0])
got = fetch_weights(
    snakemake.wildcards.model,
    snakemake.params.url,
    out.parent.parent,
    sha256=snakemake.params.sha256,
)
assert got == out, f"downloaded to {got}, expected {out}"
finish()
