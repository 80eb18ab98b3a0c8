"""The paper's ablations on Cityscapes labels -> photo (tables 1, 2 and 3).

    python -m pix2pix_jax.main --workdir=/tmp/ablation_l1_cgan \
        --config=experiments/cityscapes_ablations.py:l1_cgan

Each argument changes one thing of the paper's Cityscapes recipe
(`paper_datasets.py:cityscapes_labels2photo`: unet_256, 70x70 PatchGAN, L1+cGAN
with lambda 100, 200 epochs, batch 1). The paper's FCN-scores for each row
(per-pixel accuracy / per-class accuracy / class IoU; ground truth 0.80 / 0.26 / 0.21):

| argument                | what changes                          | paper FCN-scores   |
|-------------------------|---------------------------------------|--------------------|
| l1                      | L1 only (no GAN)                      | 0.42 / 0.15 / 0.11 |
| gan                     | unconditional GAN only (no L1)        | 0.22 / 0.05 / 0.01 |
| cgan                    | conditional GAN only (no L1)          | 0.57 / 0.22 / 0.16 |
| l1_gan                  | L1 + unconditional GAN                | 0.64 / 0.20 / 0.15 |
| l1_cgan                 | L1 + cGAN (the paper's model)         | 0.66 / 0.23 / 0.17 |
| encoder_decoder_l1      | no skips, L1 only (table 2)           | 0.35 / 0.12 / 0.08 |
| encoder_decoder_l1_cgan | no skips, L1 + cGAN (table 2)         | 0.29 / 0.09 / 0.05 |
| unet_l1                 | U-Net, L1 only (table 2)              | 0.48 / 0.18 / 0.13 |
| unet_l1_cgan            | U-Net, L1 + cGAN (table 2)            | 0.55 / 0.20 / 0.14 |
| patch1                  | 1x1 PixelGAN discriminator (table 3)  | 0.39 / 0.15 / 0.10 |
| patch16                 | 16x16 PatchGAN (n_layers_d 1)         | 0.65 / 0.21 / 0.17 |
| patch70                 | 70x70 PatchGAN (n_layers_d 3)         | 0.66 / 0.23 / 0.17 |
| patch286                | 286x286 ImageGAN (n_layers_d 5)       | 0.42 / 0.16 / 0.11 |

(Table 2's rows were trained separately in the paper, hence their numbers differ
from table 1's for the same loss.) FCN-scores need the Cityscapes FCN, which is
not part of this package; the runs log val L1/PSNR/SSIM.
"""

import importlib.util
import os

import ml_collections

_SPEC = importlib.util.spec_from_file_location(
    "paper_datasets", os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_datasets.py")
)
paper_datasets = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(paper_datasets)

# Overrides of each row, as {dotted field: value}.
ROWS = {
    "l1": {"loss.use_gan": False},
    "gan": {"loss.conditional_d": False, "loss.lambda_l1": 0.0},
    "cgan": {"loss.lambda_l1": 0.0},
    "l1_gan": {"loss.conditional_d": False},
    "l1_cgan": {},
    "encoder_decoder_l1": {"model.generator": "encoder_decoder", "loss.use_gan": False},
    "encoder_decoder_l1_cgan": {"model.generator": "encoder_decoder"},
    "unet_l1": {"loss.use_gan": False},
    "unet_l1_cgan": {},
    "patch1": {"model.discriminator": "pixel"},
    "patch16": {"model.discriminator": "n_layers", "model.n_layers_d": 1},
    "patch70": {"model.discriminator": "n_layers", "model.n_layers_d": 3},
    "patch286": {"model.discriminator": "n_layers", "model.n_layers_d": 5},
}
ARGUMENTS = tuple(ROWS)


def get_config(row: str = "l1_cgan") -> ml_collections.ConfigDict:
    """The Cityscapes labels -> photo recipe with the changes of ablation `row`."""
    if row not in ROWS:
        raise ValueError(f"unknown ablation {row!r}; choose one of {ARGUMENTS}")
    config = paper_datasets.get_config("cityscapes_labels2photo")
    for field, value in ROWS[row].items():
        section, name = field.split(".")
        config[section][name] = value
    return config
