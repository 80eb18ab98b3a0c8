"""Evaluate a trained model over a whole split: metrics.json and an HTML results page.

    python -m pix2pix_jax.evaluate --workdir=DIR [--split=test] [--checkpoint=latest|best|STEP]
        [--mode=paper|deterministic] [--inception_weights=PATH] [--output=OUT]

runs the generator of a checkpoint in DIR over every image of the split with
the eval step of training (on the run's eval split and mode, the numbers of
its evaluations in metrics.jsonl), and writes to OUT (default
DIR/eval/<split>_step<STEP>_<mode>/):

- metrics.json: mean L1, PSNR and SSIM, and with --inception_weights FID and
  KID (mean and std over subsets), with split, step, mode and num_images;
- index.html: the metrics table, then one row per image (input | output |
  target, with the image's own L1/PSNR/SSIM), the PNGs in images/.

FID and KID compare the Inception features of the generated images, as saved
(uint8), with those of the targets. The features come from pytorch-fid's
weights file (see `pix2pix_jax.inception`); both metrics are biased upwards
on small splits, so compare them only between runs on the same split.
"""

import json
import os
import sys
from collections.abc import Callable

import flax.jax_utils
import jax
import numpy as np
import tqdm
from absl import app, flags, logging

from pix2pix_jax import checkpointing, input_pipeline, models, report, steps, train, writers

KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000  # torch-fidelity's defaults


def output_dir(workdir: str, split: str, step: int, mode: str) -> str:
    """Where results go by default: `workdir`/eval/<split>_step<step>_<mode>."""
    return os.path.join(workdir, "eval", f"{split}_step{step}_{mode}")


def _feature_fn(inception_weights: str | None) -> Callable[[np.ndarray], np.ndarray] | None:
    if not inception_weights:
        return None
    from pix2pix_jax import inception  # only FID needs it

    if not os.path.isfile(inception_weights):
        raise FileNotFoundError(f"inception_weights {inception_weights!r}: no such file")
    return inception.make_feature_fn(inception.load_fid_inception(inception_weights))


class _Features:
    """Inception features of the generated and the target images, computed in chunks."""

    CHUNK = 256  # images held before a feature pass: bounded memory, few calls

    def __init__(self, feature_fn: Callable[[np.ndarray], np.ndarray]):
        self.feature_fn = feature_fn
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.fake: list[np.ndarray] = []
        self.real: list[np.ndarray] = []

    def add(self, fake: np.ndarray, real: np.ndarray) -> None:
        """Queue a batch of uint8 generated and target images."""
        self.pending.append((fake, real))
        if sum(len(f) for f, _ in self.pending) >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        fake, real = (np.concatenate(a) for a in zip(*self.pending, strict=True))
        # One pass over both sets; images in [-1, 1] as the feature function takes them.
        features = self.feature_fn(np.concatenate([fake, real]).astype(np.float32) / 127.5 - 1)
        self.fake.append(features[: len(fake)])
        self.real.append(features[len(fake) :])
        self.pending = []

    def distances(self) -> dict[str, float]:
        """FID, and KID's mean and std over subsets, between the two feature sets."""
        from pix2pix_jax import fid

        self._flush()
        real, fake = np.concatenate(self.real), np.concatenate(self.fake)
        kid, kid_std = fid.kernel_inception_distance(
            real, fake, num_subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE
        )
        return {"fid": fid.frechet_distance(real, fake), "kid": kid, "kid_std": kid_std}


def _save_images(out: str, first: int, triples: list[np.ndarray]) -> list[tuple[str, str, str]]:
    """Save input/output/target PNGs numbered from `first`; returns their paths relative to out."""
    paths = []
    for i in range(len(triples[0])):
        names = tuple(f"images/{first + i:05d}_{kind}.png" for kind in report.COLUMNS)
        for name, images in zip(names, triples, strict=True):
            writers.save_png(os.path.join(out, name), images[i])
        paths.append(names)
    return paths


def check_mode(mode: str | None) -> None:
    """Raise a ValueError unless `mode` is None (the run's eval.mode) or one of steps.EVAL_MODES."""
    if mode is not None and mode not in steps.EVAL_MODES:
        raise ValueError(f"mode={mode!r} is not one of {steps.EVAL_MODES}")


