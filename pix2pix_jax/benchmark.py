"""Speed of the training step or of the input pipeline, as JSON lines.

    python -m pix2pix_jax.benchmark [--config=PATH] [--config.FIELD=VALUE ...] \
        [--mode=step|input] [--steps=20] [--warmup=3] [--repeats=3] [--peer=torch_ref.py]

`step` times the pmapped train step that training runs, on random uint8
batches of the configured shape (generator, image size, global batch,
compute dtype), after compiling it once: one JSON line per repeat and a
summary line with the median. `--peer=PATH` also runs a PyTorch peer script
(same command-line shape as the reference's step: `--batch --size --steps
--warmup [--device cuda] [--amp] [--compile MODE]`) between our repeats, so
both see the same machine load, and prints the ratio of the medians.

With `--config.num_seeds=K`, `step` times the step of K replicas in one
program (`pix2pix_jax.replicas`; images/s counts every replica's images), and
`seeds` times whole training runs: the command `pix2pix_jax.main` with K
replicas in one run, then the K single runs (seed, seed + 1, ...) one after
another, each in a fresh process on the same prepared dataset; it prints the
wall times, their ratio and each process's peak resident memory (`--workdir`
keeps the runs, e.g. to compare each replica with its single run).
`memory` compiles the same step twice, with `model.remat` off and on, and
prints what XLA's compiled executable says it needs (`memory_analysis()`:
arguments, outputs, temporaries; the peak is their sum less the donated
buffers XLA aliases), then the ratio: the memory that rematerialising the
generator's blocks saves, on any backend, without running a step.
`checkpoint` times the same step in windows without and with an asynchronous
checkpoint every `--checkpoint_every` steps into `--checkpoint_dir` (a local
folder or a URI such as `gs://bucket/bench`; default: a temporary folder), as
training saves them: the step time of each, the time each save call blocks
the loop (the device-to-host copy; orbax writes in the background) and the
wait for the last save after a window. Equal step times mean the writes
overlap the steps.

`input` times `input_pipeline.train_dataset` alone (decode, jitter, batch,
with `dataset.num_workers` processes): images/s and images/s per worker.
`--synthetic_jpegs=N` first writes N 256x512 side-by-side A|B JPEGs of
synthetic facades as a `folder` dataset and times that. Installed as the
console script `pix2pix-benchmark`.
"""

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import flax
import jax
import numpy as np
from absl import flags

from pix2pix_jax import assembly, checkpointing, cli, input_pipeline, parallel, paths, replicas
from pix2pix_jax import config as config_lib
from pix2pix_jax.errors import ConfigError, UserError

PROG = "pix2pix_jax.benchmark"


def define_flags() -> None:
    """The command line's flags."""
    flags.DEFINE_enum(
        "mode",
        "step",
        ["step", "input", "seeds", "memory", "checkpoint"],
        "What to time or measure.",
    )
    flags.DEFINE_integer("steps", 20, "Timed steps (or batches) per repeat.")
    flags.DEFINE_integer("warmup", 3, "Untimed steps (or batches) before timing.")
    flags.DEFINE_integer("repeats", 3, "Timed windows; the summary reports their median.")
    flags.DEFINE_string("peer", "", "Path of a PyTorch peer step script to run side by side.")
    flags.DEFINE_string("peer_compile", "", "torch.compile mode passed to the peer (--compile).")
    flags.DEFINE_integer("synthetic_jpegs", 0, "input mode: time N generated 256x512 A|B JPEGs.")
    flags.DEFINE_string("workdir", "", "seeds mode: keep the runs in DIR/together, DIR/<seed>.")
    flags.DEFINE_string("checkpoint_dir", "", "checkpoint mode: where to save (folder or URI).")
    flags.DEFINE_integer("checkpoint_every", 10, "checkpoint mode: steps between saves.")
    cli.define_config_flag()


class PeerError(UserError):
    """The peer script failed: its own output says why."""


