"""The building blocks shared by the generators and discriminators.

* `NORMS` (config field `model.norm`) and the `Norm` module that applies one;
* `INITS` (config field `model.init_type`), `weight_init` and the batch-norm
  scale initialisers, which reproduce the reference's `init_weights`;
* `UpConv`, PyTorch's stride-2 ConvTranspose2d by the sub-pixel decomposition,
  and `ResizeConv`, its checkerboard-free alternative (`model.upsample`);
* `SPECTRAL_NORMS` (config field `model.spectral_norm`) and `maybe_spectral`,
  which applies a layer with its kernels spectrally normalised;
* `reflect_pad`, `conv_bias` and `model_options`, the validated layer
  options of a model config.

Names: `Norm` holds its normalisation as the child `batch_norm` (parameters
`scale`, `bias`; batch statistics `mean`, `var`) or `instance_norm` (none);
`UpConv` holds the parameters `kernel` (k, k, in, out) and `bias`; `ResizeConv`
is an `nn.Conv` (`kernel` (3, 3, in, out), `bias`) under the up-conv's name.
A spectrally normalised layer keeps its parameters under its own name; its
power-iteration state (flax's `SpectralNorm`: `u` and `sigma`) is in
`batch_stats` under `<layer name>_sn`, keys `<layer name>/kernel/u` and `.../sigma`.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pix2pix_jax.errors import ConfigError
from pix2pix_jax.models import cpu_kernels
from pix2pix_jax.parallel import BATCH_AXIS
from pix2pix_jax.registry import Registry

Initializer = Callable[..., jax.Array]

# --- initialisers ------------------------------------------------------------------------------

# name -> builder(gain, in_axis, out_axis) of a kernel initialiser.
INITS: Registry[Callable[[float, int, int], Initializer]] = Registry("model.init_type")


@INITS.register("normal")
def _normal(gain: float, in_axis: int, out_axis: int) -> Initializer:
    """N(0, gain), the reference's default."""
    return nn.initializers.normal(stddev=gain)


@INITS.register("xavier")
def _xavier(gain: float, in_axis: int, out_axis: int) -> Initializer:
    """xavier_normal: std = gain * sqrt(2 / (fan_in + fan_out))."""
    return nn.initializers.variance_scaling(gain**2, "fan_avg", "normal", in_axis, out_axis)


@INITS.register("kaiming")
def _kaiming(gain: float, in_axis: int, out_axis: int) -> Initializer:
    """kaiming_normal(a=0, mode='fan_in'): std = sqrt(2 / fan_in); gain unused, as the reference."""
    return nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis, out_axis)


@INITS.register("orthogonal")
def _orthogonal(gain: float, in_axis: int, out_axis: int) -> Initializer:
    """orthogonal(gain) on PyTorch's (rows = out_axis, columns = the rest) matrix."""
    # flax orthogonalises the transpose, (rest, column_axis), which is orthogonal iff that one is.
    return nn.initializers.orthogonal(scale=gain, column_axis=out_axis)


conv_init = nn.initializers.normal(stddev=0.02)


def weight_init(init_type: str, gain: float, *, transposed: bool = False) -> Initializer:
    """The reference's `init_weights` for one conv kernel stored as HWIO.

    `init_type` is a name of `INITS` (a ConfigError otherwise). PyTorch computes
    fans on its own weight layout: a Conv2d weight (out, in, kh, kw) has fan_in =
    in*kh*kw, which is flax's HWIO convention. A ConvTranspose2d weight is (in,
    out, kh, kw) and PyTorch still reads dim 1 as fan_in, i.e. fan_in =
    out*kh*kw, and orthogonal_ flattens it to rows = in. For `transposed`
    kernels (our (kh, kw, in, out) up-conv kernels) we therefore swap the axes
    so that fan_in counts `out` and the orthogonal matrix's rows are `in`,
    reproducing the reference's scales exactly.
    """
    in_axis, out_axis = (-1, -2) if transposed else (-2, -1)
    return INITS.get(init_type)(gain, in_axis, out_axis)


