"""Every shipped config loads, carries the contract's fields and passes validation."""

import glob
import importlib.util
import os
import pathlib
import re

import pytest

from pix2pix_jax import config as config_lib
from pix2pix_jax.configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(
    path
    for path in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
    if "def get_config(" in pathlib.Path(path).read_text()  # config files, not scripts
)
CONTRACT_FIELDS = (
    "seed", "num_train_steps", "batch_size", "image_size", "dataset.name", "dataset.direction",
    "model.generator", "model.discriminator", "loss.lambda_l1", "log_every_steps",
    "eval_every_steps", "checkpoint_every_steps",
)  # fmt: skip


def load_module(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# (file, argument) for every config: files with ARGUMENTS take one (`--config=FILE:ARG`).
CONFIGS = [
    (path, arg) for path in EXPERIMENTS for arg in getattr(load_module(path), "ARGUMENTS", (None,))
]


def test_default_has_the_contract_fields_and_the_paper_settings():
    config = default.get_config()
    for field in CONTRACT_FIELDS:
        value = config
        for part in field.split("."):
            assert part in value, field
            value = value[part]
    assert config.loss.lambda_l1 == 100.0 and config.loss.gan_mode == "vanilla"
    assert (config.optimizer.learning_rate, config.optimizer.b1, config.optimizer.b2) == (
        2e-4, 0.5, 0.999,
    )  # fmt: skip
    config_lib.validate(config)


@pytest.mark.parametrize(
    "path, arg", CONFIGS, ids=[f"{os.path.basename(p)}:{a}" for p, a in CONFIGS]
)
def test_experiment_configs_validate(path, arg, tmp_path):
    module = load_module(path)
    config = module.get_config() if arg is None else module.get_config(arg)
    if config.loss.vgg_weights:  # a file the user gives; validation checks it exists
        weights = tmp_path / os.path.basename(config.loss.vgg_weights)
        weights.touch()
        config.loss.vgg_weights = str(weights)
    config_lib.validate(config)
    with open(path) as f:
        assert "python -m pix2pix_jax.main" in f.read()  # the docstring gives the command


def test_unknown_config_argument_is_named():
    module = load_module(os.path.join(ROOT, "experiments", "cityscapes_ablations.py"))
    with pytest.raises(ValueError, match="unknown ablation 'l2'"):
        module.get_config("l2")


def test_ablation_rows_change_what_the_paper_says():
    module = load_module(os.path.join(ROOT, "experiments", "cityscapes_ablations.py"))
    base = module.get_config("l1_cgan")
    assert base.loss.use_gan and base.loss.conditional_d and base.loss.lambda_l1 == 100.0
    assert not module.get_config("l1").loss.use_gan
    gan = module.get_config("gan")
    assert not gan.loss.conditional_d and gan.loss.lambda_l1 == 0.0
    assert module.get_config("patch286").model.n_layers_d == 5
    assert module.get_config("patch1").model.discriminator == "pixel"
    assert module.get_config("encoder_decoder_l1").model.generator == "encoder_decoder"


def test_paper_recipes_count_epochs():
    module = load_module(os.path.join(ROOT, "experiments", "paper_datasets.py"))
    facades = module.get_config("facades")
    assert (facades.batch_size, facades.num_train_steps) == (1, 200 * 400)
    assert facades.dataset.direction == "BtoA" and facades.model.generator == "unet_256"
    shoes = module.get_config("edges2shoes")
    assert (shoes.batch_size, shoes.num_train_steps) == (4, 15 * 12457)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("model.compute_dtype", "bfloat", "model.compute_dtype='bfloat' is not one of"),
        ("eval.num_samples", 0, "eval.num_samples must be a positive integer"),
        ("seed", -1, "seed must be an integer in [0, 2**32)"),
        ("model.dropout_rate", 1.0, "model.dropout_rate must be in [0, 1)"),
    ],
)
def test_validate_config_names_the_bad_field(field, value, message):
    config = default.get_config()
    section, _, name = field.rpartition(".")
    (config[section] if section else config)[name] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        config_lib.validate(config)
