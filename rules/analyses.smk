# Every registered analysis (vitlib/registry.py) through generic table rules (per model on
# CPU or GPU, per model pair, all models: by the analysis' shape and device) and two figure
# rules; figures read tables only.


rule table:
    input:
        stores=table_stores,
        manifest=results("manifests", "{dataset}.json"),
    output:
        results("tables", "{dataset}", "{analysis}", "{model}.{ext}"),
    log:
        results("logs", "{analysis}", "{dataset}", "{model}.{ext}.log"),
    benchmark:
        results("benchmarks", "{analysis}", "{dataset}", "{model}.{ext}.tsv")
    wildcard_constraints:
        ext="csv|npz",
        analysis=_alternatives(CPU_ANALYSES),
    conda:
        "../envs/cpu.yaml"
    threads: table_threads
    params:
        settings=table_settings,
        device=config["extract"]["device"],
    script:
        "../workflow_scripts/table.py"


# Analyses on the extraction device (linear probes): one GPU each on CUDA runs (profiles
# set gres / partition for this rule).
use rule table as table_gpu with:
    wildcard_constraints:
        ext="csv|npz",
        analysis=_alternatives(GPU_ANALYSES),
    conda:
        "../envs/gpu.yaml"
    resources:
        gpu=gpu_units(),


# The k-NN memory bank (ImageNet train: 1.28 M images) streams through the model against the
# stored queries; only the top-k neighbours are kept (resumes from its checkpoint).
rule knn_bank:
    input:
        query=knn_bank_query,
        train_manifest=knn_bank_train_manifest,
        weights=weights_input,
    output:
        results("knn_banks", "{dataset}", "{model}.npz"),
    log:
        results("logs", "knn_bank", "{dataset}", "{model}.log"),
    benchmark:
        results("benchmarks", "knn_bank", "{dataset}", "{model}.tsv")
    conda:
        "../envs/gpu.yaml"
    threads: config["extract"]["threads"]
    resources:
        gpu=gpu_units(),
    params:
        spec=extract_spec,
        k_max=max(config["analyses"]["knn"]["ks"]),
        feature=config["analyses"]["knn"]["feature"],
        batch_size=config["extract"]["batch_size"],
        dtype=lambda w: extract_dtype(config, w.model),
    script:
        "../workflow_scripts/knn_bank.py"


# Cheap per-model analyses whose tables are only read all together: one job per dataset
# writes every model's table (vitlib.registry.Analysis.per_dataset_job).
use rule table as table_dataset with:
    input:
        stores=all_model_stores,
        manifest=results("manifests", "{dataset}.json"),
    output:
        expand(
            results("tables", "{{dataset}}", "{{analysis}}", "{model}.csv"),
            model=MODELS,
        ),
    log:
        results("logs", "{analysis}", "{dataset}.all.log"),
    benchmark:
        results("benchmarks", "{analysis}", "{dataset}.all.tsv")
    wildcard_constraints:
        analysis=_alternatives(DATASET_ANALYSES),


use rule table as table_models with:
    input:
        stores=all_model_stores,
        manifest=results("manifests", "{dataset}.json"),
    output:
        results("tables", "{dataset}", "{analysis}.csv"),
    log:
        results("logs", "{analysis}", "{dataset}.log"),
    benchmark:
        results("benchmarks", "{analysis}", "{dataset}.tsv")


rule figure:
    input:
        figure_inputs,
    output:
        main=figure_files(
            "figures",
            "{dataset}",
            "{figure}",
            caption="../report/figure.rst",
            category="{dataset}",
            subcategory="{figure}",
        ),
    log:
        results("logs", "figures", "{dataset}", "{figure}.log"),
    wildcard_constraints:
        figure=_alternatives(MAIN_ONLY_FIGURES),
    conda:
        "../envs/cpu.yaml"
    params:
        dpi=config["figures"]["dpi"],
        layouts={"main": MAIN_MODELS},
        caption=figure_caption,
        settings=figure_settings,
    script:
        "../workflow_scripts/figure.py"


# A figure with an appendix layout (every model, one panel per family against normalised
# depth: the paper's appendix figures) draws both layouts in one job: they read the same
# tables and settings, so they are stale together; the main layout shows the main models.
use rule figure as figure_layouts with:
    output:
        main=figure_files(
            "figures",
            "{dataset}",
            "{figure}",
            caption="../report/figure.rst",
            category="{dataset}",
            subcategory="{figure}",
        ),
        appendix=figure_files(
            "figures",
            "{dataset}",
            "appendix",
            "{figure}",
            caption="../report/figure.rst",
            category="{dataset}",
            subcategory="{figure} (appendix)",
        ),
    wildcard_constraints:
        figure=_alternatives(APPENDIX_FIGURES),
    params:
        dpi=config["figures"]["dpi"],
        layouts={"main": MAIN_MODELS, "appendix": MODELS},
        caption=figure_caption,
        settings=figure_settings,


