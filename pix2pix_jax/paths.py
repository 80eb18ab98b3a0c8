"""Paths that may be URIs: local folders and files, or `gs://` (any fsspec filesystem).

Every path the package takes (a workdir, a dataset folder, weights files, an
output folder) goes through here. A local path behaves exactly as before
(made absolute, written with a rename so that a kill leaves the old file or
the new one); a URI (`scheme://...`: `gs://bucket/run`, `s3://...`, `memory://`)
is opened with etils' `epath`, which serves `gs://` through gcsfs. Object
stores replace a whole object at each write, so a write to a URI is already
all-or-nothing and needs no temporary file.

`gs://` needs gcsfs (`pip install 'pix2pix_jax[gcs]'`; the `tpu` and `cuda12`
extras include it). Tests point gcsfs at a local emulator with
`STORAGE_EMULATOR_HOST`, and tensorstore (orbax's array writer) with
`TENSORSTORE_GCS_HTTP_URL` and `GOOGLE_AUTH_TOKEN_FOR_TESTING`.
"""

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import fsspec
from etils import epath

from pix2pix_jax.errors import MissingFileError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# gcsfs caches folder listings for the life of a process and never learns of objects that
# other processes write: a reader would not see a checkpoint that a training run, or another
# host of a pod slice, has since completed. Listings are rare here (checkpoint steps, input
# folders): read them fresh. Set before any gs:// filesystem is built (epath keeps the first).
for _protocol in ("gs", "gcs"):
    fsspec.config.conf.setdefault(_protocol, {}).setdefault("use_listings_cache", False)


def is_uri(path: str | os.PathLike) -> bool:
    """Whether `path` names a location through a filesystem URI (`gs://...`), not a local path."""
    return bool(_URI.match(os.fspath(path)))


def scheme(path: str) -> str:
    """The URI scheme of `path` ('gs'), or '' for a local path."""
    return os.fspath(path).split("://", 1)[0] if is_uri(path) else ""


def resolve(path: str | os.PathLike) -> str:
    """`path` as the package stores it: absolute if local; a URI without a trailing slash."""
    path = os.fspath(path)
    if is_uri(path):
        head, rest = path.split("://", 1)
        return f"{head}://{rest.rstrip('/')}" if rest.strip("/") else path
    return os.path.abspath(os.path.expanduser(path))


def epath_of(path: str | os.PathLike) -> epath.Path:
    """An `epath.Path` for `path` (local or URI)."""
    _quiet_gcsfs()
    return epath.Path(os.fspath(path))


def exists(path: str) -> bool:
    """Whether something is at `path`."""
    return os.path.exists(path) if not is_uri(path) else epath_of(path).exists()


def is_file(path: str) -> bool:
    """Whether `path` is a file (an object, on a store)."""
    return os.path.isfile(path) if not is_uri(path) else epath_of(path).is_file()


def is_dir(path: str) -> bool:
    """Whether `path` is a folder (a prefix with objects under it, on a store)."""
    return os.path.isdir(path) if not is_uri(path) else epath_of(path).is_dir()


def listdir(path: str) -> list[str]:
    """The names of the entries in folder `path` (none if it does not exist)."""
    if not is_uri(path):
        return os.listdir(path) if os.path.isdir(path) else []
    folder = epath_of(path)
    return [p.name for p in folder.iterdir()] if folder.is_dir() else []


#: Schemes of object stores: no folders to create (gcsfs's makedirs would create a *bucket*).
OBJECT_STORES = ("gs", "gcs", "s3")


def makedirs(path: str) -> None:
    """Create folder `path` and its parents (a no-op on object stores, which have no folders)."""
    if not is_uri(path):
        os.makedirs(path, exist_ok=True)
    elif scheme(path) not in OBJECT_STORES:
        epath_of(path).mkdir(parents=True, exist_ok=True)


def read_bytes(path: str) -> bytes:
    """The bytes of the file at `path`."""
    if not is_uri(path):
        with open(path, "rb") as f:
            return f.read()
    return epath_of(path).read_bytes()


