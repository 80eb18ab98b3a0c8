"""FCN-8s in Flax, with the geometry of Caffe's deploy network, fed from a `.caffemodel`.

The segmenter of the paper's FCN-score (Isola et al. 2017, Sec. 4.2; the
script phillipi/pix2pix scripts/eval_cityscapes/evaluate.py) is FCN-8s (Long,
Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation")
trained on Cityscapes at 256x256, upsampled, released as
`fcn-8s-cityscapes.caffemodel` (`WEIGHTS_URL`, from the script's
download_fcn8s.sh) with a `deploy.prototxt`. The network is the one that
shelhamer/fcn.berkeleyvision.org voc-fcn8s/net.py builds, with 19 outputs:

* VGG-16's thirteen 3x3 convolutions (+ReLU) in five stages, the first padded
  by 100 pixels (so any input size works), the others by 1; after each stage
  a 2x2/2 max pool that, as Caffe's pooling, rounds its output size up;
* fc6 (7x7, no padding, 4096) and fc7 (1x1, 4096) with ReLU (the dropout of
  training is off in the deploy network), score_fr (1x1, classes);
* upscore2 (a 4x4/2 deconvolution without bias), + score_pool4 (1x1 on pool4)
  cropped at offset 5; upscore_pool4 (4x4/2), + score_pool3 (1x1 on pool3)
  cropped at offset 9; upscore8 (16x16/8); the score cropped at offset 31 to
  the input's size (the offsets net_spec's coord_map computes, written in
  voc-fcn8s/deploy.prototxt as `crop_param { axis: 2 offset: ... }`).

The deconvolutions are fixed bilinear up-samplings in training (lr_mult 0),
but like Caffe this module applies the weights the file holds. Variants
trained "at once" scale pool4 and pool3 by 0.01 and 0.0001 first (`Scale`
layers `scale_pool4`, `scale_pool3`): when the file has them, their factors
are folded into score_pool4 / score_pool3.

Input: NHWC float32, BGR, minus the mean `MEAN_BGR` (see `fcn_score.preprocess`).
Output: the class scores, NHWC, at the input's size.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from pix2pix_jax import caffemodel
from pix2pix_jax.errors import DataError

WEIGHTS_FILE = "fcn-8s-cityscapes.caffemodel"
WEIGHTS_URL = (
    "http://people.eecs.berkeley.edu/~tinghuiz/projects/pix2pix/fcn-8s-cityscapes/" + WEIGHTS_FILE
)
NUM_CLASSES = 19  # Cityscapes' train ids
WIDTH = 64  # VGG-16's first-stage channels; the real network's widths are multiples of it
# VGG-16: (convolutions, channels as a multiple of `width`) per stage.
STAGES = ((2, 1), (2, 2), (3, 4), (3, 8), (3, 8))
FC_MULTIPLE = 64  # fc6/fc7: 4096 = 64 x 64
FIRST_PAD = 100
CROP_POOL4, CROP_POOL3, CROP_SCORE = 5, 9, 31
SCALE_LAYERS = {"scale_pool4": "score_pool4", "scale_pool3": "score_pool3"}


def _caffe_max_pool(x: jax.Array) -> jax.Array:
    # Caffe sizes a pool's output as ceil((H - 2) / 2) + 1: an odd side gets a last,
    # clipped window (padding with -inf, which max pooling never picks).
    pad = ((0, x.shape[1] % 2), (0, x.shape[2] % 2))
    return nn.max_pool(x, (2, 2), (2, 2), pad)


def _crop(x: jax.Array, size: tuple[int, int], offset: int) -> jax.Array:
    """Caffe's Crop layer on axes 1-2 (H, W): `size` from `offset` in both."""
    h, w = size
    if offset + h > x.shape[1] or offset + w > x.shape[2]:
        raise ValueError(f"cannot crop {size} at {offset} from {x.shape}")
    return x[:, offset : offset + h, offset : offset + w]


