# Attention analyses (PROTOCOLS §2), computed from the stores; figures read tables only.


rule attention_distance:
    input:
        lambda wc: store_marker(wc.model, wc.dataset, analysis("attention_distance")["view"]),
    output:
        results("tables", "{dataset}", "attention_distance", "{model}.csv"),
    params:
        units=lambda wc: analysis("attention_distance")["units"],
    conda:
        "../envs/cpu.yaml"
    log:
        results("logs", "attention_distance", "{dataset}", "{model}.log"),
    script:
        "../workflow_scripts/attention_distance.py"


rule figure_attention_distance:
    input:
        expand(
            results("tables", "{{dataset}}", "attention_distance", "{model}.csv"),
            model=MODELS,
        ),
    output:
        report(
            expand(results("figures", "{{dataset}}", "attention_distance.{ext}"), ext=FIG_FORMATS),
            caption="../report/attention_distance.rst",
            category="Attention",
        ),
    params:
        dpi=config["figures"]["dpi"],
    conda:
        "../envs/cpu.yaml"
    log:
        results("logs", "figures", "{dataset}", "attention_distance.log"),
    script:
        "../workflow_scripts/figure_attention_distance.py"
