# The offline mini-zoo: small ViTs trained on the synthetic world, one per supervision
# family (explicit, contrastive self-distillation, reconstruction); each checkpoint is then
# extracted through the zoo's user-checkpoint path like any published model.


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
    params:
        model=model_cfg,
    script:
        "../workflow_scripts/train_model.py"
