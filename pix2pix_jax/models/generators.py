"""The generators: the pix2pix U-Net, its encoder-decoder ablation, the ResNet generator.

`GENERATORS` (config field `model.generator`) maps each name to a builder
`(model_config, (height, width), out_channels) -> module`; `create_generator`
looks the name up. Each module's docstring lists the names of its submodules,
which are those of its parameter tree (and what `convert_weights` maps the
reference's PyTorch tensors to).
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
    UpConv,
    conv_bias,
    model_options,
    reflect_pad,
    weight_init,
)
from pix2pix_jax.registry import Registry

GeneratorBuilder = Callable[[Any, tuple[int, int], int], nn.Module]
GENERATORS: Registry[GeneratorBuilder] = Registry("model.generator")


# model.dropout_layout: which U-Net decoder blocks hold dropout (see `dropout_blocks`).
DROPOUT_LAYOUTS = ("paper", "pytorch")


def dropout_blocks(layout: str, num_downs: int) -> tuple[int, ...]:
    """The blocks k whose up-conv `up_k` is followed by dropout in a U-Net of `num_downs`.

    `paper` (the paper's appendix and its Lua code): the first three decoder blocks
    from the bottleneck, k = n, n-1, n-2 (for unet_256 their outputs are 2x2, 4x4 and
    8x8). `pytorch` (the reference PyTorch port): its `num_downs - 5` middle blocks
    built with `use_dropout`, k = n-1 .. 5, one block further out (4x4, 8x8 and 16x16
    for unet_256; two blocks for unet_128, none below 6 downsamplings).
    """
    if layout == "paper":
        return tuple(k for k in range(num_downs, num_downs - 3, -1) if k > 1)
    if layout == "pytorch":
        return tuple(range(num_downs - 1, 4, -1))
    raise ConfigError(f"model.dropout_layout={layout!r} is not one of {DROPOUT_LAYOUTS}")


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
    generator's only noise source, at train and at test time. `dropout_layout`
    `pytorch` moves it to the reference PyTorch port's blocks (`dropout_blocks`).

    With `skip_connections` False it is the paper's encoder-decoder ablation:
    the same layers, but each decoder block sees only the decoder output, so
    its up-conv has half the input channels.

    Names, by block k = 1 (outermost, full size) .. n = `num_downs` (innermost),
    as the reference's nested UnetSkipConnectionBlocks: `down_k` (the 4x4
    stride-2 conv), `down_k_norm` (k = 2 .. n-1), `up_k` (the up-conv back to
    block k's input size), `up_k_norm` (k = 2 .. n), `up_k_dropout`.
    """

    num_downs: int
    out_channels: int = 3
    ngf: int = 64
    norm: str = "batch"
    dropout_rate: float = 0.5
    dropout_layout: str = "paper"
    dtype: Any = jnp.float32
    skip_connections: bool = True
    init_type: str = "normal"
    init_gain: float = 0.02

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Translate images `x` in [-1, 1] (NHWC) to images in [-1, 1]."""
        n = self.num_downs
        if n < 2:
            raise ValueError(f"a U-Net needs at least 2 downsamplings, got {n}")
        use_bias = conv_bias(self.norm)
        kernel_init = weight_init(self.init_type, self.init_gain)
        up = dict(dtype=self.dtype, init_type=self.init_type, init_gain=self.init_gain)
        # channels[k]: the output channels of down_k (k = 1 .. n); channels[0]: the image's.
        channels = [self.out_channels] + [min(self.ngf * 2**i, self.ngf * 8) for i in range(n)]
        skips = {}
        noisy = dropout_blocks(self.dropout_layout, n) if self.dropout_rate > 0 else ()
        h = x.astype(self.dtype)
        for k in range(1, n + 1):
            if k > 1:
                h = nn.leaky_relu(h, 0.2)
            h = down_conv(
                channels[k],
                use_bias=use_bias,
                dtype=self.dtype,
                kernel_init=kernel_init,
                name=f"down_{k}",
            )(h)
            if 1 < k < n:
                h = self._norm(f"down_{k}_norm")(h, train=train)
            skips[k] = h
        for k in range(n, 0, -1):
            if k < n and self.skip_connections:
                h = jnp.concatenate([skips[k], h], axis=-1)
            h = nn.relu(h)
            if k == 1:  # the outermost block: a bias (no norm follows), then tanh
                return jnp.tanh(UpConv(channels[0], use_bias=True, name="up_1", **up)(h))
            h = UpConv(channels[k - 1], use_bias=use_bias, name=f"up_{k}", **up)(h)
            h = self._norm(f"up_{k}_norm")(h, train=train)
            if k in noisy:
                dropout = nn.Dropout(self.dropout_rate, name=f"up_{k}_dropout")
                h = dropout(h, deterministic=not train)
        raise AssertionError("unreachable")

    def _norm(self, name: str) -> Norm:
        return Norm(self.norm, self.dtype, self.init_gain, name=name)


class ResnetBlock(nn.Module):
    """The reference's ResnetBlock: x + [pad, conv3x3, norm, ReLU, dropout, pad, conv3x3, norm].

    Dropout only when `dropout_rate` > 0 (the reference's `use_dropout`).
    Names: `conv_1`, `norm_1`, `dropout`, `conv_2`, `norm_2`.
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
            use_bias=conv_bias(self.norm),
            kernel_init=weight_init(self.init_type, self.init_gain),
            dtype=self.dtype,
        )
        norm = dict(kind=self.norm, dtype=self.dtype, init_gain=self.init_gain)
        h = nn.Conv(**conv, name="conv_1")(reflect_pad(x, 1))
        h = nn.relu(Norm(**norm, name="norm_1")(h, train=train))
        if self.dropout_rate > 0:  # the reference's use_dropout: between the two convs
            h = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(h)
        h = nn.Conv(**conv, name="conv_2")(reflect_pad(h, 1))
        return x + Norm(**norm, name="norm_2")(h, train=train)


class ResnetGenerator(nn.Module):
    """The reference's ResnetGenerator (`resnet_6blocks`, `resnet_9blocks`).

    c7s1-ngf, d(2 ngf), d(4 ngf), `n_blocks` residual blocks at 4 ngf, u(2 ngf),
    u(ngf), c7s1-out, tanh; 7x7 convolutions see reflection-padded inputs, the
    downsampling convs are 3x3/stride 2/padding 1 and the upsampling ones are
    3x3 transposed convs (stride 2, padding 1, output_padding 1). Every conv
    but the last is followed by norm and ReLU; the image side must be a
    multiple of 4.

    Names, input to output: `stem`, `stem_norm`; `down_1`, `down_1_norm`,
    `down_2`, `down_2_norm`; `block_1` .. `block_<n_blocks>` (`ResnetBlock`s);
    `up_1`, `up_1_norm`, `up_2`, `up_2_norm`; `head` (the c7s1-out conv).
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
        kernel_init = weight_init(self.init_type, self.init_gain)
        conv = dict(use_bias=conv_bias(self.norm), kernel_init=kernel_init, dtype=self.dtype)
        init = dict(init_type=self.init_type, init_gain=self.init_gain)

        def norm_relu(h: jax.Array, name: str) -> jax.Array:
            norm = Norm(self.norm, self.dtype, self.init_gain, name=name)
            return nn.relu(norm(h, train=train))

        stem = nn.Conv(self.ngf, (7, 7), padding="VALID", name="stem", **conv)
        h = norm_relu(stem(reflect_pad(x.astype(self.dtype), 3)), "stem_norm")
        for i, mult in enumerate((2, 4), start=1):  # 3x3, stride 2, zero padding 1
            down = nn.Conv(self.ngf * mult, (3, 3), 2, ((1, 1), (1, 1)), name=f"down_{i}", **conv)
            h = norm_relu(down(h), f"down_{i}_norm")
        for i in range(1, self.n_blocks + 1):
            block = ResnetBlock(
                self.ngf * 4,
                self.norm,
                self.dropout_rate,
                dtype=self.dtype,
                name=f"block_{i}",
                **init,
            )
            h = block(h, train=train)
        for i, mult in enumerate((2, 1), start=1):  # ConvTranspose2d(k=3, s=2, p=1, out_pad=1)
            up = UpConv(
                self.ngf * mult, conv["use_bias"], self.dtype, kernel_size=3, name=f"up_{i}", **init
            )
            h = norm_relu(up(h), f"up_{i}_norm")
        head = nn.Conv(
            self.out_channels,
            (7, 7),
            padding="VALID",
            kernel_init=kernel_init,
            dtype=self.dtype,
            name="head",
        )
        return jnp.tanh(head(reflect_pad(h, 3)))


# --- the registry ------------------------------------------------------------------------------


def _options(model_config: Any, out_channels: int) -> dict[str, Any]:
    """The constructor arguments every generator takes, validated."""
    return dict(
        out_channels=out_channels,
        ngf=model_config.ngf,
        dropout_rate=model_config.dropout_rate,
        **model_options(model_config),
    )


def _resnet(n_blocks: int) -> GeneratorBuilder:
    def build(model_config: Any, size: tuple[int, int], out_channels: int) -> ResnetGenerator:
        height, width = size
        # Two stride-2 convs, then reflect-padding 1 at 1/4 size.
        if height % 4 or width % 4 or min(height, width) < 8:
            raise ConfigError(
                f"model.generator={model_config.generator!r} downsamples 2 times and needs "
                f"image sides divisible by 4 (and >= 8); got {height}x{width}"
            )
        return ResnetGenerator(n_blocks=n_blocks, **_options(model_config, out_channels))

    build.__doc__ = f"The ResNet generator with {n_blocks} residual blocks."
    return build


def _unet(num_downs: int | None, skip_connections: bool = True) -> GeneratorBuilder:
    def build(model_config: Any, size: tuple[int, int], out_channels: int) -> UnetGenerator:
        name, (height, width) = model_config.generator, size
        depth = num_downs
        if depth is None:  # as deep as the shorter side allows: down to 1x1
            try:
                depth = unet_depth(min(height, width))
            except ValueError:
                raise ConfigError(
                    f"model.generator={name!r} needs power-of-two image sides >= 8 "
                    f"(it downsamples to 1x1); got {height}x{width}"
                ) from None
        if height % 2**depth or width % 2**depth:
            raise ConfigError(
                f"model.generator={name!r} downsamples {depth} times and needs image sides "
                f"divisible by {2**depth}; got {height}x{width}"
            )
        layout = getattr(model_config, "dropout_layout", "paper")
        dropout_blocks(layout, depth)  # validates the field
        return UnetGenerator(
            num_downs=depth,
            skip_connections=skip_connections,
            dropout_layout=layout,
            **_options(model_config, out_channels),
        )

    kind = "U-Net" if skip_connections else "encoder-decoder (a U-Net without skips)"
    build.__doc__ = f"The {kind} with {num_downs or 'log2(image side)'} downsamplings."
    return build


GENERATORS.register("unet_256")(_unet(8))
GENERATORS.register("unet_128")(_unet(7))
GENERATORS.register("unet")(_unet(None))
GENERATORS.register("encoder_decoder")(_unet(None, skip_connections=False))
GENERATORS.register("resnet_6blocks")(_resnet(6))
GENERATORS.register("resnet_9blocks")(_resnet(9))


def create_generator(
    model_config: Any, image_shape: int | tuple[int, int], out_channels: int
) -> nn.Module:
    """The generator named by `model_config.generator`, sized for `image_shape` (H, W or side).

    Raises a ConfigError naming the field for an unknown name, norm or init type,
    and for image sides the generator cannot take.
    """
    build = GENERATORS.get(model_config.generator)
    height, width = (image_shape, image_shape) if isinstance(image_shape, int) else image_shape
    return build(model_config, (height, width), out_channels)
