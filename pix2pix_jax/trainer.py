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
    replicas,
    runtime,
    steps,
    writers,
)
from pix2pix_jax import config as config_lib
from pix2pix_jax import workdir as workdir_lib
from pix2pix_jax.errors import (
    CheckpointError,
    ConfigError,
    DamagedCheckpointError,
    DivergedError,
    WorkdirError,
)

DAMAGED_DIR = "checkpoints_damaged"  # where damaged checkpoints are moved, out of resume's way


class _Logger:
    """Train-metric bookkeeping between log steps (device arrays until flushed)."""

    def __init__(self, run: "_Run", progress):
        self.run, self.progress = run, progress
        self.pending: list[dict] = []
        self.since = time.perf_counter()

    def add(self, step_metrics: dict) -> None:
        self.pending.append(step_metrics)

    def flush(self, step: int) -> None:
        """Average the pending steps' metrics per replica, check them and write them out."""
        run = self.run
        per_step = [run.placement.metrics(m) for m in self.pending]  # [steps][replicas]
        elapsed = time.perf_counter() - self.since
        for r, seed in enumerate(replicas.seeds(run.config)):
            means = {k: float(np.mean([m[r][k] for m in per_step])) for k in per_step[0][r]}
            self._check(means, step, len(per_step), seed)
            means["learning_rate"] = float(run.schedule(step - 1))
            # Images of all replicas: the throughput of the program as a whole.
            means["images_per_second"] = len(per_step) * run.config.batch_size * run.placement.k
            means["images_per_second"] /= elapsed
            if run.writer:
                run.writer.write(step, means, seed=seed if run.placement.k > 1 else None)
            if r == 0:
                self.progress.set_postfix(g_l1=f"{means['g_l1']:.4f}", d=f"{means['d_loss']:.3f}")
        self.pending, self.since = [], time.perf_counter()

    def _check(self, means: dict, step: int, count: int, seed: int) -> None:
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
            which = f" of seed {seed}" if self.run.placement.k > 1 else ""
            raise DivergedError(
                f"non-finite {', '.join(bad)}{which} at step {step} (mean of steps "
                f"{step - count + 1}..{step}); stopping, the last checkpoint is kept"
            )


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    path = os.path.join(workdir, "config.json")
    if paths.exists(path):
        previous = json.loads(paths.read_text(path))
        _check_same_replicas(previous, config, workdir)
        if previous != json.loads(config.to_json()):
            print(f"Note: config differs from {path}; resuming with the new one.", flush=True)
    # Readers beside the run see the old file or the new one (a rename, or one object upload).
    paths.write_text(path, config.to_json(indent=2) + "\n")


def _check_same_replicas(previous: dict, config: ml_collections.ConfigDict, workdir: str) -> None:
    """A run's checkpoints hold num_seeds replicas: resuming them as another K cannot work."""
    before, now = previous.get("num_seeds", 1), replicas.num_seeds(config)
    directory = os.path.join(workdir, "checkpoints")
    saved = paths.is_dir(directory) and any(e.isdigit() for e in paths.listdir(directory))
    if before != now and saved:
        raise ConfigError(
            f"num_seeds={now} does not match the checkpoints in {directory}, which hold "
            f"{before} replica(s); resume with --config.num_seeds={before} or use a new workdir"
        )


@dataclasses.dataclass
class _Run:
    """What one training run holds open: data, networks, checkpoints and outputs."""

    config: ml_collections.ConfigDict
    workdir: str
    setup: steps.Setup
    train_iter: Any
    eval_source: Any
    checkpointer: checkpointing.Checkpointer
    best: list[checkpointing.BestCheckpointer]  # one per replica, or none
    writer: writers.MetricWriter | None
    schedule: Callable
    feature_fn: Callable | None
    placement: Any  # replicas.SinglePlacement | replicas.Placement

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
        placement = replicas.placement(config, setup)
        train_iter = _train_iterator(config, train_source, placement)
        best = []
        if config.eval.best_metric:
            best = [
                checkpointing.BestCheckpointer(
                    checkpointing.best_dir(workdir, seed, placement.k), config.eval.best_metric
                )
                for seed in replicas.seeds(config)
            ]
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
            placement=placement,
        )

    def close(self) -> None:
        """Wait for pending checkpoint writes, then close everything (all, even if one fails)."""
        parts = [self.checkpointer, *self.best, self.writer]
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
        state = assembly.initial_states(self.config, self.setup)
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


def _train_iterator(config: ml_collections.ConfigDict, source: Any, placement: Any) -> Any:
    """The train stream: the run's, or K replicas' streams (their seeds' orders) stacked."""
    if placement.k == 1:
        return iter(input_pipeline.train_dataset(config, source))
    streams = [
        iter(input_pipeline.train_dataset(replicas.replica_config(config, k), source))
        for k in range(placement.k)
    ]
    return replicas.StackedIterator(streams, placement)


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
    frozen = assembly.frozen_params(config)  # perceptual terms' weights: checked before writing
    workdir = workdir_lib.prepare(workdir)
    note = functools.partial(_last_checkpoint_note, workdir)
    try:
        with (
            _workdir_lock(workdir),
            workdir_lib.one_line_disk_full(workdir, note),
            checkpointing.quiet_failed_io(),
        ):
            return _train(config, workdir, frozen)
    finally:
        # JAX's caches would keep the run's executables, and on XLA:CPU each holds
        # thousands of memory maps: a process that trains run after run (a sweep, a
        # sequential seed study) reaches the kernel's limit of maps per process
        # (vm.max_map_count) after about 15 runs and crashes inside the compiler.
        jax.clear_caches()


