"""The train loop: side effects at the edges around the pure steps of `steps`.

`train_and_evaluate(config, workdir)` trains from the latest checkpoint in
`workdir` (or from scratch), evaluates on the eval split at step 0, every
`eval_every_steps` and at the end, and writes config.json, metrics.jsonl,
TensorBoard events, samples/, checkpoints/ and (with `eval.best_metric`)
checkpoints_best/ into `workdir`.

A run holds the workdir's lock for its whole life, checks everything it can
before writing anything, resumes from the newest checkpoint that passes its
checksum, and turns a full disk into one line.
"""

import contextlib
import dataclasses
import functools
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
    paths,
    preemption,
    runtime,
    steps,
    writers,
)
from pix2pix_jax import config as config_lib
from pix2pix_jax import workdir as workdir_lib
from pix2pix_jax.errors import CheckpointError, DamagedCheckpointError, DivergedError, WorkdirError

DAMAGED_DIR = "checkpoints_damaged"  # where damaged checkpoints are moved, out of resume's way


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
    if paths.exists(path):
        previous = json.loads(paths.read_text(path))
        if previous != json.loads(config.to_json()):
            print(f"Note: config differs from {path}; resuming with the new one.", flush=True)
    # Readers beside the run see the old file or the new one (a rename, or one object upload).
    paths.write_text(path, config.to_json(indent=2) + "\n")


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
            writer=None,  # opened by restore, which knows the step metrics.jsonl continues from
            schedule=steps.learning_rate_schedule(config, len(train_source)),
            feature_fn=feature_fn,
        )

    def close(self) -> None:
        """Wait for pending checkpoint writes, then close everything (all, even if one fails)."""
        parts = [self.checkpointer, self.best, self.writer]
        errors = []
        for part in filter(None, parts):
            try:
                part.close()
            except Exception as e:  # closing the rest matters more; the first error is raised
                errors.append(e)
        if errors:
            raise errors[0]

    def restore(self) -> tuple[steps.TrainState, int]:
        """The host state to start from and its step: the newest intact checkpoint's, or new.

        Also opens the metric writer, which drops the lines an interrupted
        run wrote after that checkpoint (they are about to be written again).
        """
        state = assembly.initial_state(self.config, self.setup)
        restored = self._restore_intact(state)
        start = 0
        if restored is not None:
            # A step-0 checkpoint is a converted model: start from it.
            state, data_state, start = restored
            if data_state:
                self.train_iter.set_state(data_state)
            print(f"Resuming from the checkpoint of step {start}.", flush=True)
        if jax.process_index() == 0:
            # Step 0 is evaluated again; after step N > 0, the lines through N stay.
            self.writer = writers.MetricWriter(
                self.workdir, start if start else -1, self.config.checkpoint_every_steps
            )
        return state, start

    def _restore_intact(self, template: Any) -> tuple[Any, dict, int] | None:
        """(state, data state, step) of the newest checkpoint that verifies, or None if none.

        A damaged one is moved to checkpoints_damaged/ and the next older is
        tried (config.damaged_checkpoint='fallback'), or the run stops ('stop').
        """
        damaged = []
        for step in reversed(self.checkpointer.all_steps()):
            try:
                state, data_state = self.checkpointer.restore(step, template)
                return state, data_state, step
            except DamagedCheckpointError as e:
                if self.config.damaged_checkpoint == "stop":
                    raise
                damaged.append(self._set_aside(step, e))
        if damaged:
            raise CheckpointError(
                f"no intact checkpoint left in {self.workdir}/checkpoints (damaged ones moved to "
                f"{DAMAGED_DIR}/); run again to start from scratch"
            )
        return None

    def _set_aside(self, step: int, error: Exception) -> int:
        """Move a damaged checkpoint out of checkpoints/ (process 0), announcing it."""
        target = os.path.join(self.workdir, DAMAGED_DIR, str(step))
        if jax.process_index() == 0:
            target = self.checkpointer.set_aside(step, os.path.join(self.workdir, DAMAGED_DIR))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self.checkpointer.reload()
        print(f"Refused: {error}; moved it to {target}, falling back to an older one.", flush=True)
        return step


def _check_devices(config: ml_collections.ConfigDict) -> None:
    """The batch sizes must split evenly over the devices: checked before anything is written."""
    parallel.split_batch(config.batch_size, "batch_size")
    parallel.split_batch(config.eval.batch_size, "eval.batch_size")


@contextlib.contextmanager
def _workdir_lock(workdir: str):
    """Hold `workdir`'s run lock (process 0 takes it for all) while the block runs."""
    lock, error = workdir_lib.RunLock(workdir), None
    if jax.process_index() == 0:
        try:
            lock.acquire()
        except WorkdirError as e:
            error = e
    if jax.process_count() > 1:  # every process stops if process 0 could not take it
        from jax.experimental import multihost_utils

        if not multihost_utils.broadcast_one_to_all(np.int32(error is None)) and error is None:
            error = WorkdirError(f"workdir {workdir} is in use by another run (see process 0)")
    if error is not None:
        raise error
    try:
        yield
    finally:
        lock.release()


def _last_checkpoint_note(workdir: str) -> str:
    """Which complete checkpoint a failed run leaves as the one to resume from."""
    directory = os.path.join(workdir, "checkpoints")
    done = [int(e) for e in paths.listdir(directory) if e.isdigit()]
    if not done:
        return "; no checkpoint was completed"
    last = os.path.join(directory, str(max(done)))
    size = sum(paths.epath_of(f).stat().length for f in paths.walk_files(last))
    return (
        f"; the last complete checkpoint is {last} ({size / 2**20:.1f} MiB, about what each "
        "checkpoint needs), from which a rerun resumes"
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> steps.TrainState:
    """Train and evaluate as `config` says, resuming from `workdir`; returns the final state.

    SIGTERM or SIGINT saves a checkpoint at the current step and returns
    early; running again with the same `workdir` continues exactly. A second
    run on the same `workdir` stops at once with a WorkdirError.
    """
    config_lib.validate(config)
    config = config_lib.resolved(config)  # config.json names the direction it trained
    runtime.check(config)
    _check_devices(config)
    workdir = workdir_lib.prepare(workdir)
    note = functools.partial(_last_checkpoint_note, workdir)
    with (
        _workdir_lock(workdir),
        workdir_lib.one_line_disk_full(workdir, note),
        checkpointing.quiet_failed_io(),
    ):
        return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: str) -> steps.TrainState:
    """The run itself, in a locked, usable `workdir`."""
    if jax.process_index() == 0:
        _write_config(config, workdir)
        print(f"Translating {config_lib.describe_direction(config)}.", flush=True)
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
            run.checkpointer.wait()  # say "saved" only once it is
            logger.progress.write(
                f"Stopping at step {step} on request: checkpoint saved; "
                "the same command resumes from it."
            )
            break
        if step % config.eval_every_steps == 0 or last:
            evaluate_at(state, step)
    return state
