"""Evaluate a trained model over a whole split: metrics.json and an HTML results page.

    python -m pix2pix_jax.evaluate --workdir=DIR [--split=test] [--checkpoint=latest|best|STEP]
        [--mode=paper|deterministic] [--inception_weights=PATH] [--output=OUT]
        [--fcn_weights=PATH --cityscapes_dir=DIR [--real] [--fcn_segmentations]]
        [--lpips_weights=HEADS --lpips_backbone=PATH]

runs the generator of a checkpoint in DIR over every image of the split with
the eval step of training (on the run's eval split and mode, the numbers of
its evaluations in metrics.jsonl), and writes to OUT (default
DIR/eval/<split>_step<STEP>_<mode>/):

- metrics.json: mean L1, PSNR and SSIM, and with --inception_weights FID and
  KID (mean and std over subsets), with --lpips_weights and --lpips_backbone
  LPIPS (`pix2pix_jax.lpips`: the lpips package's v0.1 heads on torchvision's
  AlexNet or VGG16, the mean over the images), with split, step, mode and num_images;
- index.html: the metrics table, then one row per image (input | output |
  target, with the image's own L1/PSNR/SSIM), the PNGs in images/.

It runs the same evaluation loop as training's periodic evals
(`pix2pix_jax.evaluation`). Installed as the console script `pix2pix-evaluate`.

FID and KID compare the Inception features of the generated images, as saved
(uint8), with those of the targets. The features come from pytorch-fid's
weights file (see `pix2pix_jax.inception`); both metrics are biased upwards
on small splits, so compare them only between runs on the same split.

With --fcn_weights (FCN-8s's `fcn-8s-cityscapes.caffemodel`) and
--cityscapes_dir (the official Cityscapes folder holding gtFine/val/), on a
Cityscapes labels -> photo workdir, it adds the paper's FCN-scores
(`pix2pix_jax.fcn_score`): fcn_per_pixel_acc, fcn_per_class_acc,
fcn_class_iou, and per class `fcn_per_class`, with a per-class table on the
page (and with --fcn_segmentations, each frame's segmentation). --real
scores the real photos of the split instead: the paper's "ground truth" row.
"""

import json
import os

import numpy as np
from absl import flags

from pix2pix_jax import (
    assembly,
    cli,
    evaluation,
    input_pipeline,
    parallel,
    paths,
    replicas,
    report,
    steps,
    writers,
)
from pix2pix_jax import config as config_lib
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
    fcn_weights: str | None = None,
    cityscapes_dir: str | None = None,
    real: bool = False,
    fcn_segmentations: bool = False,
    fcn_width: int | None = None,
    seed_index: int | None = None,
    lpips_weights: str | None = None,
    lpips_backbone: str | None = None,
) -> tuple[dict, str]:
    """Evaluate a checkpoint of `workdir` on `split`: (the metrics.json record, output folder).

    `mode` defaults to the run's `eval.mode`; `output` to `output_dir(...)`
    (and its `seed_<s>` subfolder for replica `seed_index` of a num_seeds run).
    With `fcn_weights` and `cityscapes_dir`, the FCN-scores of the generated
    photos (`real`: of the split's real photos) are added (see the module's docstring);
    `fcn_width` is the FCN-8s's first width (default: the released network's 64).
    With `lpips_weights` (lpips' heads) and `lpips_backbone` (their torchvision
    network's state_dict), the mean LPIPS of the outputs to the targets is added.
    """
    check_mode(mode)
    config, state, step = assembly.restore_for_inference(workdir, checkpoint, seed_index)
    mode = config.eval.mode if mode is None else mode
    # A bad weights file fails before the work.
    feature_fn = evaluation.inception_features(inception_weights) if inception_weights else None
    lpips_consumer = _lpips_consumer(lpips_weights, lpips_backbone)
    with config.unlocked():
        config.eval.split = split
    source = input_pipeline.load_split(config.dataset, split)
    out = output or output_dir(paths.resolve(workdir), split, step, mode)
    if seed_index is not None and not output:
        out = os.path.join(out, f"seed_{config.seed}")
    fcn = _fcn_consumer(
        config, source, fcn_weights, cityscapes_dir, real, out, fcn_segmentations, fcn_width
    )
    p_eval = parallel.pmap_step(steps.eval_step, setup=assembly.inference_setup(config), mode=mode)
    page = PageWriter(out)
    consumers = [page] + ([evaluation.FeatureDistances(feature_fn)] if feature_fn else [])
    consumers += [fcn] if fcn else []
    consumers += [lpips_consumer] if lpips_consumer else []
    results = evaluation.evaluate(
        p_eval, parallel.replicate(state), config, source, consumers, progress
    )
    record = {"split": split, "step": step, "mode": mode, "num_images": len(page.rows), **results}
    if seed_index is not None:
        record["seed"] = config.seed
    if fcn:
        record.update(fcn_images="real" if real else "generated", fcn_per_class=fcn.per_class)
    paths.makedirs(out)
    paths.write_text(os.path.join(out, "metrics.json"), json.dumps(record, indent=2) + "\n")
    title = f"{os.path.basename(paths.resolve(workdir))}: {split}, step {step}, {mode}"
    summary = {k: v for k, v in record.items() if k != "fcn_per_class"}
    html = report.render_page(title, summary, page.rows)
    if fcn:  # the per-class table (and segmentations) after the per-image rows
        from pix2pix_jax import fcn_score  # only the FCN-score needs it

        images = "fcn" if fcn_segmentations else None
        section = fcn_score.html_section(fcn.per_class, fcn.seen, images)
        html = html.replace("</body>", section + "</body>")
    paths.write_text(os.path.join(out, "index.html"), html)
    return record, out


