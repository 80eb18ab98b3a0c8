"""VGG19 features in Flax, fed from torchvision's `vgg19` state_dict, and pix2pixHD's VGG loss.

The perceptual loss of pix2pixHD (Wang, Liu, Zhu, Tao, Kautz, Catanzaro,
"High-Resolution Image Synthesis and Semantic Manipulation with Conditional
GANs", CVPR 2018; NVIDIA/pix2pixHD models/networks.py `VGGLoss`, `Vgg19`):

    sum_i w_i * mean |VGG_i(G(x)) - VGG_i(y)|,   w = (1/32, 1/16, 1/8, 1/4, 1)

over the activations relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 of
torchvision's VGG19 (`features[0:2]`, `[2:7]`, `[7:12]`, `[12:21]`, `[21:30]`),
the target's features held constant. As in pix2pixHD the images go in as G
makes them, in [-1, 1]: they are NOT shifted to [0, 1] nor normalised with
ImageNet's mean and std (which torchvision's weights were trained with).
pix2pixHD uses it with the weight `lambda_feat` = 10 (`loss.lambda_vgg`).
Grayscale images are repeated to three channels and RGBA loses its alpha
(pix2pixHD knows RGB only).

Weights: torchvision's ImageNet VGG19, `vgg19-dcbbb69b.pth` (`WEIGHTS_URL`;
what `torchvision.models.vgg19(pretrained=True)` downloads), read by
`torch_weights` without torch. Only the convolutions up to conv5_1 are used;
the rest of the file (conv5_2-5_4, the classifier) is allowed and ignored.
Anything else is refused with a DataError naming the file and the key.

The layers are described once (`Layer` tuples in torchvision's `features`
order) and built by `Features`, which `lpips` reuses for VGG16 and AlexNet;
the Flax module of `features[i]` is named `features_i`.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pix2pix_jax import torch_weights
from pix2pix_jax.errors import DataError

WEIGHTS_FILE = "vgg19-dcbbb69b.pth"
WEIGHTS_URL = "https://download.pytorch.org/models/" + WEIGHTS_FILE
WIDTH = 64  # torchvision's first-stage channels; the other widths are multiples of it

# A layer of a torchvision `features` Sequential: ("conv", width multiple, kernel, stride,
# padding), ("relu",) or ("pool", kernel, stride) (floor-mode max pool, no padding).
Layer = tuple


def vgg_layers(stages: Sequence[tuple[int, int]]) -> tuple[Layer, ...]:
    """The layers of a torchvision VGG's `features`: per (convolutions, width multiple) stage."""
    layers: list[Layer] = []
    for convs, multiple in stages:
        layers += [("conv", multiple, 3, 1, 1), ("relu",)] * convs
        layers.append(("pool", 2, 2))
    return tuple(layers)


VGG19_LAYERS = vgg_layers(((2, 1), (2, 2), (4, 4), (4, 8), (4, 8)))
VGG19_TAPS = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)  # pix2pixHD's VGGLoss.weights


class Features(nn.Module):
    """The activations at `taps` (indices into `layers`) of a torchvision `features` stack.

    NHWC in, a list of NHWC activations out; only the layers up to the last
    tap are built. `width` scales every convolution (64: torchvision's).
    """

    layers: tuple[Layer, ...]
    taps: tuple[int, ...]
    width: int = WIDTH

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        """The tapped activations of `x`, in the order of `taps`."""
        outputs = []
        for index, layer in enumerate(self.layers[: max(self.taps) + 1]):
            if layer[0] == "conv":
                _, multiple, k, s, p = layer
                x = nn.Conv(
                    self.width * multiple, (k, k), (s, s), padding=((p, p), (p, p)),
                    name=f"features_{index}",
                )(x)  # fmt: skip
            elif layer[0] == "relu":
                x = nn.relu(x)
            else:
                _, k, s = layer
                x = nn.max_pool(x, (k, k), (s, s))
            if index in self.taps:
                outputs.append(x)
        return outputs


