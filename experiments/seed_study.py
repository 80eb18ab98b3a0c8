"""Train one config under K seeds and report the spread of the final metrics.

    python experiments/seed_study.py --workdir=/tmp/seed_study --seeds=0,1,2,3,4 \
        [--config=PATH] [--config.FIELD=VALUE ...] \
        [--fcn_weights=fcn-8s-cityscapes.caffemodel --cityscapes_dir=DIR]

Each seed trains in WORKDIR/seed_<s> (resumable like any run); the final eval
metrics of every seed, their mean, sample standard deviation and 95% interval
for the mean (Student's t with K - 1 degrees of freedom; none for one seed),
are printed and written to WORKDIR/seed_study.json.

With --fcn_weights and --cityscapes_dir (a Cityscapes labels -> photo config,
e.g. experiments/cityscapes_ablations.py:l1_cgan), each seed's final
checkpoint is also scored by the paper's FCN-8s (`pix2pix_jax.fcn_score`, via
`evaluate`, results in WORKDIR/seed_<s>/eval/), and fcn_per_pixel_acc,
fcn_per_class_acc and fcn_class_iou get their mean, std and interval too.
"""

import json
import math
import os
import statistics

from absl import flags
from scipy import stats

from pix2pix_jax import cli, evaluate, trainer
from pix2pix_jax.errors import ConfigError


def define_flags() -> None:
    """--workdir, --seeds and --config."""
    flags.DEFINE_string("workdir", None, "Directory holding one workdir per seed and the summary.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to train, comma-separated.")
    cli.define_config_flag()
    flags.DEFINE_string("fcn_weights", None, "fcn-8s-cityscapes.caffemodel: adds FCN-scores.")
    flags.DEFINE_string("cityscapes_dir", None, "Official Cityscapes folder with gtFine/val/.")
    flags.mark_flags_as_required(["workdir"])


def final_eval_metrics(workdir: str, split: str) -> dict[str, float]:
    """The last eval line of `split` in a run's metrics.jsonl, without step and split."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if '"split"' in line]
    last = [r for r in lines if r["split"] == split][-1]
    return {k: v for k, v in last.items() if k not in ("step", "split")}


def fcn_metrics(run_dir: str, split: str, weights: str, cityscapes_dir: str) -> dict[str, float]:
    """The FCN-scores of a run's latest checkpoint on `split` (the `evaluate` command's)."""
    record, _ = evaluate.evaluate(
        run_dir, split, fcn_weights=weights, cityscapes_dir=cityscapes_dir, progress=False
    )
    return {k: v for k, v in record.items() if k.startswith("fcn_") and isinstance(v, float)}


def interval95(values: list[float]) -> list[float] | None:
    """The 95% confidence interval of the mean (Student's t), or None for one value."""
    if len(values) < 2:
        return None
    mean, half = statistics.fmean(values), stats.t.ppf(0.975, len(values) - 1)
    half *= statistics.stdev(values) / math.sqrt(len(values))
    return [float(mean - half), float(mean + half)]


def summarise(per_seed: dict[int, dict[str, float]]) -> dict:
    """Mean, sample standard deviation (0 for one seed) and 95% interval of each metric."""
    names = sorted(next(iter(per_seed.values())))
    summary = {"seeds": sorted(per_seed), "per_seed": {str(s): m for s, m in per_seed.items()}}
    for name in names:
        values = [per_seed[s][name] for s in sorted(per_seed)]
        summary[name] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "ci95": interval95(values),
        }
    return summary


def study() -> None:
    """Train every seed, then summarise."""
    config = flags.FLAGS.config
    cli.start_runtime(config, announce=False)
    if flags.FLAGS.fcn_weights and not flags.FLAGS.cityscapes_dir:  # before hours of training
        raise ConfigError("--fcn_weights needs --cityscapes_dir (the Cityscapes labels)")
    per_seed = {}
    for seed in map(int, flags.FLAGS.seeds):
        run_config = config.copy_and_resolve_references()
        run_config.seed = seed
        run_dir = os.path.join(flags.FLAGS.workdir, f"seed_{seed}")
        print(f"== seed {seed}: {run_dir}", flush=True)
        trainer.train_and_evaluate(run_config, run_dir)
        per_seed[seed] = final_eval_metrics(run_dir, config.eval.split)
        if flags.FLAGS.fcn_weights:
            weights, cityscapes = flags.FLAGS.fcn_weights, flags.FLAGS.cityscapes_dir
            per_seed[seed].update(fcn_metrics(run_dir, config.eval.split, weights, cityscapes))
    summary = summarise(per_seed)
    path = os.path.join(flags.FLAGS.workdir, "seed_study.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    for name in sorted(next(iter(per_seed.values()))):
        ci = summary[name]["ci95"]
        interval = f" (95% interval {ci[0]:.4f} .. {ci[1]:.4f})" if ci else ""
        print(f"{name}: {summary[name]['mean']:.4f} ± {summary[name]['std']:.4f}{interval}")
    print(f"Wrote {path}")


if __name__ == "__main__":
    cli.run("seed_study", define_flags, study)
