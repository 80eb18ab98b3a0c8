"""The project's error types: what the command runner reports as one line.

A `UserError` is a problem with what the user gave (a config value, a data
file, a missing weights file, a workdir): the commands print its message and
exit with status 1, without a traceback. Any other exception is a bug, or a
failure the user cannot fix by changing their input, and keeps its traceback.
"""


class UserError(Exception):
    """Base of the errors that name a bad input; printed as one line by the commands."""


class ConfigError(UserError, ValueError):
    """A config field or command-line flag with an unusable value."""


class DataError(UserError, ValueError):
    """A dataset, image or weights file that cannot be used as it is."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or the run needs) does not exist."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be restored by this release, with the reason."""


class DivergedError(UserError, FloatingPointError):
    """Training produced non-finite losses; the last finite checkpoint is kept."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint whose files are damaged: unreadable metadata or a checksum mismatch."""


class WorkdirError(UserError, OSError):
    """A workdir that cannot be used: not a writable folder, or in use by another run."""


class DiskFullError(UserError, OSError):
    """A write failed for want of space (ENOSPC) or over a file-size limit (EFBIG)."""
