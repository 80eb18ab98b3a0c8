"""Every shipped config loads, carries the contract's fields and passes validation."""

import glob
import importlib.util
import os
import pathlib

import pytest

from pix2pix_jax import train
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


def load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


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
    train.validate_config(config)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_experiment_configs_validate(path):
    config = load(path)
    train.validate_config(config)
    with open(path) as f:
        assert "python -m pix2pix_jax.main" in f.read()  # the docstring gives the command
