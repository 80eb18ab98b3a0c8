"""The paper's facades recipe at full size, on the synthetic facades.

    python -m pix2pix_jax.main --workdir=/tmp/synthetic_facades_256 \
        --config=experiments/synthetic_facades_256.py

unet_256 (54.4M parameters) + 70x70 PatchGAN, batch 1, 256x256 crops of 286x286
resizes, labels -> photo, 200 epochs of the 400 training images, as the paper
trains CMP Facades. Meant for an accelerator: about 80k steps.
"""

import ml_collections

from pix2pix_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    """The default config with the paper's facades recipe."""
    config = default.get_config()
    config.dataset.name = "synthetic_facades/res256"
    config.image_size = 256
    config.batch_size = 1
    config.num_train_steps = 200 * 400  # 200 epochs of 400 images
    config.model.generator = "unet_256"
    config.model.ngf = 64
    config.model.ndf = 64
    config.eval.batch_size = 8
    config.log_every_steps = 100
    config.eval_every_steps = 4000
    config.checkpoint_every_steps = 4000
    return config
