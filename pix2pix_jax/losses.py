"""Pure loss functions of pix2pix, computed from discriminator logits.

The discriminator maximises log D(x, y) + log(1 - D(x, G(x))); as in the
paper we halve its objective, which slows D relative to G. The generator
minimises the non-saturating -log D(x, G(x)) plus lambda * ||y - G(x)||_1.
Other GAN objectives of the reference implementation share the same
interface: `discriminator_loss(real_logits, fake_logits, gan_mode)` and
`generator_gan_loss(fake_logits, gan_mode)`. `wgangp` is the reference's
Wasserstein objective on raw logits; its gradient penalty
(`gradient_penalty`, the reference's `cal_gradient_penalty`) needs D itself
and is added by the train step.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

GAN_MODES = ("vanilla", "lsgan", "hinge", "wgangp")


def check_config(loss: Any) -> None:
    """Raise a ValueError naming the first unusable field of `config.loss`."""
    _check(loss.gan_mode)
    for name in ("use_gan", "conditional_d"):
        if not isinstance(loss[name], bool):
            raise ValueError(f"loss.{name} must be True or False, got {loss[name]!r}")
    for name in ("lambda_l1", "lambda_gp"):
        value = loss[name]
        # NaN passes on purpose: the loop's divergence check reports it by step.
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"loss.{name} must be a non-negative number, got {value!r}")
    if not loss.use_gan and loss.lambda_l1 == 0:
        raise ValueError(
            "nothing to train: loss.use_gan=False and loss.lambda_l1=0 leave the generator "
            "without a loss; set lambda_l1 > 0 (L1 only) or use_gan=True (GAN only)"
        )


def _check(gan_mode: str) -> None:
    if gan_mode not in GAN_MODES:
        raise ValueError(f"loss.gan_mode={gan_mode!r} is not one of {GAN_MODES}")


def _to_label(logits: jax.Array, is_real: bool, gan_mode: str) -> jax.Array:
    """Mean loss of pushing `logits` towards "real" (or "fake")."""
    logits = logits.astype(jnp.float32)
    target = jnp.full_like(logits, 1.0 if is_real else 0.0)
    if gan_mode == "vanilla":
        return optax.sigmoid_binary_cross_entropy(logits, target).mean()
    return jnp.mean((logits - target) ** 2)  # lsgan


def discriminator_loss(
    real_logits: jax.Array, fake_logits: jax.Array, gan_mode: str = "vanilla"
) -> jax.Array:
    """The discriminator's loss, halved as in the paper: 0.5 * (real term + fake term)."""
    _check(gan_mode)
    if gan_mode == "hinge":
        real = jax.nn.relu(1.0 - real_logits.astype(jnp.float32)).mean()
        fake = jax.nn.relu(1.0 + fake_logits.astype(jnp.float32)).mean()
    elif gan_mode == "wgangp":  # the reference's GANLoss: -mean(real), +mean(fake)
        real = -real_logits.astype(jnp.float32).mean()
        fake = fake_logits.astype(jnp.float32).mean()
    else:
        real = _to_label(real_logits, True, gan_mode)
        fake = _to_label(fake_logits, False, gan_mode)
    return 0.5 * (real + fake)


def generator_gan_loss(fake_logits: jax.Array, gan_mode: str = "vanilla") -> jax.Array:
    """The generator's adversarial loss (non-saturating for `vanilla`)."""
    _check(gan_mode)
    if gan_mode in ("hinge", "wgangp"):
        return -fake_logits.astype(jnp.float32).mean()
    return _to_label(fake_logits, True, gan_mode)


def l1_loss(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute error, in float32 whatever the inputs' dtype."""
    return jnp.mean(jnp.abs(prediction.astype(jnp.float32) - target.astype(jnp.float32)))


def gradient_penalty(
    discriminate: Callable[[jax.Array], jax.Array],
    real: jax.Array,
    fake: jax.Array,
    alpha: jax.Array,
    lambda_gp: float = 10.0,
    constant: float = 1.0,
) -> jax.Array:
    """The reference's cal_gradient_penalty(type='mixed'): lambda * mean((||grad|| - c)^2).

    `real` and `fake` are D's inputs (in pix2pix the concatenated (input,
    image) pairs, which share the input half), `alpha` one uniform draw per
    example, broadcastable to them (e.g. [N, 1, 1, 1]). The gradient of the
    sum of D's outputs is taken with respect to the whole interpolated D input
    and its norm per example, as the reference does.
    """
    interpolates = alpha * real + (1.0 - alpha) * fake
    grads = jax.grad(lambda v: discriminate(v).astype(jnp.float32).sum())(interpolates)
    flat = grads.reshape(grads.shape[0], -1).astype(jnp.float32)
    # The reference's +1e-16 keeps the norm differentiable where the gradient is 0.
    norms = jnp.linalg.norm(flat + 1e-16, axis=1)
    return lambda_gp * jnp.mean((norms - constant) ** 2)
