"""Command line: python -m pix2pix_jax.main --workdir=DIR [--config=PATH] [--config.FIELD=VALUE].

Without --config the embedded default (configs/default.py) runs. Running
again with the same DIR resumes from its latest checkpoint. Installed as the
console script `pix2pix-train`.
"""

from absl import flags

from pix2pix_jax import cli, trainer

PROG = "pix2pix_jax"


def define_flags() -> None:
    """--workdir and --config."""
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
    cli.define_config_flag()
    flags.mark_flags_as_required(["workdir"])


def train() -> None:
    """Train and evaluate with the parsed flags."""
    config = flags.FLAGS.config
    cli.start_runtime(config)
    trainer.train_and_evaluate(config, flags.FLAGS.workdir)


def run() -> None:
    """The command: parse the command line, train, report bad input in one line."""
    cli.run(PROG, define_flags, train)


if __name__ == "__main__":
    run()
