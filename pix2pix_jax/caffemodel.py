"""Reads the weights of a Caffe `.caffemodel` file without Caffe, and runs nothing in it.

A `.caffemodel` is one serialized protobuf message, Caffe's `NetParameter`
(BVLC/caffe, src/caffe/proto/caffe.proto). Only the fields that hold weights
are read; everything else is skipped by its wire type:

    NetParameter      1 name (string), 100 layer (LayerParameter, current),
                      2 layers (V1LayerParameter, the legacy field)
    LayerParameter    1 name, 2 type (string), 7 blobs (BlobProto)
    V1LayerParameter  4 name, 5 type (enum LayerType), 6 blobs (BlobProto),
                      1 layer (V0LayerParameter: refused, see below)
    BlobProto         7 shape (BlobShape: 1 dim, int64, packed), 5 data (float,
                      packed), 8 double_data (double, packed), legacy 4-D shape
                      1 num, 2 channels, 3 height, 4 width (int32)

The decoder is a small hand-written one of the protobuf wire format (varints,
64- and 32-bit fixed fields, length-delimited fields; repeated numbers packed
or not). Every length is checked against the bytes that remain, varints are at
most 10 bytes, a blob's number of values must equal the product of its shape
(at most 32 axes, Caffe's kMaxBlobAxes), so a truncated or hostile file fails
with a `DataError` naming the file and what is wrong, before any array is
built from it. Files of the V0 era (`layers { layer { ... } }`) must be
upgraded with Caffe's `upgrade_net_proto_binary` first.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np

from pix2pix_jax import paths
from pix2pix_jax.errors import DataError, MissingFileError

MAX_AXES = 32  # Caffe's kMaxBlobAxes
# V1LayerParameter.LayerType values of layers that can carry weights (caffe.proto).
V1_TYPES = {4: "Convolution", 14: "InnerProduct", 39: "Deconvolution", 6: "Dropout", 18: "ReLU"}

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


@dataclasses.dataclass(frozen=True)
class Blob:
    """One weights array: its values in the file's shape, and whether that shape is legacy 4-D."""

    data: np.ndarray
    legacy_shape: bool = False

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Whether the blob has `shape`; a legacy 4-D shape fits it padded with leading 1s."""
        if not self.legacy_shape:
            return self.data.shape == tuple(shape)
        return len(shape) <= 4 and self.data.shape == (1,) * (4 - len(shape)) + tuple(shape)


@dataclasses.dataclass(frozen=True)
class Layer:
    """A layer of the file: its name, its type and its weight blobs, in the file's order."""

    name: str
    type: str
    blobs: tuple[Blob, ...]


