"""Decoding and checking the image files of paired datasets, shared by builders and pipeline.

Files are stored as they came (their original bytes) and decoded here, with Pillow, into 8-bit
images of mode L, RGB or RGBA: JPEG, PNG, TIFF and BMP, 8- or 16-bit (16-bit values are scaled
to 0..255, 65535 -> 255), grayscale, palette, RGB, RGBA or CMYK. Every problem raises one
`BadImageError` that names the file and says what is wrong.
"""

import io

import numpy as np
from PIL import Image

from pix2pix_jax.errors import DataError

SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")  # lower-case, as matched
MIN_SIDE = 2  # smaller images (a 1-pixel image, a 1-pixel-wide strip) are rejected

# Pillow modes -> the 8-bit mode they become; 16- and 32-bit integer modes are scaled.
_MODES = {"1": "L", "L": "L", "P": None, "LA": "RGBA", "PA": "RGBA", "La": "RGBA"}
_MODES.update({"RGB": "RGB", "RGBA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB"})
_MODES.update({"YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"})
_WIDE_GRAY = ("I", "I;16", "I;16B", "I;16L", "I;16N")


class BadImageError(DataError):
    """An image file that cannot be used; the message names the file and the problem."""


def is_image_name(name: str) -> bool:
    """Whether the file `name` is taken for an image: an image suffix, not hidden."""
    base = name.rsplit("/", 1)[-1]
    return base.lower().endswith(SUFFIXES) and not base.startswith(".")


def decode(data: bytes, name: str) -> Image.Image:
    """The fully decoded image in `data` as a Pillow image of mode L, RGB or RGBA.

    Raises BadImageError naming `name` when `data` is not an image, is corrupt or truncated,
    has an unsupported mode or is smaller than MIN_SIDE pixels on a side.
    """
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decodes everything: a truncated or corrupt file fails here
    except Image.UnidentifiedImageError:
        raise BadImageError(f"{name}: not an image (Pillow cannot identify its format)") from None
    except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, ...)
        raise BadImageError(f"{name}: corrupt or truncated image ({e})") from None
    if min(image.size) < MIN_SIDE:
        raise BadImageError(
            f"{name}: image is {image.width}x{image.height} pixels; "
            f"images must be at least {MIN_SIDE}x{MIN_SIDE}"
        )
    return _to_8bit(image, name)


def _to_8bit(image: Image.Image, name: str) -> Image.Image:
    """`image` as 8-bit L, RGB or RGBA; 16-bit gray is scaled, not clipped as Pillow would."""
    if image.mode in _WIDE_GRAY:
        wide = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode not in _MODES:
        raise BadImageError(f"{name}: unsupported image mode {image.mode!r}")
    return image if image.mode == _MODES[image.mode] else image.convert(_MODES[image.mode])


def split_ab(image: Image.Image, name: str) -> tuple[Image.Image, Image.Image]:
    """The left (A) and right (B) halves of a side-by-side A|B image."""
    width, height = image.size
    if width % 2:
        raise BadImageError(
            f"{name}: an A|B image must have an even width (A and B side by side), "
            f"got {width}x{height}"
        )
    if width // 2 < MIN_SIDE:
        raise BadImageError(f"{name}: A and B would be {width // 2}x{height} pixels; too small")
    half = width // 2
    return image.crop((0, 0, half, height)), image.crop((half, 0, width, height))


def check_same_size(a: Image.Image, b: Image.Image, name_a: str, name_b: str) -> None:
    """Raise BadImageError unless the partners `a` and `b` have the same size."""
    if a.size != b.size:
        raise BadImageError(
            f"{name_a} is {a.width}x{a.height} but its partner {name_b} is "
            f"{b.width}x{b.height}; A and B must have the same size"
        )


def decode_ab(data: bytes, name: str) -> tuple[Image.Image, Image.Image]:
    """(A, B) from the encoded side-by-side A|B image `data`, checked."""
    return split_ab(decode(data, name), name)


def decode_pair(data_a: bytes, data_b: bytes, name_a: str, name_b: str):
    """(A, B) from two encoded partner images, checked to have the same size."""
    a, b = decode(data_a, name_a), decode(data_b, name_b)
    check_same_size(a, b, name_a, name_b)
    return a, b


def report_skipped(skipped: list[str], where: str) -> None:
    """Print how many bad files were skipped in `where`, and why each one."""
    if skipped:
        lines = "\n  ".join(skipped)
        print(f"Skipped {len(skipped)} bad files in {where}:\n  {lines}", flush=True)