def scale_init(gain: float) -> Initializer:
    """Batch-norm scale initialiser N(1, gain): the reference's normal_(weight, 1.0, gain)."""

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return 1.0 + gain * jax.random.normal(key, shape, dtype)

    return init


def norm_scale_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """Batch-norm scale initialiser N(1, 0.02), as in the paper's reference code."""
    return scale_init(0.02)(key, shape, dtype)


# --- normalisation -----------------------------------------------------------------------------

# name -> builder(train=, dtype=, init_gain=) of the layer, called inside a `Norm`.
NORMS: Registry[Callable[..., Callable[[jax.Array], jax.Array]]] = Registry("model.norm")
# The norms after which the reference's convolutions have a bias: its rule is
# `use_bias = norm_layer == nn.InstanceNorm2d`, so batch norm (which has a shift of its
# own) and no norm at all both leave the convolutions without one.
_CONV_BIAS_NORMS = ("instance",)


class BatchNorm(nn.Module):
    """PyTorch's BatchNorm2d on NHWC: batch statistics in training, running averages otherwise.

    Training normalises exactly as `nn.BatchNorm` (float32 statistics, E[x^2] - E[x]^2),
    but the running variance is updated with the unbiased batch variance (n / (n - 1)),
    as PyTorch's is: flax's stores the biased one, which at the paper's batch size 1 is
    3/4 of PyTorch's on a 2x2 map and changes what the reference's `--eval` mode draws.
    n counts the values behind each statistic: the per-device batch's, or for
    `axis_name` (sync_batch) the whole batch's across that axis. PyTorch refuses n = 1;
    here the variance is then kept biased (0). Names as `nn.BatchNorm`'s: parameters
    `scale`, `bias`, batch statistics `mean`, `var`.
    """

    use_running_average: bool
    momentum: float = 0.9  # PyTorch's momentum=0.1 for the running averages
    epsilon: float = 1e-5
    scale_init: Initializer = nn.initializers.ones
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalise `x` (NHWC) over all axes but the last."""
        axes = tuple(range(x.ndim - 1))
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            mean, var = self._batch_statistics(x, axes)
            if not self.is_initializing():
                n = self._count(x, axes)
                unbiased = var * (n / (n - 1)) if n > 1 else var
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
        # The operations of flax's BatchNorm, in its order, so training is bit for bit its.
        shape = (1,) * len(axes) + features
        scale = self.param("scale", self.scale_init, features, jnp.float32).reshape(shape)
        bias = self.param("bias", nn.initializers.zeros, features, jnp.float32).reshape(shape)
        y = x - mean.reshape(shape)
        y = y * (jax.lax.rsqrt(var.reshape(shape) + self.epsilon) * scale)
        y = y + bias
        return y.astype(self.dtype or jnp.result_type(x, jnp.float32))

    def _batch_statistics(self, x: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, ...]:
        """(mean, biased variance) of `x` over `axes` in float32, across `axis_name` if any."""
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        mean, mean_sq = x.mean(axes), jax.lax.square(x).mean(axes)
        if self.axis_name is not None and not self.is_initializing():
            moments = jax.lax.pmean(jnp.stack([mean, mean_sq]), self.axis_name)  # one collective
            mean, mean_sq = moments[0], moments[1]
        return mean, jnp.maximum(0.0, mean_sq - jax.lax.square(mean))

    def _count(self, x: jax.Array, axes: tuple[int, ...]) -> int:
        """The number of values behind each statistic (static)."""
        n = math.prod(x.shape[a] for a in axes)
        return n * jax.lax.axis_size(self.axis_name) if self.axis_name is not None else n


def _batch_norm(axis_name: str | None) -> Callable[..., BatchNorm]:
    """The builder of PyTorch's BatchNorm2d, its statistics averaged over `axis_name` if any."""

    def build(*, train: bool, dtype: Any, init_gain: float) -> BatchNorm:
        return BatchNorm(
            use_running_average=not train,
            scale_init=scale_init(init_gain),
            axis_name=axis_name,
            dtype=dtype,
            name="batch_norm",
        )

    return build


