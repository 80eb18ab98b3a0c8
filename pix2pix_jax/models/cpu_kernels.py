"""Convolution kernels that XLA:CPU runs faster than its convolution primitive.

On small inputs (a few positions, many channels: the inner layers of the
U-Net and the PatchGAN) a convolution on XLA:CPU is dominated by moving its
weights, and its gradients by transposing them. An im2col followed by one
dot computes the same sums with the weights read once in place. These
kernels pick that path on the CPU backend below a size threshold and leave
every other backend (GPU, TPU) and every larger input on the convolution
primitive. They change the order of float sums only, never the arithmetic.
"""

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Below these input sizes (H * W) the im2col + dot path wins on XLA:CPU (measured:
# 4-10x faster at 2x2-8x8 inputs with 512 channels, equal at 32x32; slower above).
# A module global, so that tests can force either path.
DOT_MAX_POSITIONS = {"down": 32 * 32, "up": 16 * 16}

_NHWC = ("NHWC", "HWIO", "NHWC")


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


@contextlib.contextmanager
def primitives_only() -> Iterator[None]:
    """Trace with XLA's convolution primitive everywhere, never the CPU im2col path.

    For programs that leave this process (`export`): the path is chosen by comparing
    the input's size with a threshold, which a symbolic size cannot answer, and an
    exported program must not depend on the backend of the machine that exported it.
    """
    saved = dict(DOT_MAX_POSITIONS)
    DOT_MAX_POSITIONS.update(dict.fromkeys(saved, 0))
    try:
        yield
    finally:
        DOT_MAX_POSITIONS.update(saved)


def _use_dot(x: jax.Array, kind: str) -> bool:
    """Whether a `kind` ('down' or 'up') convolution of `x` should take the dot path."""
    return jax.default_backend() == "cpu" and x.shape[1] * x.shape[2] <= DOT_MAX_POSITIONS[kind]


def down_conv_primitive(
    x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Any, **kwargs: Any
) -> jax.Array:
    """`lax.conv_general_dilated` as nn.Conv calls it, by `conv_by_dot` where that is faster."""
    # Only the plain NHWC/HWIO case (explicit padding, no groups or dilation) has a dot form.
    plain = (
        not isinstance(padding, str)
        and kwargs.get("feature_group_count", 1) == 1
        and all(d in (None, 1) or tuple(d) == (1, 1) for d in
                (kwargs.get("lhs_dilation"), kwargs.get("rhs_dilation")))
        and kwargs.get("dimension_numbers")
        == lax.conv_dimension_numbers(x.shape, kernel.shape, _NHWC)
    )  # fmt: skip
    if plain and _use_dot(x, "down"):
        return conv_by_dot(x, kernel, strides, padding)
    return lax.conv_general_dilated(x, kernel, strides, padding, **kwargs)


def up_phase_conv(x: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]]) -> jax.Array:
    """One output phase of `UpConv`: a stride-1 NHWC x HWIO convolution, by dot where faster."""
    if _use_dot(x, "up"):
        return conv_by_dot(x, kernel, (1, 1), padding)
    return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_NHWC)


def down_conv(
    features: int,
    *,
    use_bias: bool,
    dtype: Any,
    kernel_init: Callable[..., jax.Array],
    strides: int = 2,
    name: str | None = None,
) -> nn.Conv:
    """The 4x4, padding-1 convolution used throughout pix2pix (stride 2 by default).

    An `nn.Conv` (parameters `kernel`, `bias`) whose primitive is `down_conv_primitive`.
    """
    return nn.Conv(
        features,
        (4, 4),
        strides=(strides, strides),
        padding=((1, 1), (1, 1)),
        use_bias=use_bias,
        kernel_init=kernel_init,
        dtype=dtype,
        conv_general_dilated=down_conv_primitive,
        name=name,
    )