def _train(
    config: ml_collections.ConfigDict, workdir: str, frozen: dict[str, Any] | None = None
) -> steps.TrainState:
    """The run itself, in a locked, usable `workdir`; `frozen`: see `assembly.frozen_params`."""
    if jax.process_index() == 0:
        _write_config(config, workdir)
        print(f"Translating {config_lib.describe_direction(config)}.", flush=True)
    run = _Run.open(config, workdir)
    progress = None
    try:
        state, start = run.restore()
        state = run.placement.to_devices(state)
        progress = tqdm.tqdm(
            total=config.num_train_steps, initial=start, file=sys.stdout, unit="step",
            disable=jax.process_index() != 0, dynamic_ncols=True, mininterval=2.0,
        )  # fmt: skip
        evaluator = _Evaluator(run, progress)
        if start == 0:
            evaluator(state, 0)
        with preemption.PreemptionWatch() as watch:
            logger = _Logger(run, progress)
            state = _train_loop(state, start, run, evaluator, watch, logger, frozen)
    finally:
        if progress:
            progress.close()
        run.close()
    return run.placement.to_host(state)


class _Evaluator:
    """Runs the eval loop at a step and records its results, samples and best checkpoints.

    With K replicas each is evaluated in turn (its own seed's test-time noise),
    and one more line gives each metric's mean, std and 95% interval over them.
    """

    def __init__(self, run: _Run, progress: tqdm.tqdm):
        self.run, self.progress = run, progress
        mode = run.config.eval.mode
        if run.placement.k == 1:
            self.p_eval = parallel.pmap_step(steps.eval_step, setup=run.setup, mode=mode)
        else:  # one compilation for all replicas: the seed is an argument
            self.p_eval = replicas.eval_step_with_seed(run.setup, mode)

    def __call__(self, state: Any, step: int) -> None:
        """Evaluate every replica of `state` (as placed) at `step`."""
        run = self.run
        seeds = replicas.seeds(run.config)
        results = []
        for k, seed in enumerate(seeds):
            replica = run.placement.replica(state, k)
            results.append(self._one(replica, step, k, seed))
        if run.placement.k > 1:
            aggregate = replicas.aggregate(results)
            if run.writer:
                run.writer.write(step, aggregate, split=run.config.eval.split, seed="all")
            names = [n for n in results[0] if f"{n}_mean" in aggregate]
            summary = " ".join(
                f"{n}={aggregate[f'{n}_mean']:.4f}±{aggregate[f'{n}_std']:.4f}" for n in names
            )
            self.progress.write(f"[step {step}] {run.config.eval.split} over {len(seeds)} seeds: "
                                f"{summary}")  # fmt: skip

    def _one(self, state: Any, step: int, k: int, seed: int) -> dict[str, float]:
        """Evaluate one replica's (replicated) state; write its line, samples and best."""
        run, split, many = self.run, self.run.config.eval.split, self.run.placement.k > 1
        grid = evaluation.SampleGrid(run.config.eval.num_samples)
        consumers: list = [grid]
        if run.feature_fn:
            consumers.append(evaluation.FeatureDistances(run.feature_fn))
        p_eval = self.p_eval
        if many:

            def p_eval(replica_state, batch):
                return self.p_eval(replica_state, batch, np.uint32(seed))

        results = evaluation.evaluate(p_eval, state, run.config, run.eval_source, consumers)
        if run.writer:
            image = grid.grid()
            run.writer.write(step, results, split=split, seed=seed if many else None)
            tag = f"{split}/seed_{seed}/samples" if many else f"{split}/samples"
            run.writer.write_image(step, tag, image)
            folder = os.path.join(run.workdir, "samples", *([f"seed_{seed}"] if many else []))
            writers.save_png(os.path.join(folder, f"step_{step:07d}.png"), image)
        summary = " ".join(f"{k}={v:.4f}" for k, v in results.items())
        best = run.best[k] if run.best else None
        if best and best.update(step, parallel.unreplicate(state), results):
            where = os.path.relpath(
                checkpointing.best_dir(run.workdir, seed, run.placement.k), run.workdir
            )
            summary += f" (best {best.metric} so far: saved to {where}/)"
        label = f"{split} seed {seed}" if many else split
        self.progress.write(f"[step {step}] {label}: {summary}")
        return results


def _train_loop(state, start, run: _Run, evaluate_at, watch, logger, frozen=None):
    """Steps start + 1 .. num_train_steps, with logging, checkpoints and evaluations."""
    config = run.config
    p_train = run.placement.train_step()
    # The frozen networks go in as a (replicated) argument, not as compiled-in constants.
    extra = {} if frozen is None else {"frozen": parallel.replicate(frozen)}
    batches = parallel.prefetch_to_devices(run.train_iter)
    for step in range(start + 1, config.num_train_steps + 1):
        batch, data_state = next(batches)
        state, step_metrics = p_train(state, batch, **extra)
        logger.add(step_metrics)
        logger.progress.update()
        last = step == config.num_train_steps
        stop = not last and watch.should_stop(step)
        save = step % config.checkpoint_every_steps == 0 or last or stop
        if step % config.log_every_steps == 0 or save:
            logger.flush(step)  # also before each save: never checkpoint a non-finite state
        if save:
            run.checkpointer.save(step, run.placement.to_host(state), data_state)
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
