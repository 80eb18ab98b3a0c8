"""Decoding and checking the image files of paired datasets, shared by builders and pipeline.

Files are stored as they came (their original bytes) and decoded here, with Pillow, into 8-bit
images of mode L, RGB or RGBA: JPEG, PNG, TIFF and BMP, 8- or 16-bit (16-bit values are scaled
to 0..255, 65535 -> 255), grayscale, palette, RGB, RGBA or CMYK. Every problem raises one
`BadImageError` that names the file and says what is wrong.

Files may come from anyone, so memory is bounded before anything is allocated: an image whose
header declares more than `max_pixels` pixels is refused before it is decoded, the pixels being
decoded at once by all the threads of a process never exceed `max_pixels` in total (a decoder
waits for the others), and a file is read only when it is a regular file of at most
`max_file_bytes(max_pixels)` bytes.
"""

import io
import os
import stat
import threading

import numpy as np
from PIL import Image

from pix2pix_jax.errors import DataError

SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")  # lower-case, as matched
MIN_SIDE = 2  # smaller images (a 1-pixel image, a 1-pixel-wide strip) are rejected
# The default of `dataset.max_image_pixels`: 2**25 = 33.5 megapixels, e.g. 8192x4096 (an A|B
# pair of 4096x4096 images). Decoding needs up to ~12 bytes per pixel (libjpeg's coefficient
# buffers for progressive JPEGs, then the 8-bit conversion), so about 400 MB at the default.
MAX_PIXELS = 2**25
# The largest legitimate encoding is an uncompressed 16-bit RGBA TIFF: 8 bytes per pixel.
_MAX_BYTES_PER_PIXEL = 8
_HEADER_BYTES = 2**20  # headers, metadata, ICC profiles

# glibc keeps what a thread frees in that thread's arena when the chunk was below its mmap
# threshold (which grows to at most 32 MiB): with Pillow's 16 MiB blocks, every decoding thread
# kept the memory of its largest image even though they decode one after the other. One block
# per image puts each image above 32 MiB in a mapping of its own, returned when it is freed.
if "PILLOW_BLOCK_SIZE" not in os.environ:  # the user's own choice wins
    Image.core.set_block_size(2**30)

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


def max_file_bytes(max_pixels: int = MAX_PIXELS) -> int:
    """The largest image file read when images may have up to `max_pixels` pixels."""
    return _MAX_BYTES_PER_PIXEL * max_pixels + _HEADER_BYTES


def special_file_kind(mode: int) -> str | None:
    """What a `st_mode` is when it is not a regular file ("a named pipe", ...), else None."""
    if stat.S_ISREG(mode):
        return None
    kinds = {
        stat.S_ISFIFO: "a named pipe (FIFO)", stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a folder",
    }  # fmt: skip
    return next((kind for test, kind in kinds.items() if test(mode)), "not a regular file")


