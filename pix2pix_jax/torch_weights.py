"""Read a PyTorch state_dict file (.pth / .pt) into numpy arrays, without torch.

Supports both formats that `torch.save` writes:

* the zip format (the default since PyTorch 1.6): `<name>/data.pkl` plus one
  raw little- or big-endian file per storage under `<name>/data/`;
* the legacy format (`_use_new_zipfile_serialization=False`, and every file
  saved by PyTorch < 1.6, e.g. the reference pix2pix models and the FID
  Inception weights): a magic number, then pickles, then the raw storages.

The pre-0.4 tar format and TorchScript archives are not supported.

Nothing in the file is executed: the pickles are read by an unpickler whose
`find_class` allows only `collections.OrderedDict`, torch's tensor rebuild
functions and its typed storage classes, each mapped to a numpy
re-implementation. Any other global (a class, `os.system`, ...) is refused
with a ValueError naming the file and the global.

Memory stays bounded by the file's size whatever the file declares: zip members may declare
at most `2 * file size + 64 MiB` bytes in all (the pickle at most 64 MiB), are streamed with
their declared size as a cap (a member that inflates beyond it is refused), a legacy storage
may not declare more bytes than the file has left, and the tensors built hold at most the
elements of the storages read (a view that repeats elements, e.g. stride 0, is refused;
identical views are built once).
"""

import collections
import dataclasses
import io
import math
import os
import pickle
import struct
import sys
import zipfile
from typing import IO, Any

import ml_dtypes
import numpy as np

from pix2pix_jax import paths
from pix2pix_jax.errors import DataError, MissingFileError

