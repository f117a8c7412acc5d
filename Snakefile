# vitlib: how differently supervised Vision Transformers work inside, layer by layer.
# Orchestration only: config validation and input functions live in rules/common.smk,
# every computation in the vitlib library (called by workflow_scripts/).

from snakemake.utils import min_version

from vitlib import jobserver

min_version("9.0")


# The demo (config.yaml) only when no --configfile is given: a preset is complete on its own
# (its values plus the schema's defaults, which are the paper's), never merged with the demo.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/zoo.smk"
include: "rules/extract.smk"
include: "rules/analyses.smk"


# Local runs: one fork server with torch, timm, pandas, ... imported once; each job's script
# runs in a fork of it instead of importing them again (vitlib/jobserver.py).  Jobs a cluster
# runs elsewhere, and VITLIB_JOB_SERVER=0, run as fresh processes.
onstart:
    if workflow.local_exec:
        jobserver.start()


onsuccess:
    jobserver.stop()


onerror:
    jobserver.stop()


rule all:
    default_target: True
    input:
        all_targets(),