def to_rgb(images: jax.Array) -> jax.Array:
    """NHWC images with 3 channels: grayscale repeated, RGBA's alpha dropped; float32."""
    channels = images.shape[-1]
    if images.ndim != 4 or channels not in (1, 3, 4):
        raise DataError(f"images must be NHWC with 1, 3 or 4 channels, got shape {images.shape}")
    images = images.astype(jnp.float32)
    return jnp.repeat(images, 3, axis=-1) if channels == 1 else images[..., :3]


def width_of(params: Any) -> int:
    """The width (first convolution's channels) of `Features` parameters."""
    return int(params["features_0"]["kernel"].shape[-1])


def _conv_indices(layers: Sequence[Layer]) -> list[int]:
    return [i for i, layer in enumerate(layers) if layer[0] == "conv"]


def params_from_state_dict(
    state_dict: dict[str, np.ndarray], source: str, layers: tuple[Layer, ...],
    taps: tuple[int, ...], model: str,
) -> dict[str, Any]:  # fmt: skip
    """`Features(layers, taps, width)` parameters from a torchvision `model` state_dict.

    The width is the file's (`features.0.weight` has `width` outputs); every
    convolution up to the last tap must be there with the shapes of that
    width. Keys of the rest of the model (later `features.N`, `classifier.*`)
    are ignored; any other key, a missing one or a wrong shape is a DataError
    naming `source` and the key.
    """
    hint = f"is it torchvision's {model} state_dict?"
    first = state_dict.get("features.0.weight")
    if first is None or first.ndim != 4:
        raise DataError(f"{source}: no 4-d 'features.0.weight' ({hint})")
    width = first.shape[0] // layers[0][1]
    used = [i for i in _conv_indices(layers) if i <= max(taps)]
    known = {f"features.{i}.{leaf}" for i in _conv_indices(layers) for leaf in ("weight", "bias")}
    for key in state_dict:
        if key not in known and not key.startswith("classifier."):
            raise DataError(f"{source}: unexpected key {key!r} for {model} ({hint})")
    params, channels = {}, 3  # RGB in
    for index in used:
        _, multiple, k, _, _ = layers[index]
        out = width * multiple
        for leaf, shape in (("weight", (out, channels, k, k)), ("bias", (out,))):
            key = f"features.{index}.{leaf}"
            if key not in state_dict:
                raise DataError(f"{source}: {model} key {key!r} is missing ({hint})")
            if state_dict[key].shape != shape:
                raise DataError(
                    f"{source}: {key!r} has shape {state_dict[key].shape}, {model} of width "
                    f"{width} needs {shape} ({hint})"
                )
        weight = np.asarray(state_dict[f"features.{index}.weight"], np.float32)
        params[f"features_{index}"] = {
            "kernel": weight.transpose(2, 3, 1, 0),  # OIHW -> HWIO
            "bias": np.asarray(state_dict[f"features.{index}.bias"], np.float32),
        }
        channels = out
    return params


def load_vgg19(path: str) -> dict[str, Any]:
    """The `Features(VGG19_LAYERS, VGG19_TAPS)` parameters of torchvision's vgg19 file `path`."""
    state_dict = torch_weights.load_state_dict(path)
    return params_from_state_dict(state_dict, path, VGG19_LAYERS, VGG19_TAPS, "vgg19")


def vgg19_features(params: Any, images: jax.Array) -> list[jax.Array]:
    """relu1_1 ... relu5_1 of NHWC `images` (as given: no normalisation), float32."""
    model = Features(VGG19_LAYERS, VGG19_TAPS, width_of(params))
    return model.apply({"params": params}, to_rgb(images))


def vgg_loss(params: Any, fake: jax.Array, target: jax.Array) -> jax.Array:
    """pix2pixHD's VGGLoss(fake, target): sum_i w_i * mean |relu_i(fake) - relu_i(target)|.

    The target's features are constants (pix2pixHD detaches them); both
    images go in unnormalised, in G's range [-1, 1], as pix2pixHD does.
    """
    fake_features = vgg19_features(params, fake)
    target_features = jax.lax.stop_gradient(vgg19_features(params, target))
    loss = jnp.zeros((), jnp.float32)
    for weight, f, t in zip(LAYER_WEIGHTS, fake_features, target_features, strict=True):
        loss = loss + weight * jnp.mean(jnp.abs(f - t))
    return loss
