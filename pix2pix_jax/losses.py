"""Pure loss functions of pix2pix, computed from discriminator logits.

The discriminator maximises log D(x, y) + log(1 - D(x, G(x))); as in the
paper we halve its objective, which slows D relative to G. The generator
minimises the non-saturating -log D(x, G(x)) plus lambda * ||y - G(x)||_1.
Other GAN objectives of the reference implementation share the same
interface: `discriminator_loss(real_logits, fake_logits, gan_mode)` and
`generator_gan_loss(fake_logits, gan_mode)`, and are entries of the
`GAN_OBJECTIVES` registry. `wgangp` is the reference's
Wasserstein objective on raw logits; its gradient penalty
(`gradient_penalty`, the reference's `cal_gradient_penalty`) needs D itself
and is added by the train step.

With a multi-scale discriminator (`model.num_d` > 1, pix2pixHD) the logits are
a list, one array per scale, and every GAN term is the sum over the scales, as
pix2pixHD's GANLoss sums them (not their mean).

The generator's loss is a weighted sum of named terms (`GENERATOR_TERMS`):
each term is a function of `GeneratorInputs` and reads its weight from the
loss config, so a new term is one function and one registry entry.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from pix2pix_jax.errors import ConfigError
from pix2pix_jax.registry import Registry

Loss = Callable[[jax.Array], jax.Array]  # logits -> mean loss (float32 scalar)


@dataclasses.dataclass(frozen=True)
class GanObjective:
    """A GAN objective as three functions of D's logits, each a mean float32 loss.

    `d_real`/`d_fake` are D's terms on real and on generated pairs (D's loss
    is half their sum); `g` is G's adversarial loss on generated pairs.
    `gradient_penalty` marks objectives whose D loss adds `gradient_penalty`.
    """

    d_real: Loss
    d_fake: Loss
    g: Loss
    gradient_penalty: bool = False


GAN_OBJECTIVES: Registry[GanObjective] = Registry("loss.gan_mode")


def _f32(logits: jax.Array) -> jax.Array:
    return logits.astype(jnp.float32)


def _bce(target: float) -> Loss:
    return lambda logits: optax.sigmoid_binary_cross_entropy(
        _f32(logits), jnp.full(logits.shape, target, jnp.float32)
    ).mean()


def _squared(target: float) -> Loss:
    return lambda logits: jnp.mean((_f32(logits) - target) ** 2)


GAN_OBJECTIVES.register("vanilla")(GanObjective(_bce(1.0), _bce(0.0), _bce(1.0)))
GAN_OBJECTIVES.register("lsgan")(GanObjective(_squared(1.0), _squared(0.0), _squared(1.0)))
GAN_OBJECTIVES.register("hinge")(
    GanObjective(
        d_real=lambda r: jax.nn.relu(1.0 - _f32(r)).mean(),
        d_fake=lambda f: jax.nn.relu(1.0 + _f32(f)).mean(),
        g=lambda f: -_f32(f).mean(),
    )
)
# The reference's GANLoss for wgangp: -mean(real), +mean(fake), on raw logits.
GAN_OBJECTIVES.register("wgangp")(
    GanObjective(
        d_real=lambda r: -_f32(r).mean(),
        d_fake=lambda f: _f32(f).mean(),
        g=lambda f: -_f32(f).mean(),
        gradient_penalty=True,
    )
)
GAN_MODES = GAN_OBJECTIVES.names()


# D's logits: one array, or a list of arrays, one per scale (a multi-scale D).
Logits = jax.Array | list[jax.Array]


def _over_scales(loss: Loss, logits: Logits) -> jax.Array:
    """`loss(logits)`, or for a list its sum over the scales (pix2pixHD's GANLoss)."""
    if not isinstance(logits, list | tuple):
        return loss(logits)
    total = loss(logits[0])
    for scale_logits in logits[1:]:
        total = total + loss(scale_logits)
    return total


def discriminator_loss(
    real_logits: Logits, fake_logits: Logits, gan_mode: str = "vanilla"
) -> jax.Array:
    """The discriminator's loss, halved as in the paper: 0.5 * (real term + fake term).

    For lists of logits (one per scale) each term is summed over the scales,
    as pix2pixHD's (loss_D_fake + loss_D_real) * 0.5.
    """
    objective = GAN_OBJECTIVES.get(gan_mode)
    return 0.5 * (
        _over_scales(objective.d_real, real_logits) + _over_scales(objective.d_fake, fake_logits)
    )


def generator_gan_loss(fake_logits: Logits, gan_mode: str = "vanilla") -> jax.Array:
    """The generator's adversarial loss (non-saturating for `vanilla`), summed over scales."""
    return _over_scales(GAN_OBJECTIVES.get(gan_mode).g, fake_logits)


def feature_matching_loss(
    fake_scales: list[list[jax.Array]], real_scales: list[list[jax.Array]]
) -> jax.Array:
    """pix2pixHD's GAN feature-matching loss, without its lambda_feat.

    Both arguments are D's outputs as `models.scales` gives them: per scale,
    the feature maps of its layers then the logits (which are left out). With
    L layers' features per scale and num_d scales, it is the sum over scales
    and layers of (1 / num_d) * (4 / L) * mean|fake - real|: pix2pixHD's
    D_weights and feat_weights, where L = n_layers_D + 1 for the PatchGAN. The
    real features are constants (pix2pixHD's `.detach()`).
    """
    d_weight = 1.0 / len(fake_scales)
    total = jnp.zeros((), jnp.float32)
    for fake, real in zip(fake_scales, real_scales, strict=True):
        feat_weight = 4.0 / (len(fake) - 1)
        for f, r in zip(fake[:-1], real[:-1], strict=True):
            total = total + d_weight * feat_weight * l1_loss(f, jax.lax.stop_gradient(r))
    return total


def l1_loss(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute error, in float32 whatever the inputs' dtype."""
    return jnp.mean(jnp.abs(prediction.astype(jnp.float32) - target.astype(jnp.float32)))


@dataclasses.dataclass(frozen=True)
class GeneratorInputs:
    """What a generator loss term may read: the batch, G's output and D's view of it.

    `fake_logits` is None when no term that needs D is active (a list, one per
    scale, for a multi-scale D). `frozen` holds the parameters of the fixed
    networks that perceptual terms run (see `assembly.frozen_params`): {'vgg':
    ..., 'lpips': ...}, or None. `fake_features` and `real_features` are D's
    feature maps on the fake and the real pair, as `models.scales` lists them,
    when a term that `needs_features` is active (None otherwise).
    """

    input: jax.Array
    fake: jax.Array
    target: jax.Array
    fake_logits: Logits | None = None
    gan_mode: str = "vanilla"
    frozen: dict[str, Any] | None = None
    fake_features: list[list[jax.Array]] | None = None
    real_features: list[list[jax.Array]] | None = None


@dataclasses.dataclass(frozen=True)
class GeneratorTerm:
    """One term of G's loss: its value, its weight in the config, and what it needs.

    `weight(loss_config)` reads the term's weight; a term of weight 0 is left
    out of the loss and reported as 0, unless `always_reported` (a cheap term
    the metrics contract lists, such as L1) — then it is computed and logged.
    `needs_features`: the step also runs D for its feature maps on the fake
    and the real pair (`GeneratorInputs.fake_features`, `real_features`).
    """

    value: Callable[[GeneratorInputs], jax.Array]
    weight: Callable[[Any], float]
    needs_discriminator: bool = False
    always_reported: bool = False
    needs_features: bool = False


#: Generator loss terms; each is logged as g_<name>, the weighted sum as g_loss.
GENERATOR_TERMS: Registry[GeneratorTerm] = Registry("generator loss term")
GENERATOR_TERMS.register("gan")(
    GeneratorTerm(
        value=lambda t: generator_gan_loss(t.fake_logits, t.gan_mode),
        weight=lambda loss: 1.0 if loss.use_gan else 0.0,
        needs_discriminator=True,
    )
)
GENERATOR_TERMS.register("l1")(
    GeneratorTerm(
        value=lambda t: l1_loss(t.fake, t.target),
        weight=lambda loss: loss.lambda_l1,
        always_reported=True,
    )
)
# pix2pixHD's discriminator feature matching (loss.lambda_feat; pix2pixHD uses 10).
GENERATOR_TERMS.register("feat")(
    GeneratorTerm(
        value=lambda t: feature_matching_loss(t.fake_features, t.real_features),
        weight=lambda loss: getattr(loss, "lambda_feat", 0.0),
        needs_discriminator=True,
        needs_features=True,
    )
)


def _frozen(inputs: GeneratorInputs, name: str, field: str) -> Any:
    """The frozen network `name`'s parameters; a ConfigError if the step was not given them."""
    if inputs.frozen is None or name not in inputs.frozen:
        raise ConfigError(
            f"loss.{field} > 0 needs the {name} parameters: pass "
            "frozen=assembly.frozen_params(config) to steps.train_step"
        )
    return inputs.frozen[name]


def _vgg_term(t: GeneratorInputs) -> jax.Array:
    from pix2pix_jax import vgg  # only this term needs it

    return vgg.vgg_loss(_frozen(t, "vgg", "lambda_vgg"), t.fake, t.target)


def _lpips_term(t: GeneratorInputs) -> jax.Array:
    from pix2pix_jax import lpips  # only this term needs it

    return jnp.mean(lpips.distance(_frozen(t, "lpips", "lambda_lpips"), t.fake, t.target))


# pix2pixHD's VGG19 feature loss (Wang et al. 2018; pix2pixHD's lambda_feat = 10) and
# LPIPS (Zhang et al. 2018), on frozen networks; `.get`: configs saved before these fields.
GENERATOR_TERMS.register("vgg")(
    GeneratorTerm(value=_vgg_term, weight=lambda loss: loss.get("lambda_vgg", 0.0))
)
GENERATOR_TERMS.register("lpips")(
    GeneratorTerm(value=_lpips_term, weight=lambda loss: loss.get("lambda_lpips", 0.0))
)


def generator_terms(loss: Any) -> tuple[tuple[str, float], ...]:
    """(name, weight) of every generator term, in registry order, from `config.loss`."""
    return tuple((name, float(GENERATOR_TERMS.get(name).weight(loss))) for name in GENERATOR_TERMS)


def generator_loss(
    terms: tuple[tuple[str, float], ...], inputs: GeneratorInputs
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """G's loss, sum of weight * term over the active terms, and each term as g_<name>.

    A term whose weight is 0 adds nothing (not even 0 * NaN); see `GeneratorTerm`.
    """
    total = jnp.zeros((), jnp.float32)
    reported = {}
    for name, weight in terms:
        term = GENERATOR_TERMS.get(name)
        if weight == 0 and not term.always_reported:
            reported[f"g_{name}"] = jnp.zeros((), jnp.float32)
            continue
        value = term.value(inputs)
        reported[f"g_{name}"] = value
        if weight != 0:
            total = total + (value if weight == 1 else weight * value)
    return total, reported


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """What the train step needs of `config.loss`, read in one place (hashable, static).

    `g_terms` is G's loss as (term name, weight) pairs (see `generator_terms`).
    """

    gan_mode: str = "vanilla"
    g_terms: tuple[tuple[str, float], ...] = (("gan", 1.0), ("l1", 100.0))
    conditional_d: bool = True
    lambda_gp: float = 10.0

    @classmethod
    def from_config(cls, loss: Any) -> "LossSettings":
        """The settings of `config.loss` (validated by `config.validate`)."""
        return cls(loss.gan_mode, generator_terms(loss), loss.conditional_d, loss.lambda_gp)

    @property
    def use_gan(self) -> bool:
        """Whether an active generator term needs D (and so D is trained)."""
        return any(w != 0 and GENERATOR_TERMS.get(n).needs_discriminator for n, w in self.g_terms)

    @property
    def needs_features(self) -> bool:
        """Whether an active generator term reads D's feature maps (feature matching)."""
        return any(w != 0 and GENERATOR_TERMS.get(n).needs_features for n, w in self.g_terms)


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
    and its norm per example, as the reference does. For a multi-scale D
    (`discriminate` returns a list) the outputs of all scales are summed.
    """
    interpolates = alpha * real + (1.0 - alpha) * fake

    def total(v: jax.Array) -> jax.Array:
        out = discriminate(v)
        return _over_scales(lambda logits: logits.astype(jnp.float32).sum(), out)

    grads = jax.grad(total)(interpolates)
    flat = grads.reshape(grads.shape[0], -1).astype(jnp.float32)
    # The reference's +1e-16 keeps the norm differentiable where the gradient is 0.
    norms = jnp.linalg.norm(flat + 1e-16, axis=1)
    return lambda_gp * jnp.mean((norms - constant) ** 2)
