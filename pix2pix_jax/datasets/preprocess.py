"""The reference implementation's preprocessing modes (`--preprocess`), on Pillow images.

Every mode brings an image of any size to the model's (height, width) = (H, W) as the
reference does: one Pillow bicubic resize of the whole image to a load size (skipped when the
image has it already), then a crop, then maybe a mirror. The source is resampled once, so a
600x600 maps image becomes the 286x286 picture Pillow makes of it, bit for bit, before its crop.

Training (a `rng` given), with load size L = round(load_ratio * (H, W)):

- resize_and_crop: resize to L, random crop H x W (the paper's jitter: 286 -> 256).
- crop: random crop H x W at the original scale (smaller images are first enlarged, keeping
  their aspect ratio, just enough to cover H x W).
- scale_width: resize to width W keeping the aspect ratio (height at least H, as the
  reference), then a centred crop to height H.
- scale_width_and_crop: resize to width round(load_ratio * W) keeping the aspect ratio (height
  at least H), random crop H x W.
- none: keep the image; an image of another size than H x W is resized to it (the reference
  rounds sizes to a multiple of 4; here the model's size is fixed by the config).

Then a random horizontal flip when `flip`. One draw of the crop and flip serves A and B alike.
Evaluation (no `rng`) applies the same mode with load_ratio 1, centred crops and no flip:
resize_and_crop resizes the whole image to H x W, crop takes the centre at the original scale.
"""

from collections.abc import Sequence

import numpy as np
from PIL import Image

from pix2pix_jax.errors import ConfigError, DataError

MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")


def load_size(
    mode: str, size: tuple[int, int], shape: tuple[int, int], load_ratio: float
) -> tuple[int, int]:
    """(width, height) the source of `size` (w, h) is resized to before the H x W crop."""
    (w, h), (height, width) = size, shape
    if mode == "resize_and_crop":
        return round(width * load_ratio), round(height * load_ratio)
    if mode == "crop":
        scale = max(1.0, width / w, height / h)
        return max(width, round(w * scale)), max(height, round(h * scale))
    if mode in ("scale_width", "scale_width_and_crop"):
        target = width if mode == "scale_width" else round(width * load_ratio)
        return target, max(height, int(target * h / w))  # int(): as the reference
    if mode == "none":
        return width, height
    raise ConfigError(f"dataset.preprocess={mode!r} is not one of {MODES}")


def crop_offsets(
    load: tuple[int, int], shape: tuple[int, int], rng: np.random.Generator | None
) -> tuple[int, int]:
    """(top, left) of the H x W crop of a picture of load size (w, h): drawn, or else centred."""
    (load_w, load_h), (height, width) = load, shape
    if rng is None:
        return (load_h - height) // 2, (load_w - width) // 2
    top, left = rng.integers(0, (load_h - height + 1, load_w - width + 1))
    return int(top), int(left)


def draw_mirror(flip: bool, rng: np.random.Generator | None) -> bool:
    """Whether to mirror: a fair draw from `rng` when `flip`; never without `rng`."""
    return rng is not None and flip and bool(rng.random() < 0.5)


def draw_jitter(
    shape: tuple[int, int], load_ratio: float, flip: bool, rng: np.random.Generator
) -> tuple[tuple[int, int], bool]:
    """((top, left) in load-size pixels, mirror): resize_and_crop's draws, made as `transform`.

    The same `rng` gives the same crop and flip as `transform`, for a device that then does
    the resize, crop and flip itself (see `augment.jitter`).
    """
    load = load_size("resize_and_crop", (0, 0), shape, load_ratio)  # independent of the source
    return crop_offsets(load, shape, rng), draw_mirror(flip, rng)


def check_sizes(pictures: Sequence[Image.Image]) -> None:
    """Raise ValueError unless all `pictures` (the images of one pair) have one size."""
    size = pictures[0].size
    for p in pictures[1:]:
        if p.size != size:
            raise DataError(f"images of one pair differ in size: {size} and {p.size}")


def transform(
    pictures: Sequence[Image.Image],
    mode: str,
    shape: tuple[int, int],
    load_ratio: float,
    flip: bool,
    rng: np.random.Generator | None,
    resamples: Sequence[int] | None = None,
) -> list[Image.Image]:
    """`pictures` (all of one size) brought to `shape` as `mode` says; see the module docstring.

    With `rng` (training) the crop is random and, when `flip`, half of the draws are mirrored;
    without (evaluation) the crop is centred and nothing is flipped. The draws are those of
    `draw_jitter` for resize_and_crop. `resamples` gives each picture's Pillow filter
    (default BICUBIC for all; NEAREST for maps of ids, which must not be blended).
    """
    check_sizes(pictures)
    size, (height, width) = pictures[0].size, shape
    load = load_size(mode, size, shape, load_ratio if rng is not None else 1.0)
    top, left = crop_offsets(load, shape, None if mode == "scale_width" else rng)
    mirror = draw_mirror(flip, rng)
    if load != size:
        filters = resamples or [Image.BICUBIC] * len(pictures)
        pictures = [p.resize(load, f) for p, f in zip(pictures, filters, strict=True)]
    if load != (width, height):
        pictures = [p.crop((left, top, left + width, top + height)) for p in pictures]
    if mirror:
        pictures = [p.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for p in pictures]
    return list(pictures)
