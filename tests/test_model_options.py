"""The model zoo's options: ResNet and encoder-decoder generators, PixelGAN, init types.

Parameter counts are checked against the reference PyTorch implementation
(junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py) by an independent
layer-by-layer count written out here, plus the reference's published numbers.
"""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pix2pix_jax import models
from pix2pix_jax.configs import default
from pix2pix_jax.errors import ConfigError


def model_config(**overrides) -> ml_collections.ConfigDict:
    config = default.get_config().model
    config.update(overrides)
    return config


def key(seed):
    # RBG keys: XLA:CPU compiles their generator far faster than threefry's, and
    # these tests only need draws, not threefry's exact stream.
    return jax.random.key(seed, impl="rbg")


def uniform(shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape), jnp.float32)


def abstract_params(module, shape):
    variables = jax.eval_shape(
        lambda: module.init({"params": key(0)}, jnp.zeros(shape), train=False)
    )
    return variables["params"]


def numpy_variables(module, shape, seed=0):
    """Variables of `module`'s shapes, drawn by numpy: for tests that need some weights.

    Kernels ~ N(0, 1 / fan_in), biases 0, norm scales 1, running statistics (0, 1). Far
    faster on XLA:CPU than compiling the initialisers (which other tests check).
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
        return np.ones(leaf.shape) if name in ("scale", "var") else np.zeros(leaf.shape)

    abstract = jax.eval_shape(lambda: module.init(key(0), jnp.zeros(shape), train=False))
    drawn = jax.tree_util.tree_map_with_path(draw, abstract)
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), drawn)


# --- independent parameter counts, layer by layer as the reference builds them ---


def conv(cin, cout, k, bias):
    return k * k * cin * cout + (cout if bias else 0)


def norm(c, kind):
    return 2 * c if kind == "batch" else 0  # BatchNorm2d(affine): weight + bias


def reference_unet_count(num_downs, ngf, in_nc, out_nc, kind, skips=True):
    """UnetGenerator: UnetSkipConnectionBlock(outer_nc, inner_nc), innermost first."""
    bias = kind == "instance"  # the reference's use_bias = norm_layer == nn.InstanceNorm2d
    blocks = [(ngf * 8, ngf * 8, "innermost")]
    blocks += [(ngf * 8, ngf * 8, "middle")] * (num_downs - 5)
    blocks += [(ngf * 4, ngf * 8, "middle"), (ngf * 2, ngf * 4, "middle")]
    blocks += [(ngf, ngf * 2, "middle"), (out_nc, ngf, "outermost")]
    total = 0
    for outer_nc, inner_nc, where in blocks:
        input_nc = in_nc if where == "outermost" else outer_nc
        total += conv(input_nc, inner_nc, 4, bias)  # downconv
        total += norm(inner_nc, kind) if where == "middle" else 0  # downnorm
        up_in = inner_nc if where == "innermost" or not skips else 2 * inner_nc
        if where == "outermost":
            total += conv(up_in, outer_nc, 4, True)  # upconv with bias, then tanh
        else:
            total += conv(up_in, outer_nc, 4, bias) + norm(outer_nc, kind)  # upconv, upnorm
    return total


def reference_resnet_count(n_blocks, ngf, in_nc, out_nc, kind):
    """ResnetGenerator's nn.Sequential, layer by layer."""
    bias = kind == "instance"
    total = conv(in_nc, ngf, 7, bias) + norm(ngf, kind)  # ReflectionPad(3), c7s1-ngf
    total += conv(ngf, 2 * ngf, 3, bias) + norm(2 * ngf, kind)  # downsampling
    total += conv(2 * ngf, 4 * ngf, 3, bias) + norm(4 * ngf, kind)
    block = 2 * (conv(4 * ngf, 4 * ngf, 3, bias) + norm(4 * ngf, kind))
    total += n_blocks * block
    total += conv(4 * ngf, 2 * ngf, 3, bias) + norm(2 * ngf, kind)  # ConvTranspose2d
    total += conv(2 * ngf, ngf, 3, bias) + norm(ngf, kind)
    return total + conv(ngf, out_nc, 7, True)  # ReflectionPad(3), c7s1-out with bias, tanh


