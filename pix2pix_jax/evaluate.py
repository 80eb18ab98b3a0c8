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

It runs the same evaluation loop as training's periodic evals
(`pix2pix_jax.evaluation`). Installed as the console script `pix2pix-evaluate`.

FID and KID compare the Inception features of the generated images, as saved
(uint8), with those of the targets. The features come from pytorch-fid's
weights file (see `pix2pix_jax.inception`); both metrics are biased upwards
on small splits, so compare them only between runs on the same split.
"""

import json
import os

import numpy as np
from absl import flags

from pix2pix_jax import assembly, cli, evaluation, input_pipeline, parallel, report, steps, writers
from pix2pix_jax.errors import ConfigError

PROG = "pix2pix_jax.evaluate"


def output_dir(workdir: str, split: str, step: int, mode: str) -> str:
    """Where results go by default: `workdir`/eval/<split>_step<step>_<mode>."""
    return os.path.join(workdir, "eval", f"{split}_step{step}_{mode}")


class PageWriter:
    """An eval consumer that saves every image as PNG and keeps one results row per image."""

    def __init__(self, out: str):
        self.out = out
        self.rows: list[report.Row] = []

    def wants_images(self) -> bool:
        """Every batch's images."""
        return True

    def add(self, images: evaluation.Images | None, per_image: dict[str, np.ndarray]) -> None:
        """Save the batch's input/output/target PNGs and add their rows."""
        triples = (images.inputs, images.outputs, images.targets)
        for i in range(len(images.inputs)):
            index = len(self.rows)
            names = tuple(f"images/{index:05d}_{kind}.png" for kind in report.COLUMNS)
            for name, batch in zip(names, triples, strict=True):
                writers.save_png(os.path.join(self.out, name), batch[i])
            values = {k: float(v[i]) for k, v in per_image.items()}
            self.rows.append(report.Row(f"{index:05d}", names, values))

    def result(self) -> dict[str, float]:
        """No metrics: the rows are read by `evaluate`."""
        return {}


def check_mode(mode: str | None) -> None:
    """Raise a ConfigError unless `mode` is None (the run's eval.mode) or an eval mode."""
    if mode is not None and mode not in steps.EVAL_MODES:
        raise ConfigError(f"mode={mode!r} is not one of {steps.EVAL_MODES}")


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
    config, state, step = assembly.restore_for_inference(workdir, checkpoint)
    mode = config.eval.mode if mode is None else mode
    # A bad weights file fails before the work.
    feature_fn = evaluation.inception_features(inception_weights) if inception_weights else None
    with config.unlocked():
        config.eval.split = split
    source = input_pipeline.load_split(config.dataset, split)
    out = output or output_dir(os.path.abspath(workdir), split, step, mode)
    p_eval = parallel.pmap_step(steps.eval_step, setup=assembly.inference_setup(config), mode=mode)
    page = PageWriter(out)
    consumers = [page] + ([evaluation.FeatureDistances(feature_fn)] if feature_fn else [])
    results = evaluation.evaluate(
        p_eval, parallel.replicate(state), config, source, consumers, progress
    )
    record = {"split": split, "step": step, "mode": mode, "num_images": len(page.rows), **results}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    title = f"{os.path.basename(os.path.abspath(workdir))}: {split}, step {step}, {mode}"
    report.write_page(os.path.join(out, "index.html"), title, record, page.rows)
    return record, out


def define_flags() -> None:
    """The command line's flags."""
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


def evaluate_from_flags() -> None:
    """Evaluate with the parsed flags and print the metrics."""
    f = flags.FLAGS
    cli.start_runtime_of(f.workdir)
    record, out = evaluate(f.workdir, f.split, f.checkpoint, f.mode, f.inception_weights, f.output)
    summary = " ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float))
    print(f"{record['split']} ({record['num_images']} images, step {record['step']}): {summary}")
    print(f"Wrote {os.path.join(out, 'metrics.json')} and {os.path.join(out, 'index.html')}")


def run() -> None:
    """The command: parse the command line, evaluate, report bad input in one line."""
    cli.run(PROG, define_flags, evaluate_from_flags)


if __name__ == "__main__":
    run()
