# The offline mini-zoo: small ViTs trained on the synthetic world, one per supervision
# family (supervised, CLIP-style, DINO-style, MAE-style; vitlib/minizoo/<method>.py); each
# checkpoint is then extracted through the zoo's user-checkpoint path like any published
# model.  The demo ships these checkpoints; presets/minizoo.yaml retrains them (on the GPU
# when extract.device is cuda/auto).


rule train_model:
    input:
        manifest=train_manifest,
    output:
        ckpt=results("zoo", "{model}.pth"),
        loss=results("zoo", "{model}.loss.tsv"),
    log:
        results("logs", "train", "{model}.log"),
    benchmark:
        results("benchmarks", "train", "{model}.tsv")
    conda:
        "../envs/gpu.yaml"
    threads: config["extract"]["threads"]
    resources:
        gpu=gpu_units(),
    params:
        model=model_cfg,
    script:
        "../workflow_scripts/train_model.py"