def test_reference_counts_are_the_published_ones():
    assert reference_unet_count(8, 64, 3, 3, "batch") == 54_413_955
    assert reference_resnet_count(9, 64, 3, 3, "instance") == 11_378_179  # CycleGAN default
    assert reference_resnet_count(6, 64, 3, 3, "instance") == 7_837_699
    # unet_128, batch norm, by hand: innermost 512->512 down + up + BN(512); two
    # 512/512 middle blocks; then 256/512, 128/256, 64/128; outermost 3->64, 128->3.
    innermost = 16 * 512 * 512 * 2 + 1024
    middle = 16 * 512 * 512 + 1024 + 16 * 1024 * 512 + 1024
    blocks = (
        16 * 256 * 512 + 1024 + 16 * 1024 * 256 + 512,
        16 * 128 * 256 + 512 + 16 * 512 * 128 + 256,
        16 * 64 * 128 + 256 + 16 * 256 * 64 + 128,
        16 * 3 * 64 + (16 * 128 * 3 + 3),
    )
    assert innermost + 2 * middle + sum(blocks) == 41_828_995
    assert reference_unet_count(7, 64, 3, 3, "batch") == 41_828_995
    # resnet_9blocks, batch norm: no conv biases but the last; BN weight + bias.
    convs = 49 * 3 * 64 + 9 * 64 * 128 + 9 * 128 * 256 + 18 * 9 * 256 * 256
    convs += 9 * 256 * 128 + 9 * 128 * 64 + 49 * 64 * 3 + 3
    bns = 2 * (64 + 128 + 256 + 18 * 256 + 128 + 64)
    assert convs + bns == reference_resnet_count(9, 64, 3, 3, "batch") == 11_383_427
    assert reference_resnet_count(6, 64, 3, 3, "batch") == 11_383_427 - 3 * (2 * 589_824 + 1024)


# (generator, image size, depth or blocks, reference count function)
GENERATOR_CASES = [
    ("unet_256", 256, lambda kind: reference_unet_count(8, 64, 3, 3, kind)),
    ("unet_128", 128, lambda kind: reference_unet_count(7, 64, 3, 3, kind)),
    ("unet", 64, lambda kind: reference_unet_count(6, 64, 3, 3, kind)),
    ("encoder_decoder", 256, lambda kind: reference_unet_count(8, 64, 3, 3, kind, skips=False)),
    ("resnet_6blocks", 64, lambda kind: reference_resnet_count(6, 64, 3, 3, kind)),
    ("resnet_9blocks", 64, lambda kind: reference_resnet_count(9, 64, 3, 3, kind)),
]


@pytest.mark.parametrize("kind", ["batch", "instance", "none"])
@pytest.mark.parametrize(
    "name, size, reference", GENERATOR_CASES, ids=[c[0] for c in GENERATOR_CASES]
)
def test_generator_parameter_counts_equal_the_reference(name, size, reference, kind):
    generator = models.create_generator(model_config(generator=name, ngf=64, norm=kind), size, 3)
    params = abstract_params(generator, (1, size, size, 3))
    assert models.count_params(params) == reference(kind)


def test_published_generator_counts():
    counts = {}
    for name, kind, size in [
        ("unet_256", "batch", 256),
        ("resnet_9blocks", "instance", 256),
        ("resnet_6blocks", "instance", 256),
    ]:
        g = models.create_generator(model_config(generator=name, ngf=64, norm=kind), size, 3)
        counts[name] = models.count_params(abstract_params(g, (1, size, size, 3)))
    assert counts == {
        "unet_256": 54_413_955,
        "resnet_9blocks": 11_378_179,
        "resnet_6blocks": 7_837_699,
    }


