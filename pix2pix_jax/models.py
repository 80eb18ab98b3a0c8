"""Linen modules of pix2pix: the generators and the discriminators.

Generators: the U-Net, its encoder-decoder ablation (no skips) and the ResNet
generator; discriminators: the n-layer PatchGAN and the 1x1 PixelGAN.

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

All modules are pure functions of ``{'params', 'batch_stats'}`` and their
inputs. Images are NHWC.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

NORMS = ("batch", "sync_batch", "instance", "none")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
# The pmap/shard_map axis over which `sync_batch` averages batch statistics.
BATCH_AXIS = "batch"

Initializer = Callable[..., jax.Array]

conv_init = nn.initializers.normal(stddev=0.02)


def weight_init(init_type: str, gain: float, *, transposed: bool = False) -> Initializer:
    """The reference's `init_weights` for one conv kernel stored as HWIO.

    normal: N(0, gain); xavier: xavier_normal (std = gain * sqrt(2 / (fan_in +
    fan_out))); kaiming: kaiming_normal(a=0, mode='fan_in') (std = sqrt(2 /
    fan_in), gain unused, as the reference); orthogonal: orthogonal(gain).

    PyTorch computes fans on its own weight layout: a Conv2d weight (out, in,
    kh, kw) has fan_in = in*kh*kw, which is flax's HWIO convention. A
    ConvTranspose2d weight is (in, out, kh, kw) and PyTorch still reads dim 1
    as fan_in, i.e. fan_in = out*kh*kw, and orthogonal_ flattens it to rows =
    in. For `transposed` kernels (our (kh, kw, in, out) up-conv kernels) we
    therefore swap the axes so that fan_in counts `out` and the orthogonal
    matrix's rows are `in`, reproducing the reference's scales exactly.
    """
    in_axis, out_axis = (-1, -2) if transposed else (-2, -1)
    if init_type == "normal":
        return nn.initializers.normal(stddev=gain)
    if init_type == "xavier":
        return nn.initializers.variance_scaling(gain**2, "fan_avg", "normal", in_axis, out_axis)
    if init_type == "kaiming":
        return nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis, out_axis)
    if init_type == "orthogonal":
        # PyTorch's matrix is (rows=out_axis, cols=rest); flax orthogonalises the
        # transpose, (rest, column_axis), which is orthogonal iff that one is.
        return nn.initializers.orthogonal(scale=gain, column_axis=out_axis)
    raise ValueError(f"model.init_type={init_type!r} is not one of {INIT_TYPES}")


def norm_scale_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """Batch-norm scale initialiser N(1, 0.02), as in the paper's reference code."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def scale_init(gain: float) -> Initializer:
    """Batch-norm scale initialiser N(1, gain): the reference's normal_(weight, 1.0, gain)."""

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return 1.0 + gain * jax.random.normal(key, shape, dtype)

    return init


def has_affine_norm(norm: str) -> bool:
    """Whether `norm` has its own learned shift, making a preceding conv bias redundant."""
    return norm in ("batch", "sync_batch")


