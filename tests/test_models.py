"""Model shapes, parameter counts against the reference, names, init, dropout and the up-conv."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pix2pix_jax import models, parallel, steps
from pix2pix_jax.configs import default
from pix2pix_jax.errors import ConfigError
from pix2pix_jax.models import cpu_kernels


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
    assert sum(bool(re.fullmatch(r"down_\d+", k)) for k in params) == depth  # one per block


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
    with pytest.raises(ConfigError, match="model.generator='resnet_7blocks'"):
        models.create_generator(model_config(generator="resnet_7blocks"), 256, 3)
    with pytest.raises(ConfigError, match="model.generator='unet_256'.*divisible by 256"):
        models.create_generator(model_config(generator="unet_256"), 128, 3)
    with pytest.raises(ConfigError, match="model.generator='unet'.*power-of-two"):
        models.create_generator(model_config(generator="unet"), 96, 3)
    with pytest.raises(ConfigError, match="model.norm='group'"):
        models.create_discriminator(model_config(norm="group"))
    with pytest.raises(ConfigError, match="model.norm='group'"):
        models.create_generator(model_config(norm="group"), 32, 3)
    with pytest.raises(ConfigError, match="model.discriminator='pixelgan'"):
        models.create_discriminator(model_config(discriminator="pixelgan"))


def test_init_distributions_and_biases():
    generator = models.UnetGenerator(num_downs=8)
    variables = generator.init(
        {"params": jax.random.key(0)}, jnp.zeros((1, 256, 256, 3)), train=False
    )
    params = variables["params"]
    kernel = np.asarray(params["down_5"]["kernel"])  # 512 -> 512, 4M weights
    assert abs(kernel.mean()) < 1e-3 and kernel.std() == pytest.approx(0.02, rel=0.01)
    scales = np.concatenate([np.asarray(v["batch_norm"]["scale"]) for k, v in params.items()
                             if k.endswith("_norm")])  # fmt: skip
    assert scales.mean() == pytest.approx(1.0, abs=0.003) and scales.std() == pytest.approx(
        0.02, rel=0.1
    )
    # Batch norm has its own shift: no conv bias, except the outermost up-conv (no norm there).
    biased = [k for k, v in params.items() if "bias" in v]
    assert biased == ["up_1"]
    instance = models.UnetGenerator(num_downs=5, ngf=4, norm="instance")
    i_params = abstract_params(instance, (1, 32, 32, 3))
    assert set(i_params) == {f"{d}_{k}" for d in ("down", "up") for k in range(1, 6)}
    assert all("bias" in v for v in i_params.values())


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
    monkeypatch.setattr(cpu_kernels, "DOT_MAX_POSITIONS", {"down": limit, "up": limit})
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
        monkeypatch.setattr(cpu_kernels, "DOT_MAX_POSITIONS", {"down": limit, "up": limit})
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
        fn = jax.vmap(lambda s: steps.dropout_key(0, s), axis_name=parallel.BATCH_AXIS)
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
    with pytest.raises(ConfigError, match="divisible by 32; got 32x40"):
        models.create_generator(model_config(generator="unet"), (32, 40), 3)


# --- explicit module names ---


def unet_names(n):
    """The documented names of a depth-`n` U-Net with an affine norm."""
    return (
        {f"down_{k}" for k in range(1, n + 1)}
        | {f"down_{k}_norm" for k in range(2, n)}
        | {f"up_{k}" for k in range(1, n + 1)}
        | {f"up_{k}_norm" for k in range(2, n + 1)}
    )


def test_unet_256_parameters_have_the_documented_names():
    generator = models.create_generator(model_config(generator="unet_256", ngf=8), 256, 3)
    x = jnp.zeros((1, 256, 256, 3))
    variables = jax.eval_shape(lambda: generator.init(jax.random.key(0), x, train=False))
    params, stats = variables["params"], variables["batch_stats"]
    assert set(params) == unet_names(8)
    assert set(stats) == {k for k in unet_names(8) if k.endswith("_norm")}
    assert set(params["down_2_norm"]) == {"batch_norm"}
    assert set(params["down_2_norm"]["batch_norm"]) == {"scale", "bias"}
    assert set(stats["up_8_norm"]["batch_norm"]) == {"mean", "var"}
    assert set(params["down_1"]) == {"kernel"} and set(params["up_1"]) == {"kernel", "bias"}


def test_resnet_and_discriminator_parameters_have_the_documented_names():
    config = model_config(generator="resnet_6blocks", ngf=4, ndf=4)
    params = abstract_params(models.create_generator(config, 16, 3), (1, 16, 16, 3))
    # (eval_shape returns the trees with sorted keys: compare sets)
    assert set(params) == {
        "stem", "stem_norm", "down_1", "down_1_norm", "down_2", "down_2_norm",
        *[f"block_{i}" for i in range(1, 7)],
        "up_1", "up_1_norm", "up_2", "up_2_norm", "head",
    }  # fmt: skip
    assert set(params["block_3"]) == {"conv_1", "norm_1", "conv_2", "norm_2"}
    patch = abstract_params(models.create_discriminator(config), (1, 32, 32, 6))
    assert set(patch) == {"conv_0", "conv_1", "norm_1", "conv_2", "norm_2", "conv_3", "norm_3",
                          "logits"}  # fmt: skip
    pixel = models.create_discriminator(model_config(discriminator="pixel", ndf=4))
    assert set(abstract_params(pixel, (1, 8, 8, 6))) == {"conv_0", "conv_1", "norm_1", "logits"}


# --- discriminator features ---


@pytest.mark.parametrize(
    "overrides, shapes",
    [
        (dict(discriminator="basic"), [(16, 8), (8, 16), (4, 32), (3, 64)]),
        (dict(discriminator="n_layers", n_layers_d=1), [(16, 8), (15, 16)]),
        (dict(discriminator="pixel"), [(32, 8), (32, 16)]),
    ],
)
def test_discriminator_features_on_request(overrides, shapes):
    d = models.create_discriminator(model_config(ndf=8, **overrides))
    x = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (2, 32, 32, 6)), jnp.float32)
    # Weights drawn by numpy and one jitted program: far faster on XLA:CPU than eager init.
    rng = np.random.default_rng(0)
    abstract = jax.eval_shape(lambda: d.init(jax.random.key(0), x, train=False))

    def draw(path, leaf):  # kernels N(0, 0.1); norm scales, variances 1; biases, means 0
        value = {"kernel": rng.normal(0, 0.1, leaf.shape), "scale": 1, "var": 1}
        return jnp.broadcast_to(jnp.asarray(value.get(path[-1].key, 0), jnp.float32), leaf.shape)

    variables = jax.tree_util.tree_map_with_path(draw, abstract)

    def both(variables):
        default_call = d.apply(variables, x, train=False)
        return default_call, d.apply(variables, x, train=False, return_features=True)

    logits, (with_features, features) = jax.jit(both)(variables)
    np.testing.assert_array_equal(with_features, logits)  # the default output, unchanged
    assert [f.shape for f in features] == [(2, side, side, c) for side, c in shapes]
    # The last feature map is what the logits conv reads: the output of the last LeakyReLU.
    head = variables["params"]["logits"]
    if overrides["discriminator"] == "pixel":
        last = jnp.einsum("nhwc,co->nhwo", features[-1], head["kernel"][0, 0])
        assert "bias" not in head  # batch norm: no bias, as in the reference's PixelGAN
    else:
        conv = models.down_conv(1, use_bias=True, dtype=jnp.float32, strides=1,
                                kernel_init=models.conv_init)  # fmt: skip
        last = conv.apply({"params": head}, features[-1])
    np.testing.assert_allclose(last, logits, atol=1e-5)
    assert all(float(jnp.min(f)) < 0 for f in features)  # LeakyReLU lets negatives through
