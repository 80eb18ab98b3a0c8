"""Beyond the paper: pix2pixHD's and SPADE's Cityscapes recipes, label maps -> photo.

    python -m pix2pix_jax.main --workdir=/tmp/pix2pixhd_1024x512 \
        --config=experiments/pix2pixhd_cityscapes.py:pix2pixhd_1024x512 \
        --config.dataset.path=/data/cityscapes \
        --config.loss.vgg_weights=/data/weights/vgg19-dcbbb69b.pth

`dataset.path` is the official Cityscapes root (leftImg8bit/ and gtFine/ from
leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip): the folder dataset finds
its layout and reads `*_gtFine_labelIds.png` (35 classes, one-hot on the device) and
`*_gtFine_instanceIds.png` (the instance-boundary channel) as the input and
`*_leftImg8bit.png` as the target; 2,975 train and 500 val frames. `loss.vgg_weights`
is torchvision's VGG19 file (the perceptual loss's network, as pix2pixHD's).

| argument           | size     | what it is                                                 |
|--------------------|----------|------------------------------------------------------------|
| pix2pixhd_1024x512 | 1024x512 | pix2pixHD's global-generator recipe (`train_512p.sh`)      |
| pix2pixhd_512x256  | 512x256  | the same at half the size (the size pix2pix/SPADE compare) |
| spade_512x256      | 512x256  | SPADE's training recipe: hinge, spectral norm, TTUR        |

pix2pixHD (Wang, Liu, Zhu, Tao, Kautz, Catanzaro, "High-Resolution Image Synthesis and
Semantic Manipulation with Conditional GANs", CVPR 2018): label_nc 35 with instance
maps; LSGAN with 2 multi-scale 70x70 PatchGANs (num_D 2, n_layers_D 3, ndf 64); feature
matching (lambda_feat 10) and VGG19 perceptual loss (weight 10), no L1; instance norm;
Adam 2e-4 / beta1 0.5, 100 epochs at the full rate then 100 decaying linearly to 0; batch
1; `scale_width` to the model's width (2048x1024 -> 1024x512, no crop) and random flips.
Its generator G1 has 4 downsamplings and 9 ResNet blocks (ngf 64); here resnet_9blocks
(the reference's ResNet generator, 2 downsamplings) stands in for it. Paper, table 1
(PSPNet segmentation of 2048x1024 results, pixel accuracy / mean IoU): pix2pixHD 83.78 /
0.6389, pix2pix 78.34 / 0.3948, CRN 70.55 / 0.3483, the real photos 84.29 / 0.6857.

SPADE (Park, Liu, Wang, Zhu, "Semantic Image Synthesis with Spatially-Adaptive
Normalization", CVPR 2019) trains with the hinge loss, spectral norm in G and D, feature
matching and VGG (both 10), and the two time-scale update rule (Heusel et al. 2017):
lr_G 1e-4, lr_D 4e-4, betas (0, 0.9); batch 16, 200 epochs (100 + 100 linear decay), at
512x256. Its table 1 (Cityscapes; mIoU / pixel accuracy of DRN-D-105 segmentations,
FID): SPADE 62.3 / 81.9 / 71.8, pix2pixHD 58.3 / 81.4 / 95.0, CRN 52.4 / 77.1 / 104.7.
The spade_512x256 row keeps the generator of the pix2pixHD rows (no SPADE blocks): it is
SPADE's training recipe, not its architecture, so expect pix2pixHD's numbers, not SPADE's.

The runs log val L1 / PSNR / SSIM (and FID with eval.inception_weights); the
segmentation scores of the papers need their segmentation networks. The FCN-score of
pix2pix (`evaluate --fcn_weights ... --cityscapes_dir=/data/cityscapes`) works on these
runs too: the records are named after their Cityscapes frames.
"""

from typing import Any

import ml_collections

from pix2pix_jax.configs import default

TRAIN_IMAGES = 2975  # Cityscapes' fine train split
EPOCHS, DECAY_EPOCHS = 100, 100  # pix2pixHD's and SPADE's niter / niter_decay

PIX2PIXHD = {
    "dataset.name": "folder",
    "dataset.path": "/data/cityscapes",  # the official root; override on the command line
    "dataset.direction": "AtoB",  # A: gtFine label (and instance) ids, B: leftImg8bit photo
    "dataset.label_nc": 35,
    "dataset.instance_maps": True,
    "dataset.preprocess": "scale_width",  # 2048x1024 -> W x W/2, as pix2pixHD's loadSize
    "dataset.flip": True,
    "eval.split": "val",
    "eval.mode": "deterministic",  # no dropout, instance norm: the modes agree
    "eval.batch_size": 4,
    "eval.best_metric": "",
    "model.generator": "resnet_9blocks",
    "model.norm": "instance",
    "model.dropout_rate": 0.0,  # pix2pixHD's G has no dropout
    "model.ngf": 64,
    "model.ndf": 64,
    "model.discriminator": "basic",  # n_layers_D 3: the 70x70 PatchGAN at each scale
    "model.num_d": 2,
    "loss.gan_mode": "lsgan",
    "loss.lambda_l1": 0.0,
    "loss.lambda_feat": 10.0,
    "loss.lambda_vgg": 10.0,
    "loss.vgg_weights": "vgg19-dcbbb69b.pth",  # torchvision's file; give its path
    "optimizer.learning_rate": 2e-4,
    "optimizer.b1": 0.5,
    "optimizer.schedule": "linear",
    "optimizer.schedule_unit": "epochs",
    "optimizer.n_epochs": EPOCHS,
    "optimizer.n_epochs_decay": DECAY_EPOCHS,
}
SPADE = {
    "loss.gan_mode": "hinge",
    "model.spectral_norm": "both",
    "optimizer.learning_rate": 1e-4,  # TTUR: G at lr / 2, D at lr * 2 (SPADE's lr 2e-4)
    "optimizer.d_learning_rate": 4e-4,
    "optimizer.b1": 0.0,
    "optimizer.b2": 0.9,  # D takes G's betas (d_b1 = d_b2 = -1)
}
# argument -> (image height, width, batch size, overrides over PIX2PIXHD)
RECIPES = {
    "pix2pixhd_1024x512": (512, 1024, 1, {}),
    "pix2pixhd_512x256": (256, 512, 1, {}),
    "spade_512x256": (256, 512, 16, SPADE),
}
ARGUMENTS = tuple(RECIPES)


def _set(config: ml_collections.ConfigDict, field: str, value: Any) -> None:
    """config[section][name] = value."""
    section, name = field.split(".")
    config[section][name] = value


def get_config(recipe: str = "pix2pixhd_1024x512") -> ml_collections.ConfigDict:
    """The default config with the Cityscapes label-map recipe `recipe` (see the table)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {ARGUMENTS}")
    height, width, batch, overrides = RECIPES[recipe]
    config = default.get_config()
    for field, value in {**PIX2PIXHD, **overrides}.items():
        _set(config, field, value)
    config.image_size, config.dataset.image_width = height, width
    config.batch_size = batch
    steps_per_epoch = -(-TRAIN_IMAGES // batch)
    config.num_train_steps = (EPOCHS + DECAY_EPOCHS) * steps_per_epoch
    config.log_every_steps = 100
    config.eval_every_steps = config.checkpoint_every_steps = 5 * steps_per_epoch
    return config
