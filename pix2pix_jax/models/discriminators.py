"""The discriminators: the n-layer PatchGAN and the 1x1 PixelGAN.

`DISCRIMINATORS` (config field `model.discriminator`) maps each name to a
builder `model_config -> module`; `create_discriminator` looks the name up.
Both modules take `(input, image)` pairs concatenated on channels and, with
`return_features=True`, also return the feature map of each conv block after
its LeakyReLU (the logits excluded), which pix2pixHD's feature-matching loss
compares between real and fake pairs.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pix2pix_jax.errors import ConfigError
from pix2pix_jax.models.cpu_kernels import down_conv
from pix2pix_jax.models.layers import Norm, conv_bias, model_options, weight_init
from pix2pix_jax.registry import Registry

DISCRIMINATORS: Registry[Callable[[Any], nn.Module]] = Registry("model.discriminator")

# logits, or (logits, [the feature map after each LeakyReLU, input to output]).
Output = jax.Array | tuple[jax.Array, list[jax.Array]]


def patch_layers(n_layers: int) -> tuple[tuple[int, int], ...]:
    """(kernel, stride) of each conv of the n-layer PatchGAN, input to output.

    `n_layers` stride-2 convs, then a stride-1 conv and the stride-1 output conv.
    """
    return ((4, 2),) * n_layers + ((4, 1), (4, 1))


# (kernel, stride) of the PixelGAN's three 1x1 convolutions.
PIXEL_LAYERS = ((1, 1),) * 3


class PatchDiscriminator(nn.Module):
    """The PatchGAN discriminator: one logit per overlapping image patch.

    With `n_layers` = 3 each logit sees a 70x70 patch (the paper's default):
    C64 (no norm) - C128 - C256 - C512 (stride 1) - a 1-channel conv. The
    layers are those of `patch_layers`, all 4x4 with padding 1.

    Names, input to output: `conv_0` (no norm), then `conv_i`, `norm_i` for
    i = 1 .. `n_layers` (the last of them stride 1), then `logits`.
    """

    ndf: int = 64
    n_layers: int = 3
    norm: str = "batch"
    dtype: Any = jnp.float32
    init_type: str = "normal"
    init_gain: float = 0.02

    @property
    def layers(self) -> tuple[tuple[int, int], ...]:
        """(kernel, stride) of each conv, input to output."""
        return patch_layers(self.n_layers)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, return_features: bool = False) -> Output:
        """Logits, one per patch, for (input, image) pairs concatenated on channels.

        With `return_features`, (logits, features): the `n_layers` + 1 feature
        maps after each LeakyReLU.
        """
        use_bias = conv_bias(self.norm)
        conv = dict(dtype=self.dtype, kernel_init=weight_init(self.init_type, self.init_gain))
        features = []
        h = x.astype(self.dtype)
        for i, (_, stride) in enumerate(self.layers[:-1]):  # all 4x4: `down_conv`
            # No norm after the first conv: that one keeps its bias.
            h = down_conv(
                self.ndf * min(2**i, 8),
                use_bias=i == 0 or use_bias,
                strides=stride,
                name=f"conv_{i}",
                **conv,
            )(h)
            if i > 0:
                h = Norm(self.norm, self.dtype, self.init_gain, name=f"norm_{i}")(h, train=train)
            h = nn.leaky_relu(h, 0.2)
            features.append(h)
        _, stride = self.layers[-1]
        logits = down_conv(1, use_bias=True, strides=stride, name="logits", **conv)(h)
        return (logits, features) if return_features else logits


class PixelDiscriminator(nn.Module):
    """The reference's PixelDiscriminator (PixelGAN): one logit per pixel, 1x1 convs only.

    C64 (1x1, no norm) - C128 (1x1, norm) - a 1-channel 1x1 conv; LeakyReLU
    0.2 between. As in the reference, the last conv has a bias only where the
    other normed convs do (`use_bias`), and the receptive field is 1 pixel.

    Names, input to output: `conv_0`, `conv_1`, `norm_1`, `logits`.
    """

    ndf: int = 64
    norm: str = "batch"
    dtype: Any = jnp.float32
    init_type: str = "normal"
    init_gain: float = 0.02

    @property
    def layers(self) -> tuple[tuple[int, int], ...]:
        """(kernel, stride) of each conv, input to output."""
        return PIXEL_LAYERS

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, return_features: bool = False) -> Output:
        """Logits, one per pixel, for (input, image) pairs concatenated on channels.

        With `return_features`, (logits, features): the 2 feature maps after each LeakyReLU.
        """
        use_bias = conv_bias(self.norm)
        conv = dict(
            kernel_size=(1, 1),
            kernel_init=weight_init(self.init_type, self.init_gain),
            dtype=self.dtype,
        )
        h = nn.Conv(self.ndf, use_bias=True, name="conv_0", **conv)(x.astype(self.dtype))
        features = [nn.leaky_relu(h, 0.2)]
        h = nn.Conv(2 * self.ndf, use_bias=use_bias, name="conv_1", **conv)(features[-1])
        h = Norm(self.norm, self.dtype, self.init_gain, name="norm_1")(h, train=train)
        features.append(nn.leaky_relu(h, 0.2))
        logits = nn.Conv(1, use_bias=use_bias, name="logits", **conv)(features[-1])
        return (logits, features) if return_features else logits


# --- the registry ------------------------------------------------------------------------------


def _n_layers(model_config: Any) -> int:
    """`model.n_layers_d`, checked."""
    n_layers = model_config.n_layers_d
    if n_layers < 1:
        raise ConfigError(f"model.n_layers_d must be >= 1, got {n_layers}")
    return n_layers


@DISCRIMINATORS.register("basic")
def _basic(model_config: Any) -> PatchDiscriminator:
    """The paper's 70x70 PatchGAN (3 stride-2 layers)."""
    return PatchDiscriminator(ndf=model_config.ndf, n_layers=3, **model_options(model_config))


@DISCRIMINATORS.register("n_layers")
def _patch(model_config: Any) -> PatchDiscriminator:
    """The PatchGAN with `model.n_layers_d` stride-2 layers."""
    n_layers = _n_layers(model_config)
    return PatchDiscriminator(
        ndf=model_config.ndf, n_layers=n_layers, **model_options(model_config)
    )


@DISCRIMINATORS.register("pixel")
def _pixel(model_config: Any) -> PixelDiscriminator:
    """The PixelGAN (1x1 patches)."""
    return PixelDiscriminator(ndf=model_config.ndf, **model_options(model_config))


def create_discriminator(model_config: Any) -> nn.Module:
    """The discriminator named by `model_config.discriminator`.

    Raises a ConfigError naming the field for an unknown name, norm or init type,
    or a bad `model.n_layers_d`.
    """
    return DISCRIMINATORS.get(model_config.discriminator)(model_config)


def discriminator_layers(model_config: Any) -> tuple[tuple[int, int], ...]:
    """(kernel, stride) of each conv of the discriminator `model_config` names."""
    return create_discriminator(model_config).layers


def receptive_field(model_config: Any) -> int:
    """The side of the input patch that one discriminator logit sees.

    From the layer arithmetic: r = 1 + sum_i (k_i - 1) * prod_{j<i} s_j, e.g.
    16 for n_layers 1, 70 for the paper's default (3), 286 for 5, 1 for pixel.
    """
    field, jump = 1, 1
    for kernel, stride in discriminator_layers(model_config):
        field += (kernel - 1) * jump
        jump *= stride
    return field
