"""Linen modules of pix2pix: the generators and the discriminators.

Generators (`generators`): the U-Net, its encoder-decoder ablation (no skips)
and the ResNet generator; discriminators (`discriminators`): the n-layer
PatchGAN and the 1x1 PixelGAN; their shared layers (`layers`: norms,
initialisers, the up-convolution) and the XLA:CPU convolution kernels
(`cpu_kernels`). Each config choice is a registry: `GENERATORS`,
`DISCRIMINATORS`, `NORMS`, `INITS`. Beyond the paper, as switches that are off
by default: multi-scale discriminators (`model.num_d`, pix2pixHD), spectral
norm (`model.spectral_norm`), resize-convolutions (`model.upsample`) and
rematerialised generator blocks (`model.remat`).

The architectures follow Isola et al. (2017), appendix 6.1, with the layer
details of the reference PyTorch implementation (junyanz/pytorch-CycleGAN-and-
pix2pix, models/networks.py), so that parameter counts and layouts match it
exactly for the same option:

* U-Net and PatchGAN convolutions are 4x4 with padding 1; the encoder and the
  first discriminator layers use stride 2;
* the ResNet generator (Johnson et al.) is the reference's ResnetGenerator:
  reflection padding, 7x7 and 3x3 convolutions, residual blocks at 1/4 size;
* weights are initialised as the reference's ``init_weights`` (``normal``
  N(0, 0.02) by default) and batch-norm scales from N(1, gain);
* a convolution carries a bias only where no affine normalisation follows it.

Every submodule has an explicit name (listed in each module's docstring), so
parameter trees read as the architecture does. All modules are pure functions
of ``{'params', 'batch_stats'}`` and their inputs. Images are NHWC.
"""

import math
from typing import Any

import jax

from pix2pix_jax.models import cpu_kernels
from pix2pix_jax.models.cpu_kernels import conv_by_dot, down_conv, down_conv_primitive
from pix2pix_jax.models.discriminators import (
    DISCRIMINATORS,
    PIXEL_LAYERS,
    MultiscaleDiscriminator,
    PatchDiscriminator,
    PixelDiscriminator,
    create_discriminator,
    discriminator_layers,
    downsample,
    num_scales,
    patch_layers,
    receptive_field,
    scales,
)
from pix2pix_jax.models.generators import (
    DROPOUT_LAYOUTS,
    GENERATORS,
    ResnetBlock,
    ResnetGenerator,
    UnetGenerator,
    create_generator,
    dropout_blocks,
    unet_depth,
)
from pix2pix_jax.models.layers import (
    INITS,
    NORMS,
    SPECTRAL_NORMS,
    UPSAMPLE_METHODS,
    UPSAMPLES,
    BatchNorm,
    Norm,
    ResizeConv,
    UpConv,
    conv_bias,
    conv_init,
    maybe_spectral,
    model_options,
    norm_scale_init,
    reflect_pad,
    scale_init,
    spectral_norm_on,
    up_layer,
    upsample_options,
    weight_init,
)


def check_config(model_config: Any, image_shape: int | tuple[int, int]) -> None:
    """Raise a ConfigError naming the first unusable field of `config.model`.

    Checks the names (generator, discriminator, norm, init type), the sizes the
    generator needs of `image_shape` (H, W or side) and the options each network
    reads, by running the registries' builders: they validate and return module
    descriptions (Flax dataclasses), and nothing is initialised, traced or applied.
    """
    size = (image_shape, image_shape) if isinstance(image_shape, int) else tuple(image_shape)
    GENERATORS.get(model_config.generator)(model_config, size, 1)
    DISCRIMINATORS.get(model_config.discriminator)(model_config)
    spectral_norm_on(model_config, "d")
    num_scales(model_config)


def count_params(params: Any) -> int:
    """The number of scalars in a parameter pytree."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


__all__ = [
    "DISCRIMINATORS",
    "DROPOUT_LAYOUTS",
    "GENERATORS",
    "INITS",
    "NORMS",
    "BatchNorm",
    "MultiscaleDiscriminator",
    "PIXEL_LAYERS",
    "ResizeConv",
    "SPECTRAL_NORMS",
    "UPSAMPLES",
    "UPSAMPLE_METHODS",
    "Norm",
    "PatchDiscriminator",
    "PixelDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "UnetGenerator",
    "UpConv",
    "check_config",
    "conv_by_dot",
    "conv_init",
    "count_params",
    "cpu_kernels",
    "create_discriminator",
    "create_generator",
    "discriminator_layers",
    "downsample",
    "maybe_spectral",
    "num_scales",
    "scales",
    "spectral_norm_on",
    "up_layer",
    "upsample_options",
    "down_conv",
    "down_conv_primitive",
    "dropout_blocks",
    "conv_bias",
    "model_options",
    "norm_scale_init",
    "patch_layers",
    "receptive_field",
    "reflect_pad",
    "scale_init",
    "unet_depth",
    "weight_init",
]