# torch.<Name>Storage -> numpy dtype of its elements.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# A state_dict's pickle holds names and shapes only: ~200 bytes per tensor.
MAX_PICKLE_BYTES = 64 * 2**20
_SLACK_BYTES = 64 * 2**20  # what zip members may declare beyond twice the file's size
_CHUNK = 2**20  # members are decompressed this much at a time


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """A tensor as the pickle describes it; its bytes are attached afterwards."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _TensorRef:
    # torch._utils._rebuild_tensor(_v2): the trailing requires_grad, hooks, metadata are unused.
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused):
    # torch._utils._rebuild_parameter(_with_state): an nn.Parameter is its data here.
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only state_dict pieces and records storage references."""

    def __init__(self, file: IO[bytes], path: str):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _StorageRef] = {}  # every storage the pickle referenced

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.path}: refusing to load the global {module}.{name}: only tensors in "
                "(ordered) dicts are read from a weights file"
            ) from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        # zip: ('storage', type, key, location, numel); legacy adds view_metadata.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise DataError(f"{self.path}: unsupported persistent object {pid!r:.80}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise DataError(f"{self.path}: unsupported storage type {storage_type!r:.80}")
        if len(pid) == 6 and pid[5] is not None:
            raise DataError(f"{self.path}: storage views (legacy view_metadata) are not supported")
        return self.storages.setdefault(key, _StorageRef(key, storage_type.dtype, numel))


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state_dict file, by name, as numpy arrays (NCHW layouts kept).

    Raises MissingFileError if `path` does not exist and DataError if it is
    not a state_dict saved by `torch.save` (naming the file and the problem).
    `path` may be a URI (`gs://...`): it is read from a temporary local copy.
    """
    if paths.is_uri(path):
        if not paths.is_file(path):
            raise MissingFileError(f"weights file {path} does not exist")
        with paths.local_file(path) as local:
            try:
                return load_state_dict(local)
            except DataError as e:  # name the URI the user gave, not the temporary copy
                raise DataError(str(e).replace(local, path)) from None
    if not os.path.isfile(path):
        raise MissingFileError(f"weights file {path} does not exist")
    try:
        if zipfile.is_zipfile(path):
            obj, storages = _load_zip(path)
        else:
            obj, storages = _load_legacy(path)
        return _materialize(obj, storages, path)
    except (
        pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile, UnicodeDecodeError,
        TypeError, AttributeError, KeyError, IndexError, OverflowError, NotImplementedError,
        MemoryError,  # a corrupted length field
    ) as e:  # fmt: skip
        # Malformed pickles fail in many ways; each means the same thing to the user.
        raise DataError(
            f"{path} is not a readable PyTorch weights file (torch.save's zip or legacy "
            f"format): {e}"
        ) from None


def _load_zip(path: str) -> tuple[Any, dict[str, np.ndarray]]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pickles:
            raise DataError(f"{path} is a zip file without data.pkl: not a torch.save file")
        prefix = pickles[0][: -len("data.pkl")]
        order = "little"
        if prefix + "byteorder" in names:
            order = _read_member(archive, prefix + "byteorder", 16, path).decode().strip()
        pickled = _read_member(archive, pickles[0], MAX_PICKLE_BYTES, path)
        unpickler = _RestrictedUnpickler(io.BytesIO(pickled), path)
        obj = unpickler.load()
        budget = 2 * os.path.getsize(path) + _SLACK_BYTES - len(pickled)
        storages = {}
        for key, ref in unpickler.storages.items():
            name = f"{prefix}data/{key}"
            if name not in names:
                raise DataError(f"{path}: storage {key} is missing from the archive")
            expected = ref.numel * ref.dtype.itemsize
            if expected > budget:
                raise DataError(
                    f"{path}: storage {key} declares {expected:,} bytes, more than a file of "
                    f"{os.path.getsize(path):,} bytes can hold (storages so far included)"
                )
            budget -= expected
            data = _read_member(archive, name, expected, path, exact=True)
            storages[key] = _checked_buffer(data, ref, path, order)
    return obj, storages


def _read_member(
    archive: zipfile.ZipFile, name: str, limit: int, path: str, exact: bool = False
) -> bytearray:
    """The bytes of member `name`: at most `limit` (exactly `limit` when `exact`), streamed.

    The declared sizes are checked before anything is read, and the member is decompressed
    `_CHUNK` bytes at a time, never beyond what it declares.
    """
    info = archive.getinfo(name)
    where = f"{path}: member {name}"
    # torch.save stores members; zipfile inflates deflate in bounded steps, but hands bzip2
    # and lzma data to decompressors without an output limit (1 MiB of bzip2 can be a TB).
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise DataError(
            f"{where} uses compression method {info.compress_type}; only stored or deflated "
            "members are read"
        )
    if info.file_size > limit and not exact:
        raise DataError(f"{where} declares {info.file_size:,} bytes, more than {limit:,}")
    if info.file_size < limit and exact:
        raise DataError(
            f"{where} holds {info.file_size:,} bytes, expected {limit:,} (truncated file?)"
        )
    # Deflate never grows data by more than a small fraction: a member compressed to much
    # more than its declared size inflates beyond it.
    if info.compress_size > info.file_size + info.file_size // 100 + 1024:
        raise DataError(
            f"{where} is compressed to {info.compress_size:,} bytes but declares "
            f"{info.file_size:,}: it would inflate beyond its declared size (corrupt file?)"
        )
    size = min(info.file_size, limit)
    data = bytearray(size)
    with archive.open(info) as f, memoryview(data) as view:
        done = 0
        while done < size:
            count = f.readinto(view[done : done + _CHUNK])
            if not count:
                raise DataError(f"{where} ends after {done:,} of its {size:,} bytes")
            done += count
    return data


def _load_legacy(path: str) -> tuple[Any, dict[str, np.ndarray]]:
    with open(path, "rb") as f:
        # A legacy file starts with a pickle (protocol >= 2) of the magic number.
        if f.read(1) != b"\x80":
            raise DataError(
                f"{path} is not a PyTorch weights file (neither torch.save's zip format nor its "
                "legacy pickle format)"
            )
        f.seek(0)
        header = _RestrictedUnpickler(f, path)
        if header.load() != _LEGACY_MAGIC:
            raise DataError(
                f"{path} is not a PyTorch weights file (no torch.save zip archive or legacy "
                "magic number)"
            )
        if header.load() != _LEGACY_PROTOCOL:
            raise DataError(f"{path}: unsupported legacy torch.save protocol version")
        sys_info = header.load()
        little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
        unpickler = _RestrictedUnpickler(f, path)
        obj = unpickler.load()
        keys = _RestrictedUnpickler(f, path).load()
        endian, order = ("<", "little") if little else (">", "big")
        storages = {}
        for key in keys:  # each: int64 element count, then the raw elements
            ref = unpickler.storages.get(str(key))
            if ref is None:
                raise DataError(f"{path}: storage {key} is listed but never referenced")
            header = f.read(8)
            if len(header) < 8:
                raise DataError(f"{path}: storage {key} is missing (truncated file?)")
            (numel,) = struct.unpack(endian + "q", header)
            if numel != ref.numel:
                raise DataError(
                    f"{path}: storage {key} has {numel} elements, its tensors say {ref.numel}"
                )
            left = os.fstat(f.fileno()).st_size - f.tell()
            if not 0 <= numel * ref.dtype.itemsize <= left:  # checked before allocating
                raise DataError(
                    f"{path}: storage {key} declares {numel:,} elements, more than the "
                    f"{left:,} bytes left in the file (truncated file?)"
                )
            data = f.read(numel * ref.dtype.itemsize)
            storages[str(key)] = _checked_buffer(data, ref, path, order)
    return obj, storages


def _checked_buffer(
    data: bytes | bytearray, ref: _StorageRef, path: str, byteorder: str
) -> np.ndarray:
    expected = ref.numel * ref.dtype.itemsize
    if len(data) < expected:
        raise DataError(
            f"{path}: storage {ref.key} holds {len(data)} bytes, expected {expected} "
            "(truncated file?)"
        )
    array = np.frombuffer(data, ref.dtype, count=ref.numel)
    return array.byteswap() if byteorder != sys.byteorder else array


def _materialize(obj: Any, storages: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a state_dict")
    # The tensors built may hold as many bytes as the storages read, no more: many entries
    # viewing one storage differently would otherwise multiply it. Tied weights (the same
    # view twice) are built once.
    budget = sum(data.nbytes for data in storages.values())
    result, built = {}, {}
    for name, value in obj.items():
        if not isinstance(value, _TensorRef):
            raise DataError(
                f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor: not a "
                "state_dict of tensors"
            )
        if not isinstance(value.storage, _StorageRef) or value.storage.key not in storages:
            raise DataError(f"{path}: tensor {name!r} refers to no storage of the file")
        if value not in built:
            data = storages[value.storage.key]
            _check_view(value, data, path, name)
            budget -= math.prod(value.size) * data.itemsize
            if budget < 0:
                raise DataError(
                    f"{path}: tensor {name!r}: the tensors view their storages more than once "
                    "(more elements than the file holds); such files are not read"
                )
            built[value] = _tensor(value, data, path, name)
        result[str(name)] = built[value]
    return result


def _check_view(ref: _TensorRef, data: np.ndarray, path: str, name: str) -> None:
    """Refuse a tensor that is not a view of at most its storage's elements, inside it."""
    numbers = (ref.offset, *ref.size, *ref.stride)
    valid = all(isinstance(n, int) and 0 <= n < 2**40 for n in numbers)  # numpy's sizes fit
    if not valid or len(ref.size) != len(ref.stride):
        raise DataError(f"{path}: tensor {name!r} has an invalid offset, size or stride")
    # A view with more elements than its storage repeats some (a stride of 0, overlapping
    # strides): a few bytes of storage would become gigabytes. state_dicts hold no such views.
    if math.prod(ref.size) > data.size:
        raise DataError(
            f"{path}: tensor {name!r} of size {ref.size} (stride {ref.stride}) has more "
            f"elements than its storage's {data.size:,}: expanded views are not read"
        )
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True) if n)
    if min(ref.size, default=1) and (ref.offset < 0 or last >= data.size):
        raise DataError(f"{path}: tensor {name!r} reads outside its storage")


def _tensor(ref: _TensorRef, data: np.ndarray, path: str, name: str) -> np.ndarray:
    """The tensor `ref` of the storage `data` (checked by `_check_view`), as its own array."""
    if 0 in ref.size:
        return np.zeros(ref.size, data.dtype)
    view = np.lib.stride_tricks.as_strided(
        data[ref.offset :],
        shape=ref.size,
        strides=tuple(s * data.itemsize for s in ref.stride),
        writeable=False,
    )
    return np.array(view)  # a contiguous copy that owns its memory
