"""Train one config under K seeds and report the spread of the final metrics.

    python experiments/seed_study.py --workdir=/tmp/seed_study --seeds=0,1,2,3,4 \
        [--config=PATH] [--config.FIELD=VALUE ...]

Each seed trains in WORKDIR/seed_<s> (resumable like any run); the final eval
metrics of every seed, and their mean and sample standard deviation, are
printed and written to WORKDIR/seed_study.json.
"""

import json
import os
import statistics

from absl import flags

from pix2pix_jax import cli, trainer


def define_flags() -> None:
    """--workdir, --seeds and --config."""
    flags.DEFINE_string("workdir", None, "Directory holding one workdir per seed and the summary.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to train, comma-separated.")
    cli.define_config_flag()
    flags.mark_flags_as_required(["workdir"])


def final_eval_metrics(workdir: str, split: str) -> dict[str, float]:
    """The last eval line of `split` in a run's metrics.jsonl, without step and split."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if '"split"' in line]
    last = [r for r in lines if r["split"] == split][-1]
    return {k: v for k, v in last.items() if k not in ("step", "split")}


def summarise(per_seed: dict[int, dict[str, float]]) -> dict:
    """Mean and sample standard deviation (0 for one seed) of each metric over seeds."""
    names = sorted(next(iter(per_seed.values())))
    summary = {"seeds": sorted(per_seed), "per_seed": {str(s): m for s, m in per_seed.items()}}
    for name in names:
        values = [per_seed[s][name] for s in sorted(per_seed)]
        summary[name] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
    return summary


def study() -> None:
    """Train every seed, then summarise."""
    config = flags.FLAGS.config
    cli.start_runtime(config, announce=False)
    per_seed = {}
    for seed in map(int, flags.FLAGS.seeds):
        run_config = config.copy_and_resolve_references()
        run_config.seed = seed
        run_dir = os.path.join(flags.FLAGS.workdir, f"seed_{seed}")
        print(f"== seed {seed}: {run_dir}", flush=True)
        trainer.train_and_evaluate(run_config, run_dir)
        per_seed[seed] = final_eval_metrics(run_dir, config.eval.split)
    summary = summarise(per_seed)
    path = os.path.join(flags.FLAGS.workdir, "seed_study.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    for name in sorted(next(iter(per_seed.values()))):
        print(f"{name}: {summary[name]['mean']:.4f} ± {summary[name]['std']:.4f}")
    print(f"Wrote {path}")


if __name__ == "__main__":
    cli.run("seed_study", define_flags, study)
