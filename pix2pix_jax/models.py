"""Linen modules of pix2pix: the U-Net generator and the PatchGAN discriminator.

The architectures follow Isola et al. (2017), appendix 6.1, with the layer
details of the reference PyTorch implementation (junyanz/pytorch-CycleGAN-and-
pix2pix), so that parameter counts and layouts match it exactly:

* every convolution is 4x4 with padding 1; the encoder and the first
  discriminator layers use stride 2;
* weights are drawn from N(0, 0.02) and batch-norm scales from N(1, 0.02);
* a convolution carries a bias only where no affine normalisation follows it.

All modules are pure functions of ``{'params', 'batch_stats'}`` and their
inputs. Images are NHWC.
"""

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

NORMS = ("batch", "sync_batch", "instance", "none")
# The pmap/shard_map axis over which `sync_batch` averages batch statistics.
BATCH_AXIS = "batch"

conv_init = nn.initializers.normal(stddev=0.02)


def norm_scale_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """Batch-norm scale initialiser N(1, 0.02), as in the paper's reference code."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def has_affine_norm(norm: str) -> bool:
    """Whether `norm` has its own learned shift, making a preceding conv bias redundant."""
    return norm in ("batch", "sync_batch")


class Norm(nn.Module):
    """The normalisation layer named by `kind` (one of `NORMS`).

    `batch` normalises with the statistics of the per-device batch (the
    paper's batch-1 behaviour when each device holds one image); `sync_batch`
    averages the statistics over the data-parallel axis; `instance` is the
    reference's InstanceNorm2d (no affine parameters, no running statistics).
    """

    kind: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Normalise `x` (NHWC); batch statistics in training, running averages otherwise."""
        if self.kind in ("batch", "sync_batch"):
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,  # PyTorch's momentum=0.1 for the running averages
                epsilon=1e-5,
                scale_init=norm_scale_init,
                axis_name=BATCH_AXIS if self.kind == "sync_batch" else None,
                dtype=self.dtype,
            )(x)
        if self.kind == "instance":
            return nn.InstanceNorm(epsilon=1e-5, use_scale=False, use_bias=False, dtype=self.dtype)(
                x
            )
        if self.kind == "none":
            return x
        raise ValueError(f"model.norm={self.kind!r} is not one of {NORMS}")


def down_conv(features: int, *, use_bias: bool, dtype: Any, strides: int = 2) -> nn.Conv:
    """The 4x4, padding-1 convolution used throughout pix2pix (stride 2 by default)."""
    return nn.Conv(
        features,
        (4, 4),
        strides=(strides, strides),
        padding=((1, 1), (1, 1)),
        use_bias=use_bias,
        kernel_init=conv_init,
        dtype=dtype,
    )


# Output phase p of a stride-2, padding-1, 4x4 transposed convolution reads
# input rows (i - 1, i) for p = 0 and (i, i + 1) for p = 1, with these kernel
# taps and this padding of the input. Derived from out[2i + p] = sum over
# j, k with 2j - 1 + k = 2i + p of x[j] * w[k].
_PHASE_TAPS = ((3, 1), (2, 0))
_PHASE_PADDING = ((1, 0), (0, 1))


