"""Input pipeline: a tfds data source -> grain -> device batches of uint8 images.

Records are read with random access from a prepared tfds dataset (array_record,
no TensorFlow), decoded (a side-by-side A|B file once, then split), paired by
`dataset.direction`, converted to the configured channel counts, brought to
`image_shape(config)` by `dataset.preprocess` (the paper's jitter by default:
resize to 286/256 of the crop size, random crop back, random horizontal flip,
the same crop and flip for input and target) and batched as uint8
[local devices, per-device batch, H, W, C]; the steps scale them to [-1, 1]
on the device.

The paper's jitter runs on the device when `load_shape(config)` is not None:
training batches then hold the pictures at the model's size plus the drawn
`crop` (int32 [..., 2]: top, left at the load size), `flip` (bool [...]) and
`host_jittered` (bool [...]), and `augment.jitter` applies them in the train
step. The draws are the ones the host jitter makes from the same rng. A source
of another size (maps' 600x600, user folders) is jittered here instead, in one
resize to the load size as the reference does, and marked `host_jittered`:
resizing it to the model's size first would resample it twice.

Everything random is a pure function of the seed and the record's position in
the stream (grain's `random_map` seeds each element by its index), so the
batch of step k is the same in every run, resumed or not.
"""

import dataclasses
import os
import zlib
from collections.abc import Iterator
from typing import Any

import grain
import jax
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image

from pix2pix_jax import datasets, labels, parallel
from pix2pix_jax.datasets import images, preprocess
from pix2pix_jax.errors import ConfigError, DataError

DIRECTIONS = ("AtoB", "BtoA")
Batch = dict[str, np.ndarray]


def load_split(dataset_config: Any, split: str):
    """A random-access source of `split` of the configured dataset, prepared on first use.

    Process 0 prepares first; the others then find it prepared on a shared file
    system, or prepare their own copy on a local disk, without racing it. A bad
    folder or file is reported here, before any training step.
    """
    name = dataset_config.name
    for turn in ("first", "others"):
        builder = datasets.make_builder(dataset_config)
        if (turn == "first") == (jax.process_index() == 0) and not builder.is_prepared():
            print(f"Preparing {name} in {builder.data_dir} (once) ...", flush=True)
            builder.download_and_prepare(file_format="array_record")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"prepared {name} ({turn})")
    builder = datasets.make_builder(dataset_config)  # sees what others prepared
    splits = list(builder.info.splits)
    if split not in splits:
        raise ConfigError(f"dataset {name!r} has no split {split!r}; it has {splits}")
    return builder.as_data_source()[split]


def image_shape(config: Any) -> tuple[int, int]:
    """(height, width) of the images the model sees: image_size x (dataset.image_width or it)."""
    return config.image_size, config.dataset.image_width or config.image_size


def load_shape(config: Any) -> tuple[int, int] | None:
    """(height, width) the device resizes training pictures to before its crop, or None.

    Not None for the paper's jitter (`dataset.preprocess='resize_and_crop'`) when the load
    size exceeds the image size and no side has 4 channels (Pillow resizes RGBA premultiplied
    by alpha; those keep the host jitter) and the input is an image: label maps
    (`dataset.label_nc` > 0) are jittered on the host, with NEAREST resampling, since the
    device's bicubic would blend ids. Then training batches carry `crop` and `flip` for
    `augment.jitter`.
    """
    ds = config.dataset
    height, width = image_shape(config)
    ratio = float(ds.load_size_ratio)
    load_w, load_h = preprocess.load_size("resize_and_crop", (0, 0), (height, width), ratio)
    if (
        ds.preprocess != "resize_and_crop"
        or (load_h, load_w) == (height, width)
        or 4 in (ds.input_channels, ds.output_channels)
        or ds.get("label_nc", 0)
    ):
        return None
    return load_h, load_w


def data_input_channels(config: Any) -> int:
    """Channels of the uint8 `input` of batches: the image's, or a label map's ids (+ edges)."""
    ds = config.dataset
    if ds.get("label_nc", 0):
        return labels.input_channels(ds.instance_maps)
    return ds.input_channels


def model_input_channels(config: Any) -> int:
    """Channels of the generator's input: the image's, or label_nc one-hot (+ edges)."""
    ds = config.dataset
    if ds.get("label_nc", 0):
        return labels.model_channels(ds.label_nc, ds.instance_maps)
    return ds.input_channels


def direction(dataset_config: Any) -> str:
    """`dataset.direction`, or when it is "" the direction of the dataset's named task."""
    return dataset_config.direction or datasets.default_direction(dataset_config.name)


CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # channel count -> PIL mode


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A uint8 image as HWC with `channels` channels (1 gray, 3 RGB, 4 RGBA), as PIL converts."""
    image = image[..., None] if image.ndim == 2 else image
    if image.shape[-1] == channels:
        return image
    if image.shape[-1] not in CHANNEL_MODES or channels not in CHANNEL_MODES:
        raise DataError(
            f"cannot convert a {image.shape[-1]}-channel image to {channels} channels; "
            f"channel counts must be one of {tuple(CHANNEL_MODES)}"
        )
    return _to_array(_to_pil(image).convert(CHANNEL_MODES[channels]), channels)


def _to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image)


def _to_array(picture: Image.Image, channels: int) -> np.ndarray:
    return np.asarray(picture).reshape(picture.height, picture.width, channels)


def _decoded(record: dict, key: str, max_pixels: int = images.MAX_PIXELS) -> Image.Image:
    """record[key] (encoded bytes or a decoded uint8 array) as a Pillow image."""
    value = record[key]
    if isinstance(value, np.ndarray) and value.dtype != object:
        return _to_pil(value)
    return images.decode(bytes(value), _file_name(record, key), max_pixels)


def image_id(name: str) -> int:
    """The id of the image called `name` (a path or file name): CRC-32 of its stem, < 2**31.

    Test-time dropout keys derive from it (`steps.image_keys`), so `x.png` given to
    `predict` gets the noise that the pair `x.jpg` gets in an evaluation.
    """
    stem = os.path.splitext(os.path.basename(name))[0]
    return zlib.crc32(stem.encode("utf-8", "surrogateescape")) % 2**31


def record_id(record: dict, position: int) -> int:
    """The `image_id` of a record's `file_name`, or of its `position` in the split without one."""
    name = record.get("file_name", str(position))
    return image_id(name.decode() if isinstance(name, bytes) else name)


