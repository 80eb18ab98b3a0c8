"""The reference implementation's preprocessing modes (`--preprocess`), on Pillow images.

Every mode brings an image of any size to the model's (height, width) = (H, W) as one bicubic
resize of a box of the source: resizing to a load size and cropping is the same as resizing
only the crop window, which is cheaper. It is done as two box resizes, horizontal then vertical,
the order of a full Pillow resize, so it equals resize-then-crop up to the rounding of the
sample positions (off by 1 in about 0.1% of the 8-bit values). A single `resize(box=...)` may
run the vertical pass first, which differs near edges whose overshoot is clipped in between.

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


def crop_box(
    mode: str,
    size: tuple[int, int],
    shape: tuple[int, int],
    load_ratio: float,
    rng: np.random.Generator | None,
) -> tuple[tuple[float, float, float, float], tuple[int, int]]:
    """(box in source pixels, load size): the source region that becomes the H x W output."""
    (w, h), (height, width) = size, shape
    ratio = load_ratio if rng is not None else 1.0
    load_w, load_h = load_size(mode, size, shape, ratio)
    top, left = crop_offsets((load_w, load_h), shape, None if mode == "scale_width" else rng)
    sx, sy = w / load_w, h / load_h
    return (left * sx, top * sy, (left + width) * sx, (top + height) * sy), (load_w, load_h)


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
) -> list[Image.Image]:
    """`pictures` (all of one size) brought to `shape` as `mode` says; see the module docstring.

    With `rng` (training) the crop is random and, when `flip`, half of the draws are mirrored;
    without (evaluation) the crop is centred and nothing is flipped.
    """
    check_sizes(pictures)
    size = pictures[0].size
    box, load = crop_box(mode, size, shape, load_ratio, rng)
    mirror = draw_mirror(flip, rng)
    out_size = (shape[1], shape[0])
    if load == size and all(float(v).is_integer() for v in box):  # a plain crop, no resampling
        pictures = [p.crop(tuple(int(v) for v in box)) for p in pictures]
    else:
        pictures = [_resize_box(p, out_size, box) for p in pictures]
    if mirror:
        pictures = [p.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for p in pictures]
    return pictures


def _resize_box(picture: Image.Image, size: tuple[int, int], box) -> Image.Image:
    """Bicubic resize of `box` of `picture` to `size`: the horizontal pass, then the vertical."""
    (x0, y0, x1, y1), (w, h) = box, picture.size
    if (x0, x1, size[0]) != (0, w, w):
        picture = picture.resize((size[0], h), Image.BICUBIC, box=(x0, 0, x1, h))
    if (y0, y1, size[1]) != (0, h, h):
        picture = picture.resize(size, Image.BICUBIC, box=(0, y0, size[0], y1))
    return picture