def deconvolution(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Caffe's Deconvolution (no bias, group 1, no padding) of NHWC `x` by an HWIO kernel.

    out[y * stride + i, x * stride + j] += x[y, x] @ kernel[i, j]. With kernel
    = m * stride (4 = 2 x 2, 16 = 2 x 8 here), this is m x m matrix products of
    the input with stride x stride sub-kernels, each added at a shift of whole
    blocks: no zero-dilated input (XLA:CPU runs the dilated convolution ~100x
    slower) and only one sub-kernel's products in memory at a time.
    """
    k, s = kernel.shape[0], stride
    if k % s or kernel.shape[1] != k:
        raise ValueError(f"a {kernel.shape[:2]} kernel with stride {s}")
    m, (n, h, w, _), o = k // s, x.shape, kernel.shape[-1]
    out = jnp.zeros((n, h + m - 1, w + m - 1, s, s, o), jnp.result_type(x, kernel))
    for a in range(m):
        for b in range(m):
            sub = kernel[a * s : (a + 1) * s, b * s : (b + 1) * s]
            out = out.at[:, a : a + h, b : b + w].add(jnp.einsum("nhwc,ijco->nhwijo", x, sub))
    return out.transpose(0, 1, 3, 2, 4, 5).reshape(n, (h + m - 1) * s, (w + m - 1) * s, o)


class Deconv(nn.Module):
    """Caffe's Deconvolution layer without bias: `deconvolution` with a learned HWIO kernel.

    (In the file the kernel is (input channels, output channels, H, W).)
    """

    features: int
    kernel: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Up-sample NHWC `x`: H -> (H - 1) * stride + kernel."""
        k = self.kernel
        w = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features))
        return deconvolution(x, w, self.stride)


class FCN8s(nn.Module):
    """FCN-8s (Caffe deploy geometry): preprocessed BGR images NHWC -> class scores NHWC.

    `width` scales every VGG stage and fc6/fc7 (64: the real network; tests use
    a few channels). Submodule names are the Caffe layer names.
    """

    width: int = WIDTH
    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """The class scores of each pixel of `x`."""
        size = x.shape[1:3]
        pools = []
        for stage, (convs, multiple) in enumerate(STAGES, start=1):
            for i in range(1, convs + 1):
                pad = FIRST_PAD if stage == i == 1 else 1
                conv = nn.Conv(
                    self.width * multiple, (3, 3), padding=((pad, pad), (pad, pad)),
                    name=f"conv{stage}_{i}",
                )  # fmt: skip
                x = nn.relu(conv(x))
            x = _caffe_max_pool(x)
            pools.append(x)
        fc = self.width * FC_MULTIPLE
        x = nn.relu(nn.Conv(fc, (7, 7), padding="VALID", name="fc6")(x))
        x = nn.relu(nn.Conv(fc, (1, 1), name="fc7")(x))
        n = self.num_classes
        x = nn.Conv(n, (1, 1), name="score_fr")(x)
        x = Deconv(n, 4, 2, name="upscore2")(x)
        skip = nn.Conv(n, (1, 1), name="score_pool4")(pools[3])
        x = x + _crop(skip, x.shape[1:3], CROP_POOL4)
        x = Deconv(n, 4, 2, name="upscore_pool4")(x)
        skip = nn.Conv(n, (1, 1), name="score_pool3")(pools[2])
        x = x + _crop(skip, x.shape[1:3], CROP_POOL3)
        x = Deconv(n, 16, 8, name="upscore8")(x)
        return _crop(x, size, CROP_SCORE)


def expected_shapes(width: int = WIDTH, num_classes: int = NUM_CLASSES) -> dict:
    """The network's parameters as {(layer, 'kernel' | 'bias'): shape}, without computing."""
    x = jax.ShapeDtypeStruct((1, 1, 1, 3), jnp.float32)
    model = FCN8s(width, num_classes)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    return {k: v.shape for k, v in traverse_util.flatten_dict(shapes).items()}


def _caffe_shape(shape: tuple[int, ...], layer: str, leaf: str) -> tuple[int, ...]:
    """Where our HWIO kernel's axes are in Caffe's blob: conv (O, I, H, W), deconv (I, O, H, W)."""
    if leaf == "bias":
        return tuple(shape)
    h, w, i, o = shape
    return (i, o, h, w) if layer.startswith("upscore") else (o, i, h, w)