def _run(p_eval, state, config, source, out, features, progress) -> tuple[dict, list]:
    """Mean metrics over the split and the page's rows; saves the images, feeds `features`."""
    sums: dict[str, float] = {}
    count, rows = 0, []
    batches = train.eval_outputs(p_eval, state, config, source)
    total = -(-len(source) // config.eval.batch_size)
    for mask, batch, fake, per_image in tqdm.tqdm(
        batches, total=total, unit="batch", file=sys.stdout, disable=not progress
    ):
        per_image = {k: np.asarray(v)[mask] for k, v in jax.device_get(per_image).items()}
        triples = [writers.to_uint8(a[mask]) for a in (batch["input"], jax.device_get(fake))]
        triples.append(writers.to_uint8(batch["target"][mask]))
        for i, paths in enumerate(_save_images(out, count, triples)):
            values = {k: float(v[i]) for k, v in per_image.items()}
            rows.append(report.Row(f"{count + i:05d}", paths, values))
        count += train.add_metrics(sums, per_image, np.ones(len(triples[0]), bool))
        if features:  # on the images as saved, as FID tools that read the PNGs see them
            features.add(triples[1], triples[2])
    return train.mean_metrics(sums, count, config.eval.split), rows


def evaluate(
    workdir: str,
    split: str = "test",
    checkpoint: str | int = "latest",
    mode: str | None = None,
    inception_weights: str | None = None,
    output: str | None = None,
    progress: bool = True,
) -> tuple[dict, str]:
    """Evaluate a checkpoint of `workdir` on `split`: (the metrics.json record, output folder).

    `mode` defaults to the run's `eval.mode`; `output` to `output_dir(...)`.
    """
    check_mode(mode)
    config, state, step = checkpointing.restore_for_inference(workdir, checkpoint)
    mode = config.eval.mode if mode is None else mode
    feature_fn = _feature_fn(inception_weights)  # a bad weights file fails before the work
    with config.unlocked():
        config.eval.split = split
    source = input_pipeline.load_split(config.dataset, split)
    out = output or output_dir(os.path.abspath(workdir), split, step, mode)
    p_eval = steps.pmapped_eval_step(checkpointing.inference_setup(config), mode)
    state = flax.jax_utils.replicate(state, axis_name=models.BATCH_AXIS)
    features = _Features(feature_fn) if feature_fn else None
    results, rows = _run(p_eval, state, config, source, out, features, progress)
    if features:
        results.update(features.distances())
    record = {"split": split, "step": step, "mode": mode, "num_images": len(rows), **results}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    title = f"{os.path.basename(os.path.abspath(workdir))}: {split}, step {step}, {mode}"
    report.write_page(os.path.join(out, "index.html"), title, record, rows)
    return record, out


def define_flags() -> None:
    """The command line's flags (defined on demand: other commands define --workdir too)."""
    flags.DEFINE_string("workdir", None, "Training workdir (config.json, checkpoints/).")
    flags.DEFINE_string("split", "test", "Dataset split to evaluate.")
    flags.DEFINE_string("checkpoint", "latest", "latest, best or a step number.")
    flags.DEFINE_enum("mode", None, steps.EVAL_MODES, "Test-time mode (default: eval.mode).")
    flags.DEFINE_string(
        "inception_weights",
        None,
        "pytorch-fid's pt_inception-2015-12-05-6726825d.pth: adds FID/KID.",
    )
    flags.DEFINE_string("output", None, "Output folder (default: WORKDIR/eval/...).")
    flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
    """Evaluate with the parsed flags; bad input ends with one line naming the problem."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    try:
        configure_runtime(f.workdir)
        record, out = evaluate(
            f.workdir, f.split, f.checkpoint, f.mode, f.inception_weights, f.output
        )
    except (ValueError, OSError) as e:
        sys.exit(f"pix2pix_jax.evaluate: error: {e}")
    summary = " ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float))
    print(f"{record['split']} ({record['num_images']} images, step {record['step']}): {summary}")
    print(f"Wrote {os.path.join(out, 'metrics.json')} and {os.path.join(out, 'index.html')}")


def configure_runtime(workdir: str) -> None:
    """The run's determinism flags, before JAX starts; one process, whatever the run used."""
    config = checkpointing.load_config(workdir)
    with config.unlocked():
        config.distributed.initialize = False
    train.configure_runtime(config)


if __name__ == "__main__":
    define_flags()
    app.run(main)