class Norm(nn.Module):
    """The normalisation layer named by `kind` (one of `NORMS`).

    `batch` normalises with the statistics of the per-device batch (the
    paper's batch-1 behaviour when each device holds one image); `sync_batch`
    averages the statistics over the data-parallel axis; `instance` is the
    reference's InstanceNorm2d (no affine parameters, no running statistics).
    Batch-norm scales start at N(1, `init_gain`).
    """

    kind: str
    dtype: Any = jnp.float32
    init_gain: float = 0.02

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Normalise `x` (NHWC); batch statistics in training, running averages otherwise."""
        if self.kind in ("batch", "sync_batch"):
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,  # PyTorch's momentum=0.1 for the running averages
                epsilon=1e-5,
                scale_init=scale_init(self.init_gain),
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


# Below these input sizes (H * W) a convolution on XLA:CPU is dominated by moving its
# weights, and its gradients by transposing them; an im2col + dot computes the
# same sums with the weights read once in place (measured: 4-10x faster at 2x2-8x8
# inputs with 512 channels, equal at 32x32; slower above). GPU convolutions keep
# the convolution primitive.
DOT_MAX_POSITIONS = {"down": 32 * 32, "up": 16 * 16}


def conv_by_dot(
    x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Sequence[tuple[int, int]]
) -> jax.Array:
    """An NHWC x HWIO convolution (explicit padding, no dilation) as im2col and one dot.

    Equal to `lax.conv_general_dilated` with the same arguments up to the order
    of the float sums.
    """
    (kh, kw), (sh, sw) = kernel.shape[:2], strides
    x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    columns = [
        x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = jnp.concatenate(columns, axis=-1) if len(columns) > 1 else columns[0]
    return jnp.einsum("nhwk,ko->nhwo", patches, kernel.reshape(-1, kernel.shape[-1]))


def _use_dot(x: jax.Array, kind: str) -> bool:
    return jax.default_backend() == "cpu" and x.shape[1] * x.shape[2] <= DOT_MAX_POSITIONS[kind]


def down_conv_primitive(x, kernel, strides, padding, **kwargs) -> jax.Array:
    """`lax.conv_general_dilated` as nn.Conv calls it, by `conv_by_dot` where that is faster."""
    plain = (
        not isinstance(padding, str)
        and kwargs.get("feature_group_count", 1) == 1
        and all(d in (None, 1) or tuple(d) == (1, 1) for d in
                (kwargs.get("lhs_dilation"), kwargs.get("rhs_dilation")))
        and kwargs.get("dimension_numbers")
        == lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
    )  # fmt: skip
    if plain and _use_dot(x, "down"):
        return conv_by_dot(x, kernel, strides, padding)
    return lax.conv_general_dilated(x, kernel, strides, padding, **kwargs)


def down_conv(
    features: int,
    *,
    use_bias: bool,
    dtype: Any,
    strides: int = 2,
    kernel_init: Initializer = conv_init,
) -> nn.Conv:
    """The 4x4, padding-1 convolution used throughout pix2pix (stride 2 by default)."""
    return nn.Conv(
        features,
        (4, 4),
        strides=(strides, strides),
        padding=((1, 1), (1, 1)),
        use_bias=use_bias,
        kernel_init=kernel_init,
        dtype=dtype,
        conv_general_dilated=down_conv_primitive,
    )


def _phase_taps(kernel_size: int, padding: int, phase: int) -> tuple[tuple[int, ...], tuple]:
    """Kernel taps and input padding of one output phase of a stride-2 transposed conv.

    By definition out[o] = sum over i, k with 2i - padding + k = o of x[i] w[k].
    For o = 2m + phase this reads x[m + d] with d = (phase + padding - k) / 2
    for the taps k of matching parity: a small stride-1 convolution over
    x[m + d_min .. m + d_max], taps ordered by increasing d (decreasing k),
    with the input padded by (-d_min, d_max) so that it has one output per m.
    For 4x4/padding 1 this gives taps (3, 1) and (2, 0); for 3x3/padding 1
    (output_padding 1), taps (1,) and (2, 0).
    """
    taps = tuple(k for k in reversed(range(kernel_size)) if (phase + padding - k) % 2 == 0)
    d_min = (phase + padding - taps[0]) // 2
    d_max = (phase + padding - taps[-1]) // 2
    return taps, (-d_min, d_max)


def _tap_slice(taps: tuple[int, ...]) -> slice:
    """The slice that picks `taps` (decreasing, step 2) out of a kernel axis."""
    stop = taps[-1] - 1
    return slice(taps[0], None if stop < 0 else stop, -2)


class UpConv(nn.Module):
    """A stride-2, padding-1 transposed convolution (PyTorch semantics) that doubles H, W.

    `kernel_size` 4 is pix2pix's ConvTranspose2d(k=4, s=2, p=1); 3 is the
    ResNet generator's ConvTranspose2d(k=3, s=2, p=1, output_padding=1).
    The kernel is stored as (k, k, in, out) with the meaning of PyTorch's
    ConvTranspose2d weight transposed to HWIO, so released weights convert
    by a transpose. It is computed by the sub-pixel (phase) decomposition:
    each of the four output phases is a small convolution of the input with
    a slice of the kernel, and the phases are interleaved. This does the same
    arithmetic as the transposed convolution, with no zeros multiplied, and
    its gradients are ordinary convolutions, which XLA:CPU runs far faster
    than the kernel gradient of `nn.ConvTranspose`.
    """

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_size: int = 4
    init_type: str = "normal"
    init_gain: float = 0.02

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Upsample `x` (NHWC) by 2 in height and width."""
        k = self.kernel_size
        if k not in (3, 4):  # output_padding = 2 + 2 * padding - k must be 0 or 1
            raise ValueError(f"UpConv supports kernel sizes 3 and 4, got {k}")
        init = weight_init(self.init_type, self.init_gain, transposed=True)
        kernel = self.param("kernel", init, (k, k, x.shape[-1], self.features))
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        use_dot = _use_dot(x, "up")
        phases = []
        for row in range(2):
            row_taps, row_padding = _phase_taps(k, 1, row)
            row_phases = []
            for col in range(2):
                col_taps, col_padding = _phase_taps(k, 1, col)
                # Static strided slices, not gathers: their gradients are pads, not scatters.
                taps = kernel[_tap_slice(row_taps)][:, _tap_slice(col_taps)]
                padding = (row_padding, col_padding)
                if use_dot:
                    row_phases.append(conv_by_dot(x, taps, (1, 1), padding))
                else:
                    row_phases.append(
                        lax.conv_general_dilated(
                            x, taps, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
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

    With `skip_connections` False it is the paper's encoder-decoder ablation:
    the same layers, but each decoder block sees only the decoder output, so
    its up-conv has half the input channels.
    """

    num_downs: int
    out_channels: int = 3
    ngf: int = 64
    norm: str = "batch"
    dropout_rate: float = 0.5
    num_dropout_blocks: int = 3
    dtype: Any = jnp.float32
    skip_connections: bool = True
    init_type: str = "normal"
    init_gain: float = 0.02

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Translate images `x` in [-1, 1] (NHWC) to images in [-1, 1]."""
        if self.num_downs < 2:
            raise ValueError(f"a U-Net needs at least 2 downsamplings, got {self.num_downs}")
        use_bias = not has_affine_norm(self.norm)
        kernel_init = weight_init(self.init_type, self.init_gain)
        up = dict(dtype=self.dtype, init_type=self.init_type, init_gain=self.init_gain)
        channels = [min(self.ngf * 2**i, self.ngf * 8) for i in range(self.num_downs)]
        innermost = self.num_downs - 1
        skips = []
        h = x.astype(self.dtype)
        for level, features in enumerate(channels):
            if level > 0:
                h = nn.leaky_relu(h, 0.2)
            h = down_conv(features, use_bias=use_bias, dtype=self.dtype, kernel_init=kernel_init)(h)
            if 0 < level < innermost:
                h = Norm(self.norm, self.dtype, self.init_gain)(h, train=train)
            skips.append(h)
        for level in reversed(range(self.num_downs)):
            if level < innermost and self.skip_connections:
                h = jnp.concatenate([skips[level], h], axis=-1)
            h = nn.relu(h)
            if level == 0:
                h = UpConv(self.out_channels, use_bias=True, **up)(h)
                return jnp.tanh(h)
            h = UpConv(channels[level - 1], use_bias=use_bias, **up)(h)
            h = Norm(self.norm, self.dtype, self.init_gain)(h, train=train)
            if innermost - level < self.num_dropout_blocks and self.dropout_rate > 0:
                h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        raise AssertionError("unreachable")


def reflect_pad(x: jax.Array, width: int) -> jax.Array:
    """PyTorch's ReflectionPad2d(width) on NHWC (the edge pixel is not repeated)."""
    return jnp.pad(x, ((0, 0), (width, width), (width, width), (0, 0)), mode="reflect")


class ResnetBlock(nn.Module):
    """The reference's ResnetBlock: x + [pad, conv3x3, norm, ReLU, dropout, pad, conv3x3, norm].

    Dropout only when `dropout_rate` > 0 (the reference's `use_dropout`).
    """

    features: int
    norm: str = "batch"
    dropout_rate: float = 0.0
    init_type: str = "normal"
    init_gain: float = 0.02
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Apply the block to `x` (NHWC, `features` channels); the shape is kept."""
        conv = dict(
            features=self.features,
            kernel_size=(3, 3),
            padding="VALID",
            use_bias=not has_affine_norm(self.norm),
            kernel_init=weight_init(self.init_type, self.init_gain),
            dtype=self.dtype,
        )
        h = nn.Conv(**conv)(reflect_pad(x, 1))
        h = nn.relu(Norm(self.norm, self.dtype, self.init_gain)(h, train=train))
        if self.dropout_rate > 0:  # the reference's use_dropout: between the two convs
            h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        h = nn.Conv(**conv)(reflect_pad(h, 1))
        return x + Norm(self.norm, self.dtype, self.init_gain)(h, train=train)


class ResnetGenerator(nn.Module):
    """The reference's ResnetGenerator (`resnet_6blocks`, `resnet_9blocks`).

    c7s1-ngf, d(2 ngf), d(4 ngf), `n_blocks` residual blocks at 4 ngf, u(2 ngf),
    u(ngf), c7s1-out, tanh; 7x7 convolutions see reflection-padded inputs, the
    downsampling convs are 3x3/stride 2/padding 1 and the upsampling ones are
    3x3 transposed convs (stride 2, padding 1, output_padding 1). Every conv
    but the last is followed by norm and ReLU; the image side must be a
    multiple of 4.
    """

    n_blocks: int = 9
    out_channels: int = 3
    ngf: int = 64
    norm: str = "batch"
    dropout_rate: float = 0.5
    init_type: str = "normal"
    init_gain: float = 0.02
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Translate images `x` in [-1, 1] (NHWC) to images in [-1, 1]."""
        use_bias = not has_affine_norm(self.norm)
        kernel_init = weight_init(self.init_type, self.init_gain)
        conv = dict(use_bias=use_bias, kernel_init=kernel_init, dtype=self.dtype)

        def norm_relu(h: jax.Array) -> jax.Array:
            return nn.relu(Norm(self.norm, self.dtype, self.init_gain)(h, train=train))

        h = nn.Conv(self.ngf, (7, 7), padding="VALID", **conv)(reflect_pad(x.astype(self.dtype), 3))
        h = norm_relu(h)
        init = dict(init_type=self.init_type, init_gain=self.init_gain)
        for mult in (2, 4):  # 3x3, stride 2, zero padding 1
            h = norm_relu(nn.Conv(self.ngf * mult, (3, 3), 2, ((1, 1), (1, 1)), **conv)(h))
        for _ in range(self.n_blocks):
            block = ResnetBlock(
                self.ngf * 4, self.norm, self.dropout_rate, dtype=self.dtype, **init
            )
            h = block(h, train=train)
        for mult in (2, 1):  # ConvTranspose2d(k=3, s=2, p=1, output_padding=1)
            up = UpConv(self.ngf * mult, use_bias, self.dtype, kernel_size=3, **init)
            h = norm_relu(up(h))
        h = nn.Conv(
            self.out_channels, (7, 7), padding="VALID", kernel_init=kernel_init, dtype=self.dtype
        )(reflect_pad(h, 3))
        return jnp.tanh(h)


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
    """

    ndf: int = 64
    n_layers: int = 3
    norm: str = "batch"
    dtype: Any = jnp.float32
    init_type: str = "normal"
    init_gain: float = 0.02

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Logits, one per patch, for (input, image) pairs concatenated on channels."""
        use_bias = not has_affine_norm(self.norm)
        layers = patch_layers(self.n_layers)
        h = x.astype(self.dtype)
        for i, (kernel, stride) in enumerate(layers):
            first, last = i == 0, i == len(layers) - 1
            h = nn.Conv(
                1 if last else self.ndf * min(2**i, 8),
                (kernel, kernel),
                strides=(stride, stride),
                padding=((1, 1), (1, 1)),
                use_bias=first or last or use_bias,  # no norm after the first and last
                kernel_init=weight_init(self.init_type, self.init_gain),
                dtype=self.dtype,
                conv_general_dilated=down_conv_primitive,
            )(h)
            if last:
                return h
            if not first:
                h = Norm(self.norm, self.dtype, self.init_gain)(h, train=train)
            h = nn.leaky_relu(h, 0.2)
        raise AssertionError("unreachable")


class PixelDiscriminator(nn.Module):
    """The reference's PixelDiscriminator (PixelGAN): one logit per pixel, 1x1 convs only.

    C64 (1x1, no norm) - C128 (1x1, norm) - a 1-channel 1x1 conv; LeakyReLU
    0.2 between. As in the reference, the last conv has a bias only where the
    other normed convs do (`use_bias`), and the receptive field is 1 pixel.
    """

    ndf: int = 64
    norm: str = "batch"
    dtype: Any = jnp.float32
    init_type: str = "normal"
    init_gain: float = 0.02

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Logits, one per pixel, for (input, image) pairs concatenated on channels."""
        use_bias = not has_affine_norm(self.norm)
        conv = dict(kernel_size=(1, 1), kernel_init=weight_init(self.init_type, self.init_gain))
        h = nn.Conv(self.ndf, use_bias=True, dtype=self.dtype, **conv)(x.astype(self.dtype))
        h = nn.leaky_relu(h, 0.2)
        h = nn.Conv(2 * self.ndf, use_bias=use_bias, dtype=self.dtype, **conv)(h)
        h = nn.leaky_relu(Norm(self.norm, self.dtype, self.init_gain)(h, train=train), 0.2)
        return nn.Conv(1, use_bias=use_bias, dtype=self.dtype, **conv)(h)


GENERATORS = ("unet_256", "unet_128", "unet", "encoder_decoder", "resnet_6blocks", "resnet_9blocks")
DISCRIMINATORS = ("basic", "n_layers", "pixel")
_RESNET_BLOCKS = {"resnet_6blocks": 6, "resnet_9blocks": 9}


def create_generator(
    model_config: Any, image_shape: int | tuple[int, int], out_channels: int
) -> nn.Module:
    """The generator named by `model_config.generator`, sized for `image_shape` (H, W or side)."""
    name = model_config.generator
    if name not in GENERATORS:
        raise ValueError(f"model.generator={name!r} is not one of {GENERATORS}")
    height, width = (image_shape, image_shape) if isinstance(image_shape, int) else image_shape
    common = dict(
        out_channels=out_channels,
        ngf=model_config.ngf,
        norm=_checked_norm(model_config.norm),
        dropout_rate=model_config.dropout_rate,
        dtype=jnp.dtype(model_config.compute_dtype),
        **_checked_init(model_config),
    )
    if name in _RESNET_BLOCKS:
        # Two stride-2 convs, then reflect-padding 1 at 1/4 size.
        if height % 4 or width % 4 or min(height, width) < 8:
            raise ValueError(
                f"model.generator={name!r} downsamples 2 times and needs image sides divisible "
                f"by 4 (and >= 8); got {height}x{width}"
            )
        return ResnetGenerator(n_blocks=_RESNET_BLOCKS[name], **common)
    num_downs = {"unet_256": 8, "unet_128": 7}.get(name) or unet_depth(min(height, width))
    if height % 2**num_downs or width % 2**num_downs:
        raise ValueError(
            f"model.generator={name!r} downsamples {num_downs} times and needs image sides "
            f"divisible by {2**num_downs}; got {height}x{width}"
        )
    return UnetGenerator(num_downs=num_downs, skip_connections=name != "encoder_decoder", **common)


def create_discriminator(model_config: Any) -> nn.Module:
    """The discriminator named by `model_config.discriminator`."""
    layers = discriminator_layers(model_config)
    common = dict(
        ndf=model_config.ndf,
        norm=_checked_norm(model_config.norm),
        dtype=jnp.dtype(model_config.compute_dtype),
        **_checked_init(model_config),
    )
    if model_config.discriminator == "pixel":
        return PixelDiscriminator(**common)
    return PatchDiscriminator(n_layers=len(layers) - 2, **common)


def discriminator_layers(model_config: Any) -> tuple[tuple[int, int], ...]:
    """(kernel, stride) of each conv of the discriminator `model_config` names."""
    name = model_config.discriminator
    if name == "pixel":
        return PIXEL_LAYERS
    n_layers = {"basic": 3, "n_layers": model_config.n_layers_d}.get(name)
    if n_layers is None:
        raise ValueError(f"model.discriminator={name!r} is not one of {DISCRIMINATORS}")
    if n_layers < 1:
        raise ValueError(f"model.n_layers_d must be >= 1, got {n_layers}")
    return patch_layers(n_layers)


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


def _checked_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"model.norm={norm!r} is not one of {NORMS}")
    return norm


def _checked_init(model_config: Any) -> dict[str, Any]:
    # Configs written before these fields existed get the reference's defaults.
    init_type = getattr(model_config, "init_type", "normal")
    init_gain = getattr(model_config, "init_gain", 0.02)
    if init_type not in INIT_TYPES:
        raise ValueError(f"model.init_type={init_type!r} is not one of {INIT_TYPES}")
    if not isinstance(init_gain, int | float) or not init_gain > 0:
        raise ValueError(f"model.init_gain must be a positive number, got {init_gain!r}")
    return dict(init_type=init_type, init_gain=float(init_gain))


def count_params(params: Any) -> int:
    """The number of scalars in a parameter pytree."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(params))
