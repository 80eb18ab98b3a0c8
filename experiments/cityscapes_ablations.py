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
from table 1's for the same loss.) The runs log val L1/PSNR/SSIM; the FCN-scores
come from `evaluate` with the paper's FCN-8s and the official Cityscapes labels
(see the README's FCN-score section; check the ground-truth row with --real first):

    python -m pix2pix_jax.evaluate --workdir=/tmp/ablation_l1_cgan --split=val \
        --fcn_weights=fcn-8s-cityscapes.caffemodel --cityscapes_dir=/data/cityscapes

and this script puts the evaluations' metrics.json beside the paper's numbers:

    python experiments/cityscapes_ablations.py \
        l1_cgan=/tmp/ablation_l1_cgan/eval/val_step595000_paper/metrics.json [ROW=PATH ...]

For several seeds of one row, `experiments/seed_study.py --fcn_weights=... ` gives
each score's mean, std and 95% interval.
"""

import importlib.util
import json
import os
import sys

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
# The paper's FCN-scores (per-pixel acc., per-class acc., class IoU), final arXiv version.
PAPER_FCN_SCORES = {
    "ground_truth": (0.80, 0.26, 0.21),
    "l1": (0.42, 0.15, 0.11), "gan": (0.22, 0.05, 0.01), "cgan": (0.57, 0.22, 0.16),
    "l1_gan": (0.64, 0.20, 0.15), "l1_cgan": (0.66, 0.23, 0.17),
    "encoder_decoder_l1": (0.35, 0.12, 0.08), "encoder_decoder_l1_cgan": (0.29, 0.09, 0.05),
    "unet_l1": (0.48, 0.18, 0.13), "unet_l1_cgan": (0.55, 0.20, 0.14),
    "patch1": (0.39, 0.15, 0.10), "patch16": (0.65, 0.21, 0.17),
    "patch70": (0.66, 0.23, 0.17), "patch286": (0.42, 0.16, 0.11),
}  # fmt: skip
FCN_KEYS = ("fcn_per_pixel_acc", "fcn_per_class_acc", "fcn_class_iou")


def get_config(row: str = "l1_cgan") -> ml_collections.ConfigDict:
    """The Cityscapes labels -> photo recipe with the changes of ablation `row`."""
    if row not in ROWS:
        raise ValueError(f"unknown ablation {row!r}; choose one of {ARGUMENTS}")
    config = paper_datasets.get_config("cityscapes_labels2photo")
    for field, value in ROWS[row].items():
        section, name = field.split(".")
        config[section][name] = value
    return config


def compare(records: dict[str, dict]) -> str:
    """A markdown table: each row's FCN-scores (from its metrics.json record) beside the paper's.

    A record of the real photos (`fcn_images` "real", from `evaluate --real`) is
    compared with the paper's ground-truth row whatever its row name.
    """
    lines = ["| row | ours (pixel / class / IoU) | paper |", "|---|---|---|"]
    for row, record in records.items():
        missing = [k for k in FCN_KEYS if k not in record]
        if missing:
            raise ValueError(f"{row}: no {missing[0]} in its metrics (evaluate --fcn_weights)")
        paper_row = "ground_truth" if record.get("fcn_images") == "real" else row
        if paper_row not in PAPER_FCN_SCORES:
            raise ValueError(f"unknown row {row!r}; choose one of {tuple(PAPER_FCN_SCORES)}")
        ours = " / ".join(f"{record[k]:.2f}" for k in FCN_KEYS)
        paper = " / ".join(f"{v:.2f}" for v in PAPER_FCN_SCORES[paper_row])
        lines.append(f"| {paper_row} | {ours} | {paper} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Print `compare` of ROW=PATH arguments (PATH: an evaluation's metrics.json)."""
    records = {}
    for argument in argv:
        row, sep, path = argument.partition("=")
        if not sep:
            raise SystemExit(f"expected ROW=PATH/metrics.json, got {argument!r}")
        with open(path) as f:
            records[row] = json.load(f)
    print(compare(records))


if __name__ == "__main__":
    main(sys.argv[1:])