def _to_flax(array: np.ndarray, layer: str, leaf: str) -> np.ndarray:
    if leaf == "bias":
        return array.reshape(-1)
    order = (2, 3, 0, 1) if layer.startswith("upscore") else (2, 3, 1, 0)
    return array.reshape(array.shape[-4:]).transpose(order)


def _fold_scales(layers: dict[str, caffemodel.Layer], params: dict, source: str) -> None:
    """Fold `scale_pool*` factors (one, or one per channel) into the next 1x1 kernel."""
    for scale_name, conv_name in SCALE_LAYERS.items():
        if scale_name in layers:
            factor = layers[scale_name].blobs[0].data.reshape(-1)
            channels = params[(conv_name, "kernel")].shape[2]
            if factor.size not in (1, channels):
                raise DataError(f"{source}: {scale_name!r} has {factor.size} factors, not FCN-8s's")
            params[(conv_name, "kernel")] = params[(conv_name, "kernel")] * factor[:, None]


def variables_from_layers(
    layers: dict[str, caffemodel.Layer], source: str, width: int = WIDTH,
    num_classes: int = NUM_CLASSES,
) -> dict[str, Any]:  # fmt: skip
    """Flax variables of `FCN8s(width, num_classes)` from a .caffemodel's weighted layers.

    Every layer of the network must be there, with blobs of the right shapes
    and number, and no other weighted layer (besides `scale_pool4/3`) may be;
    a DataError names `source` and the first offending layer.
    """
    hint = f"is it {WEIGHTS_FILE}?"
    shapes = expected_shapes(width, num_classes)
    wanted = sorted({layer for layer, _ in shapes})
    extra = [n for n in layers if n not in wanted and n not in SCALE_LAYERS]
    if extra:
        raise DataError(f"{source}: layer {extra[0]!r} is not part of FCN-8s ({hint})")
    params = {}
    for name in wanted:
        leaves = [leaf for layer, leaf in shapes if layer == name]
        leaves = sorted(leaves, key=("kernel", "bias").index)
        if name not in layers:
            raise DataError(f"{source}: FCN-8s layer {name!r} is missing ({hint})")
        blobs = layers[name].blobs
        if len(blobs) != len(leaves):
            raise DataError(f"{source}: {name!r} has {len(blobs)} blobs, FCN-8s {len(leaves)}")
        for leaf, blob in zip(leaves, blobs, strict=True):
            needed = _caffe_shape(shapes[(name, leaf)], name, leaf)
            if not blob.fits(needed):
                raise DataError(
                    f"{source}: {name!r} {leaf} has shape {blob.data.shape}, FCN-8s needs "
                    f"{needed} ({hint})"
                )
            params[(name, leaf)] = _to_flax(blob.data, name, leaf)
    _fold_scales(layers, params, source)
    return {"params": traverse_util.unflatten_dict(params)}


def load_fcn8s(path: str, width: int = WIDTH, num_classes: int = NUM_CLASSES) -> dict[str, Any]:
    """Flax variables of FCN-8s from the .caffemodel at `path` (checked against `width`)."""
    return variables_from_layers(caffemodel.read_layers(path), path, width, num_classes)


@functools.partial(jax.jit, static_argnames=("width", "num_classes"))
def segment(
    variables: Any, images: jax.Array, width: int = WIDTH, num_classes: int = NUM_CLASSES
) -> jax.Array:
    """The argmax class (uint8) of each pixel of preprocessed images NHWC.

    In full float32 (Caffe's arithmetic): GPUs would otherwise run the
    convolutions in TF32, which moves some argmaxes.
    """
    with jax.default_matmul_precision("highest"):
        scores = FCN8s(width, num_classes).apply(variables, images)
    return jnp.argmax(scores, axis=-1).astype(jnp.uint8)


def make_segmenter(
    variables: Any, width: int = WIDTH, num_classes: int = NUM_CLASSES
) -> Callable[[np.ndarray], np.ndarray]:
    """A function: one preprocessed image H x W x 3 -> its train ids H x W (numpy uint8).

    The variables are put on the default device once.
    """
    on_device = jax.device_put(variables)

    def run(image: np.ndarray) -> np.ndarray:
        return np.asarray(segment(on_device, image[None], width, num_classes))[0]

    return run
