"""The pix2pixHD / SPADE switches of the models: num_d, spectral_norm, upsample, remat, deep U-Nets.

Each switch changes what it should and nothing else: at its default the networks
(classes, parameter trees, batch statistics) are the paper's. The multi-scale D's
agreement with pix2pixHD's code is in test_hd_losses; training and exact resume
with every switch on are in test_hd_training.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_model_options import model_config, numpy_variables, reference_unet_count, uniform

from pix2pix_jax import config as config_lib
from pix2pix_jax import models
from pix2pix_jax.configs import default
from pix2pix_jax.errors import ConfigError


def shapes(module, shape, **kwargs):
    """The shapes of `module`'s variables for inputs of `shape` (nothing is run)."""
    init = lambda: module.init(jax.random.key(0), jnp.zeros(shape), train=False, **kwargs)  # noqa: E731
    return jax.tree.map(lambda a: a.shape, jax.eval_shape(init))


def test_defaults_are_the_papers_networks():
    m = default.get_config().model
    assert (m.num_d, m.spectral_norm, m.upsample, m.remat) == (1, "none", "transpose", False)
    assert default.get_config().loss.lambda_feat == 0
    d = models.create_discriminator(m)
    assert type(d) is models.PatchDiscriminator and not d.spectral_norm
    g = models.create_generator(m, 64, 3)
    assert (g.upsample, g.spectral_norm, g.remat) == ("transpose", False, False)
    # No spectral-norm state, no scales: the variables are the paper's.
    flat = jax.tree_util.tree_flatten_with_path(
        (shapes(d, (1, 64, 64, 6)), shapes(g, (1, 64, 64, 3)))
    )
    names = [jax.tree_util.keystr(path) for path, _ in flat[0]]
    assert not [n for n in names if "_sn" in n or "scale_" in n]


def test_multiscale_discriminator_holds_one_patchgan_per_scale():
    single = models.create_discriminator(model_config(ndf=4))
    multi = models.create_discriminator(model_config(ndf=4, num_d=3))
    assert isinstance(multi, models.MultiscaleDiscriminator) and multi.layers == single.layers
    tree = shapes(multi, (1, 96, 96, 6))["params"]
    assert tree == {f"scale_{i}": shapes(single, (1, 96, 96, 6))["params"] for i in range(3)}
    x = uniform((1, 96, 96, 6))
    variables = numpy_variables(multi, (1, 96, 96, 6))

    @jax.jit
    def run(variables):
        scale_1 = {"params": variables["params"]["scale_1"], **{
            k: v["scale_1"] for k, v in variables.items() if k != "params"}}  # fmt: skip
        first = {k: v["scale_0"] for k, v in variables.items()}
        return (multi.apply(variables, x, train=False), single.apply(first, x, train=False),
                single.apply(scale_1, models.downsample(x), train=False))  # fmt: skip

    outputs, first, second = run(variables)
    assert [o.shape for o in outputs] == [(1, 10, 10, 1), (1, 4, 4, 1), (1, 1, 1, 1)]
    np.testing.assert_array_equal(outputs[0], first)  # scale 0: the paper's D on the pairs
    np.testing.assert_array_equal(outputs[1], second)
    # The pyramid step: 3x3 average, stride 2, padding 1, padded cells not counted.
    ones = models.downsample(jnp.ones((1, 5, 5, 1)))
    np.testing.assert_allclose(ones, 1.0)  # count_include_pad=False keeps the border at 1
    ramp = jnp.arange(25.0).reshape(1, 5, 5, 1)
    np.testing.assert_allclose(models.downsample(ramp)[0, 0, 0, 0], (0 + 1 + 5 + 6) / 4)


def kernels(tree):
    return {jax.tree_util.keystr(p): a for p, a in jax.tree_util.tree_flatten_with_path(tree)[0]
            if p[-1].key == "kernel"}  # fmt: skip


