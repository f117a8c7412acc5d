"""vitlib: layer-by-layer analysis of supervised Vision Transformers.

A plain library (no Snakemake inside).  The workflow in ``Snakefile`` / ``rules/``
calls it through thin scripts in ``workflow_scripts/``.

Sub-packages
------------
models     model specs (registry), builders and the one-pass capture wrapper
data       dataset readers, manifests, views (transforms) and generated data
store      the Zarr layout of one extraction (model, dataset, view)
extract    one forward pass per (model, dataset, view) into a store
attention  attention metrics computed from stores
plots      figures, functions of result tables only
"""

__version__ = "0.1.0"
