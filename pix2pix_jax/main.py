"""Command line: python -m pix2pix_jax.main --workdir=DIR [--config=PATH] [--config.FIELD=VALUE].

Without --config the embedded default (configs/default.py) runs. Running
again with the same DIR resumes from its latest checkpoint.
"""

import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from pix2pix_jax import train

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "default.py")

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Path to a config file (a module with get_config()).",
    lock_config=True,
)  # fmt: skip
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
    """Train and evaluate with the parsed flags."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep library INFO chatter off the progress bar
    config = flags.FLAGS.config
    train.configure_runtime(config)
    print(
        f"JAX {jax.__version__}: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local {jax.default_backend()} device(s)",
        flush=True,
    )
    try:
        train.train_and_evaluate(config, flags.FLAGS.workdir)
    except (ValueError, FloatingPointError) as e:
        # Bad input or divergence: one line that names the problem, not a traceback.
        sys.exit(f"pix2pix_jax: error: {e}")


if __name__ == "__main__":
    app.run(main)
