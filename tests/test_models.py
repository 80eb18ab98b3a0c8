"""Model shapes, parameter counts against the reference, init, dropout and the up-conv."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pix2pix_jax import models, steps
from pix2pix_jax.configs import default


def abstract_params(module, shape):
    variables = jax.eval_shape(
        lambda: module.init({"params": jax.random.key(0)}, jnp.zeros(shape), train=False)
    )
    return variables["params"]


def model_config(**overrides) -> ml_collections.ConfigDict:
    config = default.get_config().model
    config.update(overrides)
    return config


def test_parameter_counts_equal_the_reference():
    generator = models.create_generator(model_config(generator="unet_256", ngf=64), 256, 3)
    assert models.count_params(abstract_params(generator, (1, 256, 256, 3))) == 54_413_955
    discriminator = models.create_discriminator(model_config(discriminator="basic", ndf=64))
    assert models.count_params(abstract_params(discriminator, (1, 256, 256, 6))) == 2_768_705


@pytest.mark.parametrize(
    "name, size, depth",
    [("unet_256", 256, 8), ("unet_128", 128, 7), ("unet", 64, 6), ("unet", 512, 9)],
)
def test_generator_depth(name, size, depth):
    generator = models.create_generator(model_config(generator=name), size, 3)
    assert generator.num_downs == depth
    params = abstract_params(generator, (1, size, size, 3))
    assert sum(k.startswith("Conv_") for k in params) == depth  # one conv per encoder block


def test_generator_and_discriminator_shapes():
    generator = models.UnetGenerator(num_downs=5, ngf=8, out_channels=2)
    x = jnp.linspace(-1, 1, 2 * 32 * 32 * 3).reshape(2, 32, 32, 3)
    variables = generator.init({"params": jax.random.key(0)}, x, train=False)
    y = generator.apply(variables, x, train=False)
    assert y.shape == (2, 32, 32, 2)
    assert float(jnp.max(jnp.abs(y))) <= 1.0  # tanh output
    d = models.PatchDiscriminator(ndf=8)
    pair = jnp.zeros((1, 256, 256, 6))
    logits = jax.eval_shape(
        lambda: d.apply(d.init(jax.random.key(0), pair, train=False), pair, train=False)
    )
    assert logits.shape == (1, 30, 30, 1)  # the reference's 30x30 patch map at 256


def test_bad_model_options_are_named():
    with pytest.raises(ValueError, match="model.generator='resnet_7blocks'"):
        models.create_generator(model_config(generator="resnet_7blocks"), 256, 3)
    with pytest.raises(ValueError, match="divisible by 256"):
        models.create_generator(model_config(generator="unet_256"), 128, 3)
    with pytest.raises(ValueError, match="power-of-two"):
        models.create_generator(model_config(generator="unet"), 96, 3)
    with pytest.raises(ValueError, match="model.norm='group'"):
        models.create_discriminator(model_config(norm="group"))
    with pytest.raises(ValueError, match="model.discriminator='pixelgan'"):
        models.create_discriminator(model_config(discriminator="pixelgan"))


def test_init_distributions_and_biases():
    generator = models.UnetGenerator(num_downs=8)
    variables = generator.init(
        {"params": jax.random.key(0)}, jnp.zeros((1, 256, 256, 3)), train=False
    )
    params = variables["params"]
    kernel = np.asarray(params["Conv_4"]["kernel"])  # 512 -> 512, 4M weights
    assert abs(kernel.mean()) < 1e-3 and kernel.std() == pytest.approx(0.02, rel=0.01)
    scales = np.concatenate([np.asarray(v["BatchNorm_0"]["scale"]) for k, v in params.items()
                             if k.startswith("Norm_")])  # fmt: skip
    assert scales.mean() == pytest.approx(1.0, abs=0.003) and scales.std() == pytest.approx(
        0.02, rel=0.1
    )
    # Batch norm has its own shift: no conv bias, except the outermost up-conv (no norm there).
    biased = [k for k, v in params.items() if "bias" in v]
    assert biased == ["UpConv_7"]
    instance = models.UnetGenerator(num_downs=5, ngf=4, norm="instance")
    i_params = abstract_params(instance, (1, 32, 32, 3))
    assert all("bias" in v for k, v in i_params.items() if k.startswith(("Conv_", "UpConv_")))


def naive_conv_transpose(x, w):
    """PyTorch ConvTranspose2d(k=4, s=2, p=1) by its definition: scatter, then crop."""
    n, h, wd, _ = x.shape
    out = np.zeros((n, 2 * h + 2, 2 * wd + 2, w.shape[-1]), np.float64)
    for i in range(h):
        for j in range(wd):
            for kh in range(4):
                for kw in range(4):
                    out[:, 2 * i + kh, 2 * j + kw] += x[:, i, j] @ w[kh, kw]
    return out[:, 1:-1, 1:-1]


@pytest.fixture(params=["dot", "conv"])
def conv_path(request, monkeypatch):
    """Run a test once with im2col + dot and once with the convolution primitive."""
    limit = 10**9 if request.param == "dot" else 0
    monkeypatch.setattr(models, "DOT_MAX_POSITIONS", {"down": limit, "up": limit})
    return request.param


def test_upconv_equals_transposed_convolution(conv_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    w = rng.normal(size=(4, 4, 3, 4)).astype(np.float32)
    b = rng.normal(size=(4,)).astype(np.float32)
    y = models.UpConv(4).apply({"params": {"kernel": w, "bias": b}}, x)
    np.testing.assert_allclose(y, naive_conv_transpose(x, w) + b, atol=1e-5)
    # ... and to flax's own transposed convolution with a flipped kernel.
    flax_y = jax.lax.conv_transpose(
        x, w[::-1, ::-1], (2, 2), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(y, flax_y + b, atol=1e-5)


def test_upconv_gradients_equal_the_transposed_convolution_gradients(conv_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 4, 6, 3)).astype(np.float32)
    w = rng.normal(size=(4, 4, 3, 2)).astype(np.float32)
    g = rng.normal(size=(1, 8, 12, 2)).astype(np.float32)

    def ours(x, w):
        return jnp.sum(models.UpConv(2, use_bias=False).apply({"params": {"kernel": w}}, x) * g)

    def reference(x, w):
        y = jax.lax.conv_transpose(
            x, w[::-1, ::-1], (2, 2), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jnp.sum(y * g)

    ours_grads, reference_grads = jax.grad(ours, (0, 1))(x, w), jax.grad(reference, (0, 1))(x, w)
    for got, want in zip(ours_grads, reference_grads, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize(
    "strides, padding", [((2, 2), ((1, 1), (1, 1))), ((1, 1), ((1, 2), (0, 1)))]
)
def test_conv_by_dot_equals_the_convolution_primitive(strides, padding):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 9, 8, 3)).astype(np.float32)
    w = rng.normal(size=(4, 3, 3, 5)).astype(np.float32)
    want = jax.lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(models.conv_by_dot(x, w, strides, padding), want, atol=1e-5)


def test_both_conv_paths_give_the_same_networks(monkeypatch):
    config = model_config(ngf=4, ndf=4, dropout_rate=0.0)
    x = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, (1, 32, 32, 3)), jnp.float32)
    outputs = []
    for limit in (0, 10**9):
        monkeypatch.setattr(models, "DOT_MAX_POSITIONS", {"down": limit, "up": limit})
        g = models.create_generator(config, 32, 3)
        d = models.create_discriminator(config)
        g_vars = g.init(jax.random.key(0), x, train=False)
        y = g.apply(g_vars, x, train=False)
        d_vars = d.init(jax.random.key(1), jnp.concatenate([x, y], -1), train=False)
        outputs.append((y, d.apply(d_vars, jnp.concatenate([x, y], -1), train=False)))
    for a, b in zip(*outputs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def run_generator(variables, x, key, train):
    generator = models.UnetGenerator(num_downs=5, ngf=8)
    out = generator.apply(variables, x, train=train, rngs={"dropout": key}, mutable=["batch_stats"])
    return out[0]


def test_dropout_is_the_noise_and_follows_the_step():
    generator = models.UnetGenerator(num_downs=5, ngf=8)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
    variables = generator.init({"params": jax.random.key(0)}, x, train=False)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    same = run_generator(variables, x, k1, True), run_generator(variables, x, k1, True)
    np.testing.assert_array_equal(*same)
    assert not np.allclose(same[0], run_generator(variables, x, k2, True))
    # Without dropout (deterministic mode) the key does not matter.
    np.testing.assert_array_equal(
        generator.apply(variables, x, train=False), generator.apply(variables, x, train=False)
    )

    # The train step's key is a pure function of (seed, step, device) and differs with each.
    def keys(step_per_device):
        fn = jax.vmap(lambda s: steps.dropout_key(0, s), axis_name=models.BATCH_AXIS)
        return np.asarray(jax.random.key_data(fn(jnp.array(step_per_device))))

    k = keys([3, 3, 4])  # devices 0, 1, 2
    assert not np.array_equal(k[0], k[1])  # same step, other device
    assert not np.array_equal(k[0], keys([4, 3, 4])[0])  # same device, other step
    np.testing.assert_array_equal(k[0], keys([3, 9, 9])[0])


@pytest.mark.parametrize("name, shape", [("unet", (32, 64)), ("resnet_6blocks", (16, 24))])
def test_generators_take_non_square_images(name, shape):
    generator = models.create_generator(model_config(generator=name, ngf=4), shape, 3)
    x = jnp.zeros((1, *shape, 3))
    y = jax.eval_shape(lambda: generator.init_with_output(jax.random.key(0), x, train=False)[0])
    assert y.shape == (1, *shape, 3)


def test_non_square_sides_must_both_fit_the_generator():
    with pytest.raises(ValueError, match="divisible by 32; got 32x40"):
        models.create_generator(model_config(generator="unet"), (32, 40), 3)