use rule figure as figure_model with:
    input:
        figure_model_input,
    output:
        main=figure_files(
            "figures",
            "{dataset}",
            "{figure}",
            "{model}",
            caption="../report/figure.rst",
            category="{dataset}",
            subcategory="{figure}",
        ),
    log:
        results("logs", "figures", "{dataset}", "{figure}", "{model}.log"),
    wildcard_constraints:
        figure=_alternatives(PER_MODEL_FIGURES),
    params:
        dpi=config["figures"]["dpi"],
        layouts={"main": MODELS},
        caption=figure_caption,
        settings=figure_settings,


rule probe_table6:
    input:
        probe_tables,
    output:
        results("tables", "{dataset}", "probe_table6.csv"),
    log:
        results("logs", "probe_table6", "{dataset}.log"),
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/probe_table6.py"


rule best_layers:
    input:
        summary_tables(),
    output:
        table=results("tables", "summary", "best_layers.csv"),
        table1=report(
            results("tables", "summary", "table1.csv"),
            caption="../report/table1.rst",
            category="summary",
        ),
        table5=report(
            results("tables", "summary", "table5.csv"),
            caption="../report/table5.rst",
            category="summary",
        ),
        table4=report(
            results("tables", "summary", "table4.csv"),
            caption="../report/table4.rst",
            category="summary",
        ),
        text=results("tables", "summary", "paper_tables.rst"),
        figure=figure_files(
            "figures",
            "summary",
            "best_layers",
            caption="../report/best_layers.rst",
            category="summary",
        ),
    log:
        results("logs", "figures", "summary", "best_layers.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        dpi=config["figures"]["dpi"],
        models=MODELS,
        main_models=MAIN_MODELS,
    script:
        "../workflow_scripts/downstream_summary.py"


# Does family A differ from family B at depth d? Permutation tests on every best-layer
# metric, the models of a family as its replicates (docs/protocols.md §D7).
rule family_tests:
    input:
        summary_tables(),
    output:
        table=results("tables", "summary", "family_tests.csv"),
        figure=figure_files(
            "figures",
            "summary",
            "family_tests",
            caption="../report/family_tests.rst",
            category="summary",
        ),
    log:
        results("logs", "summary", "family_tests.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        dpi=config["figures"]["dpi"],
        settings=family_test_settings(),
    script:
        "../workflow_scripts/family_tests.py"


# Checkpoint series (config checkpoints:): each best-layer metric against the epoch.
rule checkpoint_series:
    input:
        summary_tables(),
    output:
        table=results("tables", "summary", "checkpoint_series.csv"),
        figure=figure_files(
            "figures",
            "summary",
            "checkpoint_series",
            caption="../report/checkpoint_series.rst",
            category="summary",
        ),
    log:
        results("logs", "summary", "checkpoint_series.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        dpi=config["figures"]["dpi"],
        series=SERIES,
    script:
        "../workflow_scripts/checkpoint_series.py"


# One static page over the whole run (vitlib/explorer.py): per-layer curves, similarity grids
# and attention maps, linked; no server, no network.
rule explorer:
    input:
        summary=summary_tables(),
        grids=explorer_grid_tables(),
        maps=explorer_maps(),
    output:
        results("explorer.html"),
    log:
        results("logs", "summary", "explorer.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        map_keys=explorer_map_keys(),
        models=MODELS,
        title=f"vitlib — {config.get('preset', 'run')}",
    script:
        "../workflow_scripts/explorer.py"


# The paper's main observations (its Table 3) checked on this run's tables: the first page
# of the report (report/workflow.rst includes the reStructuredText).
rule findings:
    input:
        findings_tables(),
    output:
        table=report(
            results("tables", "summary", "findings.csv"),
            caption="../report/findings.rst",
            category="summary",
        ),
        text=results("tables", "summary", "findings.rst"),
    log:
        results("logs", "summary", "findings.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        description=run_description(),
    script:
        "../workflow_scripts/findings.py"


# The report's first page (report/workflow.rst includes it): the findings with what the run
# is, the paper's Tables 1, 5 and 6, the run card and an index of every figure by section.
rule report_page:
    input:
        parts=report_page_parts(),
        table6=report_table6(),
    output:
        results("report_page.rst"),
    log:
        results("logs", "summary", "report_page.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        models=report_models(),
        datasets=DATASETS,
        settings=report_settings(),
        figures=report_figures(),
    script:
        "../workflow_scripts/report_page.py"
