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
    conv_bias,
    maybe_spectral,
    model_options,
    reflect_pad,
    spectral_norm_on,
    up_layer,
    upsample_options,
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

    Options beyond the paper (all off by default, which is the paper's network
    bit for bit): `upsample` `resize_conv` makes each `up_k` a `ResizeConv`
    (`upsample_method` nearest or bilinear, then 3x3) instead of the transposed
    conv; `spectral_norm` normalises every conv kernel (`maybe_spectral`);
    `remat` rematerialises each encoder and decoder block (`nn.remat`: its
    activations are recomputed in the backward pass), the same function and
    parameters with less memory.
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
    upsample: str = "transpose"
    upsample_method: str = "nearest"
    spectral_norm: bool = False
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Translate images `x` in [-1, 1] (NHWC) to images in [-1, 1]."""
        n = self.num_downs
        if n < 2:
            raise ValueError(f"a U-Net needs at least 2 downsamplings, got {n}")
        # channels[k]: the output channels of down_k (k = 1 .. n); channels[0]: the image's.
        channels = [self.out_channels] + [min(self.ngf * 2**i, self.ngf * 8) for i in range(n)]
        noisy = dropout_blocks(self.dropout_layout, n) if self.dropout_rate > 0 else ()

        def down(module: nn.Module, h: jax.Array, k: int) -> jax.Array:
            return module._down_block(h, k, channels[k], train)

        def up(module: nn.Module, h: jax.Array, skip: jax.Array | None, k: int) -> jax.Array:
            return module._up_block(h, skip, k, channels[k - 1], k in noisy, train)

        if self.remat:
            # Each block's activations are recomputed in the backward pass instead of
            # kept: the lifted functions keep the submodules' names and dropout keys.
            down, up = nn.remat(down, static_argnums=(2,)), nn.remat(up, static_argnums=(3,))
        skips = {}
        h = x.astype(self.dtype)
        for k in range(1, n + 1):
            h = skips[k] = down(self, h, k)
        for k in range(n, 0, -1):
            h = up(self, h, skips[k] if k < n and self.skip_connections else None, k)
        return h

    def _down_block(self, h: jax.Array, k: int, features: int, train: bool) -> jax.Array:
        """Encoder block k: [LeakyReLU] -> `down_k` -> [`down_k_norm`]."""
        if k > 1:
            h = nn.leaky_relu(h, 0.2)
        conv = down_conv(
            features,
            use_bias=conv_bias(self.norm),
            dtype=self.dtype,
            kernel_init=weight_init(self.init_type, self.init_gain),
            name=f"down_{k}",
        )
        h = maybe_spectral(conv, h, spectral_norm=self.spectral_norm, train=train)
        if 1 < k < self.num_downs:
            h = self._norm(f"down_{k}_norm")(h, train=train)
        return h

    def _up_block(
        self, h: jax.Array, skip: jax.Array | None, k: int, features: int, noisy: bool, train: bool
    ) -> jax.Array:
        """Decoder block k: [skip, h] -> ReLU -> `up_k` -> `up_k_norm` [-> dropout]; tanh at k = 1.

        The concatenation is inside the block, so that with `remat` it is recomputed
        rather than kept beside the skip and `h` it copies.
        """
        if skip is not None:
            h = jnp.concatenate([skip, h], axis=-1)
        h = nn.relu(h)
        outermost = k == 1  # a bias (no norm follows), then tanh
        conv = up_layer(
            self.upsample,
            self.upsample_method,
            features,
            outermost or conv_bias(self.norm),
            self.dtype,
            init_type=self.init_type,
            init_gain=self.init_gain,
            name=f"up_{k}",
        )
        h = maybe_spectral(conv, h, spectral_norm=self.spectral_norm, train=train)
        if outermost:
            return jnp.tanh(h)
        h = self._norm(f"up_{k}_norm")(h, train=train)
        if noisy:
            h = nn.Dropout(self.dropout_rate, name=f"up_{k}_dropout")(h, deterministic=not train)
        return h

    def _norm(self, name: str) -> Norm:
        return Norm(self.norm, self.dtype, self.init_gain, name=name)


class ResnetBlock(nn.Module):
    """The reference's ResnetBlock: x + [pad, conv3x3, norm, ReLU, dropout, pad, conv3x3, norm].

    Dropout only when `dropout_rate` > 0 (the reference's `use_dropout`).
    Names: `conv_1`, `norm_1`, `dropout`, `conv_2`, `norm_2`; with
    `spectral_norm`, both convs are spectrally normalised (`maybe_spectral`).
    """

    features: int
    norm: str = "batch"
    dropout_rate: float = 0.0
    init_type: str = "normal"
    init_gain: float = 0.02
    dtype: Any = jnp.float32
    spectral_norm: bool = False

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
        sn = dict(spectral_norm=self.spectral_norm, train=train)
        h = maybe_spectral(nn.Conv(**conv, name="conv_1"), reflect_pad(x, 1), **sn)
        h = nn.relu(Norm(**norm, name="norm_1")(h, train=train))
        if self.dropout_rate > 0:  # the reference's use_dropout: between the two convs
            h = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(h)
        h = maybe_spectral(nn.Conv(**conv, name="conv_2"), reflect_pad(h, 1), **sn)
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

    Options as `UnetGenerator`'s: `upsample` (`resize_conv`: 3x3 after the
    resize), `spectral_norm` (every conv), `remat` (each residual block).
    """

    n_blocks: int = 9
    out_channels: int = 3
    ngf: int = 64
    norm: str = "batch"
    dropout_rate: float = 0.5
    init_type: str = "normal"
    init_gain: float = 0.02
    dtype: Any = jnp.float32
    upsample: str = "transpose"
    upsample_method: str = "nearest"
    spectral_norm: bool = False
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Translate images `x` in [-1, 1] (NHWC) to images in [-1, 1]."""
        kernel_init = weight_init(self.init_type, self.init_gain)
        conv = dict(use_bias=conv_bias(self.norm), kernel_init=kernel_init, dtype=self.dtype)
        init = dict(init_type=self.init_type, init_gain=self.init_gain)

        def norm_relu(h: jax.Array, name: str) -> jax.Array:
            norm = Norm(self.norm, self.dtype, self.init_gain, name=name)
            return nn.relu(norm(h, train=train))

        sn = dict(spectral_norm=self.spectral_norm, train=train)
        stem = nn.Conv(self.ngf, (7, 7), padding="VALID", name="stem", **conv)
        h = norm_relu(maybe_spectral(stem, reflect_pad(x.astype(self.dtype), 3), **sn), "stem_norm")
        for i, mult in enumerate((2, 4), start=1):  # 3x3, stride 2, zero padding 1
            down = nn.Conv(self.ngf * mult, (3, 3), 2, ((1, 1), (1, 1)), name=f"down_{i}", **conv)
            h = norm_relu(maybe_spectral(down, h, **sn), f"down_{i}_norm")

        def residual(module: nn.Module, h: jax.Array, i: int) -> jax.Array:
            block = ResnetBlock(
                self.ngf * 4,
                self.norm,
                self.dropout_rate,
                dtype=self.dtype,
                spectral_norm=self.spectral_norm,
                name=f"block_{i}",
                **init,
            )
            return block(h, train=train)

        if self.remat:  # a lifted function: the block keeps its name and dropout keys
            residual = nn.remat(residual, static_argnums=(2,))
        for i in range(1, self.n_blocks + 1):
            h = residual(self, h, i)
        for i, mult in enumerate((2, 1), start=1):  # ConvTranspose2d(k=3, s=2, p=1, out_pad=1)
            up = up_layer(
                self.upsample,
                self.upsample_method,
                self.ngf * mult,
                conv["use_bias"],
                self.dtype,
                kernel_size=3,
                name=f"up_{i}",
                **init,
            )
            h = norm_relu(maybe_spectral(up, h, **sn), f"up_{i}_norm")
        head = nn.Conv(
            self.out_channels,
            (7, 7),
            padding="VALID",
            kernel_init=kernel_init,
            dtype=self.dtype,
            name="head",
        )
        return jnp.tanh(maybe_spectral(head, reflect_pad(h, 3), **sn))


# --- the registry ------------------------------------------------------------------------------


def _options(model_config: Any, out_channels: int) -> dict[str, Any]:
    """The constructor arguments every generator takes, validated."""
    remat = getattr(model_config, "remat", False)
    if not isinstance(remat, bool):
        raise ConfigError(f"model.remat must be True or False, got {remat!r}")
    return dict(
        out_channels=out_channels,
        ngf=model_config.ngf,
        dropout_rate=model_config.dropout_rate,
        spectral_norm=spectral_norm_on(model_config, "g"),
        remat=remat,
        **upsample_options(model_config),
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
# Deeper U-Nets for high-resolution crops (pix2pixHD's 2048x1024 / 1024x512 regime):
# unet_512 takes 512x512 and 1024x512 (the shorter side sets the depth), unet_1024 1024x1024.
GENERATORS.register("unet_512")(_unet(9))
GENERATORS.register("unet_1024")(_unet(10))
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