def evaluate_replicas(
    workdir: str, split: str = "test", output: str | None = None, **kwargs
) -> tuple[dict, str]:
    """Evaluate every replica of a num_seeds run, then aggregate: (the record, output folder).

    Replica k's results go to OUTPUT/seed_<s>/ (the default OUTPUT as `evaluate`'s);
    OUTPUT/metrics.json holds each metric's mean, std and 95% interval over the
    replicas (NAME_mean, NAME_std, NAME_ci95_low, NAME_ci95_high) and the per-seed values.
    """
    seeds = replicas.seeds(config_lib.load_workdir_config(workdir))
    records, folder = [], output
    for index, seed in enumerate(seeds):
        sub = os.path.join(output, f"seed_{seed}") if output else None
        record, out = evaluate(workdir, split, output=sub, seed_index=index, **kwargs)
        records.append(record)
        folder = os.path.dirname(out)
    values = [{n: v for n, v in r.items() if isinstance(v, float)} for r in records]
    first = records[0]
    aggregate = {key: first[key] for key in ("split", "step", "mode", "num_images")}
    aggregate.update(seed="all", seeds=[r["seed"] for r in records])
    aggregate.update(replicas.aggregate(values))
    aggregate["per_seed"] = {str(r["seed"]): v for r, v in zip(records, values, strict=True)}
    paths.write_text(os.path.join(folder, "metrics.json"), json.dumps(aggregate, indent=2) + "\n")
    return aggregate, folder


def _fcn_consumer(config, source, weights, cityscapes_dir, real, out, segmentations, width):
    """The FCN-score consumer (None without `weights`), checked before any work."""
    if not weights:
        return None
    from pix2pix_jax import fcn_score  # only the FCN-score needs it

    cityscapes = config.dataset.name.startswith("pix2pix/cityscapes")
    if cityscapes and input_pipeline.direction(config.dataset) != "BtoA":  # photos are B
        raise ConfigError("the FCN-score needs a labels -> photo model (direction BtoA)")
    save_dir = os.path.join(out, "fcn") if segmentations else None
    return fcn_score.consumer_for_split(weights, cityscapes_dir, source, real, save_dir, width)


def _lpips_consumer(heads: str | None, backbone: str | None):
    """The LPIPS consumer (None without the flags), its files read and checked before the work."""
    if not heads and not backbone:
        return None
    from pix2pix_jax import lpips  # only LPIPS needs it

    return lpips.make_consumer(heads, backbone)


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
    flags.DEFINE_string(
        "fcn_weights", None, "fcn-8s-cityscapes.caffemodel: adds the FCN-scores (Cityscapes)."
    )
    flags.DEFINE_string("cityscapes_dir", None, "Official Cityscapes folder with gtFine/val/.")
    flags.DEFINE_bool("real", False, "FCN-scores of the real photos (the paper's ground truth).")
    flags.DEFINE_bool("fcn_segmentations", False, "Save and show the FCN segmentations.")
    flags.DEFINE_integer(
        "seed_index", None, "num_seeds runs: the replica (0..K-1) to evaluate; default all."
    )
    flags.DEFINE_string(
        "lpips_weights", None, "lpips' heads, weights/v0.1/alex.pth or vgg.pth: adds LPIPS."
    )
    flags.DEFINE_string(
        "lpips_backbone", None, "torchvision's alexnet or vgg16 state_dict for the LPIPS heads."
    )
    flags.mark_flags_as_required(["workdir"])


def evaluate_from_flags() -> None:
    """Evaluate with the parsed flags and print the metrics."""
    f = flags.FLAGS
    cli.start_runtime_of(f.workdir)
    kwargs = dict(
        checkpoint=f.checkpoint, mode=f.mode, inception_weights=f.inception_weights,
        output=f.output, fcn_weights=f.fcn_weights, cityscapes_dir=f.cityscapes_dir,
        real=f.real, fcn_segmentations=f.fcn_segmentations,
        lpips_weights=f.lpips_weights, lpips_backbone=f.lpips_backbone,
    )  # fmt: skip
    k = replicas.num_seeds(config_lib.load_workdir_config(f.workdir))
    if k > 1 and f.seed_index is None:
        record, out = evaluate_replicas(f.workdir, f.split, **kwargs)
        names = [n[: -len("_mean")] for n in record if n.endswith("_mean")]
        summary = " ".join(f"{n}={record[n + '_mean']:.4f}±{record[n + '_std']:.4f}" for n in names)
        print(f"{record['split']} over {k} seeds (step {record['step']}): {summary}")
        print(f"Wrote {os.path.join(out, 'metrics.json')} and seed_*/ beside it")
        return
    record, out = evaluate(f.workdir, f.split, seed_index=f.seed_index, **kwargs)
    summary = " ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float))
    print(f"{record['split']} ({record['num_images']} images, step {record['step']}): {summary}")
    print(f"Wrote {os.path.join(out, 'metrics.json')} and {os.path.join(out, 'index.html')}")


def run() -> None:
    """The command: parse the command line, evaluate, report bad input in one line."""
    cli.run(PROG, define_flags, evaluate_from_flags)


if __name__ == "__main__":
    run()
