"""pix2pixHD's multi-scale discriminator and feature matching, against PyTorch re-expressions.

The PyTorch side (tests/torch_reference.py: pix2pixHD's MultiscaleDiscriminator with
getIntermFeat, its GANLoss on lists, pix2pixHD_model.py's feature-matching loss) runs
in a child process (torch_worker's `hd` job) on random weights; here the same weights
go into `models.MultiscaleDiscriminator` and `losses`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch_worker

from pix2pix_jax import losses, models
from pix2pix_jax.configs import default

torch_worker.requires_torch()
torch_worker.want("hd")

NUM_D, N_LAYERS = torch_worker.HD_NUM_D, torch_worker.HD_N_LAYERS


@pytest.fixture(scope="module")
def hd(tmp_path_factory):
    torch_before = torch_worker.torch_loaded()
    out = torch_worker.results("hd", tmp_path_factory)
    yield torch_worker.load_arrays(out)
    torch_worker.assert_torch_not_loaded_since(torch_before)


def hd_discriminator():
    config = default.get_config().model
    config.update(discriminator="n_layers", n_layers_d=N_LAYERS, ndf=torch_worker.HD_NDF,
                  norm="instance", num_d=NUM_D)  # fmt: skip
    return models.create_discriminator(config)


def jax_params(arrays):
    """pix2pixHD's `scale<num_D-1-i>_layer<j>.0.{weight,bias}` as our scale_i/conv_j (logits)."""
    params = {}
    for i in range(NUM_D):
        scale = {}
        for j in range(N_LAYERS + 2):
            name = "logits" if j == N_LAYERS + 1 else f"conv_{j}"
            prefix = f"params/scale{NUM_D - 1 - i}_layer{j}.0"
            scale[name] = {
                "kernel": jnp.asarray(arrays[f"{prefix}.weight"].transpose(2, 3, 1, 0)),
                "bias": jnp.asarray(arrays[f"{prefix}.bias"]),
            }
        params[f"scale_{i}"] = scale
    return params


@pytest.fixture(scope="module")
def ours(hd):
    d = hd_discriminator()
    params = jax_params(hd)
    abstract = jax.eval_shape(
        lambda: d.init(jax.random.key(0), jnp.zeros((1, 48, 48, 6)), train=False)
    )
    # The re-expression fills exactly our parameter tree: same names, same shapes.
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, abstract["params"])

    @jax.jit
    def run(real, fake):
        apply = lambda v: d.apply({"params": params}, v, train=True, return_features=True)  # noqa: E731
        real_out, fake_out = apply(real), apply(fake)
        real_logits, fake_logits = [o[0] for o in real_out], [o[0] for o in fake_out]
        terms = {
            f"{mode}/{name}": value
            for mode in ("lsgan", "vanilla")
            for name, value in (
                ("d", losses.discriminator_loss(real_logits, fake_logits, mode)),
                ("g_gan", losses.generator_gan_loss(fake_logits, mode)),
            )
        }
        feat = losses.feature_matching_loss(models.scales(fake_out), models.scales(real_out))
        return models.scales(real_out), models.scales(fake_out), terms, feat

    inputs = torch_worker.INPUTS["hd"]()  # the seeded pairs the worker read
    return run(jnp.asarray(inputs["real"]), jnp.asarray(inputs["fake"]))


def test_every_scale_and_layer_matches_pix2pixhd(hd, ours):
    real, fake, _, _ = ours
    for name, pyramid in (("real", real), ("fake", fake)):
        assert len(pyramid) == NUM_D
        for i, scale in enumerate(pyramid):
            assert len(scale) == N_LAYERS + 2  # the features, then the logits
            for j, value in enumerate(scale):
                np.testing.assert_allclose(value, hd[f"{name}/{i}/{j}"], atol=1e-4, rtol=1e-4)
    # Scale i sees the 48x48 pairs pooled i times (48, 24, 12): PatchGAN logits 10, 4, 1.
    assert [s[-1].shape[1:3] for s in real] == [(10, 10), (4, 4), (1, 1)]


@pytest.mark.parametrize("mode", ["lsgan", "vanilla"])
def test_gan_losses_sum_over_scales_as_pix2pixhd(hd, ours, mode):
    _, _, terms, _ = ours
    for name in ("d", "g_gan"):
        np.testing.assert_allclose(terms[f"{mode}/{name}"], hd[f"loss/{mode}/{name}"], atol=1e-4)


def test_feature_matching_matches_pix2pixhd(hd, ours):
    *_, feat = ours
    np.testing.assert_allclose(
        torch_worker.HD_LAMBDA_FEAT * feat, hd["loss/feat"], rtol=1e-5, atol=1e-4
    )
    assert float(feat) > 0


def test_lists_of_one_are_the_single_discriminator_and_sums_otherwise():
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.normal(size=(2, 3, 3, 1)), jnp.float32) for _ in range(2))
    for mode in losses.GAN_MODES:
        assert losses.generator_gan_loss([a], mode) == losses.generator_gan_loss(a, mode)
        assert losses.discriminator_loss([a], [b], mode) == losses.discriminator_loss(a, b, mode)
        both = losses.generator_gan_loss(a, mode) + losses.generator_gan_loss(b, mode)
        np.testing.assert_allclose(losses.generator_gan_loss([a, b], mode), both, rtol=1e-6)


def test_feature_matching_weights_and_no_gradient_to_the_real_features():
    rng = np.random.default_rng(1)
    shapes = [(1, 4, 4, 2), (1, 2, 2, 2), (1, 1, 1, 1)]  # two feature maps, then logits
    fake = [[jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes] for _ in range(2)]
    real = [[jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes] for _ in range(2)]
    expected = sum(
        0.5 * (4 / 2) * float(jnp.mean(jnp.abs(f - r)))
        for fs, rs in zip(fake, real, strict=True)
        for f, r in zip(fs[:-1], rs[:-1], strict=True)
    )  # 1/num_d per scale, 4/(number of feature maps) per layer; logits left out
    np.testing.assert_allclose(losses.feature_matching_loss(fake, real), expected, rtol=1e-6)
    grads = jax.grad(lambda r: losses.feature_matching_loss(fake, r))(real)
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads))
    fake_grads = jax.grad(lambda f: losses.feature_matching_loss(f, real))(fake)
    assert float(jnp.abs(fake_grads[0][0]).max()) > 0
    assert float(jnp.abs(fake_grads[0][-1]).max()) == 0  # the logits are not matched