def peak_host_memory_mb() -> float:
    """The process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_memory_mb() -> dict[str, float]:
    """Peak and current memory of the first local device, where the backend reports them."""
    stats = jax.local_devices()[0].memory_stats() or {}
    names = {"peak_bytes_in_use": "device_peak_memory_mb", "bytes_in_use": "device_memory_mb"}
    return {names[k]: stats[k] / 2**20 for k in names if k in stats}


def environment() -> dict[str, Any]:
    """Backend, device and versions: what a figure must be quoted with."""
    device = jax.local_devices()[0]
    return {
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "local_devices": jax.local_device_count(),
        "jax": jax.__version__,
        "flax": flax.__version__,
    }


def random_batch(config: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A device-shaped uint8 batch, as the input pipeline yields it (with jitter draws)."""
    devices = jax.local_device_count()
    lead = (devices, config.batch_size // devices)
    shape = lead + input_pipeline.image_shape(config)
    channels = input_pipeline.data_input_channels(config)
    high = config.dataset.get("label_nc", 0) or 256  # label maps: valid class ids
    batch = {
        "input": rng.integers(0, high, shape + (channels,), np.uint8),
        "target": rng.integers(0, 256, shape + (config.dataset.output_channels,), np.uint8),
    }
    load_shape = input_pipeline.load_shape(config)
    if load_shape:  # the step jitters on the device, as in training
        room = np.subtract(load_shape, shape[2:]) + 1
        batch["crop"] = rng.integers(0, room, lead + (2,), dtype=np.int32)
        batch["flip"] = rng.random(lead) < 0.5
    return batch


def compiled_memory_mb(compiled: Any) -> dict[str, float]:
    """What XLA's compiled executable needs, in MiB (empty where the backend says nothing).

    `compiled_peak_mb` = arguments + outputs + temporaries - aliased (donated) buffers:
    the executable's own bound on its live memory, on CPU as on GPU and TPU.
    """
    analysis = compiled.memory_analysis()
    if analysis is None:
        return {}
    mb = lambda n: n / 2**20  # noqa: E731
    sizes = {
        "compiled_argument_mb": mb(analysis.argument_size_in_bytes),
        "compiled_output_mb": mb(analysis.output_size_in_bytes),
        "compiled_temp_mb": mb(analysis.temp_size_in_bytes),
    }
    peak = sum(sizes.values()) - mb(analysis.alias_size_in_bytes)
    return {**sizes, "compiled_peak_mb": peak}


def compile_step(config: Any) -> tuple[Any, Any, Any, float, dict[str, float]]:
    """(compiled train step, placed state, device batch, compile seconds, compiled memory).

    With num_seeds = K > 1 the step is the K replicas' (`replicas.placement`); its
    first call compiles it (and runs one step), and no memory analysis is reported.
    """
    setup = assembly.make_setup(config, num_train_examples=1000)
    place = replicas.placement(config, setup)
    state = place.to_devices(assembly.initial_states(config, setup))
    host_batch = random_batch(config, np.random.default_rng(0))
    if place.k > 1:
        host_batch = place.batch([host_batch] * place.k)
    batch = jax.device_put(host_batch, parallel.device_sharding())
    start = time.perf_counter()
    if place.k == 1:
        compiled = place.train_step().lower(state, batch).compile()
        return compiled, state, batch, time.perf_counter() - start, compiled_memory_mb(compiled)
    compiled = place.train_step()
    state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    return compiled, state, batch, time.perf_counter() - start, {}


def time_steps(config: Any, num_steps: int, warmup: int, repeats: int):
    """Yields one JSON-ready record per timed window of the pmapped train step.

    The first record carries `compile_seconds` (lowering + XLA compilation) and
    the compiled step's memory (`compiled_memory_mb`). With num_seeds = K, the
    step is the K replicas' and every image of each counts.
    """
    compiled, state, batch, compile_seconds, memory = compile_step(config)
    k = replicas.num_seeds(config)
    for _ in range(warmup):
        state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    for repeat in range(repeats):
        start = time.perf_counter()
        for _ in range(num_steps):
            state, step_metrics = compiled(state, batch)
        jax.block_until_ready((state, step_metrics))
        seconds = (time.perf_counter() - start) / num_steps
        record = {"repeat": repeat, "step_ms": 1000 * seconds}
        record["images_per_second"] = config.batch_size * k / seconds
        if repeat == 0:
            record.update(compile_seconds=compile_seconds, **memory)
        record["peak_host_memory_mb"] = peak_host_memory_mb()
        yield {**record, **device_memory_mb()}


def run_peer(config: Any, num_steps: int, warmup: int) -> dict[str, Any]:
    """One run of the peer script with this config's shapes; its JSON line as a dict."""
    command = [sys.executable, flags.FLAGS.peer, "--batch", str(config.batch_size)]
    command += ["--size", str(config.image_size), "--steps", str(num_steps)]
    command += ["--warmup", str(warmup)]
    if jax.default_backend() == "gpu":
        command += ["--device", "cuda"]
    if config.model.compute_dtype == "bfloat16":
        command += ["--amp"]
    if flags.FLAGS.peer_compile:
        command += ["--compile", flags.FLAGS.peer_compile]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        raise PeerError(f"peer {command} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def peer_comparable(config: Any) -> bool:
    """Whether the config is the peer's model: unet_256 (64 filters), basic D, batch norm."""
    m = config.model
    return (m.generator, m.discriminator, m.ngf, m.ndf, m.norm) == (
        "unet_256", "basic", 64, 64, "batch",
    )  # fmt: skip


def time_checkpointing(config: Any, directory: str, every: int, num_steps: int, repeats: int):
    """Yields a record per window of `num_steps` steps, alternately without and with saves.

    With saves, every `every`-th step is followed by `Checkpointer.save` as in training;
    the window's time includes the save calls (they block for the host copy) but not
    the wait for the last write, which is timed after the window (`final_wait_ms`).
    """
    if replicas.num_seeds(config) > 1:
        raise ConfigError("--mode=checkpoint times a single run's saves; leave num_seeds at 1")
    compiled, state, batch, _, _ = compile_step(config)
    state, _ = compiled(state, batch)  # warm up
    jax.block_until_ready(state)
    checkpointer = checkpointing.Checkpointer(directory, max_to_keep=2)
    step = 0
    try:
        for repeat in range(repeats):
            for saving in (False, True):
                calls = []
                start = time.perf_counter()
                for _ in range(num_steps):
                    state, step_metrics = compiled(state, batch)
                    step += 1
                    if saving and step % every == 0:
                        # Steps run ahead of the host: time the save, not the steps it waits for.
                        jax.block_until_ready(state)
                        called = time.perf_counter()
                        checkpointer.save(step, parallel.unreplicate(state), {"step": step})
                        calls.append(time.perf_counter() - called)
                jax.block_until_ready((state, step_metrics))
                seconds = time.perf_counter() - start
                waited = time.perf_counter()
                checkpointer.wait()  # outside the window: the next one starts with none pending
                record = {"repeat": repeat, "checkpointing": saving, "saves": len(calls)}
                record["step_ms"] = 1000 * seconds / num_steps
                if saving:
                    record["save_call_ms"] = 1000 * statistics.mean(calls) if calls else 0.0
                    record["final_wait_ms"] = 1000 * (time.perf_counter() - waited)
                yield record
    finally:
        checkpointer.close()


def benchmark_checkpoint(config: Any) -> None:
    """Time the step without and with asynchronous checkpoints and print JSON lines."""
    f = flags.FLAGS
    with tempfile.TemporaryDirectory() as tmp:
        directory = f.checkpoint_dir or os.path.join(tmp, "checkpoints")
        if paths.is_uri(directory):
            directory = paths.resolve(directory)
        shape = {"generator": config.model.generator, "image_size": config.image_size}
        shape.update(batch=config.batch_size, checkpoint_every=f.checkpoint_every)
        records = {False: [], True: []}
        for record in time_checkpointing(config, directory, f.checkpoint_every, f.steps, f.repeats):
            records[record["checkpointing"]].append(record)
            _emit({"impl": "pix2pix_jax", "mode": "checkpoint", **shape, **record})
        state = assembly.state_template(config)
        size = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(state)) / 2**20
        without = statistics.median(r["step_ms"] for r in records[False])
        with_saves = statistics.median(r["step_ms"] for r in records[True])
        summary = {"summary": "checkpoint", "checkpoint_dir": directory, **shape}
        summary.update(checkpoint_mb=size, step_ms_without=without, step_ms_with=with_saves)
        summary["overhead_percent"] = 100 * (with_saves - without) / without
        summary["save_call_ms"] = statistics.median(r["save_call_ms"] for r in records[True])
        summary["final_wait_ms"] = statistics.median(r["final_wait_ms"] for r in records[True])
        _emit({**summary, **environment()})


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def benchmark_step(config: Any) -> None:
    """Time our step (and the peer's, alternating) and print JSON lines."""
    f = flags.FLAGS
    shape = {
        "generator": config.model.generator,
        "image_size": config.image_size,
        "batch": config.batch_size,
        "compute_dtype": config.model.compute_dtype,
        "num_seeds": replicas.num_seeds(config),
    }
    ours, peers = [], []
    for record in time_steps(config, f.steps, f.warmup, f.repeats):
        _emit({"impl": "pix2pix_jax", "mode": "step", **shape, **record, **environment()})
        ours.append(record["images_per_second"])
        if f.peer:
            peer = run_peer(config, f.steps, f.warmup)
            _emit({"peer": f.peer, **peer})
            # The peer rounds img_per_s to 2 decimals; its step time is exact.
            peers.append(config.batch_size * 1000 / peer["step_ms"])
    summary = {"summary": "step", **shape, "images_per_second": statistics.median(ours)}
    if peers:
        summary["peer_images_per_second"] = statistics.median(peers)
        summary["ratio_vs_peer"] = summary["images_per_second"] / summary["peer_images_per_second"]
        summary["peer_comparable"] = peer_comparable(config)
    _emit({**summary, **environment()})


def benchmark_memory(config: Any) -> None:
    """The compiled step's memory with `model.remat` off and on, and their ratio, as JSON lines."""
    shape = {
        "generator": config.model.generator,
        "image_size": config.image_size,
        "image_width": config.dataset.image_width or config.image_size,
        "batch": config.batch_size,
        "compute_dtype": config.model.compute_dtype,
    }
    peaks = {}
    for remat in (False, True):
        with config.unlocked():
            config.model.remat = remat
        compiled, _, _, seconds, memory = compile_step(config)
        peaks[remat] = memory.get("compiled_peak_mb")
        record = {"impl": "pix2pix_jax", "mode": "memory", "remat": remat, **shape, **memory}
        _emit({**record, "compile_seconds": seconds, **environment()})
        del compiled
    summary = {"summary": "memory", **shape, "peak_mb": peaks[False], "remat_peak_mb": peaks[True]}
    if peaks[False] and peaks[True]:
        summary["remat_ratio"] = peaks[True] / peaks[False]
    _emit({**summary, **environment()})


def benchmark_input(config: Any) -> None:
    """Time the training input pipeline alone and print JSON lines."""
    f = flags.FLAGS
    workers = max(config.dataset.num_workers, 1)
    iterator = iter(input_pipeline.train_dataset(config))
    start = time.perf_counter()
    for _ in range(f.warmup):
        next(iterator)
    first_seconds = time.perf_counter() - start
    rates = []
    for repeat in range(f.repeats):
        start = time.perf_counter()
        for _ in range(f.steps):
            next(iterator)
        rate = f.steps * config.batch_size / (time.perf_counter() - start)
        rates.append(rate)
        record = {"impl": "pix2pix_jax", "mode": "input", "repeat": repeat}
        record.update(dataset=config.dataset.name, image_size=config.image_size)
        record.update(batch=config.batch_size, num_workers=config.dataset.num_workers)
        record.update(images_per_second=rate, images_per_second_per_worker=rate / workers)
        if repeat == 0:
            record["warmup_seconds"] = first_seconds
        _emit({**record, "peak_host_memory_mb": peak_host_memory_mb()})
    median = statistics.median(rates)
    _emit(
        {
            "summary": "input",
            "num_workers": config.dataset.num_workers,
            "images_per_second": median,
            "images_per_second_per_worker": median / workers,
            "cpu_count": os.cpu_count(),
        }
    )


def write_synthetic_jpegs(directory: str, count: int, seed: int = 0) -> None:
    """`count` 256x512 A|B JPEGs (photo | labels) in directory/train, as the official sets."""
    from PIL import Image

    from pix2pix_jax.datasets import synthetic_facades

    os.makedirs(os.path.join(directory, "train"), exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        layout = synthetic_facades.sample_layout(rng, 256)
        photo = synthetic_facades.render_photo(layout, rng)
        labels = synthetic_facades.colorize_labels(layout.labels)
        pair = Image.fromarray(np.concatenate([photo, labels], axis=1))
        pair.save(os.path.join(directory, "train", f"{i + 1}.jpg"), quality=95)


def _config_args() -> list[str]:
    """This command's --config and --config.FIELD arguments, to hand on to training runs."""
    return [a for a in sys.argv[1:] if a.startswith("--config")]


def _timed_run(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one child process running `args`."""
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)  # the child's own rusage
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            errors.seek(0)
            tail = errors.read()[-2000:].decode(errors="replace")
            raise UserError(f"training run {' '.join(args)} failed: {tail}")
    return seconds, usage.ru_maxrss / 1024


def benchmark_seeds(config: Any) -> None:
    """Wall time of one run of K replicas against K single runs one after another."""
    k = replicas.num_seeds(config)
    for split in (config.dataset.train_split, config.eval.split):  # prepared before timing
        input_pipeline.load_split(config.dataset, split)
    train = [sys.executable, "-m", "pix2pix_jax.main", *_config_args()]
    with contextlib.ExitStack() as stack:
        tmp = flags.FLAGS.workdir or stack.enter_context(tempfile.TemporaryDirectory())
        together, together_mb = _timed_run([*train, f"--workdir={tmp}/together"])
        _emit({"impl": "pix2pix_jax", "mode": "seeds", "run": "together", "num_seeds": k,
               "seconds": together, "peak_host_memory_mb": together_mb})  # fmt: skip
        singles = []
        for seed in replicas.seeds(config):
            one = [f"--config.seed={seed}", "--config.num_seeds=1", f"--workdir={tmp}/{seed}"]
            singles.append(_timed_run([*train, *one]))
            _emit({"impl": "pix2pix_jax", "mode": "seeds", "run": "single", "seed": seed,
                   "seconds": singles[-1][0], "peak_host_memory_mb": singles[-1][1]})  # fmt: skip
    sequential = sum(s for s, _ in singles)
    summary = {"summary": "seeds", "num_seeds": k, "together_seconds": together}
    summary.update(sequential_seconds=sequential, ratio=together / sequential)
    summary.update(together_peak_host_memory_mb=together_mb)
    summary["single_peak_host_memory_mb"] = max(mb for _, mb in singles)
    _emit({**summary, **environment()})


def benchmark_from_flags() -> None:
    """Run the benchmark the flags select."""
    config = flags.FLAGS.config
    cli.start_runtime(config, announce=False)
    config_lib.validate(config)
    if flags.FLAGS.mode == "step":
        benchmark_step(config)
    elif flags.FLAGS.mode == "seeds":
        benchmark_seeds(config)
    elif flags.FLAGS.mode == "memory":
        benchmark_memory(config)
    elif flags.FLAGS.mode == "checkpoint":
        benchmark_checkpoint(config)
    elif flags.FLAGS.synthetic_jpegs:
        with tempfile.TemporaryDirectory() as tmp, config.unlocked():
            write_synthetic_jpegs(os.path.join(tmp, "images"), flags.FLAGS.synthetic_jpegs)
            config.dataset.name = "folder"
            config.dataset.path = os.path.join(tmp, "images")
            config.dataset.data_dir = os.path.join(tmp, "tfds")
            benchmark_input(config)
    else:
        benchmark_input(config)


def run() -> None:
    """The command: parse the command line, time, report bad input in one line."""
    cli.run(PROG, define_flags, benchmark_from_flags)


if __name__ == "__main__":
    run()
