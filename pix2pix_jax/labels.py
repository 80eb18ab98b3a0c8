"""Label maps as generator inputs: pix2pixHD's `encode_input` (Wang et al. 2018).

With `dataset.label_nc` > 0 the input side of a pair is a single-channel map of class ids
(0 .. label_nc - 1; a PNG of 8-bit gray or palette indices, as Cityscapes'
`*_gtFine_labelIds.png`). The host ships it untouched as uint8 channel 0 of `input`,
resampled only with NEAREST (ids are never blended), and with `dataset.instance_maps`
channel 1 holds the instance boundaries: 1 where a pixel's instance id differs from one
of its 4 neighbours (pix2pixHD's `get_edges`), computed on the host from the instance-id
map (`*_gtFine_instanceIds.png`, 16-bit) after the same resize, crop and flip, as pix2pixHD
computes it after its transforms. On the device `encode` turns this into the generator's
input: one-hot channels of the ids (label_nc) plus the boundary channel, values 0 or 1.
"""

import jax
import jax.numpy as jnp
import numpy as np

from pix2pix_jax.errors import DataError


def input_channels(instance_maps: bool) -> int:
    """Channels of the shipped uint8 `input`: the ids, plus the boundary map."""
    return 1 + int(instance_maps)


def model_channels(label_nc: int, instance_maps: bool) -> int:
    """Channels the generator (and a conditional D) sees: label_nc one-hot + the boundaries."""
    return label_nc + int(instance_maps)


def check_ids(ids: np.ndarray, label_nc: int, name: str) -> None:
    """Raise DataError naming the file `name` unless every id is in [0, label_nc)."""
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= label_nc:
        raise DataError(
            f"{name}: label map holds class id {high if high >= label_nc else low}, outside "
            f"[0, dataset.label_nc={label_nc}); raise dataset.label_nc to cover the ids "
            "(Cityscapes labelIds need 35, pix2pixHD's setting)"
        )


def instance_edges(instance_ids: np.ndarray) -> np.ndarray:
    """pix2pixHD's `get_edges`: uint8 1 where a 4-neighbour has another instance id, else 0.

    Both pixels of a differing pair are marked, so a boundary is two pixels wide.
    """
    t = np.asarray(instance_ids)
    edge = np.zeros(t.shape, bool)
    horizontal = t[:, 1:] != t[:, :-1]
    vertical = t[1:, :] != t[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    return edge.astype(np.uint8)


def encode(x: jax.Array, label_nc: int, instance_maps: bool) -> jax.Array:
    """The generator's input of a shipped label-map batch: float32 [..., label_nc (+ 1)].

    `x`: uint8 (or any integer) [..., H, W, 1 (+ 1)] of class ids (and boundaries). Ids out
    of range would give an all-zero one-hot vector; the host refuses them (`check_ids`).
    """
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(
            f"label maps must reach the step as integer ids, got {x.dtype}: they must not be "
            "jittered or scaled as images"
        )
    channels = [jax.nn.one_hot(x[..., 0], label_nc, dtype=jnp.float32)]
    if instance_maps:
        channels.append(x[..., 1:2].astype(jnp.float32))
    return jnp.concatenate(channels, axis=-1)


def colorize(x: np.ndarray) -> np.ndarray:
    """A shipped label-map batch [..., H, W, C] as uint8 RGB pictures, for sample grids.

    Each id gets a fixed colour (pix2pixHD's bit-interleaving colour map); boundaries are
    drawn white.
    """
    x = np.asarray(x)
    rgb = COLOR_MAP[x[..., 0].astype(np.int64) % 256]
    if x.shape[-1] > 1:
        rgb = np.where(x[..., 1:2] > 0, np.uint8(255), rgb)
    return rgb


def _color_map(n: int = 256) -> np.ndarray:
    """pix2pixHD's `labelcolormap` (util/util.py): the bits of an id spread over R, G and B."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        r = g = b = 0
        ident = i
        for j in range(7):
            r |= ((ident >> 0) & 1) << (7 - j)
            g |= ((ident >> 1) & 1) << (7 - j)
            b |= ((ident >> 2) & 1) << (7 - j)
            ident >>= 3
        cmap[i] = (r, g, b)
    return cmap


COLOR_MAP = _color_map()
