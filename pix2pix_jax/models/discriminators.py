"""The discriminators: the n-layer PatchGAN and the 1x1 PixelGAN.

`DISCRIMINATORS` (config field `model.discriminator`) maps each name to a
builder `model_config -> module`; `create_discriminator` looks the name up.
Both modules take `(input, image)` pairs concatenated on channels and, with
`return_features=True`, also return the feature map of each conv block after
its LeakyReLU (the logits excluded), which pix2pixHD's feature-matching loss
compares between real and fake pairs.

`model.num_d` > 1 wraps the chosen discriminator in a `MultiscaleDiscriminator`
(pix2pixHD, Wang et al. 2018): one copy per scale of the input pyramid, whose
output is a list with one entry per scale; `scales(output)` turns either form
into pix2pixHD's nested lists. `model.spectral_norm` (`d`, `both`) spectrally
normalises every conv of the discriminator (`layers.maybe_spectral`).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pix2pix_jax.errors import ConfigError
from pix2pix_jax.models.cpu_kernels import down_conv
from pix2pix_jax.models.layers import (
    Norm,
    conv_bias,
    maybe_spectral,
    model_options,
    spectral_norm_on,
    weight_init,
)
from pix2pix_jax.registry import Registry

DISCRIMINATORS: Registry[Callable[[Any], nn.Module]] = Registry("model.discriminator")

# One discriminator's output: logits, or (logits, [the feature map after each LeakyReLU,
# input to output]); a MultiscaleDiscriminator's: a list of those, one per scale.
SingleOutput = jax.Array | tuple[jax.Array, list[jax.Array]]
Output = SingleOutput | list[SingleOutput]


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
    spectral_norm: bool = False

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
        sn = dict(spectral_norm=self.spectral_norm, train=train)
        features = []
        h = x.astype(self.dtype)
        for i, (_, stride) in enumerate(self.layers[:-1]):  # all 4x4: `down_conv`
            # No norm after the first conv: that one keeps its bias.
            layer = down_conv(
                self.ndf * min(2**i, 8),
                use_bias=i == 0 or use_bias,
                strides=stride,
                name=f"conv_{i}",
                **conv,
            )
            h = maybe_spectral(layer, h, **sn)
            if i > 0:
                h = Norm(self.norm, self.dtype, self.init_gain, name=f"norm_{i}")(h, train=train)
            h = nn.leaky_relu(h, 0.2)
            features.append(h)
        _, stride = self.layers[-1]
        head = down_conv(1, use_bias=True, strides=stride, name="logits", **conv)
        logits = maybe_spectral(head, h, **sn)
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
    spectral_norm: bool = False

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
        sn = dict(spectral_norm=self.spectral_norm, train=train)
        layer = nn.Conv(self.ndf, use_bias=True, name="conv_0", **conv)
        features = [nn.leaky_relu(maybe_spectral(layer, x.astype(self.dtype), **sn), 0.2)]
        layer = nn.Conv(2 * self.ndf, use_bias=use_bias, name="conv_1", **conv)
        h = Norm(self.norm, self.dtype, self.init_gain, name="norm_1")(
            maybe_spectral(layer, features[-1], **sn), train=train
        )
        features.append(nn.leaky_relu(h, 0.2))
        layer = nn.Conv(1, use_bias=use_bias, name="logits", **conv)
        logits = maybe_spectral(layer, features[-1], **sn)
        return (logits, features) if return_features else logits


def downsample(x: jax.Array) -> jax.Array:
    """pix2pixHD's pyramid step: AvgPool2d(3, stride=2, padding=1, count_include_pad=False)."""
    return nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), count_include_pad=False)


class MultiscaleDiscriminator(nn.Module):
    """pix2pixHD's MultiscaleDiscriminator: `num_d` discriminators on an input pyramid.

    Scale i sees the input average-pooled i times (`downsample`), and each is a
    copy of `scale` (same architecture, its own parameters). The output is a
    list with one entry per scale, full resolution first, each what `scale`
    returns (logits, or (logits, features) with `return_features`); the GAN
    losses sum over it (`losses.discriminator_loss`), as pix2pixHD's GANLoss does.

    Names: `scale_0` (full resolution) .. `scale_<num_d - 1>`, each holding
    `scale`'s names. pix2pixHD numbers its copies the other way round: its
    `layer<num_d - 1 - i>` (or `scale<num_d - 1 - i>_layer<j>`) is our `scale_i`.
    """

    scale: nn.Module
    num_d: int = 3

    @property
    def layers(self) -> tuple[tuple[int, int], ...]:
        """(kernel, stride) of each conv of one scale, input to output."""
        return self.scale.layers

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool, return_features: bool = False
    ) -> list[SingleOutput]:
        """Each scale's output on the pyramid of `x` (NHWC (input, image) pairs)."""
        outputs = []
        for i in range(self.num_d):
            if i > 0:
                x = downsample(x)
            scale = self.scale.clone(parent=self, name=f"scale_{i}")
            outputs.append(scale(x, train=train, return_features=return_features))
        return outputs


def scales(output: Output) -> list[list[jax.Array]]:
    """D's output with features as pix2pixHD's: per scale, [feature maps..., logits].

    `output` is what a discriminator returns with `return_features=True`: one
    (logits, features) pair, or a list of them (`MultiscaleDiscriminator`).
    """
    pairs = output if isinstance(output, list) else [output]
    return [[*features, logits] for logits, features in pairs]


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


def num_scales(model_config: Any) -> int:
    """`model.num_d`, checked (older configs: 1)."""
    num_d = getattr(model_config, "num_d", 1)
    if not isinstance(num_d, int) or isinstance(num_d, bool) or num_d < 1:
        raise ConfigError(f"model.num_d must be an integer >= 1, got {num_d!r}")
    return num_d


def create_discriminator(model_config: Any) -> nn.Module:
    """The discriminator named by `model_config.discriminator`, at `model.num_d` scales.

    With `num_d` 1 it is the named module itself (the paper's parameter tree);
    above, a `MultiscaleDiscriminator` of it. Raises a ConfigError naming the
    field for an unknown name, norm, init type or spectral norm choice, or a bad
    `model.n_layers_d` or `model.num_d`.
    """
    single = DISCRIMINATORS.get(model_config.discriminator)(model_config)
    if spectral_norm_on(model_config, "d"):
        single = single.clone(spectral_norm=True)
    num_d = num_scales(model_config)
    return single if num_d == 1 else MultiscaleDiscriminator(single, num_d)


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
