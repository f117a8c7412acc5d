# Downstream tasks (PROTOCOLS §5) at every layer, from the stores; figures read tables.


rule knn:
    input:
        train=lambda wc: store_marker(wc.model, knn_train(wc.dataset), analysis("knn")["view"]),
        test=lambda wc: store_marker(wc.model, wc.dataset, analysis("knn")["view"]),
    output:
        results("tables", "{dataset}", "knn", "{model}.csv"),
    params:
        ks=lambda wc: analysis("knn")["ks"],
        temperature=lambda wc: analysis("knn")["temperature"],
        feature=lambda wc: analysis("knn")["feature"],
    threads: 2
    conda:
        "../envs/cpu.yaml"
    log:
        results("logs", "knn", "{dataset}", "{model}.log"),
    benchmark:
        results("benchmarks", "knn", "{dataset}", "{model}.tsv")
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
    params:
        dpi=config["figures"]["dpi"],
    conda:
        "../envs/cpu.yaml"
    log:
        results("logs", "figures", "{dataset}", "knn.log"),
    script:
        "../workflow_scripts/figure_knn.py"
