"""LPIPS in Flax: the lpips package's released linear heads on a torchvision backbone.

The Learned Perceptual Image Patch Similarity of Zhang, Isola, Efros,
Shechtman, Wang, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric" (CVPR 2018), as the `lpips` package computes it
(richzhang/PerceptualSimilarity, lpips/lpips.py `LPIPS`, version 0.1, not
spatial, in eval mode) for two images in [-1, 1]:

1. the scaling layer: (x - shift) / scale per channel, shift (-.030, -.088,
   -.188), scale (.458, .448, .450);
2. five activations of the backbone (lpips/pretrained_networks.py): AlexNet's
   relu1-relu5 (`features[0:2]`, `[2:5]`, `[5:8]`, `[8:10]`, `[10:12]`) or
   VGG16's relu1_2-relu5_3 (`[0:4]`, `[4:9]`, `[9:16]`, `[16:23]`, `[23:30]`);
3. each unit-normalised over channels (x / (||x|| + 1e-10)), the squared
   difference of the two images' features weighted by the layer's linear head
   (a 1x1 convolution to one channel, no bias; its dropout is off in eval), then
   averaged over space;
4. the sum over the five layers: one distance per image pair.

Grayscale images are repeated to three channels and RGBA loses its alpha.
Where a feature vector is all zeros its norm's gradient is taken as 0
(PyTorch's is NaN there); the values are the package's.

Weights (not downloaded here; read by `torch_weights`, without torch):

* the heads: the package's `lpips/weights/v0.1/alex.pth` or `vgg.pth`, keys
  `lin0.model.1.weight` ... `lin4.model.1.weight` (shape (1, C, 1, 1));
  `lin{i}.model.0.weight` (heads trained without dropout) is read too;
* the backbone: torchvision's ImageNet state_dict of the same network,
  `alexnet-owt-7be5be79.pth` or `vgg16-397923af.pth` (the package loads them
  through `torchvision.models.alexnet/vgg16(pretrained=True)`).

Which backbone the heads belong to is read from their channels (AlexNet: 64,
192, 384, 256, 256; VGG16: 64, 128, 256, 512, 512); the backbone file must be
that network (squeezenet heads are not supported).

`LPIPSDistance` is the evaluation consumer of `evaluate --lpips_weights`:
the mean LPIPS between the generated images, as saved (uint8), and the
targets. `distance` is also the generator loss term `loss.lambda_lpips`.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from pix2pix_jax import torch_weights, vgg
from pix2pix_jax.errors import ConfigError, DataError

HEADS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/"
SHIFT = (-0.030, -0.088, -0.188)  # lpips' ScalingLayer
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # lpips.normalize_tensor's

ALEXNET_LAYERS = (
    ("conv", 1, 11, 4, 2), ("relu",), ("pool", 3, 2),
    ("conv", 3, 5, 1, 2), ("relu",), ("pool", 3, 2),
    ("conv", 6, 3, 1, 1), ("relu",),
    ("conv", 4, 3, 1, 1), ("relu",),
    ("conv", 4, 3, 1, 1), ("relu",), ("pool", 3, 2),
)  # fmt: skip
VGG16_LAYERS = vgg.vgg_layers(((2, 1), (2, 2), (3, 4), (3, 8), (3, 8)))
# kind -> (torchvision model, its `features` layers, the five tapped ReLUs).
BACKBONES = {
    "alex": ("alexnet", ALEXNET_LAYERS, (1, 4, 7, 9, 11)),
    "vgg": ("vgg16", VGG16_LAYERS, (3, 8, 15, 22, 29)),
}
NUM_HEADS = 5


def head_channels(kind: str, width: int = vgg.WIDTH) -> tuple[int, ...]:
    """The channels of the five tapped activations of backbone `kind` of `width`."""
    _, layers, taps = BACKBONES[kind]
    channels = []
    for index, layer in enumerate(layers):
        if layer[0] == "conv":
            current = width * layer[1]
        if index in taps:
            channels.append(current)
    return tuple(channels)


def heads_from_state_dict(state_dict: dict[str, np.ndarray], source: str) -> tuple[str, dict]:
    """(backbone kind, {'lin0': [C0], ...}) of an lpips heads state_dict; DataError if not one."""
    hint = "is it lpips' weights/v0.1/alex.pth or vgg.pth?"
    if "lin5.model.1.weight" in state_dict:
        raise DataError(f"{source}: squeezenet LPIPS heads (lin5, lin6) are not supported")
    heads = {}
    for i in range(NUM_HEADS):
        keys = [f"lin{i}.model.{j}.weight" for j in (1, 0)]
        key = next((k for k in keys if k in state_dict), None)
        if key is None:
            raise DataError(f"{source}: LPIPS head {keys[0]!r} is missing ({hint})")
        weight = state_dict[key]
        if weight.ndim != 4 or weight.shape[0] != 1 or weight.shape[2:] != (1, 1):
            raise DataError(f"{source}: {key!r} has shape {weight.shape}, not (1, C, 1, 1)")
        heads[f"lin{i}"] = np.asarray(weight, np.float32).reshape(-1)
    extra = sorted(set(state_dict) - {f"lin{i}.model.{j}.weight" for i in range(5) for j in (0, 1)})
    if extra:
        raise DataError(f"{source}: unexpected key {extra[0]!r} for LPIPS heads ({hint})")
    channels = tuple(len(heads[f"lin{i}"]) for i in range(NUM_HEADS))
    width = channels[0]
    for kind in BACKBONES:
        if channels == head_channels(kind, width):
            return kind, heads
    raise DataError(
        f"{source}: LPIPS heads of {channels} channels fit neither AlexNet "
        f"{head_channels('alex')} nor VGG16 {head_channels('vgg')} ({hint})"
    )


def load_lpips(heads_path: str, backbone_path: str) -> dict[str, Any]:
    """LPIPS parameters {'net': backbone, 'lins': heads} from the two files.

    The backbone file must be torchvision's state_dict of the network (and
    width) the heads were trained on; a DataError names the file and the key.
    """
    kind, heads = heads_from_state_dict(torch_weights.load_state_dict(heads_path), heads_path)
    model, layers, taps = BACKBONES[kind]
    state_dict = torch_weights.load_state_dict(backbone_path)
    net = vgg.params_from_state_dict(state_dict, backbone_path, layers, taps, model)
    width = vgg.width_of(net)
    if head_channels(kind, width) != tuple(len(h) for h in heads.values()):
        raise DataError(
            f"{backbone_path}: a {model} of width {width}, but the heads of {heads_path} "
            f"are for width {len(heads['lin0'])}"
        )
    return {"net": net, "lins": heads}


def kind_of(params: Any) -> str:
    """'alex' or 'vgg': the backbone of LPIPS parameters (by its number of convolutions)."""
    convs = len(params["net"])
    for kind, (_, layers, taps) in BACKBONES.items():
        if convs == sum(
            1 for i, layer in enumerate(layers) if layer[0] == "conv" and i < max(taps)
        ):
            return kind
    raise ValueError(f"LPIPS parameters with {convs} backbone convolutions")


def _unit(features: jax.Array) -> jax.Array:
    """lpips.normalize_tensor over channels (last axis), with a finite gradient at zero."""
    squares = jnp.sum(features * features, axis=-1, keepdims=True)
    positive = squares > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)
    return features / (norm + EPS)


def distance(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """LPIPS between NHWC images `x` and `y` in [-1, 1]: one float32 distance per pair."""
    _, layers, taps = BACKBONES[kind_of(params)]
    model = vgg.Features(layers, taps, vgg.width_of(params["net"]))
    shift, scale = jnp.asarray(SHIFT, jnp.float32), jnp.asarray(SCALE, jnp.float32)
    fx, fy = (
        model.apply({"params": params["net"]}, (vgg.to_rgb(v) - shift) / scale) for v in (x, y)
    )
    total = jnp.zeros(x.shape[:1], jnp.float32)
    for i, (a, b) in enumerate(zip(fx, fy, strict=True)):
        weighted = jnp.square(_unit(a) - _unit(b)) @ params["lins"][f"lin{i}"]
        total = total + jnp.mean(weighted, axis=(1, 2))
    return total


@jax.jit
def _distance_highest(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    # Full float32, as the package runs on CPU (GPUs would use TF32 otherwise).
    with jax.default_matmul_precision("highest"):
        return distance(params, x, y)


def make_distance_fn(params: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A function: two uint8 NHWC image batches -> their LPIPS per pair (numpy float32).

    The images are mapped to [-1, 1] as the package's `im2tensor` does
    (x / 127.5 - 1); the parameters are put on the default device once.
    """
    on_device = jax.device_put(params)

    def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        x, y = (np.asarray(v, np.float32) / 127.5 - 1.0 for v in (a, b))
        return np.asarray(_distance_highest(on_device, x, y))

    return run