def test_pixel_discriminator_parameter_count():
    # conv1x1 6->64 (+bias), conv1x1 64->128 (bias iff instance norm), norm, conv1x1 128->1
    # (bias = use_bias, as the reference).
    by_hand = {
        "batch": (6 * 64 + 64) + 64 * 128 + 2 * 128 + 128,
        "instance": (6 * 64 + 64) + (64 * 128 + 128) + (128 + 1),
        "none": (6 * 64 + 64) + 64 * 128 + 128,
    }
    assert by_hand == {"batch": 9_024, "instance": 8_897, "none": 8_768}
    for kind, expected in by_hand.items():
        d = models.create_discriminator(model_config(discriminator="pixel", ndf=64, norm=kind))
        assert models.count_params(abstract_params(d, (1, 256, 256, 6))) == expected


def test_patch_discriminator_without_norm_has_the_references_biases():
    # The reference's use_bias is False unless the norm is instance norm: with norm 'none'
    # only the first conv and the logits conv keep a bias (4x4 kernels, 6-channel pairs).
    convs = 6 * 64 * 16 + 64 + 64 * 128 * 16 + 128 * 256 * 16 + 256 * 512 * 16 + 512 * 16 + 1
    d = models.create_discriminator(model_config(discriminator="basic", ndf=64, norm="none"))
    assert models.count_params(abstract_params(d, (1, 256, 256, 6))) == convs == 2_766_913


# --- the 3x3, stride-2, output-padding-1 transposed convolution ---


def naive_conv_transpose(x, w, padding, output_padding):
    """PyTorch ConvTranspose2d(k, s=2, p, output_padding) by its definition: scatter, crop."""
    n, h, wd, _ = x.shape
    k = w.shape[0]
    full = np.zeros((n, 2 * (h - 1) + k + output_padding, 2 * (wd - 1) + k + output_padding,
                     w.shape[-1]), np.float64)  # fmt: skip
    for i in range(h):
        for j in range(wd):
            for kh in range(k):
                for kw in range(k):
                    full[:, 2 * i + kh, 2 * j + kw] += x[:, i, j] @ w[kh, kw]
    out_h = 2 * (h - 1) - 2 * padding + k + output_padding
    out_w = 2 * (wd - 1) - 2 * padding + k + output_padding
    return full[:, padding : padding + out_h, padding : padding + out_w]


@pytest.mark.parametrize("kernel_size, output_padding", [(3, 1), (4, 0)])
def test_upconv_equals_transposed_convolution(kernel_size, output_padding):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    w = rng.normal(size=(kernel_size, kernel_size, 3, 4)).astype(np.float32)
    b = rng.normal(size=(4,)).astype(np.float32)
    up = models.UpConv(4, kernel_size=kernel_size)
    y = up.apply({"params": {"kernel": w, "bias": b}}, x)
    assert y.shape == (2, 10, 14, 4)
    np.testing.assert_allclose(y, naive_conv_transpose(x, w, 1, output_padding) + b, atol=1e-5)
    # ... and lax's transposed convolution: pad k-1-p before, k-1-p+output_padding after.
    pad = (kernel_size - 2, kernel_size - 2 + output_padding)
    lax_y = jax.lax.conv_transpose(
        x, w[::-1, ::-1], (2, 2), (pad, pad), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(y, lax_y + b, atol=1e-5)


# --- receptive fields ---


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(discriminator="n_layers", n_layers_d=1), 16),
        (dict(discriminator="basic"), 70),
        (dict(discriminator="n_layers", n_layers_d=3), 70),
        (dict(discriminator="n_layers", n_layers_d=5), 286),
        (dict(discriminator="pixel"), 1),
    ],
)
def test_receptive_field_formula(overrides, field):
    assert models.receptive_field(model_config(**overrides)) == field


