"""Pure loss functions of pix2pix, computed from discriminator logits.

The discriminator maximises log D(x, y) + log(1 - D(x, G(x))); as in the
paper we halve its objective, which slows D relative to G. The generator
minimises the non-saturating -log D(x, G(x)) plus lambda * ||y - G(x)||_1.
Other GAN objectives of the reference implementation share the same
interface: `discriminator_loss(real_logits, fake_logits, gan_mode)` and
`generator_gan_loss(fake_logits, gan_mode)`.
"""

import jax
import jax.numpy as jnp
import optax

GAN_MODES = ("vanilla", "lsgan", "hinge")


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
    else:
        real = _to_label(real_logits, True, gan_mode)
        fake = _to_label(fake_logits, False, gan_mode)
    return 0.5 * (real + fake)


def generator_gan_loss(fake_logits: jax.Array, gan_mode: str = "vanilla") -> jax.Array:
    """The generator's adversarial loss (non-saturating for `vanilla`)."""
    _check(gan_mode)
    if gan_mode == "hinge":
        return -fake_logits.astype(jnp.float32).mean()
    return _to_label(fake_logits, True, gan_mode)


def l1_loss(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute error, in float32 whatever the inputs' dtype."""
    return jnp.mean(jnp.abs(prediction.astype(jnp.float32) - target.astype(jnp.float32)))
