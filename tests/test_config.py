"""Config validation: schema defaults, and errors that name the key and the value."""

import copy

import pytest
import yaml
from conftest import REPO

from vitlib.config import ConfigError, validate_config


@pytest.fixture()
def cfg():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_valid_and_defaults_are_filled(cfg):
    del cfg["extract"]["dtype"]
    out = validate_config(cfg, base_dir=REPO)
    assert out["extract"]["dtype"] == "fp32"
    assert out["datasets"]["world"]["per_class"] is None
    assert out["analyses"]["attention_distance"]["units"] == "normalised"
    # the mini-zoo's shipped checkpoints: in the repository, hash-pinned, in their family's
    # layout; a model with a train section instead gets the workflow's output
    w = out["custom_models"]["demo_dino"]["weights"]
    assert w["path"] == "vitlib/minizoo/weights/demo_dino.pth" and w["format"] == "dino"
    import hashlib

    assert hashlib.sha256((REPO / w["path"]).read_bytes()).hexdigest() == w["sha256"]
    cfg2 = yaml.safe_load((REPO / "presets" / "minizoo.yaml").read_text())
    out2 = validate_config(cfg2, base_dir=REPO)
    assert out2["custom_models"]["demo_clip"]["weights"] == {
        "path": "results/minizoo/zoo/demo_clip.pth",
        "format": "open_clip",
    }
    assert out["analyses"]["davis"]["radius"] == 12


def test_analyses_need_datasets_of_their_kind(cfg):
    cfg["analyses"]["spair"]["datasets"] = ["coco"]
    with pytest.raises(
        ConfigError,
        match=r"analyses\.spair\.datasets\.0.*'coco' is of kind"
        r" 'coco'; spair needs one of spair",
    ):
        validate_config(cfg, base_dir=REPO)


def test_training_dataset_must_exist(cfg):
    cfg["custom_models"]["demo_sup"]["train"] = {"method": "supervised", "dataset": "nowhere"}
    with pytest.raises(ConfigError, match=r"custom_models\.demo_sup\.train\.dataset.*'nowhere'"):
        validate_config(cfg, base_dir=REPO)


@pytest.mark.parametrize(
    "mutate, key, value",
    [
        (lambda c: c["models"].append("vit_nope_b16"), "models.6", "vit_nope_b16"),
        (lambda c: c["extract"].update(batch_size=-4), "extract.batch_size", "-4"),
        (
            lambda c: c["datasets"]["world"].update(cka_batch_size=-1),
            "datasets.world.cka_batch_size",
            "-1",
        ),
        (
            lambda c: c["datasets"].update(real={"kind": "imagefolder", "root": "/no/such/dir"}),
            "datasets.real.root",
            "/no/such/dir",
        ),
        (
            lambda c: c["analyses"]["attention_distance"].update(datasets=["world", "imagenet"]),
            "analyses.attention_distance.datasets.1",
            "imagenet",
        ),
        (
            lambda c: c["analyses"]["attention_distance"].update(units="miles"),
            "analyses.attention_distance.units",
            "miles",
        ),
        (lambda c: c["extract"].update(bogus=1), "extract", "bogus"),
    ],
)
def test_errors_name_key_and_value(cfg, mutate, key, value):
    c = copy.deepcopy(cfg)
    mutate(c)
    with pytest.raises(ConfigError) as e:
        validate_config(c, base_dir=REPO)
    msg = str(e.value)
    assert key in msg and value in msg, msg


def test_builtin_ids_are_accepted(cfg):
    cfg["models"] = ["fs_b16", "dino_s8", "mae_h14"]
    validate_config(cfg, base_dir=REPO)


def test_a_count_given_as_a_float_is_rejected_naming_the_key():
    from vitlib.config import ConfigError, validate_config

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["extract"]["batch_size"] = 8.0
    with pytest.raises(ConfigError, match=r"extract\.batch_size.*8\.0"):
        validate_config(cfg, base_dir=REPO)
