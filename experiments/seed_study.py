"""Train one config under K seeds and report the spread of the final metrics.

    python experiments/seed_study.py --workdir=/tmp/seed_study --seeds=0,1,2,3 \
        [--mode=together|sequential] [--config=PATH] [--config.FIELD=VALUE ...] \
        [--fcn_weights=fcn-8s-cityscapes.caffemodel --cityscapes_dir=DIR]

`together` (the default) trains the K seeds as one run of `num_seeds=K`
replicas (`pix2pix_jax.replicas`) in WORKDIR/together: one compilation, one
program, a fraction of K runs' wall time; the seeds must then be consecutive
(seed, seed + 1, ...). `sequential` trains them one after another, each in
WORKDIR/seed_<s> (any seeds; the way to compare against). Either is resumable
with the same command.

The final eval metrics of every seed, their mean, sample standard deviation
and 95% interval for the mean (Student's t with K - 1 degrees of freedom; none
for one seed) are printed and written to WORKDIR/seed_study.json and, as a
table, WORKDIR/seed_study.md.

With --fcn_weights and --cityscapes_dir (a Cityscapes labels -> photo config,
e.g. experiments/cityscapes_ablations.py:l1_cgan), each seed's final
checkpoint is also scored by the paper's FCN-8s (`pix2pix_jax.fcn_score`, via
`evaluate`), and fcn_per_pixel_acc, fcn_per_class_acc and fcn_class_iou get
their mean, std and interval too.
"""

import json
import math
import os

from absl import flags

from pix2pix_jax import cli, evaluate, replicas, trainer
from pix2pix_jax.errors import ConfigError

MODES = ("together", "sequential")


def define_flags() -> None:
    """--workdir, --seeds, --mode and --config."""
    flags.DEFINE_string("workdir", None, "Directory holding the run(s) and the summary.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to train, comma-separated.")
    flags.DEFINE_enum("mode", "together", MODES, "One run of K replicas, or K runs in turn.")
    cli.define_config_flag()
    flags.DEFINE_string("fcn_weights", None, "fcn-8s-cityscapes.caffemodel: adds FCN-scores.")
    flags.DEFINE_string("cityscapes_dir", None, "Official Cityscapes folder with gtFine/val/.")
    flags.mark_flags_as_required(["workdir"])


def final_eval_metrics(workdir: str, split: str, seed: int | None = None) -> dict[str, float]:
    """The last eval line of `split` in a run's metrics.jsonl (of replica `seed`), numbers only."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if '"split"' in line]
    last = [r for r in lines if r["split"] == split and r.get("seed") == seed][-1]
    return {k: v for k, v in last.items() if k not in ("step", "split", "seed")}


def fcn_metrics(
    run_dir: str, split: str, weights: str, cityscapes_dir: str, seed_index: int | None = None
) -> dict[str, float]:
    """The FCN-scores of a run's latest checkpoint (replica `seed_index`) on `split`."""
    record, _ = evaluate.evaluate(
        run_dir, split, fcn_weights=weights, cityscapes_dir=cityscapes_dir, progress=False,
        seed_index=seed_index,
    )  # fmt: skip
    return {k: v for k, v in record.items() if k.startswith("fcn_") and isinstance(v, float)}


def summarise(per_seed: dict[int, dict[str, float]]) -> dict:
    """Mean, sample standard deviation (0 for one seed) and 95% interval of each metric."""
    names = sorted(next(iter(per_seed.values())))
    summary = {"seeds": sorted(per_seed), "per_seed": {str(s): m for s, m in per_seed.items()}}
    for name in names:
        stats = replicas.summary([per_seed[s][name] for s in sorted(per_seed)])
        ci = [stats["ci95_low"], stats["ci95_high"]]
        summary[name] = {
            "mean": stats["mean"],
            "std": stats["std"],
            "ci95": None if math.isnan(ci[0]) else ci,
        }
    return summary