def test_spectral_norm_estimate_is_the_largest_singular_value():
    # Instance norm: no running averages, so the state that changes is spectral norm's alone.
    options = dict(ndf=4, discriminator="n_layers", n_layers_d=1, norm="instance")
    d = models.create_discriminator(model_config(spectral_norm="d", **options))
    x = uniform((1, 16, 16, 6))
    variables = numpy_variables(d, (1, 16, 16, 6), seed=3)
    assert set(variables["batch_stats"]) >= {"conv_0_sn", "conv_1_sn", "logits_sn"}
    rng = np.random.default_rng(4)  # u starts random (flax draws it from the params key)
    variables["batch_stats"] = jax.tree_util.tree_map_with_path(
        lambda p, a: jnp.asarray(rng.normal(size=a.shape), jnp.float32)
        if p[-1].key.endswith("/u") else a, variables["batch_stats"])  # fmt: skip

    @jax.jit
    def iterate(stats):  # 200 training calls: 200 power iterations of each u
        def body(_, stats):
            _, updates = d.apply({"params": variables["params"], "batch_stats": stats}, x,
                                 train=True, mutable=["batch_stats"])  # fmt: skip
            return updates["batch_stats"]

        return jax.lax.fori_loop(0, 200, body, stats)

    stats = iterate(variables["batch_stats"])
    for path, kernel in kernels(variables["params"]).items():
        layer = path.split("'")[1]
        sigma = stats[f"{layer}_sn"][f"{layer}/kernel/sigma"]
        matrix = np.asarray(kernel).reshape(-1, kernel.shape[-1])
        np.testing.assert_allclose(sigma, np.linalg.svd(matrix, compute_uv=False)[0], rtol=1e-4)

    # Eval uses the stored u without updating it; its output is D with kernels / sigma.
    plain = models.create_discriminator(model_config(**options))
    scaled = jax.tree_util.tree_map_with_path(
        lambda p, a: a / np.linalg.svd(np.asarray(a).reshape(-1, a.shape[-1]), compute_uv=False)[0]
        if p[-1].key == "kernel" else a, variables["params"])  # fmt: skip
    ours = d.apply({"params": variables["params"], "batch_stats": stats}, x, train=False)
    expected = plain.apply({"params": scaled}, x, train=False)
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("choice, in_g, in_d", [("g", True, False), ("d", False, True),
                                                ("both", True, True)])  # fmt: skip
def test_spectral_norm_choice_picks_the_networks(choice, in_g, in_d):
    m = model_config(ngf=4, ndf=4, spectral_norm=choice)
    g_vars = shapes(models.create_generator(m, 32, 3), (1, 32, 32, 3))
    d_vars = shapes(models.create_discriminator(m), (1, 32, 32, 6))
    plain = model_config(ngf=4, ndf=4)
    # The parameters are untouched; the state sits in batch_stats beside the norms'.
    assert (
        g_vars["params"] == shapes(models.create_generator(plain, 32, 3), (1, 32, 32, 3))["params"]
    )
    assert d_vars["params"] == shapes(models.create_discriminator(plain), (1, 32, 32, 6))["params"]
    assert ("down_1_sn" in g_vars["batch_stats"]) == in_g
    assert ("conv_0_sn" in d_vars["batch_stats"]) == in_d
    if in_g:  # every conv: 6 down, 6 up for the 5-deep U-Net at 32... (5 + 5)
        assert sum(k.endswith("_sn") for k in g_vars["batch_stats"]) == 10
        assert g_vars["batch_stats"]["up_1_sn"]["up_1/kernel/u"] == (1, 3)


def test_resize_conv_changes_only_the_up_convolutions():
    for generator, size in (("unet", 32), ("resnet_6blocks", 16)):
        base = shapes(models.create_generator(model_config(generator=generator, ngf=4), size, 3),
                      (1, size, size, 3))["params"]  # fmt: skip
        resized = shapes(models.create_generator(
            model_config(generator=generator, ngf=4, upsample="resize_conv"), size, 3),
            (1, size, size, 3))["params"]  # fmt: skip
        assert base.keys() == resized.keys()
        for name in base:
            if name.startswith("up_") and "norm" not in name:
                cin, cout = base[name]["kernel"][2:]
                assert resized[name]["kernel"] == (3, 3, cin, cout)
            else:
                assert resized[name] == base[name]


def test_resize_conv_has_no_checkerboard():
    # A constant input: a transposed stride-2 conv makes a period-2 pattern in the
    # interior (each output phase sums different taps), a resize-conv a constant.
    x = jnp.ones((1, 6, 6, 2))
    rng = np.random.default_rng(0)
    kernel4 = jnp.asarray(rng.normal(size=(4, 4, 2, 1)), jnp.float32)
    kernel3 = jnp.asarray(rng.normal(size=(3, 3, 2, 1)), jnp.float32)
    up = models.UpConv(1, use_bias=False).apply({"params": {"kernel": kernel4}}, x)
    assert float(jnp.ptp(up[0, 2:-2, 2:-2])) > 0.1
    for method in models.UPSAMPLE_METHODS:
        rc = models.ResizeConv(1, use_bias=False, method=method)
        out = rc.apply({"params": {"kernel": kernel3}}, x)
        assert out.shape == (1, 12, 12, 1)
        np.testing.assert_allclose(out[0, 1:-1, 1:-1], kernel3.sum(), rtol=1e-5)
    # Nearest vs bilinear on a non-constant input: different resizes.
    ramp = jnp.arange(36.0).reshape(1, 6, 6, 1)
    k = jnp.ones((3, 3, 1, 1)) / 9
    near, bil = (
        models.ResizeConv(1, use_bias=False, method=m).apply({"params": {"kernel": k}}, ramp)
        for m in ("nearest", "bilinear")
    )
    assert float(jnp.abs(near - bil).max()) > 0.1