class LPIPSDistance:
    """An eval consumer: the mean LPIPS between generated and target images, as saved (uint8)."""

    def __init__(self, distance_fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
        self.distance_fn = distance_fn
        self.total, self.count = 0.0, 0

    def wants_images(self) -> bool:
        """Every batch's images."""
        return True

    def add(self, images: Any, per_image: dict[str, np.ndarray]) -> None:
        """Add the batch's distances (`images`: an `evaluation.Images`)."""
        if len(images.outputs):
            values = self.distance_fn(images.outputs, images.targets)
            self.total += float(np.sum(values, dtype=np.float64))
            self.count += len(values)

    def result(self) -> dict[str, float]:
        """`lpips`: the mean over the images of all processes."""
        total, count = self.total, self.count
        if jax.process_count() > 1:
            sums = multihost_utils.process_allgather(np.array([total, count], np.float64))
            total, count = float(sums[:, 0].sum()), int(sums[:, 1].sum())
        if count == 0:
            raise DataError("LPIPS of an empty split")
        return {"lpips": total / count}


def make_consumer(heads: str | None, backbone: str | None) -> LPIPSDistance | None:
    """The LPIPS consumer of `evaluate --lpips_weights=HEADS --lpips_backbone=BACKBONE`.

    None without either; both files are read (and checked) here, before any work.
    """
    if not heads and not backbone:
        return None
    if not (heads and backbone):
        raise ConfigError(
            "LPIPS needs both --lpips_weights (lpips' v0.1 alex.pth or vgg.pth) and "
            "--lpips_backbone (torchvision's alexnet or vgg16 state_dict)"
        )
    return LPIPSDistance(make_distance_fn(load_lpips(heads, backbone)))