def markdown(summary: dict) -> str:
    """The summary as a Markdown table: one row per metric, one column per seed."""
    seeds = summary["seeds"]
    names = sorted(summary["per_seed"][str(seeds[0])])
    rows = [
        "| metric | mean ± std | 95% interval | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---" * (3 + len(seeds)) + "|",
    ]
    for name in names:
        stats, ci = summary[name], summary[name]["ci95"]
        interval = f"{ci[0]:.4f} .. {ci[1]:.4f}" if ci else "-"
        values = " | ".join(f"{summary['per_seed'][str(s)][name]:.4f}" for s in seeds)
        rows.append(
            f"| {name} | {stats['mean']:.4f} ± {stats['std']:.4f} | {interval} | {values} |"
        )
    return "\n".join(rows) + "\n"


def train_together(config, seeds: list[int]) -> dict[int, dict[str, float]]:
    """One run of len(seeds) replicas; the final eval metrics of each seed."""
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ConfigError(
            f"--seeds={','.join(map(str, seeds))}: --mode=together needs consecutive seeds "
            "(s, s+1, ...); use --mode=sequential for others"
        )
    run_config = config.copy_and_resolve_references()
    run_config.seed, run_config.num_seeds = seeds[0], len(seeds)
    run_dir = os.path.join(flags.FLAGS.workdir, "together")
    print(f"== seeds {seeds[0]}..{seeds[-1]} in one run: {run_dir}", flush=True)
    trainer.train_and_evaluate(run_config, run_dir)
    split = config.eval.split
    many = len(seeds) > 1
    per_seed = {s: final_eval_metrics(run_dir, split, s if many else None) for s in seeds}
    if flags.FLAGS.fcn_weights:
        weights, cityscapes = flags.FLAGS.fcn_weights, flags.FLAGS.cityscapes_dir
        for index, s in enumerate(seeds):
            per_seed[s].update(fcn_metrics(run_dir, split, weights, cityscapes, index))
    return per_seed


def train_sequential(config, seeds: list[int]) -> dict[int, dict[str, float]]:
    """One run per seed, one after another; the final eval metrics of each."""
    per_seed = {}
    for seed in seeds:
        run_config = config.copy_and_resolve_references()
        run_config.seed = seed
        run_dir = os.path.join(flags.FLAGS.workdir, f"seed_{seed}")
        print(f"== seed {seed}: {run_dir}", flush=True)
        trainer.train_and_evaluate(run_config, run_dir)
        per_seed[seed] = final_eval_metrics(run_dir, config.eval.split)
        if flags.FLAGS.fcn_weights:
            weights, cityscapes = flags.FLAGS.fcn_weights, flags.FLAGS.cityscapes_dir
            per_seed[seed].update(fcn_metrics(run_dir, config.eval.split, weights, cityscapes))
    return per_seed


def study() -> None:
    """Train every seed, then summarise."""
    config = flags.FLAGS.config
    cli.start_runtime(config, announce=False)
    if flags.FLAGS.fcn_weights and not flags.FLAGS.cityscapes_dir:  # before hours of training
        raise ConfigError("--fcn_weights needs --cityscapes_dir (the Cityscapes labels)")
    seeds = [int(s) for s in flags.FLAGS.seeds]
    train = train_together if flags.FLAGS.mode == "together" else train_sequential
    summary = summarise(train(config, seeds))
    summary["mode"] = flags.FLAGS.mode
    path = os.path.join(flags.FLAGS.workdir, "seed_study.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(flags.FLAGS.workdir, "seed_study.md"), "w") as f:
        f.write(markdown(summary))
    for name in sorted(summary["per_seed"][str(seeds[0])]):
        ci = summary[name]["ci95"]
        interval = f" (95% interval {ci[0]:.4f} .. {ci[1]:.4f})" if ci else ""
        print(f"{name}: {summary[name]['mean']:.4f} ± {summary[name]['std']:.4f}{interval}")
    print(f"Wrote {path} and seed_study.md")


if __name__ == "__main__":
    cli.run("seed_study", define_flags, study)
