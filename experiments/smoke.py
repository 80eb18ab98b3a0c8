"""A seconds-long smoke run of the whole loop (32x32, 8 filters, 20 steps).

    python -m pix2pix_jax.main --workdir=/tmp/pix2pix_smoke --config=experiments/smoke.py

It checks an installation, not a result.
"""

import ml_collections

from pix2pix_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    """The default config shrunk to a smoke test."""
    config = default.get_config()
    config.dataset.name = "synthetic_facades/res32_small"
    config.image_size = 32
    config.num_train_steps = 20
    config.model.ngf = 8
    config.model.ndf = 8
    config.eval.batch_size = 8
    config.log_every_steps = 5
    config.eval_every_steps = 10
    config.checkpoint_every_steps = 10
    return config
