# Weights: each checkpoint downloaded once into the cache and verified (vitlib.models.weights).


rule download_weights:
    output:
        os.path.join(config["weights_cache"], "{model}", "{filename}"),
    log:
        results("logs", "download_weights", "{model}", "{filename}.log"),
    retries: 1
    conda:
        "../envs/cpu.yaml"
    params:
        url=weights_url,
        sha256=weights_sha256,
    script:
        "../workflow_scripts/download_weights.py"


# One forward pass per (model, dataset, view) into a resumable Zarr store.


rule extract:
    input:
        manifest=results("manifests", "{dataset}.json"),
        weights=weights_input,
    output:
        # The completion marker beside {view}.zarr is written last; the store survives a
        # failed or killed job and the next run resumes it from its last committed batch.
        results("features", "{model}", "{dataset}", "{view}.complete.json"),
    log:
        results("logs", "extract", "{model}", "{dataset}", "{view}.log"),
    benchmark:
        results("benchmarks", "extract", "{model}", "{dataset}", "{view}.tsv")
    conda:
        "../envs/gpu.yaml"
    threads: config["extract"]["threads"]
    resources:
        gpu=gpu_units(),
    params:
        spec=extract_spec,
        needs=extract_needs,
        batch_size=config["extract"]["batch_size"],
        dtype=lambda w: extract_dtype(config, w.model),
        feature_dtype=config["extract"]["feature_dtype"],
        gram_points=config["extract"]["gram_points"],
        residual_norms=config["extract"]["residual_norms"],
        tile_factor=config["extract"]["tile_factor"],
        shard_mb=config["extract"]["shard_mb"],
    script:
        "../workflow_scripts/extract.py"