@pytest.mark.parametrize(
    "overrides, size, field",
    [
        (dict(discriminator="n_layers", n_layers_d=1), 64, 16),
        (dict(discriminator="basic"), 128, 70),
        (dict(discriminator="n_layers", n_layers_d=5), 320, 286),
        (dict(discriminator="pixel"), 8, 1),
    ],
)
def test_receptive_field_is_the_gradient_support(overrides, size, field):
    # norm 'none': batch norm would couple every pixel with every other one.
    config = model_config(ndf=4, norm="none", **overrides)
    assert models.receptive_field(config) == field
    d = models.create_discriminator(config)
    x = uniform((1, size, size, 6))
    variables = numpy_variables(d, x.shape)
    grid = jax.eval_shape(lambda: d.apply(variables, x, train=False)).shape[1]
    o = grid // 2  # a logit away from the border

    def logit(x):
        return d.apply(variables, x, train=False)[0, o, o, 0]

    support = np.abs(np.asarray(jax.jit(jax.grad(logit))(x))).sum(axis=(0, 3)) > 0
    rows, cols = np.nonzero(support)
    assert support.sum() == field * field  # a full square ...
    assert rows.max() - rows.min() + 1 == field and cols.max() - cols.min() + 1 == field
    if overrides["discriminator"] != "pixel":  # ... at output stride x o - total padding
        n = overrides.get("n_layers_d", 3)
        assert rows.min() == cols.min() == o * 2**n - (3 * 2**n - 1)


# --- initialisation ---


def torch_layout(kernel, transposed):
    """Our HWIO kernel as PyTorch's Conv2d (out, in, kh, kw) / ConvTranspose2d (in, out, kh, kw)."""
    return np.transpose(kernel, (2, 3, 0, 1) if transposed else (3, 2, 0, 1))


def check_kernel(kernel, init_type, gain, transposed):
    """`kernel` is distributed as the reference's init_weights makes a weight of its layout."""
    w = torch_layout(np.asarray(kernel, np.float64), transposed)
    receptive = w.shape[2] * w.shape[3]
    fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive  # torch's fan rule
    if init_type == "orthogonal":  # rows = dim 0, as torch.nn.init.orthogonal_
        m = w.reshape(w.shape[0], -1)
        gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
        np.testing.assert_allclose(gram, gain**2 * np.eye(len(gram)), atol=1e-4 * gain**2 + 1e-6)
        return
    std = {
        "normal": gain,
        "xavier": gain * np.sqrt(2.0 / (fan_in + fan_out)),
        "kaiming": np.sqrt(2.0 / fan_in),
    }[init_type]
    tolerance = 6 / np.sqrt(2 * w.size)  # six standard errors of a sample std
    assert abs(w.mean()) < 6 * std / np.sqrt(w.size)
    assert w.std() == pytest.approx(std, rel=tolerance)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("init_type", models.INITS.names())
def test_weight_init_of_a_large_kernel(init_type, transposed):
    shape = (4, 4, 128, 32)  # in != out, so the conv and transposed fans differ
    kernel = models.weight_init(init_type, 0.5, transposed=transposed)(key(0), shape)
    check_kernel(kernel, init_type, 0.5, transposed)
    if init_type == "kaiming":  # the fan that counts: in for convs, out for transposed
        fan_in = 16 * (32 if transposed else 128)
        assert np.std(kernel) == pytest.approx(np.sqrt(2 / fan_in), rel=0.01)


def test_batch_norm_scales_are_normal_around_one():
    norm_layer = models.Norm("batch", init_gain=0.1)
    x = jax.ShapeDtypeStruct((2, 1, 1, 100_000), jnp.float32)
    variables = norm_layer.lazy_init(key(0), x, train=False)
    scale = np.asarray(variables["params"]["batch_norm"]["scale"])
    assert scale.mean() == pytest.approx(1.0, abs=0.003)
    assert scale.std() == pytest.approx(0.1, rel=0.02)
    assert not np.any(variables["params"]["batch_norm"]["bias"])


INIT_MODELS = {
    "unet": (dict(generator="unet"), 8, "generator"),
    "encoder_decoder": (dict(generator="encoder_decoder"), 8, "generator"),
    "resnet": (dict(generator="resnet_6blocks"), 8, "generator"),
    "n_layers": (dict(discriminator="n_layers", n_layers_d=2), 16, "discriminator"),
    "pixel": (dict(discriminator="pixel"), 4, "discriminator"),
}


