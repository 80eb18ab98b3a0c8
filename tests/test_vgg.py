"""pix2pixHD's VGG loss (`loss.lambda_vgg`): the Flax VGG19 against PyTorch, and the switch.

The PyTorch side (tests/torch_reference.py: torchvision's vgg19 layout with random
weights, pix2pixHD's `Vgg19` and `VGGLoss`) runs in the child process of
torch_worker, which writes the state_dict .pth files read here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch_worker

from pix2pix_jax import assembly, losses, trainer, vgg
from pix2pix_jax import config as config_lib
from pix2pix_jax.errors import ConfigError, DataError, MissingFileError

torch_worker.requires_torch()
torch_worker.want("perceptual")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The child's output folder (its .pth files) and arrays."""
    torch_before = torch_worker.torch_loaded()
    out = torch_worker.results("perceptual", tmp_path_factory)
    yield out, torch_worker.load_arrays(out)
    torch_worker.assert_torch_not_loaded_since(torch_before)


@jax.jit
def features_loss_and_gradient(params, x, y):
    """The five activations of `x`, the VGG loss and its gradient wrt `x`, in one program."""
    loss, grad = jax.value_and_grad(lambda v: vgg.vgg_loss(params, v, y))(x)
    return vgg.vgg19_features(params, x), loss, grad


def test_features_loss_and_gradient_match_pix2pixhd(reference):
    out, arrays = reference
    inputs = torch_worker.INPUTS["perceptual"]()
    params = vgg.load_vgg19(str(out / "vgg19.pth"))
    assert vgg.width_of(params) == torch_worker.PERCEPTUAL_WIDTH
    features, loss, grad = features_loss_and_gradient(params, inputs["x"], inputs["y"])
    for i, got in enumerate(features):
        expected = arrays[f"vgg/features/{i}"]
        assert np.abs(expected).max() > 1.0  # random weights still give non-trivial activations
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(loss, arrays["vgg/loss"], rtol=1e-4)
    scale = np.abs(arrays["vgg/grad"]).max()
    np.testing.assert_allclose(np.asarray(grad) / scale, arrays["vgg/grad"] / scale, atol=1e-4)
    gray = jax.jit(vgg.vgg_loss)(params, inputs["gray_x"], inputs["gray_y"])
    np.testing.assert_allclose(gray, arrays["vgg/gray_loss"], rtol=1e-4)


def test_files_that_are_not_torchvision_vgg19_are_named(reference):
    out, _ = reference

    def fails(name, match):
        with pytest.raises(DataError, match=match) as info:
            vgg.load_vgg19(str(out / name))
        assert name in str(info.value)

    fails("vgg19_missing.pth", "'features.28.weight' is missing")
    fails("vgg19_bn_like.pth", "unexpected key 'features.1.running_mean'")
    fails("vgg16.pth", "unexpected key 'features.17.weight' for vgg19")
    fails("alex.pth", "no 4-d 'features.0.weight'")


def test_a_term_without_its_network_says_how_to_pass_it():
    x = jnp.zeros((1, 8, 8, 3))
    with pytest.raises(ConfigError, match="loss.lambda_vgg > 0 needs the vgg parameters"):
        losses.generator_loss((("vgg", 10.0),), losses.GeneratorInputs(x, x, x))


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        ({"lambda_vgg": 10.0}, ConfigError, r"loss.lambda_vgg=10.0 needs loss.vgg_weights"),
        ({"lambda_vgg": -1.0}, ConfigError, "loss.lambda_vgg must be a non-negative number"),
        ({"lambda_lpips": 1.0, "lpips_weights": "__FILE__"}, ConfigError, "lpips_backbone"),
        ({"vgg_weights": "/nonexistent/vgg19.pth"}, MissingFileError, "loss.vgg_weights="),
    ],
)
def test_bad_settings_are_named_by_validation(tiny_config, overrides, error, message):
    overrides = {k: __file__ if v == "__FILE__" else v for k, v in overrides.items()}
    tiny_config.loss.update(overrides)
    with pytest.raises(error, match=message):
        config_lib.validate(tiny_config)


def test_a_wrong_weights_file_stops_before_the_workdir_is_written(reference, tiny_config, tmp_path):
    out, _ = reference
    tiny_config.loss.lambda_vgg = 10.0
    tiny_config.loss.vgg_weights = str(out / "vgg19_missing.pth")
    workdir = tmp_path / "run"
    with pytest.raises(DataError, match=r"loss.vgg_weights: .*vgg19_missing.pth.*features.28"):
        trainer.train_and_evaluate(tiny_config, str(workdir))
    assert not workdir.exists()


def test_default_weights_read_no_file(tiny_config, tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a weights file")
    tiny_config.loss.vgg_weights = tiny_config.loss.lpips_weights = str(garbage)
    tiny_config.loss.lpips_backbone = str(garbage)
    config_lib.validate(tiny_config)
    assert assembly.frozen_params(tiny_config) is None  # both weights 0: nothing read
    names = [name for name, _ in losses.generator_terms(tiny_config.loss)]
    assert names[:2] == ["gan", "l1"] and {"vgg", "lpips"} <= set(names)
