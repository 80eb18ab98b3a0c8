"""Input pipeline: a tfds data source -> grain -> device batches.

Records are read with random access from a prepared tfds dataset (array_record,
no TensorFlow), paired by `dataset.direction`, jittered as in the paper
(resize to 286/256 of the crop size, random crop back, random horizontal flip,
the same crop and flip for input and target), scaled to [-1, 1] and batched
as [local devices, per-device batch, H, W, C].

Everything random is a pure function of the seed and the record's position in
the stream (grain's `random_map` seeds each element by its index), so the
batch of step k is the same in every run, resumed or not.
"""

import collections
from collections.abc import Iterator
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils
from PIL import Image

import pix2pix_jax.datasets  # noqa: F401  (registers the builders)
from pix2pix_jax.models import BATCH_AXIS

DIRECTIONS = ("AtoB", "BtoA")
Batch = dict[str, np.ndarray]


def load_split(dataset_config: Any, split: str):
    """A random-access source of `split` of `dataset_config.name`, prepared on first use.

    Process 0 prepares first; the others then find it prepared on a shared file
    system, or prepare their own copy on a local disk, without racing it.
    """
    name = dataset_config.name
    for turn in ("first", "others"):
        builder = _builder(name, dataset_config.data_dir or None)
        if (turn == "first") == (jax.process_index() == 0) and not builder.is_prepared():
            print(f"Preparing {name} in {builder.data_dir} (once) ...", flush=True)
            builder.download_and_prepare(file_format="array_record")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"prepared {name} ({turn})")
    builder = _builder(name, dataset_config.data_dir or None)  # sees what others prepared
    splits = list(builder.info.splits)
    if split not in splits:
        raise ValueError(f"dataset {name!r} has no split {split!r}; it has {splits}")
    return builder.as_data_source()[split]


def _builder(name: str, data_dir: str | None):
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"dataset.name={name!r}: no such tfds dataset ({e})") from e


CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # channel count -> PIL mode


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A uint8 image as HWC with `channels` channels (1 gray, 3 RGB, 4 RGBA), as PIL converts."""
    image = image[..., None] if image.ndim == 2 else image
    if image.shape[-1] == channels:
        return image
    if image.shape[-1] not in CHANNEL_MODES or channels not in CHANNEL_MODES:
        raise ValueError(
            f"cannot convert a {image.shape[-1]}-channel image to {channels} channels; "
            f"channel counts must be one of {tuple(CHANNEL_MODES)}"
        )
    pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    return np.asarray(pil.convert(CHANNEL_MODES[channels])).reshape(image.shape[:2] + (channels,))


def _pair(record: dict, ds_config: Any) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) of a record as uint8 HWC arrays with the configured channel counts."""
    if ds_config.direction not in DIRECTIONS:
        raise ValueError(f"dataset.direction={ds_config.direction!r} is not one of {DIRECTIONS}")
    a, b = record["image_a"], record["image_b"]
    x, y = (a, b) if ds_config.direction == "AtoB" else (b, a)
    return to_channels(x, ds_config.input_channels), to_channels(y, ds_config.output_channels)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    return np.asarray(pil.resize((size, size), Image.BICUBIC)).reshape(size, size, -1)


def _to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 127.5 - 1.0


def jitter(
    images: tuple[np.ndarray, ...],
    rng: np.random.Generator,
    size: int,
    load_size: int,
    flip: bool,
) -> tuple[np.ndarray, ...]:
    """The paper's random jitter, with one crop and one flip shared by all `images`."""
    top, left = rng.integers(0, load_size - size + 1, size=2)
    do_flip = flip and rng.random() < 0.5
    out = []
    for image in images:
        image = _resize(image, load_size)[top : top + size, left : left + size]
        out.append(image[:, ::-1] if do_flip else image)
    return tuple(out)


def _check_batch(batch_size: int, what: str) -> tuple[int, int]:
    """(per-host batch, per-device batch) for a global `batch_size`."""
    devices = jax.device_count()
    if batch_size % devices:
        raise ValueError(f"{what}={batch_size} must be divisible by the {devices} devices")
    return batch_size // jax.process_count(), batch_size // devices