class UpConv(nn.Module):
    """A 4x4, stride-2, padding-1 transposed convolution (PyTorch semantics).

    The kernel is stored as (4, 4, in, out) with the meaning of PyTorch's
    ConvTranspose2d weight transposed to HWIO, so released weights convert
    by a transpose. It is computed by the sub-pixel (phase) decomposition:
    each of the four output phases is a 2x2 convolution of the input with a
    slice of the kernel, and the phases are interleaved. This does the same
    arithmetic as the transposed convolution, with no zeros multiplied, and
    its gradients are ordinary convolutions, which XLA:CPU runs far faster
    than the kernel gradient of `nn.ConvTranspose`.
    """

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Upsample `x` (NHWC) by 2 in height and width."""
        kernel = self.param("kernel", conv_init, (4, 4, x.shape[-1], self.features))
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        phases = []
        for row in range(2):
            row_phases = []
            for col in range(2):
                taps = kernel[jnp.array(_PHASE_TAPS[row])][:, jnp.array(_PHASE_TAPS[col])]
                row_phases.append(
                    lax.conv_general_dilated(
                        x,
                        taps,
                        window_strides=(1, 1),
                        padding=(_PHASE_PADDING[row], _PHASE_PADDING[col]),
                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                    )
                )
            phases.append(jnp.stack(row_phases, axis=3))  # N, H, W, col, C
        y = jnp.stack(phases, axis=2)  # N, H, row, W, col, C
        n, h, _, w, _, c = y.shape
        y = y.reshape(n, 2 * h, 2 * w, c)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        return y


def unet_depth(image_size: int) -> int:
    """The number of stride-2 downsamplings that take `image_size` to 1x1."""
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"a U-Net needs a power-of-two image size >= 8, got {image_size}")
    return image_size.bit_length() - 1


class UnetGenerator(nn.Module):
    """The pix2pix U-Net: encoder C64-C128-C256-C512-..., mirrored decoder, skips.

    Encoder blocks are LeakyReLU(0.2) -> conv -> norm (no activation before the
    first block, no norm on the first and innermost blocks). Decoder blocks are
    ReLU -> up-conv -> norm, fed the concatenation [encoder skip, decoder
    output] as the reference does; the outermost ends in tanh. As in the
    paper's appendix and the original Lua code, dropout (0.5) follows the
    norm in the first three decoder blocks from the bottleneck; it is the
    generator's only noise source, at train and at test time.
    """

    num_downs: int
    out_channels: int = 3
    ngf: int = 64
    norm: str = "batch"
    dropout_rate: float = 0.5
    num_dropout_blocks: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Translate images `x` in [-1, 1] (NHWC) to images in [-1, 1]."""
        if self.num_downs < 2:
            raise ValueError(f"a U-Net needs at least 2 downsamplings, got {self.num_downs}")
        use_bias = not has_affine_norm(self.norm)
        channels = [min(self.ngf * 2**i, self.ngf * 8) for i in range(self.num_downs)]
        innermost = self.num_downs - 1
        skips = []
        h = x.astype(self.dtype)
        for level, features in enumerate(channels):
            if level > 0:
                h = nn.leaky_relu(h, 0.2)
            h = down_conv(features, use_bias=use_bias, dtype=self.dtype)(h)
            if 0 < level < innermost:
                h = Norm(self.norm, self.dtype)(h, train=train)
            skips.append(h)
        for level in reversed(range(self.num_downs)):
            if level < innermost:
                h = jnp.concatenate([skips[level], h], axis=-1)
            h = nn.relu(h)
            if level == 0:
                h = UpConv(self.out_channels, use_bias=True, dtype=self.dtype)(h)
                return jnp.tanh(h)
            h = UpConv(channels[level - 1], use_bias=use_bias, dtype=self.dtype)(h)
            h = Norm(self.norm, self.dtype)(h, train=train)
            if innermost - level < self.num_dropout_blocks and self.dropout_rate > 0:
                h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        raise AssertionError("unreachable")


class PatchDiscriminator(nn.Module):
    """The PatchGAN discriminator: one logit per overlapping image patch.

    With `n_layers` = 3 each logit sees a 70x70 patch (the paper's default):
    C64 (no norm) - C128 - C256 - C512 (stride 1) - a 1-channel conv.
    """

    ndf: int = 64
    n_layers: int = 3
    norm: str = "batch"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Logits, one per patch, for (input, image) pairs concatenated on channels."""
        use_bias = not has_affine_norm(self.norm)
        h = down_conv(self.ndf, use_bias=True, dtype=self.dtype)(x.astype(self.dtype))
        h = nn.leaky_relu(h, 0.2)
        for n in range(1, self.n_layers + 1):
            stride = 2 if n < self.n_layers else 1
            features = self.ndf * min(2**n, 8)
            h = down_conv(features, use_bias=use_bias, dtype=self.dtype, strides=stride)(h)
            h = Norm(self.norm, self.dtype)(h, train=train)
            h = nn.leaky_relu(h, 0.2)
        return down_conv(1, use_bias=True, dtype=self.dtype, strides=1)(h)


GENERATORS = ("unet_256", "unet_128", "unet")
DISCRIMINATORS = ("basic", "n_layers")


def create_generator(model_config: Any, image_size: int, out_channels: int) -> nn.Module:
    """The generator named by `model_config.generator`, sized for `image_size`."""
    name = model_config.generator
    depths = {"unet_256": 8, "unet_128": 7, "unet": unet_depth(image_size)}
    if name not in depths:
        raise ValueError(f"model.generator={name!r} is not one of {GENERATORS}")
    num_downs = depths[name]
    if image_size % 2**num_downs:
        raise ValueError(
            f"model.generator={name!r} downsamples {num_downs} times and needs image_size "
            f"divisible by {2**num_downs}; got image_size={image_size}"
        )
    return UnetGenerator(
        num_downs=num_downs,
        out_channels=out_channels,
        ngf=model_config.ngf,
        norm=_checked_norm(model_config.norm),
        dropout_rate=model_config.dropout_rate,
        dtype=jnp.dtype(model_config.compute_dtype),
    )


def create_discriminator(model_config: Any) -> nn.Module:
    """The discriminator named by `model_config.discriminator`."""
    name = model_config.discriminator
    n_layers = {"basic": 3, "n_layers": model_config.n_layers_d}.get(name)
    if n_layers is None:
        raise ValueError(f"model.discriminator={name!r} is not one of {DISCRIMINATORS}")
    if n_layers < 1:
        raise ValueError(f"model.n_layers_d must be >= 1, got {n_layers}")
    return PatchDiscriminator(
        ndf=model_config.ndf,
        n_layers=n_layers,
        norm=_checked_norm(model_config.norm),
        dtype=jnp.dtype(model_config.compute_dtype),
    )


def _checked_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"model.norm={norm!r} is not one of {NORMS}")
    return norm


def count_params(params: Any) -> int:
    """The number of scalars in a parameter pytree."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(params))
