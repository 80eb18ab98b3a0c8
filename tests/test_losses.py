"""Each objective's value on hand-computed logits."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from pix2pix_jax import losses


def softplus(x):
    return math.log1p(math.exp(x))


def test_vanilla_discriminator_loss_is_halved_bce():
    real, fake = jnp.array([[2.0, 0.0]]), jnp.array([[-1.0, 3.0]])
    # BCE(l, 1) = softplus(-l), BCE(l, 0) = softplus(l)
    expected = 0.5 * ((softplus(-2.0) + softplus(0.0)) / 2 + (softplus(-1.0) + softplus(3.0)) / 2)
    assert float(losses.discriminator_loss(real, fake, "vanilla")) == pytest.approx(expected, 1e-6)


def test_vanilla_generator_loss_is_non_saturating():
    fake = jnp.array([-1.0, 2.0])
    expected = (softplus(1.0) + softplus(-2.0)) / 2  # -log sigmoid(l)
    assert float(losses.generator_gan_loss(fake, "vanilla")) == pytest.approx(expected, 1e-6)


def test_at_zero_logits_everything_is_log_2():
    zeros = jnp.zeros((2, 3, 3, 1))
    assert float(losses.discriminator_loss(zeros, zeros)) == pytest.approx(math.log(2), 1e-6)
    assert float(losses.generator_gan_loss(zeros)) == pytest.approx(math.log(2), 1e-6)


def test_lsgan():
    real, fake = jnp.array([2.0, 1.0]), jnp.array([-1.0, 0.5])
    assert float(losses.discriminator_loss(real, fake, "lsgan")) == pytest.approx(
        0.5 * ((1.0 + 0.0) / 2 + (1.0 + 0.25) / 2)
    )
    assert float(losses.generator_gan_loss(fake, "lsgan")) == pytest.approx((4.0 + 0.25) / 2)


def test_hinge():
    real, fake = jnp.array([2.0, 0.5]), jnp.array([-3.0, 0.5])
    assert float(losses.discriminator_loss(real, fake, "hinge")) == pytest.approx(
        0.5 * ((0.0 + 0.5) / 2 + (0.0 + 1.5) / 2)
    )
    assert float(losses.generator_gan_loss(fake, "hinge")) == pytest.approx(1.25)


def test_losses_are_finite_for_extreme_logits():
    big = jnp.array([1e4, -1e4])
    for mode in ("vanilla", "hinge"):
        assert np.isfinite(float(losses.discriminator_loss(big, -big, mode)))
        assert np.isfinite(float(losses.generator_gan_loss(big, mode)))
    assert float(losses.generator_gan_loss(jnp.array([-1e4]))) == pytest.approx(1e4)


def test_l1_loss():
    pred = jnp.array([[1.0, -1.0], [0.5, 0.0]])
    target = jnp.zeros((2, 2))
    assert float(losses.l1_loss(pred, target)) == pytest.approx(0.625)
    assert losses.l1_loss(pred.astype(jnp.bfloat16), target).dtype == jnp.float32


def test_unknown_gan_mode_is_named():
    with pytest.raises(ValueError, match="loss.gan_mode='wgan'"):
        losses.generator_gan_loss(jnp.zeros(1), "wgan")
