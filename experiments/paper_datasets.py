"""The paper's training recipe for each of its datasets (Isola et al. 2017, appendix 6.2).

    python -m pix2pix_jax.main --workdir=/tmp/facades --config=experiments/paper_datasets.py:facades

| argument                | direction | train imgs | epochs | batch | paper result to approach  |
|-------------------------|-----------|-----------:|-------:|------:|---------------------------|
| facades                 | BtoA      |        400 |    200 |     1 | qualitative (figs. 1, 14) |
| cityscapes_labels2photo | BtoA      |      2,975 |    200 |     1 | FCN 0.66 / 0.23 / 0.17 (a)|
| cityscapes_photo2labels | AtoB      |      2,975 |    200 |     1 | 0.83 / 0.36 / 0.29 (b)    |
| maps_aerial2map         | AtoB      |      1,096 |    200 |     1 | AMT 6.1% +- 1.3% (c)      |
| maps_map2aerial         | BtoA      |      1,096 |    200 |     1 | AMT 18.9% +- 2.5% (c)     |
| edges2shoes             | AtoB      |     49,825 |     15 |     4 | qualitative (fig. 8)      |
| edges2handbags          | AtoB      |    138,567 |     15 |     4 | qualitative (fig. 8)      |
| night2day (day->night)  | BtoA      |     17,823 |     17 |     4 | qualitative (figs. 1, 9)  |

(a) FCN-scores of labels -> photo, per-pixel acc. / per-class acc. / class IoU (table 1).
(b) photo -> labels, per-pixel acc. / per-class acc. / class IoU of L1+cGAN (table 6).
(c) share of AMT judges who took the output for real (table 4).

All use the full-size model (unet_256 with 64 filters, 70x70 PatchGAN, 256x256 crops
of 286x286 resizes, random flips) and the reference implementation's schedule: the
learning rate is constant for the first half of the epochs and decays linearly to
zero over the second half, per epoch. The datasets are the official pix2pix
archives (http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/NAME.tar.gz),
downloaded and prepared on first use as the tfds dataset `pix2pix/<name>`
(pix2pix_jax/datasets/pix2pix.py); with an archive you already have, add
`--config.dataset.path=/path/to/NAME.tar.gz`. A is the left half of each image:
facades photo|labels, cityscapes photo|labels, maps aerial|map, edges2* edges|photo,
night2day night|day; the direction column picks input and target. FCN-scores
need the Cityscapes FCN and AMT scores need people: neither is computed here;
val L1/PSNR/SSIM are logged during training.
"""

import dataclasses

import ml_collections

from pix2pix_jax.configs import default


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One dataset's settings from the paper's appendix."""

    dataset: str
    direction: str
    train_images: int
    epochs: int
    batch_size: int


RECIPES = {
    "facades": Recipe("pix2pix/facades", "BtoA", 400, 200, 1),
    "cityscapes_labels2photo": Recipe("pix2pix/cityscapes", "BtoA", 2975, 200, 1),
    "cityscapes_photo2labels": Recipe("pix2pix/cityscapes", "AtoB", 2975, 200, 1),
    "maps_aerial2map": Recipe("pix2pix/maps", "AtoB", 1096, 200, 1),
    "maps_map2aerial": Recipe("pix2pix/maps", "BtoA", 1096, 200, 1),
    "edges2shoes": Recipe("pix2pix/edges2shoes", "AtoB", 49825, 15, 4),
    "edges2handbags": Recipe("pix2pix/edges2handbags", "AtoB", 138567, 15, 4),
    "night2day": Recipe("pix2pix/night2day", "BtoA", 17823, 17, 4),
}
ARGUMENTS = tuple(RECIPES)


def get_config(name: str = "facades") -> ml_collections.ConfigDict:
    """The default config with the paper's recipe for dataset `name` (see the table above)."""
    if name not in RECIPES:
        raise ValueError(f"unknown paper dataset {name!r}; choose one of {ARGUMENTS}")
    recipe = RECIPES[name]
    config = default.get_config()
    config.dataset.name = recipe.dataset
    config.dataset.direction = recipe.direction
    config.image_size = 256
    config.batch_size = recipe.batch_size
    steps_per_epoch = -(-recipe.train_images // recipe.batch_size)
    config.num_train_steps = recipe.epochs * steps_per_epoch
    config.model.generator = "unet_256"
    config.model.ngf = config.model.ndf = 64
    config.optimizer.schedule = "linear"
    config.optimizer.schedule_unit = "epochs"
    config.optimizer.n_epochs = recipe.epochs - recipe.epochs // 2
    config.optimizer.n_epochs_decay = recipe.epochs // 2
    config.eval.batch_size = 8
    config.log_every_steps = 100
    config.eval_every_steps = config.checkpoint_every_steps = 5 * steps_per_epoch
    return config