def read_text(path: str) -> str:
    """The text (UTF-8) of the file at `path`."""
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` whole: a local file through a rename, an object in one upload.

    A reader beside a run, or a run killed mid-write, sees the old file or the new one.
    """
    if is_uri(path):
        epath_of(path).write_bytes(data)  # one object upload: all or nothing
        return
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    """Write `text` (UTF-8) to `path` whole (see `write_bytes`)."""
    write_bytes(path, text.encode("utf-8"))


def walk_files(path: str) -> Iterator[str]:
    """The paths of all files under folder `path`, in sorted order of each folder's entries."""
    if not is_uri(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                yield os.path.join(root, name)
        return
    prefix = f"{scheme(path)}://"
    for root, dirs, files in epath_of(path).walk():
        dirs.sort()
        folder = os.fspath(root)
        if not is_uri(folder):  # fsspec backends walk with bare "bucket/path" names
            folder = prefix + folder.lstrip("/")
        for name in sorted(files):
            yield f"{folder}/{name}"


def remove_tree(path: str) -> None:
    """Delete folder `path` and everything under it."""
    if is_uri(path):
        epath_of(path).rmtree()
    else:
        shutil.rmtree(path)


def move(source: str, target: str) -> None:
    """Move the file or folder `source` to `target` (a copy and delete on object stores)."""
    if not is_uri(source) and not is_uri(target):
        shutil.move(source, target)
        return
    _quiet_gcsfs()
    fs, src = fsspec.core.url_to_fs(source)
    fs.mv(src, fsspec.core.url_to_fs(target)[1], recursive=True)


@contextlib.contextmanager
def local_file(path: str) -> Iterator[str]:
    """A local path holding the file at `path`: `path` itself, or a temporary copy of a URI.

    Readers that need a real file (zip archives, C++ readers) open what this yields.
    A missing URI is a MissingFileError naming it.
    """
    if not is_uri(path):
        yield path
        return
    if not is_file(path):
        raise MissingFileError(f"{path}: no such file")
    suffix = os.path.splitext(path)[1]
    with tempfile.TemporaryDirectory(prefix="pix2pix_jax_") as folder:
        local = os.path.join(folder, "copy" + suffix)
        with epath_of(path).open("rb") as source, open(local, "wb") as target:
            shutil.copyfileobj(source, target, length=16 * 2**20)
        yield local


def local_copy(path: str, cache: str) -> str:
    """A local copy of the file or folder tree at URI `path`, under folder `cache`.

    The copy keeps the URI's bucket and path (`cache/bucket/dir/name`), so its
    name is the original's. Files already there with the same size are kept:
    a second run copies nothing. A missing URI is a MissingFileError naming it.
    """
    path = resolve(path)
    destination = os.path.join(cache, path.split("://", 1)[1])
    if is_file(path):
        _copy_if_changed(path, destination)
    elif is_dir(path):
        for remote in walk_files(path):
            _copy_if_changed(remote, os.path.join(destination, remote[len(path) + 1 :]))
    else:
        raise MissingFileError(f"{path}: no such file or folder")
    return destination


def _copy_if_changed(remote: str, local: str) -> None:
    size = epath_of(remote).stat().length
    if os.path.isfile(local) and os.path.getsize(local) == size:
        return
    os.makedirs(os.path.dirname(local), exist_ok=True)
    write_bytes(local, read_bytes(remote))


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message (storage clients' errors run to pages)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


class _DropBucketTypeNote(logging.Filter):
    """gcsfs warns at each new filesystem that it could not tell the bucket's type.

    Without credentials for its control API (an emulator, a VM's default service
    account without that scope) it falls back to the plain GCS filesystem, which is
    the right one for every bucket this package writes; the warning says nothing
    actionable and repeats for every path.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Could not determine bucket type" not in record.getMessage()


_FILTER = _DropBucketTypeNote()


def _quiet_gcsfs() -> None:
    logger = logging.getLogger("gcsfs")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def png_bytes(image: Any) -> bytes:
    """PNG encoding of a PIL image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