@pytest.mark.parametrize("name, depth, size", [("unet_512", 9, (512, 512)),
                                               ("unet_512", 9, (512, 1024)),
                                               ("unet_1024", 10, (1024, 1024))])  # fmt: skip
def test_deep_unets(name, depth, size):
    g = models.create_generator(model_config(generator=name, ngf=64), size, 3)
    assert g.num_downs == depth
    params = jax.eval_shape(lambda: g.init(jax.random.key(0), jnp.zeros((1, *size, 3)),
                                           train=False))["params"]  # fmt: skip
    assert models.count_params(params) == reference_unet_count(depth, 64, 3, 3, "batch")


def test_deep_unets_refuse_sides_they_cannot_take():
    with pytest.raises(ConfigError, match=r"model.generator='unet_1024'.*1024.*512x1024"):
        models.create_generator(model_config(generator="unet_1024"), (512, 1024), 3)
    with pytest.raises(ConfigError, match=r"model.generator='unet_512'.*divisible by 512"):
        models.create_generator(model_config(generator="unet_512"), 256, 3)


def test_remat_is_the_same_function_with_the_same_names():
    plain, remat = (
        models.create_generator(model_config(ngf=4, remat=r), 32, 3) for r in (False, True)
    )
    assert remat.remat
    x = uniform((2, 32, 32, 3))
    variables = numpy_variables(plain, (2, 32, 32, 3))
    assert shapes(remat, (2, 32, 32, 3)) == shapes(plain, (2, 32, 32, 3))

    def loss(g):
        def f(params):
            rngs = {"dropout": jax.random.key(5)}
            variables_ = {**variables, "params": params}
            y, upd = g.apply(variables_, x, train=True, rngs=rngs, mutable=["batch_stats"])
            return jnp.sum(y * x), (y, upd)

        return jax.grad(f, has_aux=True)(variables["params"])

    (g0, (y0, s0)), (g1, (y1, s1)) = jax.jit(lambda: (loss(plain), loss(remat)))()
    np.testing.assert_array_equal(y0, y1)  # dropout masks too: the same keys
    for a, b in zip(jax.tree.leaves((g0, s0)), jax.tree.leaves((g1, s1)), strict=True):
        # Recomputation may reorder float sums: equal up to rounding.
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(a).max()))

    # Rematerialisation is in the program: one checkpointed (remat2) region per block.
    def count(g, size):
        x = jnp.ones((1, size, size, 3))
        jaxpr = jax.make_jaxpr(lambda v: g.apply(v, x, train=False))(shapes_of(g, x.shape))
        return str(jaxpr).count("remat2")

    assert count(remat, 32) == 10 and count(plain, 32) == 0  # 5 down, 5 up blocks
    resnet = models.create_generator(
        model_config(generator="resnet_6blocks", ngf=4, remat=True), 16, 3
    )
    assert count(resnet, 16) == 6  # one per residual block


def shapes_of(module, shape):
    return jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(shape), train=False))


@pytest.mark.parametrize("field, value, message", [
    ("model.num_d", 0, "model.num_d must be an integer >= 1"),
    ("model.num_d", 1.5, "model.num_d must be an integer >= 1"),
    ("model.spectral_norm", "D", "model.spectral_norm='D' is not one of"),
    ("model.upsample", "pixel_shuffle", "model.upsample='pixel_shuffle' is not one of"),
    ("model.upsample_method", "bicubic", "model.upsample_method='bicubic' is not one of"),
    ("model.remat", "yes", "model.remat must be True or False"),
    ("loss.lambda_feat", -1.0, "loss.lambda_feat must be a non-negative number"),
])  # fmt: skip
def test_bad_values_are_named(field, value, message):
    config = default.get_config()
    section, name = field.split(".")
    with config.unlocked():  # a value of another type, as a --config override could give
        del config[section][name]
        config[section][name] = value
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(config)
