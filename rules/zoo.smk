# The offline mini-zoo: small ViTs trained on the synthetic world, one per supervision
# family (explicit, contrastive self-distillation, reconstruction); each checkpoint is then
# extracted through the zoo's user-checkpoint path like any published model.


def train_cfg(model):
    return config["custom_models"][model]["train"]


rule train_model:
    input:
        manifest=lambda wc: manifest_path(train_cfg(wc.model)["dataset"]),
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
        method=lambda wc: train_cfg(wc.model)["method"],
        arch=lambda wc: config["custom_models"][wc.model]["arch"],
        arch_kwargs=lambda wc: config["custom_models"][wc.model].get("arch_kwargs", {}),
        epochs=lambda wc: train_cfg(wc.model)["epochs"],
        batch_size=lambda wc: train_cfg(wc.model)["batch_size"],
        lr=lambda wc: train_cfg(wc.model)["lr"],
        seed=lambda wc: train_cfg(wc.model)["seed"],
        options=lambda wc: train_cfg(wc.model)["options"],
    script:
        "../workflow_scripts/train_model.py"