def _file_name(record: dict, key: str) -> str:
    name = record.get("file_name", b"?")
    return f"{name.decode() if isinstance(name, bytes) else name} ({key})"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What turns a record into an example, fixed when a dataset is made from a config."""

    direction: str  # AtoB or BtoA (resolved)
    input_channels: int
    output_channels: int
    preprocess: str  # one of preprocess.MODES
    shape: tuple[int, int]  # (height, width) the model sees
    load_size_ratio: float
    flip: bool
    load_shape: tuple[int, int] | None = None  # (height, width): the device jitters to it
    max_pixels: int = images.MAX_PIXELS  # dataset.max_image_pixels: the decoding bound
    label_nc: int = 0  # > 0: the input is a label map of this many classes (see `labels`)
    instance_maps: bool = False  # label maps: add the instance-boundary channel

    @classmethod
    def from_config(cls, config: Any) -> "Recipe":
        """The recipe of `config` (validated by `config.validate`)."""
        ds = config.dataset
        return cls(
            direction(ds), ds.input_channels, ds.output_channels, ds.preprocess,
            image_shape(config), float(ds.load_size_ratio), bool(ds.flip), load_shape(config),
            ds.max_image_pixels, ds.get("label_nc", 0), bool(ds.get("instance_maps", False)),
        )  # fmt: skip


def pair(record: dict, recipe: Recipe) -> tuple[Image.Image, Image.Image]:
    """(input, target) of a record as Pillow images of the recipe's channel counts.

    A record holds `image` (a side-by-side A|B file, split here) or `image_a` and
    `image_b` (encoded files or uint8 arrays).
    """
    if "image" in record:
        image = _decoded(record, "image", recipe.max_pixels)
        a, b = images.split_ab(image, _file_name(record, "image"))
    else:
        a, b = (_decoded(record, k, recipe.max_pixels) for k in ("image_a", "image_b"))
    x, y = (a, b) if recipe.direction == "AtoB" else (b, a)
    modes = CHANNEL_MODES[recipe.input_channels], CHANNEL_MODES[recipe.output_channels]
    return tuple(p if p.mode == m else p.convert(m) for p, m in zip((x, y), modes, strict=True))


def make_example(
    record: dict, recipe: Recipe, rng: np.random.Generator | None
) -> dict[str, np.ndarray]:
    """{"input", "target"}: uint8 HWC arrays of a record, preprocessed (jittered when `rng`).

    When the recipe has a `load_shape` and `rng` is given, the example also holds the `crop`
    and `flip` the device applies to pictures at the model's size, and `host_jittered`,
    True where the source had another size and was jittered here (see the module docstring).
    """
    r = recipe
    if r.label_nc:
        return label_example(record, r, rng)
    pictures = pair(record, r)
    preprocess.check_sizes(pictures)
    on_device = rng is not None and r.load_shape is not None
    jitter = {}
    if on_device and pictures[0].size == (r.shape[1], r.shape[0]):
        (top, left), mirror = preprocess.draw_jitter(r.shape, r.load_size_ratio, r.flip, rng)
        jitter = {"crop": np.array([top, left], np.int32), "flip": np.bool_(mirror)}
        jitter["host_jittered"] = np.bool_(False)
    else:
        pictures = preprocess.transform(
            pictures, r.preprocess, r.shape, r.load_size_ratio, r.flip, rng
        )
        if on_device:  # another size: jittered here in one resize; the device keeps it
            jitter = {"crop": np.zeros(2, np.int32), "flip": np.bool_(False)}
            jitter["host_jittered"] = np.bool_(True)
    x, y = pictures
    return {
        "input": _to_array(x, r.input_channels),
        "target": _to_array(y, r.output_channels),
        **jitter,
    }


def label_pictures(record: dict, recipe: Recipe) -> list[Image.Image]:
    """[class ids (L), target image, instance ids (I, with instance maps)] of a record.

    The ids are checked against `label_nc` here, naming the file.
    """
    if "image" in record:
        raise DataError(
            f"{_file_name(record, 'image')}: dataset.label_nc needs label maps in files of "
            "their own (folder layout A/, B/ [, inst/], or the Cityscapes layout), not A|B images"
        )
    source, target = (
        ("image_a", "image_b") if recipe.direction == "AtoB" else ("image_b", "image_a")
    )
    name = _file_name(record, source)
    ids = images.decode_ids(bytes(record[source]), name, recipe.max_pixels)
    labels.check_ids(ids, recipe.label_nc, name)
    mode = CHANNEL_MODES[recipe.output_channels]
    photo = _decoded(record, target, recipe.max_pixels)
    pictures = [Image.fromarray(ids.astype(np.uint8)), photo.convert(mode)]  # mode L
    if recipe.instance_maps:
        if "instance" not in record:
            raise DataError(
                f"{name}: dataset.instance_maps=True but the dataset has no instance maps "
                "(folder: DIR/inst/<split>/ beside A/ and B/; Cityscapes: *_instanceIds.png)"
            )
        inst = images.decode_ids(
            bytes(record["instance"]), _file_name(record, "instance"), recipe.max_pixels
        )
        pictures.append(Image.fromarray(inst))  # int32: mode I, the ids kept whole
    return pictures


def label_example(
    record: dict, recipe: Recipe, rng: np.random.Generator | None
) -> dict[str, np.ndarray]:
    """`make_example` for a label map: `input` uint8 [H, W, 1 (+ 1)] of ids (and edges).

    The ids (and instance ids) are resampled with NEAREST, the photo with the mode's bicubic,
    with one crop and flip for all; the boundaries are computed after that, as pix2pixHD does.
    """
    r = recipe
    pictures = label_pictures(record, r)
    preprocess.check_sizes(pictures)
    resamples = [Image.NEAREST, Image.BICUBIC, Image.NEAREST][: len(pictures)]
    pictures = preprocess.transform(
        pictures, r.preprocess, r.shape, r.load_size_ratio, r.flip, rng, resamples
    )
    channels = [np.asarray(pictures[0], np.uint8)]
    if r.instance_maps:
        channels.append(labels.instance_edges(np.asarray(pictures[2])))
    return {"input": np.stack(channels, -1), "target": _to_array(pictures[1], r.output_channels)}


def train_dataset(config: Any, source=None) -> grain.IterDataset:
    """The endless, shuffled, preprocessed training stream of device-shaped uint8 batches.

    This process reads its own shard of the records; the order and every
    random crop and flip are functions of the seed and the position in the
    stream, so the stream resumes exactly from the iterator's state.
    """
    recipe = Recipe.from_config(config)
    ds_config = config.dataset
    source = load_split(ds_config, ds_config.train_split) if source is None else source
    local_batch, per_device = parallel.split_batch(config.batch_size, "batch_size")

    ds = grain.MapDataset.source(source)[jax.process_index() :: jax.process_count()]
    ds = ds.shuffle(seed=config.seed).repeat()  # a new order every epoch
    ds = ds.random_map(lambda record, rng: make_example(record, recipe, rng), seed=config.seed)
    ds = ds.batch(local_batch, drop_remainder=True).map(
        lambda b: parallel.to_devices(b, per_device)
    )
    # Threads decode in parallel (Pillow releases the GIL); the buffer holds whole batches, so
    # it is kept small rather than grain's default of 500.
    threads = ds_config.num_threads
    read = grain.ReadOptions(
        num_threads=threads, prefetch_buffer_size=max(ds_config.prefetch, threads)
    )
    iter_ds = ds.to_iter_dataset(read)
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
    recipe = Recipe.from_config(config)
    ds_config = config.dataset
    source = load_split(ds_config, config.eval.split) if source is None else source
    local_batch, per_device = parallel.split_batch(config.eval.batch_size, "eval.batch_size")
    height, width = recipe.shape

    def eval_example(position: int, record: dict) -> Batch:
        example = make_example(record, recipe, None)
        return {**example, "id": np.int32(record_id(record, position)), "mask": np.bool_(True)}

    def padded(batch: Batch) -> Batch:
        pad = local_batch - len(batch["mask"])
        return {
            k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
            for k, v in batch.items()
        }

    ds = grain.MapDataset.source(source).map_with_index(eval_example)
    ds = ds[jax.process_index() :: jax.process_count()]
    per_process = -(-len(source) // jax.process_count())
    num_batches = -(-per_process // local_batch)
    batches = iter(ds.batch(local_batch))
    empty = {
        "input": np.zeros((0, height, width, data_input_channels(config)), np.uint8),
        "target": np.zeros((0, height, width, ds_config.output_channels), np.uint8),
        "id": np.zeros((0,), np.int32),
        "mask": np.zeros((0,), bool),
    }
    for _ in range(num_batches):
        yield parallel.to_devices(padded(next(batches, empty)), per_device)
