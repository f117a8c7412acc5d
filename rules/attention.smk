# Attention analyses (PROTOCOLS §2), computed from the stores; figures read tables only.


rule attention_distance:
    input:
        lambda wc: store_marker(
            wc.model, wc.dataset, analysis("attention_distance")["view"]
        ),
    output:
        results("tables", "{dataset}", "attention_distance", "{model}.csv"),
    log:
        results("logs", "attention_distance", "{dataset}", "{model}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        units=lambda wc: analysis("attention_distance")["units"],
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
            expand(
                results("figures", "{{dataset}}", "attention_distance.{ext}"),
                ext=FIG_FORMATS,
            ),
            caption="../report/attention_distance.rst",
            category="Attention",
        ),
    log:
        results("logs", "figures", "{dataset}", "attention_distance.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        dpi=config["figures"]["dpi"],
    script:
        "../workflow_scripts/figure_attention_distance.py"


def attention_store(wc):
    return store_marker(wc.model, wc.dataset, analysis("attention")["view"])


rule attention_maps:
    input:
        attention_store,
    output:
        results("tables", "{dataset}", "attention_maps", "{model}.npz"),
    log:
        results("logs", "attention_maps", "{dataset}", "{model}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        aaam_normaliser=lambda wc: analysis("attention")["aaam_normaliser"],
        faithful_batch_size=lambda wc: analysis("attention")["faithful_batch_size"],
    script:
        "../workflow_scripts/attention_maps.py"


rule head_metrics:
    input:
        attention_store,
    output:
        results("tables", "{dataset}", "head_metrics", "{model}.csv"),
    log:
        results("logs", "head_metrics", "{dataset}", "{model}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        aaam_normaliser=lambda wc: analysis("attention")["aaam_normaliser"],
        spatial_cls_key=lambda wc: analysis("attention")["spatial_cls_key"],
    script:
        "../workflow_scripts/head_metrics.py"


rule head_taxonomy:
    input:
        attention_store,
    output:
        results("tables", "{dataset}", "head_taxonomy", "{model}.csv"),
    log:
        results("logs", "head_taxonomy", "{dataset}", "{model}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        taxonomy=lambda wc: analysis("attention")["taxonomy"],
    script:
        "../workflow_scripts/head_taxonomy.py"


rule artifact_tokens:
    input:
        attention_store,
    output:
        results("tables", "{dataset}", "artifact_tokens", "{model}.csv"),
    log:
        results("logs", "artifact_tokens", "{dataset}", "{model}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        norm_factor=lambda wc: analysis("attention")["artifact_norm_factor"],
    script:
        "../workflow_scripts/artifact_tokens.py"


rule attention_images:
    input:
        store=attention_store,
        manifest=results("manifests", "{dataset}.json"),
    output:
        results("tables", "{dataset}", "attention_images", "{model}.npz"),
    log:
        results("logs", "attention_images", "{dataset}", "{model}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        images=lambda wc: analysis("attention")["images"],
        img_size=lambda wc: model_spec(config, wc.model).img_size,
    script:
        "../workflow_scripts/attention_images.py"


rule figure_attention_maps:
    input:
        results("tables", "{dataset}", "attention_maps", "{model}.npz"),
    output:
        report(
            expand(
                results(
                    "figures",
                    "{{dataset}}",
                    "attention_maps",
                    "{{model}}_{{kind}}.{ext}",
                ),
                ext=FIG_FORMATS,
            ),
            caption="../report/attention_maps.rst",
            category="Attention",
            subcategory="{model}",
        ),
    log:
        results("logs", "figures", "{dataset}", "attention_maps_{model}_{kind}.log"),
    wildcard_constraints:
        kind="cls|spatial|aligned",
    conda:
        "../envs/cpu.yaml"
    params:
        dpi=config["figures"]["dpi"],
    script:
        "../workflow_scripts/figure_attention_maps.py"


rule figure_attention_images:
    input:
        results("tables", "{dataset}", "attention_images", "{model}.npz"),
    output:
        report(
            expand(
                results(
                    "figures", "{{dataset}}", "attention_images", "{{model}}.{ext}"
                ),
                ext=FIG_FORMATS,
            ),
            caption="../report/attention_images.rst",
            category="Attention",
            subcategory="{model}",
        ),
    log:
        results("logs", "figures", "{dataset}", "attention_images_{model}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        dpi=config["figures"]["dpi"],
    script:
        "../workflow_scripts/figure_attention_images.py"


rule figure_attention_summary:
    input:
        lambda wc: expand(
            results("tables", wc.dataset, SUMMARY_TABLE[wc.fig], "{model}.csv"),
            model=MODELS,
        ),
    output:
        report(
            expand(
                results("figures", "{{dataset}}", "{{fig}}.{ext}"), ext=FIG_FORMATS
            ),
            caption="../report/figure_attention_summary.rst",
            category="Attention",
        ),
    log:
        results("logs", "figures", "{dataset}", "{fig}.log"),
    wildcard_constraints:
        fig="attention_offset|head_taxonomy|artifact_tokens",
    conda:
        "../envs/cpu.yaml"
    params:
        dpi=config["figures"]["dpi"],
    script:
        "../workflow_scripts/figure_attention_summary.py"


SUMMARY_TABLE = {
    "attention_offset": "head_metrics",
    "head_taxonomy": "head_taxonomy",
    "artifact_tokens": "artifact_tokens",
}
