"""The FID Inception-v3 in Flax: pool3 features [N, 2048] for FID and KID.

This is the network of pytorch-fid (mseitzer/pytorch-fid,
src/pytorch_fid/inception.py, `fid_inception_v3`), which reproduces the
TensorFlow graph `inception-2015-12-05` that the original FID code
(Heusel et al., 2017) used, and differs from torchvision's Inception-v3:

* the average pools of the Mixed_5* (A), Mixed_6b-e (C) and Mixed_7b (E)
  blocks do not count padded zeros (`count_include_pad=False`, as TF does);
* the pool branch of the last block, Mixed_7c, is a 3x3 max pool;
* the 1008-class classifier (`fc.*` in the weights file) is not used: the
  features are the 2048 channels of the final global average pool.

Every convolution has no bias and is followed by batch norm (eps 1e-3, the
running statistics) and ReLU. Images are preprocessed as pytorch-fid does:
bilinearly resized to 299x299 (half-pixel centres, i.e. align_corners=False,
no antialiasing) from [-1, 1]; grayscale is repeated to three channels and
the alpha channel of RGBA is dropped.

Weights: the file `pt_inception-2015-12-05-6726825d.pth` that pytorch-fid
downloads, from

    https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

(the TF graph's weights ported to PyTorch). pix2pix_jax does not download
it: fetch it once and pass its path; it is read by `torch_weights`, without
torch and without executing anything in the file.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from pix2pix_jax import torch_weights
from pix2pix_jax.errors import DataError

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILE
)
INPUT_SIZE = 299  # the resolution the network was trained at
MIN_INPUT_SIZE = 75  # the smallest side the layers accept
FEATURES = 2048

Padding = tuple[int, int]


class BasicConv(nn.Module):
    """torchvision's BasicConv2d: conv (no bias) -> batch norm (eps 1e-3) -> ReLU."""

    features: int
    kernel: Padding = (1, 1)
    strides: int = 1
    padding: Padding = (0, 0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to NHWC `x`."""
        (ph, pw), s = self.padding, self.strides
        x = nn.Conv(
            self.features, self.kernel, (s, s), ((ph, ph), (pw, pw)), use_bias=False, name="conv"
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _avg_pool(x: jax.Array) -> jax.Array:
    # TensorFlow's 3x3 average pool: padded zeros are left out of each mean.
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x: jax.Array, strides: int = 2, pad: int = 0) -> jax.Array:
    return nn.max_pool(x, (3, 3), (strides, strides), ((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
    """Mixed_5b-d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1."""

    pool_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to NHWC `x`."""
        b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(
            BasicConv(48, name="branch5x5_1")(x)
        )
        d = BasicConv(64, name="branch3x3dbl_1")(x)
        d = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(d)
        d = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(d)
        pool = BasicConv(self.pool_features, name="branch_pool")(_avg_pool(x))
        return jnp.concatenate([BasicConv(64, name="branch1x1")(x), b5, d, pool], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a: 3x3/2 | 1x1-3x3-3x3/2 | max pool/2."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to NHWC `x`."""
        b3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
        d = BasicConv(64, name="branch3x3dbl_1")(x)
        d = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(d)
        d = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(d)
        return jnp.concatenate([b3, d, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b-e: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg pool-1x1."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to NHWC `x`."""
        c7 = self.channels_7x7
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        b7 = BasicConv(c7, name="branch7x7_1")(x)
        b7 = BasicConv(c7, **row, name="branch7x7_2")(b7)
        b7 = BasicConv(192, **col, name="branch7x7_3")(b7)
        d = BasicConv(c7, name="branch7x7dbl_1")(x)
        d = BasicConv(c7, **col, name="branch7x7dbl_2")(d)
        d = BasicConv(c7, **row, name="branch7x7dbl_3")(d)
        d = BasicConv(c7, **col, name="branch7x7dbl_4")(d)
        d = BasicConv(192, **row, name="branch7x7dbl_5")(d)
        pool = BasicConv(192, name="branch_pool")(_avg_pool(x))
        return jnp.concatenate([BasicConv(192, name="branch1x1")(x), b7, d, pool], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool/2."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to NHWC `x`."""
        b3 = BasicConv(192, name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = BasicConv(192, name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b (TF's average pool) and Mixed_7c (`max_pool`: the FID graph's max pool)."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to NHWC `x`."""
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        b3 = BasicConv(384, name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                BasicConv(384, **row, name="branch3x3_2a")(b3),
                BasicConv(384, **col, name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        d = BasicConv(448, name="branch3x3dbl_1")(x)
        d = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(d)
        d = jnp.concatenate(
            [
                BasicConv(384, **row, name="branch3x3dbl_3a")(d),
                BasicConv(384, **col, name="branch3x3dbl_3b")(d),
            ],
            axis=-1,
        )
        pooled = _max_pool(x, strides=1, pad=1) if self.max_pool else _avg_pool(x)
        pool = BasicConv(192, name="branch_pool")(pooled)
        return jnp.concatenate([BasicConv(320, name="branch1x1")(x), b3, d, pool], axis=-1)


class FIDInceptionV3(nn.Module):
    """Images (NHWC, 3 channels, in [-1, 1], sides >= 75) -> pool3 features [N, 2048].

    Expects preprocessed images (see `preprocess`); the submodule names are
    those of the PyTorch weights file, so that weights map by name.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """The 2048 pool3 features of each image in `x`."""
        x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool(x)
        x = BasicConv(80, name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool(x)
        for name, pool_features in (("5b", 32), ("5c", 64), ("5d", 64)):
            x = InceptionA(pool_features, name=f"Mixed_{name}")(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, c7 in (("6b", 128), ("6c", 160), ("6d", 160), ("6e", 192)):
            x = InceptionC(c7, name=f"Mixed_{name}")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


def preprocess(images: jax.Array, resize: bool = True) -> jax.Array:
    """Images in [-1, 1] (NHWC, 1, 3 or 4 channels) as the network takes them.

    Grayscale is repeated to RGB and alpha dropped; with `resize` the images
    are resized to 299x299 as pytorch-fid does (F.interpolate bilinear,
    align_corners=False, which does not antialias when shrinking).
    """
    channels = images.shape[-1]
    if channels not in (1, 3, 4):
        raise DataError(f"FID images need 1, 3 or 4 channels, got shape {images.shape}")
    x = jnp.asarray(images, jnp.float32)
    x = jnp.repeat(x, 3, axis=-1) if channels == 1 else x[..., :3]
    if resize:
        shape = (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3)
        x = jax.image.resize(x, shape, "bilinear", antialias=False)
    elif min(x.shape[1:3]) < MIN_INPUT_SIZE:
        raise DataError(f"FID Inception needs images of at least 75x75, got {x.shape[1:3]}")
    return x


@functools.partial(jax.jit, static_argnames="resize")
def features(variables: Any, images: jax.Array, resize: bool = True) -> jax.Array:
    """Pool3 features [N, 2048] of images in [-1, 1] (NHWC): `preprocess`, then the network."""
    return FIDInceptionV3().apply(variables, preprocess(images, resize))


def batched_features(
    variables: Any, images: np.ndarray, batch_size: int = 50, resize: bool = True
) -> np.ndarray:
    """`features` of many images (NHWC, in [-1, 1]), `batch_size` at a time, as numpy.

    The last batch is padded to `batch_size`, so every call runs one compiled shape.
    """
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size])
        n = len(batch)
        if n < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - n, axis=0)])
        chunks.append(np.asarray(features(variables, batch, resize))[:n])
    return np.concatenate(chunks) if chunks else np.zeros((0, FEATURES), np.float32)


def make_feature_fn(
    variables: Any, batch_size: int = 50, resize: bool = True
) -> Callable[[np.ndarray], np.ndarray]:
    """A function: images [N, H, W, C] in [-1, 1] -> pool3 features [N, 2048] (numpy).

    The variables are put on the default device once, not on every call.
    """
    on_device = jax.device_put(variables)
    return functools.partial(batched_features, on_device, batch_size=batch_size, resize=resize)


# Where each kind of tensor of the PyTorch file goes: (collection, flax name, conversion).
_LEAVES: dict[str, tuple[str, str, Callable[[np.ndarray], np.ndarray]]] = {
    "conv.weight": ("params", "kernel", lambda w: w.transpose(2, 3, 1, 0)),  # OIHW -> HWIO
    "bn.weight": ("params", "scale", lambda w: w),
    "bn.bias": ("params", "bias", lambda w: w),
    "bn.running_mean": ("batch_stats", "mean", lambda w: w),
    "bn.running_var": ("batch_stats", "var", lambda w: w),
}
# Entries of the file that the features do not use.
_IGNORED = ("fc.weight", "fc.bias")


def expected_shapes() -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """The network's variables as {(collection, module, ..., name): shape}, without computing."""
    x = jax.ShapeDtypeStruct((1, MIN_INPUT_SIZE, MIN_INPUT_SIZE, 3), jnp.float32)
    return traverse_util.flatten_dict(jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), x))


def variables_from_state_dict(state_dict: dict[str, np.ndarray], source: str) -> dict[str, Any]:
    """Flax variables of `FIDInceptionV3` from the PyTorch state_dict of the FID Inception.

    Every variable must be present with the right shape and nothing else may
    be (besides `fc.*` and `num_batches_tracked`); a ValueError names the
    first offending key and `source` (the file).
    """
    shapes = expected_shapes()
    flat = {}
    hint = f"is it {WEIGHTS_FILE}?"
    for key, value in state_dict.items():
        if key in _IGNORED or key.endswith(".num_batches_tracked"):
            continue
        parts = key.split(".")
        collection, leaf, convert = _LEAVES.get(".".join(parts[-2:]), (None, None, None))
        path = (collection, *parts[:-1], leaf)
        if path not in shapes:
            raise DataError(f"{source}: unexpected key {key!r} for the FID Inception ({hint})")
        torch_shape, needed = tuple(np.shape(value)), _torch_shape(shapes[path].shape, leaf)
        if torch_shape != needed:
            raise DataError(
                f"{source}: {key!r} has shape {torch_shape}, the FID Inception needs {needed} "
                f"({hint})"
            )
        flat[path] = convert(np.asarray(value, np.float32))
    missing = sorted(set(shapes) - set(flat))
    if missing:
        raise DataError(
            f"{source}: {len(missing)} FID Inception weights are missing, e.g. under "
            f"{'.'.join(missing[0][1:-1])!r} ({hint})"
        )
    return traverse_util.unflatten_dict(flat)


def load_fid_inception(path: str) -> dict[str, Any]:
    """Flax variables of the FID Inception from the PyTorch weights file at `path`.

    `path` is pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (see the
    module docstring for where it comes from).
    """
    return variables_from_state_dict(torch_weights.load_state_dict(path), path)


def _torch_shape(shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    # Our HWIO kernels are OIHW in the file.
    return tuple(shape[i] for i in (3, 2, 0, 1)) if leaf == "kernel" else tuple(shape)
