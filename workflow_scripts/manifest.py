from vitlib.data.manifest import read_imagefolder
from vitlib.logs import log_to

log_to(snakemake.log[0])
ds = snakemake.params.dataset
manifest = read_imagefolder(
    snakemake.params.root,
    dataset=snakemake.wildcards.dataset,
    per_class=ds.get("per_class"),
    classes=ds.get("classes"),
    cka_batch_size=ds["cka_batch_size"],
)
manifest.save(snakemake.output[0])
