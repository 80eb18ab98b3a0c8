"""The train loop: side effects at the edges around the pure steps of `steps`.

`train_and_evaluate(config, workdir)` trains from the latest checkpoint in
`workdir` (or from scratch), evaluates on the eval split at step 0, every
`eval_every_steps` and at the end, and writes config.json, metrics.jsonl,
TensorBoard events, samples/, checkpoints/ and (with `eval.best_metric`)
checkpoints_best/ into `workdir`.
"""

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from pix2pix_jax import (
    assembly,
    checkpointing,
    evaluation,
    input_pipeline,
    parallel,
    preemption,
    runtime,
    steps,
    writers,
)
from pix2pix_jax import config as config_lib
from pix2pix_jax.errors import DivergedError


class _Logger:
    """Train-metric bookkeeping between log steps (device arrays until flushed)."""

    def __init__(self, config, writer, schedule, progress):
        self.config, self.writer, self.schedule, self.progress = config, writer, schedule, progress
        self.pending: list[dict] = []
        self.since = time.perf_counter()

    def add(self, step_metrics: dict) -> None:
        self.pending.append(step_metrics)

    def flush(self, step: int) -> None:
        """Average the pending steps' metrics, check them and write them out."""
        stacked = jax.device_get(self.pending)
        means = {k: float(np.mean([m[k][0] for m in stacked])) for k in stacked[0]}
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
            raise DivergedError(
                f"non-finite {', '.join(bad)} at step {step} (mean of steps "
                f"{step - len(stacked) + 1}..{step}); stopping, the last checkpoint is kept"
            )
        elapsed = time.perf_counter() - self.since
        means["learning_rate"] = float(self.schedule(step - 1))
        means["images_per_second"] = len(stacked) * self.config.batch_size / elapsed
        if self.writer:
            self.writer.write(step, means)
        self.progress.set_postfix(g_l1=f"{means['g_l1']:.4f}", d=f"{means['d_loss']:.3f}")
        self.pending, self.since = [], time.perf_counter()


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous != json.loads(config.to_json()):
            print(f"Note: config differs from {path}; resuming with the new one.", flush=True)
    with open(path, "w") as f:
        f.write(config.to_json(indent=2) + "\n")


@dataclasses.dataclass
class _Run:
    """What one training run holds open: data, networks, checkpoints and outputs."""

    config: ml_collections.ConfigDict
    workdir: str
    setup: steps.Setup
    train_iter: Any
    eval_source: Any
    checkpointer: checkpointing.Checkpointer
    best: checkpointing.BestCheckpointer | None
    writer: writers.MetricWriter | None
    schedule: Callable
    feature_fn: Callable | None

    @classmethod
    def open(cls, config: ml_collections.ConfigDict, workdir: str) -> "_Run":
        """Load the splits, build the networks, open the checkpoints and the writers.

        Everything that can fail on bad input comes before anything is opened.
        """
        train_source = input_pipeline.load_split(config.dataset, config.dataset.train_split)
        eval_source = input_pipeline.load_split(config.dataset, config.eval.split)
        weights = config.eval.inception_weights
        feature_fn = evaluation.inception_features(weights) if weights else None
        setup = assembly.make_setup(config, len(train_source))
        train_iter = iter(input_pipeline.train_dataset(config, train_source))
        best = None
        if config.eval.best_metric:
            best = checkpointing.BestCheckpointer(
                os.path.join(workdir, checkpointing.BEST_DIR), config.eval.best_metric
            )
        return cls(
            config=config,
            workdir=workdir,
            setup=setup,
            train_iter=train_iter,
            eval_source=eval_source,
            checkpointer=checkpointing.Checkpointer(
                os.path.join(workdir, "checkpoints"), config.max_checkpoints_to_keep
            ),
            best=best,
            writer=writers.MetricWriter(workdir) if jax.process_index() == 0 else None,
            schedule=steps.learning_rate_schedule(config, len(train_source)),
            feature_fn=feature_fn,
        )

    def close(self) -> None:
        """Wait for pending checkpoint writes, then close everything."""
        self.checkpointer.close()
        if self.best:
            self.best.close()
        if self.writer:
            self.writer.close()

    def restore(self) -> tuple[steps.TrainState, int]:
        """The host state to start from and its step: the latest checkpoint's, or a new one."""
        state = assembly.initial_state(self.config, self.setup)
        latest = self.checkpointer.latest_step()
        if latest is None:
            return state, 0
        # A step-0 checkpoint is a converted model: start from it.
        state, data_state = self.checkpointer.restore(latest, state)
        if data_state:
            self.train_iter.set_state(data_state)
        print(f"Resuming from the checkpoint of step {latest}.", flush=True)
        return state, latest


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> steps.TrainState:
    """Train and evaluate as `config` says, resuming from `workdir`; returns the final state.

    SIGTERM or SIGINT saves a checkpoint at the current step and returns
    early; running again with the same `workdir` continues exactly.
    """
    config_lib.validate(config)
    runtime.check(config)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        _write_config(config, workdir)
    run = _Run.open(config, workdir)
    progress = None
    try:
        state, start = run.restore()
        state = parallel.replicate(state)
        progress = tqdm.tqdm(
            total=config.num_train_steps, initial=start, file=sys.stdout, unit="step",
            disable=jax.process_index() != 0, dynamic_ncols=True, mininterval=2.0,
        )  # fmt: skip
        evaluator = _Evaluator(run, progress)
        if start == 0:
            evaluator(state, 0)
        with preemption.PreemptionWatch() as watch:
            logger = _Logger(config, run.writer, run.schedule, progress)
            state = _train_loop(state, start, run, evaluator, watch, logger)
    finally:
        if progress:
            progress.close()
        run.close()
    return jax.device_get(parallel.unreplicate(state))


