"""The train/eval loop: side effects at the edges around the pure steps of `steps`.

`train_and_evaluate(config, workdir)` trains from the latest checkpoint in
`workdir` (or from scratch), evaluates on the val split at step 0, every
`eval_every_steps` and at the end, and writes config.json, metrics.jsonl,
TensorBoard events, samples/, checkpoints/ and (with `eval.best_metric`)
checkpoints_best/ into `workdir`.
"""

import functools
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import flax.jax_utils
import jax
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from pix2pix_jax import checkpointing, input_pipeline, losses, models, schedules, steps, writers

COMPUTE_DTYPES = ("float32", "bfloat16")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise a ValueError naming the first config field with an unusable value."""
    for field in (
        "num_train_steps",
        "batch_size",
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
        "max_checkpoints_to_keep",
        "eval.batch_size",
        "eval.num_samples",
    ):
        value = config
        for part in field.split("."):
            value = value[part]
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be a positive integer, got {value!r}")
    input_pipeline.check_config(config)
    if not isinstance(config.seed, int) or not 0 <= config.seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {config.seed!r}")
    if config.model.compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"model.compute_dtype={config.model.compute_dtype!r} is not one of {COMPUTE_DTYPES}"
        )
    if not 0 <= config.model.dropout_rate < 1:
        raise ValueError(f"model.dropout_rate must be in [0, 1), got {config.model.dropout_rate}")
    losses.check_config(config.loss)
    schedules.check(config.optimizer)
    if config.eval.mode not in steps.EVAL_MODES:
        raise ValueError(f"eval.mode={config.eval.mode!r} is not one of {steps.EVAL_MODES}")
    if config.eval.best_metric:
        checkpointing.improves(config.eval.best_metric, 0.0, None)  # raises if unknown
    image_shape = input_pipeline.image_shape(config)
    models.create_generator(config.model, image_shape, config.dataset.output_channels)
    models.create_discriminator(config.model)


DETERMINISTIC_GPU_FLAG = "--xla_gpu_deterministic_ops=true"


def configure_runtime(config: ml_collections.ConfigDict) -> None:
    """Set up what must precede JAX's first use of a device: determinism, multi-host.

    Call it before anything touches a device (the command line does); XLA
    reads its flags, and `jax.distributed` must start, before the backends.
    """
    if config.deterministic and DETERMINISTIC_GPU_FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " " + DETERMINISTIC_GPU_FLAG
        ).strip()
    dist = config.distributed
    if dist.initialize:
        # CPU processes need a collectives backend of their own (GPUs and TPUs have theirs).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=dist.coordinator_address or None,
            num_processes=dist.num_processes or None,
            process_id=None if dist.process_id < 0 else dist.process_id,
        )


def _check_runtime(config: ml_collections.ConfigDict) -> None:
    """Refuse a `deterministic` GPU run whose XLA flags came too late to apply."""
    flags_set = DETERMINISTIC_GPU_FLAG in os.environ.get("XLA_FLAGS", "")
    if config.deterministic and jax.default_backend() == "gpu" and not flags_set:
        raise ValueError(
            "deterministic=True needs XLA_FLAGS=" + DETERMINISTIC_GPU_FLAG + " before JAX starts: "
            "run through pix2pix_jax.main, or call train.configure_runtime(config) first"
        )


def make_setup(
    config: ml_collections.ConfigDict, num_train_examples: int | None = None
) -> steps.Setup:
    """The networks, optimisers and loss settings that `config` describes.

    `num_train_examples` (the train split's size) sets the epoch length of
    epoch-based learning-rate schedules; without it the split is looked up.
    """
    tx = steps.make_optimizer(config, num_train_examples)
    return steps.Setup(
        generator=models.create_generator(
            config.model, input_pipeline.image_shape(config), config.dataset.output_channels
        ),
        discriminator=models.create_discriminator(config.model),
        g_tx=tx,
        d_tx=tx,
        seed=config.seed,
        gan_mode=config.loss.gan_mode,
        lambda_l1=config.loss.lambda_l1,
        use_gan=config.loss.use_gan,
        conditional_d=config.loss.conditional_d,
        lambda_gp=config.loss.lambda_gp,
        load_shape=input_pipeline.load_shape(config),
    )


def initial_state(config: ml_collections.ConfigDict, setup: steps.Setup) -> steps.TrainState:
    """The step-0 train state on the host: a function of the config and seed only.

    Its draws use the classic (non-partitionable) threefry: the same values on
    every backend, and XLA:CPU compiles the initialisation ~5x faster.
    """
    init = jax.jit(steps.init_state, static_argnums=(0, 1, 2))
    shape = (*input_pipeline.image_shape(config), config.dataset.output_channels)
    with jax.threefry_partitionable(False):
        return jax.device_get(init(setup, shape, config.dataset.input_channels))


def eval_outputs(p_eval, state, config, eval_source) -> Iterator[tuple]:
    """The eval step over this process's share of the eval split, one batch at a time.

    Yields (mask, batch, generated images, per-image metrics): the batch on
    the host, the rest on the devices (fetch only what is needed), all shaped
    [devices, per-device batch, ...]; `mask` is False for padding.
    """
    for batch in input_pipeline.eval_batches(config, eval_source):
        mask = batch.pop("mask")
        fake, per_image = p_eval(state, batch)
        yield mask, batch, fake, per_image


def add_metrics(sums: dict[str, float], per_image: dict, mask: np.ndarray) -> int:
    """Add the per-image metrics (host arrays) of the real images to `sums`; returns their count."""
    for name, values in per_image.items():
        sums[name] = sums.get(name, 0.0) + float(np.sum(np.asarray(values)[mask]))
    return int(mask.sum())


def mean_metrics(sums: dict[str, float], count: int, split: str) -> dict[str, float]:
    """Means over the images of all processes, from each process's sums and count."""
    if jax.process_count() > 1:  # each process evaluated its own shard of the split
        names = sorted(sums)
        totals = multihost_utils.process_allgather(np.array([count] + [sums[k] for k in names]))
        count, sums = int(totals[:, 0].sum()), dict(zip(names, totals[:, 1:].sum(0), strict=True))
    if count == 0:
        raise ValueError(f"eval split {split!r} is empty")
    return {k: float(v) / count for k, v in sums.items()}


def evaluate(p_eval, state, config, eval_source) -> tuple[dict[str, float], np.ndarray]:
    """Mean metrics over the whole eval split, and a sample grid of its first images."""
    sums: dict[str, float] = {}
    count = 0
    samples = []
    for mask, batch, fake, per_image in eval_outputs(p_eval, state, config, eval_source):
        count += add_metrics(sums, jax.device_get(per_image), mask)
        if sum(len(s[0]) for s in samples) < config.eval.num_samples:  # images only for these
            fake = jax.device_get(fake)
            samples.append([a[mask] for a in (batch["input"], fake, batch["target"])])
    results = mean_metrics(sums, count, config.eval.split)
    inputs, outputs, targets = (
        np.concatenate([s[i] for s in samples])[: config.eval.num_samples] for i in range(3)
    )
    return results, writers.sample_grid(inputs, outputs, targets)


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
            raise FloatingPointError(
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


def _run_eval(p_eval, state, step, *, config, eval_source, writer, workdir, progress, best):
    results, grid = evaluate(p_eval, state, config, eval_source)
    if writer:
        writer.write(step, results, split=config.eval.split)
        writer.write_image(step, f"{config.eval.split}/samples", grid)
        writers.save_png(os.path.join(workdir, "samples", f"step_{step:07d}.png"), grid)
    summary = " ".join(f"{k}={v:.4f}" for k, v in results.items())
    if best and best.update(step, flax.jax_utils.unreplicate(state), results):
        summary += f" (best {best.metric} so far: saved to {checkpointing.BEST_DIR}/)"
    progress.write(f"[step {step}] {config.eval.split}: {summary}")


class PreemptionWatch:
    """Turns SIGTERM and SIGINT into a request to checkpoint the current step and stop.

    With several processes the decision must be the same on all of them, so
    it comes from JAX's preemption sync point (the coordination service
    catches SIGTERM); a single process uses its own signal handlers. A second
    signal while stopping is handled as usual (e.g. KeyboardInterrupt).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "PreemptionWatch":
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _handle(self, signum, frame) -> None:
        self.received = signum
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def should_stop(self, step: int) -> bool:
        """Whether to checkpoint `step` and stop (the same answer on every process)."""
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.received is not None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> steps.TrainState:
    """Train and evaluate as `config` says, resuming from `workdir`; returns the final state.

    SIGTERM or SIGINT saves a checkpoint at the current step and returns
    early; running again with the same `workdir` continues exactly.
    """
    validate_config(config)
    _check_runtime(config)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    is_chief = jax.process_index() == 0
    if is_chief:
        _write_config(config, workdir)
    train_source = input_pipeline.load_split(config.dataset, config.dataset.train_split)
    setup = make_setup(config, len(train_source))
    learning_rate = steps.learning_rate_schedule(config, len(train_source))
    eval_source = input_pipeline.load_split(config.dataset, config.eval.split)
    train_iter = iter(input_pipeline.train_dataset(config, train_source))

    checkpointer = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), config.max_checkpoints_to_keep
    )
    best = None
    if config.eval.best_metric:
        best = checkpointing.BestCheckpointer(
            os.path.join(workdir, checkpointing.BEST_DIR), config.eval.best_metric
        )
    state = initial_state(config, setup)
    latest = checkpointer.latest_step()
    start = latest or 0
    if latest is not None:  # a step-0 checkpoint is a converted model: start from it
        state, data_state = checkpointer.restore(latest, state)
        if data_state:
            train_iter.set_state(data_state)
        print(f"Resuming from the checkpoint of step {start}.", flush=True)
    state = flax.jax_utils.replicate(state, axis_name=models.BATCH_AXIS)
    writer = writers.MetricWriter(workdir) if is_chief else None
    progress = tqdm.tqdm(
        total=config.num_train_steps, initial=start, file=sys.stdout, unit="step",
        disable=not is_chief, dynamic_ncols=True, mininterval=2.0,
    )  # fmt: skip
    evaluate_at = functools.partial(
        _run_eval, steps.pmapped_eval_step(setup, config.eval.mode), config=config,
        eval_source=eval_source, writer=writer, workdir=workdir, progress=progress, best=best,
    )  # fmt: skip
    try:
        if start == 0:
            evaluate_at(state, 0)
        with PreemptionWatch() as watch:
            state = _train_loop(
                state, start, config, setup, train_iter, checkpointer, evaluate_at, watch,
                _Logger(config, writer, learning_rate, progress),
            )  # fmt: skip
    finally:
        progress.close()
        checkpointer.close()
        if best:
            best.close()
        if writer:
            writer.close()
    return jax.device_get(flax.jax_utils.unreplicate(state))


def _train_loop(state, start, config, setup, train_iter, checkpointer, evaluate_at, watch, logger):
    """Steps start + 1 .. num_train_steps, with logging, checkpoints and evaluations."""
    p_train = steps.pmapped_train_step(setup)
    batches = input_pipeline.prefetch_to_devices(train_iter)
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
            checkpointer.save(step, flax.jax_utils.unreplicate(state), data_state)
        if stop:
            logger.progress.write(
                f"Stopping at step {step} on request: checkpoint saved; "
                "the same command resumes from it."
            )
            break
        if step % config.eval_every_steps == 0 or last:
            evaluate_at(state, step)
    return state
