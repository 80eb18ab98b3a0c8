"""Shared fixtures: a tiny config on the small synthetic dataset, prepared once."""

import os

import jax
import pytest

from pix2pix_jax.configs import default


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """Share compiled programs between the command-line runs the tests start.

    Only subprocesses use it: in this process (where torch is loaded too) XLA:CPU's
    executable (de)serialisation for the cache has crashed the test session.
    """
    jax.config.update("jax_enable_compilation_cache", False)
    path = str(tmp_path_factory.mktemp("jax_cache"))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def make_tiny_config(data_dir: str):
    """The default config shrunk to seconds: 32x32 images, 8 filters, 4 steps."""
    config = default.get_config()
    config.dataset.name = "synthetic_facades/res32_small"
    config.dataset.data_dir = data_dir
    config.image_size = 32
    config.batch_size = 2
    config.num_train_steps = 4
    config.model.ngf = 8
    config.model.ndf = 8
    config.log_every_steps = 2
    config.eval_every_steps = 2
    config.checkpoint_every_steps = 2
    config.eval.batch_size = 4
    config.eval.num_samples = 3
    return config


@pytest.fixture
def tiny_config(data_dir):
    return make_tiny_config(data_dir)
