"""The house's shared pieces: registries, one config validation, the command runner."""

import importlib
import importlib.metadata
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax.numpy as jnp
import pytest

from pix2pix_jax import config as config_lib
from pix2pix_jax import losses, models, schedules
from pix2pix_jax.configs import default
from pix2pix_jax.errors import ConfigError, UserError
from pix2pix_jax.registry import Registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_registry_names_the_field_and_the_choices():
    registry = Registry("model.thing")
    registry.register("a", "b")(len)
    assert registry.get("b") is len and registry.names() == ("a", "b") and "a" in registry
    with pytest.raises(ConfigError, match=r"model.thing='c' is not one of \('a', 'b'\)"):
        registry.get("c")
    with pytest.raises(KeyError, match="registered twice"):
        registry.register("a")(max)


def test_the_registries_hold_every_documented_option():
    assert losses.GAN_OBJECTIVES.names() == ("vanilla", "lsgan", "hinge", "wgangp")
    assert schedules.SCHEDULES.names() == ("constant", "linear", "step", "cosine")
    assert set(losses.GENERATOR_TERMS.names()) >= {"gan", "l1"}
    assert set(models.GENERATORS.names()) == {
        "unet_1024", "unet_512", "unet_256", "unet_128", "unet", "encoder_decoder",
        "resnet_6blocks", "resnet_9blocks",
    }  # fmt: skip
    assert set(models.DISCRIMINATORS.names()) == {"basic", "n_layers", "pixel"}
    assert set(models.NORMS.names()) == {"batch", "sync_batch", "instance", "none"}


def test_the_generator_loss_is_the_weighted_sum_of_its_terms():
    fake, target = jnp.full((1, 4, 4, 3), 0.5), jnp.zeros((1, 4, 4, 3))
    logits = jnp.zeros((1, 2, 2, 1))
    inputs = losses.GeneratorInputs(target, fake, target, logits, "lsgan")
    total, terms = losses.generator_loss((("gan", 1.0), ("l1", 10.0)), inputs)
    assert float(terms["g_l1"]) == pytest.approx(0.5) and float(terms["g_gan"]) == 1.0
    assert float(total) == pytest.approx(1.0 + 10 * 0.5)
    # A term of weight 0 adds nothing; L1 is still reported (the metrics contract), GAN is 0.
    no_d = losses.GeneratorInputs(target, fake, target)
    total, terms = losses.generator_loss((("gan", 0.0), ("l1", 2.0)), no_d)
    assert float(total) == pytest.approx(1.0) and float(terms["g_gan"]) == 0.0


def test_the_loss_config_becomes_weighted_terms():
    loss = default.get_config().loss
    terms = losses.generator_terms(loss)
    # The paper's two terms; every other registered term is off by default.
    assert terms[:2] == (("gan", 1.0), ("l1", 100.0)) and all(w == 0 for _, w in terms[2:])
    assert [name for name, _ in terms] == list(losses.GENERATOR_TERMS.names())
    loss.use_gan, loss.lambda_l1 = False, 5.0
    settings = losses.LossSettings.from_config(loss)
    assert settings.g_terms[:2] == (("gan", 0.0), ("l1", 5.0)) and not settings.use_gan


def test_validation_builds_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("validation built a network")

    for name in ("init", "apply", "init_with_output"):
        monkeypatch.setattr(nn.Module, name, refuse)
    monkeypatch.setattr(models, "create_generator", refuse)
    monkeypatch.setattr(models, "create_discriminator", refuse)
    config = default.get_config()
    config_lib.validate(config)
    config.dataset.image_width = 96  # not a multiple of the U-Net's 2**6
    with pytest.raises(ConfigError, match="divisible by 64"):
        config_lib.validate(config)


RUNNER = textwrap.dedent(
    """
    import sys
    from pix2pix_jax import cli
    from pix2pix_jax.errors import DataError

    def body():
        if sys.argv[1] == "user":
            raise DataError("photo.png: not an image")
        raise RuntimeError("a bug")

    sys.argv = sys.argv[:1]
    cli.run("demo", lambda: None, body)
    """
)


@pytest.mark.parametrize("kind", ["user", "bug"])
def test_the_runner_prints_user_errors_in_one_line_and_keeps_tracebacks_of_bugs(kind):
    result = subprocess.run(
        [sys.executable, "-c", RUNNER.replace("sys.argv[1]", repr(kind))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    if kind == "user":
        assert result.stderr.strip() == "demo: error: photo.png: not an image"
    else:
        assert "Traceback" in result.stderr and "RuntimeError: a bug" in result.stderr


def test_every_command_has_a_console_script():
    scripts = {
        e.name: e.value
        for e in importlib.metadata.entry_points(group="console_scripts")
        if e.value.startswith("pix2pix_jax.")
    }
    assert scripts == {
        "pix2pix-train": "pix2pix_jax.main:run",
        "pix2pix-evaluate": "pix2pix_jax.evaluate:run",
        "pix2pix-predict": "pix2pix_jax.predict:run",
        "pix2pix-convert-weights": "pix2pix_jax.convert_weights:run",
        "pix2pix-benchmark": "pix2pix_jax.benchmark:run",
        "pix2pix-export": "pix2pix_jax.export:run",
        "pix2pix-demo": "pix2pix_jax.demo:run",
    }
    for value in scripts.values():
        module, _, function = value.partition(":")
        assert callable(getattr(importlib.import_module(module), function))


def test_project_errors_are_the_builtin_kinds_callers_already_catch():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, UserError)
