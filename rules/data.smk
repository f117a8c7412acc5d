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
        generate=lambda wc: DATASETS[wc.dataset]["generate"],
        kind=lambda wc: DATASETS[wc.dataset]["kind"],
    script:
        "../workflow_scripts/generate_world.py"


def manifest_input(wildcards):
    if "generate" in DATASETS[wildcards.dataset]:
        return [world_dir(wildcards.dataset)]
    return []


rule manifest:
    input:
        manifest_input,
    output:
        manifest=results("manifests", "{dataset}.json"),
        # unreadable images skipped under skip_bad_images (header only otherwise)
        skipped=results("manifests", "{dataset}.skipped.tsv"),
    log:
        results("logs", "manifest", "{dataset}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        dataset=lambda wc: DATASETS[wc.dataset],
        root=lambda wc: dataset_root(wc.dataset),
        # The file list of an external folder: a change reruns the manifest and what
        # depends on it, nothing else.
        listing=lambda wc: (
            "generated"
            if "generate" in DATASETS[wc.dataset]
            else listing_fingerprint(DATASETS[wc.dataset]["root"])
        ),
    script:
        "../workflow_scripts/manifest.py"