class _Evaluator:
    """Runs the eval loop at a step and records its results, samples and best checkpoint."""

    def __init__(self, run: _Run, progress: tqdm.tqdm):
        self.run, self.progress = run, progress
        self.p_eval = parallel.pmap_step(
            steps.eval_step, setup=run.setup, mode=run.config.eval.mode
        )

    def __call__(self, state: Any, step: int) -> None:
        """Evaluate `state` (replicated) at `step`."""
        run, split = self.run, self.run.config.eval.split
        grid = evaluation.SampleGrid(run.config.eval.num_samples)
        consumers: list = [grid]
        if run.feature_fn:
            consumers.append(evaluation.FeatureDistances(run.feature_fn))
        results = evaluation.evaluate(self.p_eval, state, run.config, run.eval_source, consumers)
        if run.writer:
            image = grid.grid()
            run.writer.write(step, results, split=split)
            run.writer.write_image(step, f"{split}/samples", image)
            path = os.path.join(run.workdir, "samples", f"step_{step:07d}.png")
            writers.save_png(path, image)
        summary = " ".join(f"{k}={v:.4f}" for k, v in results.items())
        if run.best and run.best.update(step, parallel.unreplicate(state), results):
            summary += f" (best {run.best.metric} so far: saved to {checkpointing.BEST_DIR}/)"
        self.progress.write(f"[step {step}] {split}: {summary}")


def _train_loop(state, start, run: _Run, evaluate_at, watch, logger):
    """Steps start + 1 .. num_train_steps, with logging, checkpoints and evaluations."""
    config = run.config
    p_train = parallel.pmap_train_step(steps.train_step, setup=run.setup)
    batches = parallel.prefetch_to_devices(run.train_iter)
    for step in range(start + 1, config.num_train_steps + 1):
        batch, data_state = next(batches)
        state, step_metrics = p_train(state, batch)
        logger.add(step_metrics)
        logger.progress.update()
        last = step == config.num_train_steps
        stop = not last and watch.should_stop(step)
        save = step % config.checkpoint_every_steps == 0 or last or stop
        if step % config.log_every_steps == 0 or save:
            logger.flush(step)  # also before each save: never checkpoint a non-finite state
        if save:
            run.checkpointer.save(step, parallel.unreplicate(state), data_state)
        if stop:
            logger.progress.write(
                f"Stopping at step {step} on request: checkpoint saved; "
                "the same command resumes from it."
            )
            break
        if step % config.eval_every_steps == 0 or last:
            evaluate_at(state, step)
    return state
