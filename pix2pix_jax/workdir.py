"""The workdir's edges: is it usable, who runs in it, and what a full disk looks like.

`prepare(path)` turns an unusable workdir (a file, `/proc/...`, a folder
without write permission) into one `WorkdirError` before anything is
written. `RunLock` gives a training run the workdir for its whole life: an
exclusive `fcntl.flock` on `WORKDIR/.lock`, which the kernel releases
however the process ends (so a lock left by a killed run is never stale: the
next run simply takes it, and says so). The holder (host, pid, start time)
is written into the file so that a second run can name it. Readers
(`evaluate`, `predict`) never take the lock.

A workdir may be a URI (`gs://bucket/run`, see `pix2pix_jax.paths`). `prepare`
then writes and deletes a probe object, so that a bucket that does not exist
or cannot be written is one WorkdirError naming the path before training
starts. Object stores have no `flock`, so a URI workdir is not locked: the
run says so once, and one training run per workdir is the user's to keep
(a pod slice's processes are one run: process 0 would take the lock for all).

A full disk surfaces deep inside orbax's and tensorstore's writer threads,
which log each failed array with its traceback; `disk_full_error` recognises
it in an exception chain and `quiet_disk_full_logs` keeps those log records
off the terminal, so that the run ends with one line.
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pix2pix_jax import paths
from pix2pix_jax.errors import DiskFullError, WorkdirError

LOCK_FILE = ".lock"


def prepare(path: str) -> str:
    """The absolute `path` (or URI), created if needed; a WorkdirError if it cannot hold a run."""
    if paths.is_uri(path):
        return _prepare_uri(paths.resolve(path))
    workdir = os.path.abspath(path)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"workdir {workdir} is a file, not a folder")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"workdir {workdir} cannot be created: {e.strerror}") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise WorkdirError(f"workdir {workdir} is not writable (permission denied)")
    return workdir


PROBE = ".write_probe"


def _prepare_uri(workdir: str) -> str:
    """Check that `workdir` (a URI) can be written: write, read back and delete a probe."""
    # One probe per process: the hosts of a pod slice check the same workdir at once.
    probe = paths.epath_of(workdir) / f"{PROBE}.{socket.gethostname()}.{os.getpid()}"
    try:
        if paths.is_file(workdir):
            raise WorkdirError(f"workdir {workdir} is a file, not a folder")
        probe.write_text(json.dumps(_holder()))
        probe.read_text()
        probe.unlink()
    except WorkdirError:
        raise
    except ImportError as e:  # gcsfs (or the scheme's fsspec backend) is missing
        raise WorkdirError(
            f"workdir {workdir}: no filesystem for {paths.scheme(workdir)}:// ({e}); "
            "for gs:// install gcsfs (pip install 'pix2pix_jax[gcs]')"
        ) from None
    except Exception as e:  # storage clients raise their own types: name the path, one line
        raise WorkdirError(
            f"workdir {workdir} cannot be written ({type(e).__name__}: {paths.first_line(e)}); "
            "check that the bucket exists and that this machine's account may write to it"
        ) from None
    return workdir


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}


def _describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {started}"


def _read_holder(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {}


class RunLock:
    """An exclusive lock on a workdir for the life of one run (a context manager).

    Taking it fails at once, with a WorkdirError naming the workdir and the
    holder, while another process holds it. On a clean release the holder
    record is cleared; a record found when the lock is free therefore belongs
    to a run that died, and taking over is announced.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise a WorkdirError (in use, or the file cannot be made).

        A URI workdir cannot be locked: a note says so and nothing is taken.
        """
        if paths.is_uri(self.path):
            print(f"Note: {os.path.dirname(self.path)} is on an object store, which has no "
                  "locks: run one training per workdir.", flush=True)  # fmt: skip
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise WorkdirError(
                f"workdir lock {self.path} cannot be created: {e.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise WorkdirError(f"workdir lock {self.path}: {e.strerror}") from None
            who = _describe(holder) if holder else "a run that is starting"
            raise WorkdirError(
                f"workdir {os.path.dirname(self.path)} is in use by another run ({who}); "
                "wait for it to end or choose another --workdir"
            ) from None
        previous = _read_holder(fd)
        if previous is not None:
            print(f"Note: the previous run in this workdir ({_describe(previous)}) ended "
                  "without releasing it; taking over.", flush=True)  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_holder()) + "\n").encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Clear the holder record and unlock (the kernel also unlocks on any exit)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):  # a full disk must not keep the lock held
            os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
# tensorstore reports the OS error inside a ValueError's text.
_CODES = "|".join(str(n) for n in DISK_FULL_ERRNOS)
_TEXT_MARKERS = re.compile(
    rf"os_error_code='({_CODES})'|No space left on device|File too large|Disk quota exceeded"
)
_FAILED_FILE = re.compile(r'Failed writing: "([^"]+)"')
_FAILED_BYTES = re.compile(r"Failed to write (\d+) bytes")


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` (or one in its cause/context chain) is a failed write for want of space."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        if _TEXT_MARKERS.search(str(e)):
            return True
    return False


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def disk_full_error(error: BaseException, workdir: str, note: str = "") -> DiskFullError | None:
    """One-line DiskFullError for a disk-full `error` (None for any other error).

    It names the file that failed, the size of the failed write when the
    writer said it, the free space left on the workdir's filesystem, and `note`.
    """
    if not is_disk_full(error):
        return None
    path, size, reason = workdir, None, "no space left"
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            path, reason = e.filename or path, e.strerror or reason
            break
        text = str(e)
        if _FAILED_FILE.search(text):
            path = _FAILED_FILE.search(text).group(1)
            size = _FAILED_BYTES.search(text)
            reason = "file too large" if "File too large" in text else reason
            break
    needed = f"a write of {_gib(int(size.group(1)))} failed; " if size else ""
    try:
        free = f"{_gib(shutil.disk_usage(workdir).free)} free there"
    except OSError:
        free = "free space unknown"
    return DiskFullError(f"disk full writing {path} ({reason}; {needed}{free}){note}")


class _DropDiskFull(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_disk_full(exc):
            return False
        return not _TEXT_MARKERS.search(record.getMessage())


@contextlib.contextmanager
def one_line_disk_full(workdir: str, note: Callable[[], str] = str) -> Iterator[None]:
    """Within it, a disk-full failure ends the block as one DiskFullError, without a flood.

    Writer threads' log records and uncaught thread exceptions about it are
    dropped (a thread's failure is raised when the block ends); any other
    error passes unchanged. `note()` is appended to the message. After a
    failure the log filter stays until the process ends: asyncio reports the
    failed writes' unretrieved tasks only when they are collected, at exit.
    """
    drop, captured = _DropDiskFull(), []
    previous_hook = threading.excepthook

    def hook(args: Any) -> None:
        if args.exc_value is not None and is_disk_full(args.exc_value):
            captured.append(args.exc_value)  # e.g. TensorBoard's event-writer thread
        else:
            previous_hook(args)

    # orbax logs each failed write with its traceback; asyncio its unretrieved tasks.
    loggers = [logging.getLogger("absl"), logging.getLogger("asyncio")]
    for logger in loggers:
        logger.addFilter(drop)
    threading.excepthook = hook
    failed = True
    try:
        yield
        failed = False
    except Exception as e:
        error = disk_full_error(e, workdir, note())
        if error is None:
            raise
        raise error from None
    finally:
        threading.excepthook = previous_hook
        for logger in loggers if not failed else []:
            logger.removeFilter(drop)
    if captured:
        raise disk_full_error(captured[0], workdir, note()) from None