# `batch` normalises with the statistics of the per-device batch (the paper's batch-1
# behaviour when each device holds one image); `sync_batch` averages them over the
# data-parallel axis.
NORMS.register("batch")(_batch_norm(None))
NORMS.register("sync_batch")(_batch_norm(BATCH_AXIS))


@NORMS.register("instance")
def _instance_norm(*, train: bool, dtype: Any, init_gain: float) -> nn.InstanceNorm:
    """The reference's InstanceNorm2d: no affine parameters, no running statistics."""
    return nn.InstanceNorm(
        epsilon=1e-5, use_scale=False, use_bias=False, dtype=dtype, name="instance_norm"
    )


@NORMS.register("none")
def _no_norm(*, train: bool, dtype: Any, init_gain: float) -> Callable[[jax.Array], jax.Array]:
    """The identity."""
    return lambda x: x


def conv_bias(norm: str) -> bool:
    """Whether a convolution that `norm` follows has a bias, as in the reference (instance only)."""
    return norm in _CONV_BIAS_NORMS


class Norm(nn.Module):
    """The normalisation layer named by `kind` (a name of `NORMS`).

    `batch` and `sync_batch` hold a child `batch_norm` whose scales start at
    N(1, `init_gain`); `instance` a parameterless child `instance_norm`;
    `none` is the identity.
    """

    kind: str
    dtype: Any = jnp.float32
    init_gain: float = 0.02

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Normalise `x` (NHWC); batch statistics in training, running averages otherwise."""
        layer = NORMS.get(self.kind)(train=train, dtype=self.dtype, init_gain=self.init_gain)
        return layer(x)


# --- the up-convolution ------------------------------------------------------------------------


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
        phases = []
        for row in range(2):
            row_taps, row_padding = _phase_taps(k, 1, row)
            row_phases = []
            for col in range(2):
                col_taps, col_padding = _phase_taps(k, 1, col)
                # Static strided slices, not gathers: their gradients are pads, not scatters.
                taps = kernel[_tap_slice(row_taps)][:, _tap_slice(col_taps)]
                row_phases.append(cpu_kernels.up_phase_conv(x, taps, (row_padding, col_padding)))
            phases.append(jnp.stack(row_phases, axis=3))  # N, H, W, col, C
        y = jnp.stack(phases, axis=2)  # N, H, row, W, col, C
        n, h, _, w, _, c = y.shape
        y = y.reshape(n, 2 * h, 2 * w, c)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        return y


# model.upsample: how the decoders double H, W; model.upsample_method: resize_conv's resize.
UPSAMPLES = ("transpose", "resize_conv")
UPSAMPLE_METHODS = ("nearest", "bilinear")
_NHWC = ("NHWC", "HWIO", "NHWC")


class ResizeConv(nn.Module):
    """Up-sampling by 2 (nearest or bilinear), then a 3x3, padding-1 convolution.

    The fix for the checkerboard artifacts of transposed convolutions (Odena,
    Dumoulin, Olah, "Deconvolution and Checkerboard Artifacts", Distill 2016):
    every output pixel sees the same number of kernel taps. `method` is
    `nearest` (repeat each pixel) or `bilinear` (`jax.image.resize`: half-pixel
    centres, PyTorch's `align_corners=False`). The convolution's parameters are
    this module's own `kernel` (3, 3, in, out: HWIO, initialised as an ordinary
    conv's) and `bias`, so the parameter tree reads as `UpConv`'s.
    """

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32
    method: str = "nearest"
    init_type: str = "normal"
    init_gain: float = 0.02

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Upsample `x` (NHWC) by 2 in height and width."""
        kernel = self.param(
            "kernel",
            weight_init(self.init_type, self.init_gain),
            (3, 3, x.shape[-1], self.features),
        )
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        n, h, w, c = x.shape
        if self.method == "nearest":
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        elif self.method == "bilinear":
            x = jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear", antialias=False)
        else:
            raise ValueError(
                f"ResizeConv method must be one of {UPSAMPLE_METHODS}, got {self.method!r}"
            )
        y = cpu_kernels.down_conv_primitive(
            x, kernel, (1, 1), ((1, 1), (1, 1)),
            dimension_numbers=jax.lax.conv_dimension_numbers(x.shape, kernel.shape, _NHWC),
        )  # fmt: skip
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        return y


def up_layer(
    upsample: str,
    method: str,
    features: int,
    use_bias: bool,
    dtype: Any,
    *,
    kernel_size: int = 4,
    init_type: str = "normal",
    init_gain: float = 0.02,
    name: str,
) -> nn.Module:
    """The decoder's stride-2 up-sampling layer: `UpConv` (`transpose`) or `ResizeConv`.

    `kernel_size` is the transposed conv's (4 for the U-Net, 3 for the ResNet
    generator); the resize-conv is 3x3 in both.
    """
    init = dict(init_type=init_type, init_gain=init_gain, name=name)
    if upsample == "resize_conv":
        return ResizeConv(features, use_bias, dtype, method, **init)
    return UpConv(features, use_bias, dtype, kernel_size, **init)


# --- spectral normalisation --------------------------------------------------------------------

# model.spectral_norm: the networks whose convolutions are spectrally normalised.
SPECTRAL_NORMS = {"none": "", "d": "d", "g": "g", "both": "gd"}


def maybe_spectral(
    layer: nn.Module, x: jax.Array, *, spectral_norm: bool, train: bool
) -> jax.Array:
    """`layer(x)`, with its kernel divided by its largest singular value if `spectral_norm`.

    Miyato et al. (2018), as SPADE (Park et al. 2019) uses it: flax's `SpectralNorm`,
    one power iteration per call in training (`train`: the new `u` and `sigma` are
    written to `batch_stats`, so the train step keeps them and checkpoints them),
    none otherwise. Kernels are flattened to (k*k*in, out); biases are left alone.
    The wrapper is named `<layer name>_sn`; the layer keeps its own name and params.
    """
    if not spectral_norm:
        return layer(x)
    return nn.SpectralNorm(layer, name=f"{layer.name}_sn")(x, update_stats=train)


# --- helpers -----------------------------------------------------------------------------------


def reflect_pad(x: jax.Array, width: int) -> jax.Array:
    """PyTorch's ReflectionPad2d(width) on NHWC (the edge pixel is not repeated)."""
    return jnp.pad(x, ((0, 0), (width, width), (width, width), (0, 0)), mode="reflect")


def model_options(model_config: Any) -> dict[str, Any]:
    """The validated layer options every model takes: norm, dtype, init_type, init_gain.

    Raises a ConfigError naming the field for an unknown norm or init type or a
    non-positive gain.
    """
    NORMS.get(model_config.norm)
    # Configs written before these fields existed get the reference's defaults.
    init_type = getattr(model_config, "init_type", "normal")
    init_gain = getattr(model_config, "init_gain", 0.02)
    INITS.get(init_type)
    if not isinstance(init_gain, int | float) or not init_gain > 0:
        raise ConfigError(f"model.init_gain must be a positive number, got {init_gain!r}")
    return dict(
        norm=model_config.norm,
        dtype=jnp.dtype(model_config.compute_dtype),
        init_type=init_type,
        init_gain=float(init_gain),
    )


def spectral_norm_on(model_config: Any, network: str) -> bool:
    """Whether `model.spectral_norm` normalises `network` ('g' or 'd'); a ConfigError if unknown."""
    value = getattr(model_config, "spectral_norm", "none")  # older configs: none
    if value not in SPECTRAL_NORMS:
        raise ConfigError(f"model.spectral_norm={value!r} is not one of {tuple(SPECTRAL_NORMS)}")
    return network in SPECTRAL_NORMS[value]


def upsample_options(model_config: Any) -> dict[str, str]:
    """The validated `model.upsample` and `model.upsample_method` (older configs: transpose)."""
    upsample = getattr(model_config, "upsample", "transpose")
    method = getattr(model_config, "upsample_method", "nearest")
    if upsample not in UPSAMPLES:
        raise ConfigError(f"model.upsample={upsample!r} is not one of {UPSAMPLES}")
    if method not in UPSAMPLE_METHODS:
        raise ConfigError(f"model.upsample_method={method!r} is not one of {UPSAMPLE_METHODS}")
    return dict(upsample=upsample, upsample_method=method)