def _to_devices(batch: Batch, per_device: int) -> Batch:
    """Reshape [local batch, ...] to [local devices, per-device batch, ...]."""
    return {k: v.reshape((-1, per_device) + v.shape[1:]) for k, v in batch.items()}


def train_dataset(config: Any, source=None) -> grain.IterDataset:
    """The endless, shuffled, jittered training stream of device-shaped batches."""
    ds_config = config.dataset
    source = load_split(ds_config, ds_config.train_split) if source is None else source
    local_batch, per_device = _check_batch(config.batch_size, "batch_size")
    load_size = int(round(config.image_size * ds_config.load_size_ratio))
    if load_size < config.image_size:
        raise ValueError(f"dataset.load_size_ratio={ds_config.load_size_ratio} must be >= 1")

    def make_example(record: dict, rng: np.random.Generator) -> Batch:
        x, y = jitter(_pair(record, ds_config), rng, config.image_size, load_size, ds_config.flip)
        return {"input": _to_float(x), "target": _to_float(y)}

    ds = grain.MapDataset.source(source)[jax.process_index() :: jax.process_count()]
    ds = ds.shuffle(seed=config.seed).repeat()  # a new order every epoch
    ds = ds.random_map(make_example, seed=config.seed)
    ds = ds.batch(local_batch, drop_remainder=True).map(lambda b: _to_devices(b, per_device))
    iter_ds = ds.to_iter_dataset()
    if ds_config.num_workers > 0:
        iter_ds = iter_ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=ds_config.num_workers, per_worker_buffer_size=ds_config.prefetch
            )
        )
    return iter_ds


def eval_batches(config: Any, source=None) -> Iterator[Batch]:
    """This process's share of the eval split, resized, in padded device-shaped batches.

    Each batch carries a boolean `mask` ([devices, per-device batch]) that is
    False for padding. Every process yields the same number of batches (the
    steps run in lockstep on all devices), padding its shard as needed.
    """
    ds_config = config.dataset
    source = load_split(ds_config, config.eval.split) if source is None else source
    local_batch, per_device = _check_batch(config.eval.batch_size, "eval.batch_size")
    size = config.image_size

    def make_example(record: dict) -> Batch:
        x, y = (_resize(im, size) for im in _pair(record, ds_config))
        return {"input": _to_float(x), "target": _to_float(y), "mask": np.bool_(True)}

    def padded(batch: Batch) -> Batch:
        pad = local_batch - len(batch["mask"])
        return {
            k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
            for k, v in batch.items()
        }

    ds = grain.MapDataset.source(source)[jax.process_index() :: jax.process_count()]
    per_process = -(-len(source) // jax.process_count())
    num_batches = -(-per_process // local_batch)
    batches = iter(ds.map(make_example).batch(local_batch))
    empty = {
        "input": np.zeros((0, size, size, ds_config.input_channels), np.float32),
        "target": np.zeros((0, size, size, ds_config.output_channels), np.float32),
        "mask": np.zeros((0,), bool),
    }
    for _ in range(num_batches):
        yield _to_devices(padded(next(batches, empty)), per_device)


def device_sharding() -> jax.NamedSharding:
    """Splits a leading axis over the local devices, as `jax.pmap` over `BATCH_AXIS` expects."""
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (BATCH_AXIS,))
    return jax.NamedSharding(mesh, jax.P(BATCH_AXIS))


def prefetch_to_devices(iterator: Iterator, size: int = 2) -> Iterator[tuple[Any, Any]]:
    """Yields (batch on the local devices, iterator state after that batch), `size` ahead.

    The state travels with its batch, so the state saved with a checkpoint is
    the one of the last batch the saved step consumed, however far ahead the
    prefetch reads.
    """
    sharding = device_sharding()
    queue = collections.deque()

    def enqueue() -> None:
        batch = next(iterator)
        queue.append((jax.device_put(batch, sharding), iterator.get_state()))

    for _ in range(size):
        enqueue()
    while queue:
        yield queue.popleft()
        enqueue()