# Every model with kaiming (whose fans tell conv and transposed kernels apart); the other
# types, which take the same code path, on the ResNet (convs, up-convs, norms) and PixelGAN.
@pytest.mark.parametrize(
    "init_type, model",
    [("kaiming", m) for m in INIT_MODELS]
    + [(t, m) for t in ("normal", "xavier", "orthogonal") for m in ("resnet", "pixel")],
)
def test_init_type_reaches_every_kernel_of_every_model(init_type, model):
    gain = 0.5
    overrides, size, role = INIT_MODELS[model]
    config = model_config(ngf=8, ndf=8, init_type=init_type, init_gain=gain, **overrides)
    if role == "generator":
        module, channels = models.create_generator(config, size, 3), 3
    else:
        module, channels = models.create_discriminator(config), 6
    x = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    params = module.lazy_init(key(0), x, train=False)["params"]  # no forward pass
    kernels = scales = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [p.key for p in path]
        if names[-1] == "kernel":
            # The up-convs (transposed kernels) are up_<k> in the U-Net and the ResNet.
            transposed = re.fullmatch(r"up_\d+", names[-2]) is not None
            check_kernel(leaf, init_type, gain, transposed=transposed)
            kernels += 1
        elif names[-1] == "bias":
            assert not np.any(leaf), names  # biases start at zero
        elif names[-1] == "scale":  # batch norm: N(1, gain)
            assert abs(np.std(leaf) - gain) < 6 * gain / np.sqrt(2 * leaf.size), names
            scales += 1
    assert kernels > 0 and scales > 0


def test_unknown_init_type_is_named():
    with pytest.raises(ConfigError, match=r"model.init_type='foo' is not one of \('normal'"):
        models.create_generator(model_config(init_type="foo"), 64, 3)
    with pytest.raises(ConfigError, match=r"model.init_type='foo' is not one of"):
        models.create_discriminator(model_config(init_type="foo"))
    with pytest.raises(ConfigError, match="model.init_gain"):
        models.create_discriminator(model_config(init_gain=-1.0))
    with pytest.raises(ConfigError, match=r"model.init_type='he' is not one of"):
        models.weight_init("he", 0.02)


# --- validation and shapes ---


def test_registries_hold_the_documented_options():
    # The option sets of configs/default.py's comments and the README's options table.
    assert models.GENERATORS.names() == (
        "unet_256", "unet_128", "unet_512", "unet_1024", "unet", "encoder_decoder",
        "resnet_6blocks", "resnet_9blocks",
    )  # fmt: skip
    assert models.DISCRIMINATORS.names() == ("basic", "n_layers", "pixel")
    assert models.NORMS.names() == ("batch", "sync_batch", "instance", "none")
    assert models.INITS.names() == ("normal", "xavier", "kaiming", "orthogonal")
    fields = [r.field for r in (models.GENERATORS, models.DISCRIMINATORS, models.NORMS,
                                models.INITS)]  # fmt: skip
    assert fields == ["model.generator", "model.discriminator", "model.norm", "model.init_type"]
    assert [models.conv_bias(n) for n in models.NORMS] == [False, False, True, False]


def test_unknown_names_and_sizes_are_named():
    with pytest.raises(ConfigError, match=r"model.generator='resnet_7blocks' is not one of \("):
        models.create_generator(model_config(generator="resnet_7blocks"), 64, 3)
    with pytest.raises(ConfigError, match="resnet_9blocks"):  # the allowed values are listed
        models.create_generator(model_config(generator="unet_2048"), 64, 3)
    with pytest.raises(ConfigError, match=r"model.discriminator='pixelgan' is not one of \("):
        models.create_discriminator(model_config(discriminator="pixelgan"))
    with pytest.raises(ConfigError, match="'pixel'"):
        models.create_discriminator(model_config(discriminator="patch"))
    with pytest.raises(ConfigError, match="model.n_layers_d must be >= 1"):
        models.create_discriminator(model_config(discriminator="n_layers", n_layers_d=0))
    with pytest.raises(ConfigError, match="divisible by 4"):
        models.create_generator(model_config(generator="resnet_9blocks"), 30, 3)
    with pytest.raises(ConfigError, match="power-of-two"):
        models.create_generator(model_config(generator="encoder_decoder"), 48, 3)
    # check_config: the same checks (no parameters made), the first bad field named.
    with pytest.raises(ConfigError, match="model.generator='unet'.*got 32x40"):
        models.check_config(model_config(generator="unet"), (32, 40))
    with pytest.raises(ConfigError, match="model.n_layers_d"):
        models.check_config(model_config(discriminator="n_layers", n_layers_d=0), 32)
    with pytest.raises(ConfigError, match="model.norm='group'"):
        models.check_config(model_config(norm="group"), 32)
    models.check_config(model_config(generator="unet"), (32, 64))
    # resnets take any multiple of 4; unet_256 only needs divisibility (not a power of two).
    models.create_generator(model_config(generator="resnet_6blocks"), 36, 3)
    models.create_generator(model_config(generator="unet_256"), 512, 3)


