# Datasets: the generated synthetic world and the manifests every extraction reads.


rule generate_world:
    output:
        directory(results("data", "{dataset}", "world")),
    log:
        results("logs", "generate_world", "{dataset}.log"),
    benchmark:
        results("benchmarks", "generate_world", "{dataset}.tsv")
    conda:
        "../envs/cpu.yaml"
    params:
        dataset=dataset_cfg,
    script:
        "../workflow_scripts/generate_world.py"


rule manifest:
    input:
        generated_inputs,
    output:
        manifest=results("manifests", "{dataset}.json"),
        # unreadable images skipped under skip_bad_images (header only otherwise)
        skipped=results("manifests", "{dataset}.skipped.tsv"),
    log:
        results("logs", "manifest", "{dataset}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        dataset=dataset_cfg,
        root=dataset_root_param,
        listing=dataset_listing,
    script:
        "../workflow_scripts/manifest.py"


rule effective_config:
    output:
        results("config.effective.yaml"),
    log:
        results("logs", "config.effective.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        config=effective_config,
    script:
        "../workflow_scripts/effective_config.py"
