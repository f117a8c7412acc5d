import numpy as np

from vitlib.attention.analyses import image_attention_maps
from vitlib.data.manifest import Manifest
from vitlib.data.views import view_image
from vitlib.logs import log_to
from vitlib.store import store_from_marker

log_to(snakemake.log[0])
manifest = Manifest.load(snakemake.input.manifest)
idx = list(range(min(snakemake.params.images, len(manifest))))
maps = image_attention_maps(store_from_marker(snakemake.input.store), idx)
images = np.stack(
    [view_image(manifest.abspath(manifest.items[i]), snakemake.params.img_size) for i in idx]
)
np.savez(
    snakemake.output[0], **maps, image=images, ids=np.array([manifest.items[i].id for i in idx])
)