@pytest.mark.parametrize("name", ["unet", "encoder_decoder", "resnet_6blocks", "resnet_9blocks"])
def test_generators_map_images_to_images(name):
    generator = models.create_generator(model_config(generator=name, ngf=8), 64, 2)
    x = uniform((2, 64, 64, 3))
    variables = numpy_variables(generator, x.shape)
    rngs = {"dropout": key(2)}  # train mode: dropout on, batch statistics
    y, _ = generator.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
    assert y.shape == (2, 64, 64, 2)
    assert float(jnp.max(jnp.abs(y))) <= 1.0  # tanh output


@pytest.mark.parametrize("name, size", [("unet_256", 256), ("unet_128", 128)])
def test_fixed_depth_unets_keep_the_shape(name, size):
    generator = models.create_generator(model_config(generator=name, ngf=8), size, 2)
    x = jnp.zeros((2, size, size, 3))
    y = jax.eval_shape(
        lambda: generator.apply(generator.init(key(0), x, train=False), x, train=False)
    )
    assert y.shape == (2, size, size, 2)


def test_encoder_decoder_has_no_skips():
    config = model_config(generator="encoder_decoder", ngf=8)
    params = abstract_params(models.create_generator(config, 32, 3), (1, 32, 32, 3))
    unet = abstract_params(
        models.create_generator(model_config(generator="unet", ngf=8), 32, 3), (1, 32, 32, 3)
    )
    # Decoder inputs: the previous decoder output only, vs [skip, output] in the U-Net.
    # up_5 (innermost) .. up_1 (outermost)
    in_channels = [params[f"up_{k}"]["kernel"].shape[2] for k in range(5, 0, -1)]
    assert in_channels == [64, 64, 32, 16, 8]
    assert [unet[f"up_{k}"]["kernel"].shape[2] for k in range(5, 0, -1)] == [64, 128, 64, 32, 16]


def test_resnet_dropout_follows_dropout_rate():
    x = uniform((2, 64, 64, 3))  # the shapes of the test above: its compiled ops are reused

    def outputs(rate):
        config = model_config(generator="resnet_6blocks", ngf=8, dropout_rate=rate)
        g = models.create_generator(config, 64, 2)
        variables = numpy_variables(g, x.shape)
        return [g.apply(variables, x, train=True, rngs={"dropout": key(k)},
                        mutable=["batch_stats"])[0] for k in (1, 2)]  # fmt: skip

    assert not np.allclose(*outputs(0.5))  # dropout between the convs of each block
    np.testing.assert_array_equal(*outputs(0.0))  # no other noise source


@pytest.mark.parametrize(
    "overrides, grid",
    [
        (dict(discriminator="basic"), 30),  # 256 / 2**3 - 2
        (dict(discriminator="n_layers", n_layers_d=1), 126),  # 256 / 2 - 2
        (dict(discriminator="n_layers", n_layers_d=5), 6),  # 256 / 32 - 2
        (dict(discriminator="pixel"), 256),
    ],
)
def test_discriminator_patch_grid_at_256(overrides, grid):
    d = models.create_discriminator(model_config(ndf=8, **overrides))
    pair = jnp.zeros((1, 256, 256, 6))
    logits = jax.eval_shape(lambda: d.apply(d.init(key(0), pair, train=False), pair, train=False))
    assert logits.shape == (1, grid, grid, 1)
