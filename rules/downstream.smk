# Downstream tasks (PROTOCOLS §5) at every layer, from the stores; figures read tables.


rule knn:
    input:
        train=lambda wc: store_marker(
            wc.model, train_of("knn", wc.dataset), analysis("knn")["view"]
        ),
        test=lambda wc: store_marker(wc.model, wc.dataset, analysis("knn")["view"]),
    output:
        results("tables", "{dataset}", "knn", "{model}.csv"),
    log:
        results("logs", "knn", "{dataset}", "{model}.log"),
    benchmark:
        results("benchmarks", "knn", "{dataset}", "{model}.tsv")
    conda:
        "../envs/cpu.yaml"
    threads: config["analysis_threads"]
    params:
        ks=lambda wc: analysis("knn")["ks"],
        temperature=lambda wc: analysis("knn")["temperature"],
        feature=lambda wc: analysis("knn")["feature"],
    script:
        "../workflow_scripts/knn.py"


rule figure_knn:
    input:
        expand(results("tables", "{{dataset}}", "knn", "{model}.csv"), model=MODELS),
    output:
        report(
            expand(results("figures", "{{dataset}}", "knn.{ext}"), ext=FIG_FORMATS),
            caption="../report/knn.rst",
            category="Downstream",
        ),
    log:
        results("logs", "figures", "{dataset}", "knn.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        dpi=config["figures"]["dpi"],
    script:
        "../workflow_scripts/figure_knn.py"


rule probe:
    input:
        train=lambda wc: store_marker(
            wc.model, train_of("probe", wc.dataset), analysis("probe")["view"]
        ),
        test=lambda wc: store_marker(wc.model, wc.dataset, analysis("probe")["view"]),
    output:
        results("tables", "{dataset}", "probe", "{model}.csv"),
    log:
        results("logs", "probe", "{dataset}", "{model}.log"),
    benchmark:
        results("benchmarks", "probe", "{dataset}", "{model}.tsv")
    conda:
        "../envs/gpu.yaml"
    threads: config["analysis_threads"]
    resources:
        gpu=1 if config["extract"]["device"].startswith("cuda") else 0,
    params:
        settings=lambda wc: {
            k: analysis("probe")[k]
            for k in ("epochs", "lr", "batch_size", "weight_decay", "seed")
        },
    script:
        "../workflow_scripts/probe.py"


rule probe_summary:
    input:
        expand(results("tables", "{{dataset}}", "probe", "{model}.csv"), model=MODELS),
    output:
        table6=results("tables", "{dataset}", "probe_table6.csv"),
        figure=report(
            expand(results("figures", "{{dataset}}", "probe.{ext}"), ext=FIG_FORMATS),
            caption="../report/probe.rst",
            category="Downstream",
        ),
    log:
        results("logs", "figures", "{dataset}", "probe.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        dpi=config["figures"]["dpi"],
    script:
        "../workflow_scripts/probe_summary.py"


# Saliency IoU, object/part clustering, retrieval, DAVIS and SPair: one table per
# (dataset, model) from the store of the view the task reads, one figure per dataset.


rule task_table:
    input:
        store=lambda wc: store_marker(wc.model, wc.dataset, task_view(wc.task)),
        manifest=results("manifests", "{dataset}.json"),
    output:
        results("tables", "{dataset}", "{task}", "{model}.csv"),
    log:
        results("logs", "{task}", "{dataset}", "{model}.log"),
    benchmark:
        results("benchmarks", "{task}", "{dataset}", "{model}.tsv")
    conda:
        "../envs/cpu.yaml"
    threads: config["analysis_threads"]
    params:
        settings=lambda wc: task_settings(wc.task),
    script:
        "../workflow_scripts/task_table.py"


rule figure_task:
    input:
        expand(
            results("tables", "{{dataset}}", "{{task}}", "{model}.csv"), model=MODELS
        ),
    output:
        report(
            expand(
                results("figures", "{{dataset}}", "{{task}}.{ext}"), ext=FIG_FORMATS
            ),
            caption="../report/figure_task.rst",
            category="Tasks",
        ),
    log:
        results("logs", "figures", "{dataset}", "{task}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        dpi=config["figures"]["dpi"],
    script:
        "../workflow_scripts/figure_task.py"


rule downstream_summary:
    input:
        downstream_tables(),
    output:
        table=results("tables", "summary", "best_layers.csv"),
        figure=report(
            expand(
                results("figures", "summary", "best_layers.{ext}"), ext=FIG_FORMATS
            ),
            caption="../report/best_layers.rst",
            category="Downstream",
        ),
    log:
        results("logs", "figures", "summary", "best_layers.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        dpi=config["figures"]["dpi"],
    script:
        "../workflow_scripts/downstream_summary.py"
