# Feature analyses (PROTOCOLS §3) from the stored Grams and features; figures read tables.


def features_store(model, dataset):
    return store_marker(model, dataset, analysis("features")["view"])


rule cka_pair:
    input:
        x=lambda wc: features_store(wc.mx, wc.dataset),
        y=lambda wc: features_store(wc.my, wc.dataset),
    output:
        results("tables", "{dataset}", "cka", "{mx}__{my}.csv"),
    log:
        results("logs", "cka", "{dataset}", "{mx}__{my}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        points=lambda wc: analysis("features")["cka_points"],
        kind=lambda wc: analysis("features")["cka_kind"],
        minmax=lambda wc: analysis("features")["cka_minmax"],
    script:
        "../workflow_scripts/cka_pair.py"


rule cka_last_layer:
    input:
        lambda wc: [features_store(m, wc.dataset) for m in MODELS],
    output:
        results("tables", "{dataset}", "cka_last_layer.csv"),
    log:
        results("logs", "cka_last_layer", "{dataset}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        minmax=lambda wc: analysis("features")["cka_minmax"],
    script:
        "../workflow_scripts/cka_last_layer.py"


rule residual:
    input:
        lambda wc: features_store(wc.model, wc.dataset),
    output:
        results("tables", "{dataset}", "residual", "{model}.csv"),
    log:
        results("logs", "residual", "{dataset}", "{model}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        minmax=lambda wc: analysis("features")["cka_minmax"],
    script:
        "../workflow_scripts/residual.py"


rule clustering:
    input:
        lambda wc: features_store(wc.model, wc.dataset),
    output:
        results("tables", "{dataset}", "clustering", "{model}.csv"),
    log:
        results("logs", "clustering", "{dataset}", "{model}.log"),
    conda:
        "../envs/cpu.yaml"
    threads: config["analysis_threads"]
    params:
        k=lambda wc: analysis("features")["clustering_k"],
        seed=lambda wc: analysis("features")["clustering_seed"],
        n_init=lambda wc: analysis("features")["clustering_n_init"],
        noise=lambda wc: analysis("features")["noise"],
    script:
        "../workflow_scripts/clustering.py"


FEATURE_FIGURE_INPUTS = {
    "cka_grids": lambda ds: [
        results("tables", ds, "cka", f"{a}__{b}.csv") for a, b in model_pairs()
    ],
    "cka_last_layer": lambda ds: [results("tables", ds, "cka_last_layer.csv")],
    "residual": lambda ds: [
        results("tables", ds, "residual", f"{m}.csv") for m in MODELS
    ],
    "clustering": lambda ds: [
        results("tables", ds, "clustering", f"{m}.csv") for m in MODELS
    ],
}


rule figure_features:
    input:
        lambda wc: FEATURE_FIGURE_INPUTS[wc.fig](wc.dataset),
    output:
        report(
            expand(
                results("figures", "{{dataset}}", "{{fig}}.{ext}"), ext=FIG_FORMATS
            ),
            caption="../report/figure_features.rst",
            category="Features",
        ),
    log:
        results("logs", "figures", "{dataset}", "{fig}.log"),
    wildcard_constraints:
        fig="cka_grids|cka_last_layer|residual|clustering",
    conda:
        "../envs/cpu.yaml"
    params:
        dpi=config["figures"]["dpi"],
        models=MODELS,
    script:
        "../workflow_scripts/figure_features.py"