def read_file(path: str, max_bytes: int) -> bytes:
    """The bytes of the regular file `path`, refused (BadImageError) beyond `max_bytes`.

    Opened without blocking and checked with fstat before reading, so a named pipe cannot hang
    and a device cannot grow without limit, even if the file changed since it was listed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise BadImageError(f"{path}: cannot be read ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        kind = special_file_kind(info.st_mode)
        if kind:
            raise BadImageError(f"{path}: is {kind}, not a regular file; images must be files")
        if info.st_size > max_bytes:
            raise BadImageError(too_large(path, info.st_size, max_bytes))
        data = f.read(info.st_size + 1)  # capped: a file that grows meanwhile is not followed
    if len(data) != info.st_size:
        raise BadImageError(f"{path}: changed while it was read; read it again when it is done")
    return data


def too_large(name: str, size: int, max_bytes: int) -> str:
    """The message for the file `name` of `size` bytes, over the `max_bytes` limit."""
    return (
        f"{name}: {size:,} bytes, more than the {max_bytes:,} an image of at most "
        f"dataset.max_image_pixels={(max_bytes - _HEADER_BYTES) // _MAX_BYTES_PER_PIXEL:,} "
        "pixels can take; raise dataset.max_image_pixels to read it"
    )


class _PixelBudget:
    """Pixels being decoded now by all threads of the process; a decoder waits for room."""

    def __init__(self):
        self._used = 0
        self._changed = threading.Condition()

    def acquire(self, pixels: int, limit: int) -> None:
        # One image alone always gets in (it was checked against `limit`): no thread starves.
        with self._changed:
            self._changed.wait_for(lambda: not self._used or self._used + pixels <= limit)
            self._used += pixels

    def release(self, pixels: int) -> None:
        with self._changed:
            self._used -= pixels
            self._changed.notify_all()


_DECODING = _PixelBudget()  # process-wide: the decoding threads of grain share it


def decode(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The fully decoded image in `data` as a Pillow image of mode L, RGB or RGBA.

    Raises BadImageError naming `name` when `data` is not an image, is corrupt or truncated,
    has an unsupported mode, is smaller than MIN_SIDE pixels on a side or declares more than
    `max_pixels` pixels (checked on the header, before decoding). The pixels decoded at once
    by all threads stay within `max_pixels`.
    """
    image = _open(data, name)
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise BadImageError(_too_many_pixels(name, image.size, max_pixels))
    if min(image.size) < MIN_SIDE:
        raise BadImageError(
            f"{name}: image is {image.width}x{image.height} pixels; "
            f"images must be at least {MIN_SIDE}x{MIN_SIDE}"
        )
    _DECODING.acquire(pixels, max_pixels)
    try:
        _load(image, name)
        return _to_8bit(image, name)
    finally:
        _DECODING.release(pixels)


ID_MODES = ("L", "P", "1") + _WIDE_GRAY  # single-channel modes whose values are ids


def decode_ids(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The ids in the single-channel image `data` (a label or instance map) as int32 H x W.

    Values are taken as they are stored, never scaled (a 16-bit instance map keeps its ids,
    a palette image gives its indices). Raises BadImageError naming `name` for an image
    with colour channels, or for the problems `decode` reports.
    """
    image = _open(data, name)
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise BadImageError(_too_many_pixels(name, image.size, max_pixels))
    if image.mode not in ID_MODES:
        raise BadImageError(
            f"{name}: a label or instance map must be a single-channel image of ids (8- or "
            f"16-bit gray, or palette indices), this one is {image.mode}"
        )
    _DECODING.acquire(pixels, max_pixels)
    try:
        _load(image, name)
        return np.asarray(image).astype(np.int32)
    finally:
        _DECODING.release(pixels)


def _too_many_pixels(name: str, size: tuple[int, int], max_pixels: int) -> str:
    return (
        f"{name}: image is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, more than "
        f"dataset.max_image_pixels={max_pixels:,}; raise it to read this image"
    )


def _open(data: bytes, name: str) -> Image.Image:
    """The image in `data` with only its header read."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise BadImageError(f"{name}: not an image (Pillow cannot identify its format)") from None
    except Image.DecompressionBombError as e:  # Pillow's own limit, when set below ours
        raise BadImageError(f"{name}: too many pixels to decode ({e})") from None
    except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, ...)
        raise BadImageError(f"{name}: corrupt or truncated image ({e})") from None


def _load(image: Image.Image, name: str) -> None:
    try:
        image.load()  # decodes everything: a truncated or corrupt file fails here
    except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, ...)
        raise BadImageError(f"{name}: corrupt or truncated image ({e})") from None


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


def decode_ab(
    data: bytes, name: str, max_pixels: int = MAX_PIXELS
) -> tuple[Image.Image, Image.Image]:
    """(A, B) from the encoded side-by-side A|B image `data`, checked."""
    return split_ab(decode(data, name, max_pixels), name)


def decode_pair(
    data_a: bytes, data_b: bytes, name_a: str, name_b: str, max_pixels: int = MAX_PIXELS
) -> tuple[Image.Image, Image.Image]:
    """(A, B) from two encoded partner images, checked to have the same size."""
    a, b = decode(data_a, name_a, max_pixels), decode(data_b, name_b, max_pixels)
    check_same_size(a, b, name_a, name_b)
    return a, b


def report_skipped(skipped: list[str], where: str) -> None:
    """Print how many bad files were skipped in `where`, and why each one."""
    if skipped:
        lines = "\n  ".join(skipped)
        print(f"Skipped {len(skipped)} bad files in {where}:\n  {lines}", flush=True)
