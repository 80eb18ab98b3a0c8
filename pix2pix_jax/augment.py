"""The paper's random jitter on the device: bicubic resize to the load size, crop, flip.

With `dataset.preprocess='resize_and_crop'` the input pipeline ships the pictures at the
model's size together with the crop offsets and flips it drew (`input_pipeline.load_shape`
says when), and the train step calls `jitter` first.

The resize is Pillow's 8-bit BICUBIC (the reference's `transforms.Resize(286)`) done as
Pillow does it: Keys' cubic kernel (a = -0.5) evaluated in float64 on the host, weights cut
at the borders and renormalised, then rounded to 22-bit fixed point; on the device integer
sums over at most 4 taps, the horizontal pass first, each pass rounded and clipped to 8 bits.
So the device's crop equals Pillow's resize-then-crop bit for bit, with a few integer
multiply-adds per value. (`jax.image.scale_and_translate` computes in float32 with a dense
weight matrix: ~60x the arithmetic, and 0.06% of the values 1-2 levels off Pillow's.)
The host jitter (`datasets.preprocess`) is Pillow's own resize-then-crop, so both agree
exactly. Pictures of another size than the model's are jittered on the host (resampling them
to the model's size first would resample them twice) and flagged `host_jittered`. Label maps
(`dataset.label_nc`) never come here: bicubic would blend their ids, so the host resizes them
with NEAREST (`input_pipeline.load_shape` is None for them).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# What the pipeline adds to a batch for the device jitter.
JITTER_KEYS = ("crop", "flip", "host_jittered")
PRECISION_BITS = 22  # Pillow's fixed-point weights for 8-bit images: 32 - 8 - 2 bits
SUPPORT = 2.0  # the bicubic kernel's radius, in source pixels when enlarging


def jitter(batch: dict[str, jax.Array], load_shape: tuple[int, int]) -> dict[str, jax.Array]:
    """`batch` with `input` and `target` jittered, as float32 in [-1, 1], and no crop/flip keys.

    `input`/`target`: uint8 [..., H, W, C]; `crop`: int32 [..., 2], (top, left) of the H x W
    crop in the picture resized to `load_shape` (height, width); `flip`: bool [...], mirror
    the crop; `host_jittered` (optional) bool [...]: pictures the host jittered already,
    kept as they are. Any leading axes (one per-device batch, or devices x batch) are kept.
    The values are `steps.to_model_range` of Pillow's uint8 resize-then-crop with these draws.
    """
    crop, flip = batch["crop"], batch["flip"]
    done = batch.get("host_jittered", jnp.zeros(flip.shape, bool))
    out = {k: v for k, v in batch.items() if k not in JITTER_KEYS}
    one = jax.vmap(lambda x, c, f: _resize_crop_flip(x, c, f, load_shape))
    for key in ("input", "target"):
        images = batch[key]
        lead, picture = images.shape[:-3], images.shape[-3:]
        flat = images.reshape((-1,) + picture)
        jittered = one(flat, crop.reshape(-1, 2), flip.reshape(-1))
        flat = jnp.where(done.reshape(-1, 1, 1, 1), flat.astype(jnp.int32), jittered)
        out[key] = flat.reshape(lead + picture).astype(jnp.float32) / 127.5 - 1.0
    return out


def _resize_crop_flip(
    image: jax.Array, crop: jax.Array, flip: jax.Array, load_shape: tuple[int, int]
) -> jax.Array:
    """One uint8 H x W x C picture -> its jittered crop, as int32 levels in [0, 255]."""
    (top, left), (load_h, load_w) = crop, load_shape
    x = image.astype(jnp.int32)
    if load_w == x.shape[1]:  # no horizontal pass to fold the flip into
        x = jnp.where(flip, x[:, ::-1], x)
    x = _resize_window(x, 1, load_w, left, flip)  # horizontal first, as Pillow
    # Keeps XLA from fusing the passes, which recomputes the first for every tap of the second.
    x = lax.optimization_barrier(x)
    return _resize_window(x, 0, load_h, top)


def _resize_window(
    x: jax.Array, axis: int, load: int, offset: jax.Array, flip: jax.Array | bool = False
) -> jax.Array:
    """Along `axis` (0 or 1, size n): samples offset .. offset + n - 1 of x resized to `load`.

    Where `flip`, in reverse order.
    """
    n = x.shape[axis]
    if load == n:  # no resize along this axis, and the only crop offset is 0
        return x
    index, weights = (
        lax.dynamic_slice_in_dim(jnp.asarray(t), offset, n) for t in pillow_taps(n, load)
    )
    index, weights = (jnp.where(flip, t[::-1], t) for t in (index, weights))
    # A sum over the K (<= 4) taps, each a gather of whole rows or columns: XLA:CPU runs an
    # integer einsum or a gather over [n, K] many times slower.
    sums = 1 << (PRECISION_BITS - 1)
    for k in range(index.shape[1]):
        if axis == 0:
            sums = sums + x[index[:, k]] * weights[:, k, None, None]
        else:
            sums = sums + x[:, index[:, k]] * weights[None, :, k, None]
    return jnp.clip(sums >> PRECISION_BITS, 0, 255)


@functools.lru_cache(maxsize=64)
def pillow_taps(size: int, load: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's BICUBIC filter for resizing `size` samples to `load`, as its C code computes it.

    Returns (index, weights), int32 [load, K]: output sample j is the sum over k of
    weights[j, k] * input[index[j, k]], plus half, shifted right by PRECISION_BITS.
    Taps past Pillow's window have weight 0 (and a valid index).
    """
    scale = size / load
    filterscale = max(scale, 1.0)
    support = SUPPORT * filterscale
    centre = (np.arange(load) + 0.5) * scale
    first = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # C's int(): truncation
    count = np.minimum((centre + support + 0.5).astype(np.int64), size) - first
    k = np.arange(int(count.max()))
    w = _bicubic((k + first[:, None] - centre[:, None] + 0.5) * (1.0 / filterscale))
    w = np.where(k < count[:, None], w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total != 0, w / np.where(total != 0, total, 1.0), w)
    scaled = w * (1 << PRECISION_BITS)
    fixed = np.where(scaled < 0, scaled - 0.5, scaled + 0.5).astype(np.int32)  # truncation
    index = np.minimum(first[:, None] + k, size - 1).astype(np.int32)
    for table in (index, fixed):
        table.flags.writeable = False  # cached: shared by every call
    return index, fixed


def _bicubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, in Pillow's order of operations."""
    a, x = -0.5, np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))