class _Truncated(Exception):
    """Internal: the message ends inside a field (reported with the file's name)."""


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The unsigned varint at `pos` and the position after it."""
    value = shift = 0
    for i in range(10):
        if pos + i >= end:
            raise _Truncated("a varint runs past the end of its message")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + i + 1
        shift += 7
    raise DataError("a varint longer than 10 bytes")


def fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """The fields of the message in buf[start:end]: (number, wire type, value, end of value).

    For varints `value` is the number; for fixed and length-delimited fields it
    is the offset of the value's bytes, which end at the last item.
    """
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise DataError(f"field number 0 at byte {pos}")
        if wire == VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, pos
            continue
        if wire == LENGTH:
            size, pos = _varint(buf, pos, end)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
        else:  # 3 and 4 are the deprecated groups, which Caffe never writes; 6-7 do not exist
            raise DataError(f"unsupported wire type {wire} at byte {pos}")
        if size > end - pos:
            raise _Truncated(f"a field of {size} bytes runs past the end of its message")
        yield number, wire, pos, pos + size
        pos += size


def _string(buf: bytes, start: int, end: int) -> str:
    return bytes(buf[start:end]).decode("utf-8", errors="replace")


def _numbers(buf, wire, value, end, dtype: str, scalar_wire: int) -> list[np.ndarray]:
    """One occurrence of a repeated float/double field: packed (LENGTH) or a single value."""
    item = np.dtype(dtype).itemsize
    if wire == LENGTH:
        if (end - value) % item:
            raise DataError(f"a packed {dtype} array of {end - value} bytes")
        return [np.frombuffer(buf, dtype, (end - value) // item, value)]
    if wire != scalar_wire:
        raise DataError(f"a {dtype} value with wire type {wire}")
    return [np.frombuffer(buf, dtype, 1, value)]


def _dims(buf: bytes, wire: int, value: int, end: int) -> list[int]:
    """BlobShape.dim values of one occurrence: packed varints or one varint."""
    if wire == VARINT:
        return [value]
    if wire != LENGTH:
        raise DataError(f"a shape dimension with wire type {wire}")
    dims, pos = [], value
    while pos < end:
        dim, pos = _varint(buf, pos, end)
        dims.append(dim)
    return dims


def _shape(buf: bytes, start: int, end: int) -> list[int]:
    dims = []
    for number, wire, value, stop in fields(buf, start, end):
        if number == 1:
            dims += _dims(buf, wire, value, stop)
    return dims


def _blob(buf: bytes, start: int, end: int) -> Blob:
    """A BlobProto: its data (float or double) in its shape, checked against each other."""
    shape, legacy, chunks = None, [0, 0, 0, 0], []
    for number, wire, value, stop in fields(buf, start, end):
        if number == 7 and wire == LENGTH:
            shape = _shape(buf, value, stop)
        elif number == 5:
            chunks += _numbers(buf, wire, value, stop, "<f4", FIXED32)
        elif number == 8:
            chunks += _numbers(buf, wire, value, stop, "<f8", FIXED64)
        elif number in (1, 2, 3, 4) and wire == VARINT:
            legacy[number - 1] = value
    dims = legacy if shape is None else shape
    if len(dims) > MAX_AXES or any(d >= 2**31 for d in dims):
        raise DataError(f"a blob shape {dims} that Caffe cannot hold")
    count = sum(len(c) for c in chunks)
    if count != int(np.prod(dims, dtype=object)):
        raise DataError(f"a blob of shape {tuple(dims)} holds {count} values")
    data = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return Blob(data.reshape(dims), legacy_shape=shape is None)


def _layer(buf: bytes, start: int, end: int, legacy: bool) -> Layer:
    """A LayerParameter (legacy False) or a V1LayerParameter (legacy True)."""
    name_field, type_field, blobs_field = (4, 5, 6) if legacy else (1, 2, 7)
    name, kind, blobs = "", "", []
    for number, wire, value, stop in fields(buf, start, end):
        if number == name_field and wire == LENGTH:
            name = _string(buf, value, stop)
        elif number == type_field:
            if legacy and wire == VARINT:
                kind = V1_TYPES.get(value, f"V1 type {value}")
            elif wire == LENGTH:
                kind = _string(buf, value, stop)
        elif number == blobs_field and wire == LENGTH:
            blobs.append(_blob(buf, value, stop))
        elif legacy and number == 1 and wire == LENGTH:
            raise DataError(
                "a V0-format layer (upgrade the file with Caffe's upgrade_net_proto_binary)"
            )
    return Layer(name, kind, tuple(blobs))


def parse_net(buf: bytes) -> list[Layer]:
    """The layers of a serialized NetParameter, current (`layer`) and legacy (`layers`) fields."""
    layers = []
    for number, wire, value, stop in fields(buf, 0, len(buf)):
        if number in (100, 2) and wire == LENGTH:
            layers.append(_layer(buf, value, stop, legacy=number == 2))
    return layers


def read_layers(path: str) -> dict[str, Layer]:
    """The layers that carry weights in the .caffemodel at `path`, by name, in the file's order.

    Raises MissingFileError if there is no such file, DataError (naming the
    file) if it is not a well-formed Caffe model: truncated, malformed, a blob
    whose data does not fill its shape, two weighted layers of one name, or no
    weights at all.
    """
    if not paths.is_file(path):  # a local path or a URI (gs://...)
        raise MissingFileError(f"{path}: no such file")
    buf = paths.read_bytes(path)
    try:
        layers = parse_net(buf)
    except _Truncated as e:
        raise DataError(f"{path}: truncated or not a .caffemodel ({e})") from None
    except DataError as e:
        raise DataError(f"{path}: not a readable .caffemodel ({e})") from None
    weighted: dict[str, Layer] = {}
    for layer in layers:
        if not layer.blobs:
            continue
        if layer.name in weighted:
            raise DataError(f"{path}: two layers named {layer.name!r} carry weights")
        weighted[layer.name] = layer
    if not weighted:
        raise DataError(f"{path}: no layer with weights: not a .caffemodel")
    return weighted
