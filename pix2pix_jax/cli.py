"""The command runner shared by every command: flags, verbosity, runtime set-up, errors.

A command is a module with `define_flags()` and a body that reads
`absl.flags.FLAGS`; `run(prog, define_flags, body)` defines the flags, parses
the command line, quiets library INFO logs (unless --verbosity is given),
and runs the body under one error policy: a `UserError` (a bad config
value, bad data, a missing file) ends the command with one line naming it
and exit status 1; any other exception keeps its traceback, since it is a
bug or a failure that the user's input does not explain.
"""

import functools
import sys
from collections.abc import Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from pix2pix_jax import config as config_lib
from pix2pix_jax import runtime
from pix2pix_jax.errors import UserError


def run(prog: str, define_flags: Callable[[], None], body: Callable[[], None]) -> None:
    """Define the command's flags, parse sys.argv and run `body` under the error policy."""
    define_flags()
    app.run(functools.partial(_main, prog, body))


def _main(prog: str, body: Callable[[], None], argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep library INFO chatter off the progress bar
    try:
        body()
    except UserError as e:
        sys.exit(f"{prog}: error: {e}")


def define_config_flag() -> None:
    """--config=PATH (a module with get_config(); default: the embedded default) and overrides."""
    config_flags.DEFINE_config_file(
        "config", config_lib.DEFAULT_CONFIG,
        "Path to a config file (a module with get_config()).", lock_config=True,
    )  # fmt: skip


def start_runtime(config: ml_collections.ConfigDict, announce: bool = True) -> None:
    """Determinism flags and multi-host start-up for `config`, before JAX touches a device."""
    runtime.configure(config)
    if announce:
        print(runtime.describe(), flush=True)


def start_runtime_of(workdir: str) -> None:
    """The runtime of the run in `workdir` (its determinism flags), as one process."""
    config = config_lib.load_workdir_config(workdir)
    with config.unlocked():
        config.distributed.initialize = False
    runtime.configure(config)
