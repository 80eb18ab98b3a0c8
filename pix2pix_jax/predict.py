"""Translate your own images with a trained model.

    python -m pix2pix_jax.predict --workdir=DIR --input=PATH --output=OUT [--checkpoint=latest]
        [--mode=paper|deterministic] [--num_samples=K] [--batch_size=N] [--seed=S]
        [--tile=N [--tile_overlap=M] | --resize]

PATH is one image or a folder of images (PNG, JPEG, TIFF, BMP, WebP, GIF; any
size; gray, RGB, RGBA or palette images are converted to the model's input
channels as PIL converts). The fully convolutional generator runs at each
image's own size: the image is reflect-padded to the generator's multiple
(2**depth for U-Nets, 4 for ResNets) and the result cropped back, saved as
OUT/<name>.png; with K > 1, K dropout samples OUT/<name>_sample<k>.png
(k = 0..K-1). `--tile=N` translates an image too large for memory in N x N
tiles that overlap by M pixels (default N/4) and are blended with linear
ramps, so no seams show. `--resize` instead resizes each image to the size
the model was trained on (bicubic, as the reference's test script does) and
the result back.

Each image is translated on its own, whatever the batch: in `paper` mode batch
norm uses that image's statistics (the reference tests with batch size 1),
and its dropout key is a function of (seed, sample, file name stem) only
(`steps.image_keys`), so an image gets the same noise alone or in a folder,
whatever --batch_size, the same command gives the same images, and `x.png`
gets the noise that the pair `x.jpg` of a dataset gets in `evaluate` and in
training's evals. Installed as the console script
`pix2pix-predict`.
"""

import os
import sys
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import flags
from PIL import Image

from pix2pix_jax import assembly, cli, evaluate, input_pipeline, labels, steps, writers
from pix2pix_jax import paths as paths_lib
from pix2pix_jax.datasets import images
from pix2pix_jax.errors import ConfigError, DataError, MissingFileError

PROG = "pix2pix_jax.predict"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")


def list_inputs(path: str) -> list[str]:
    """`path` itself if it is a file, else the images in folder `path`, sorted by name.

    `path` may be a URI (`gs://bucket/photos`).
    """
    if paths_lib.is_file(path):
        return [path]
    if not paths_lib.is_dir(path):
        raise MissingFileError(f"input {path!r}: no such file or folder")
    path = paths_lib.resolve(path) if paths_lib.is_uri(path) else path
    names = sorted(n for n in paths_lib.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
    files = [os.path.join(path, n) for n in names if paths_lib.is_file(os.path.join(path, n))]
    if not files:
        raise DataError(f"input folder {path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def read_image(path: str, channels: int) -> np.ndarray:
    """The image at `path` as uint8 HWC with `channels` channels (1, 3 or 4), as PIL converts."""
    try:
        data = paths_lib.read_bytes(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read the image ({e})") from e
    # The training pipeline's decoder: 16-bit images are scaled to 8 bits, not clipped.
    picture = images.decode(data, path)
    converted = picture.convert(input_pipeline.CHANNEL_MODES[channels])
    return np.asarray(converted).reshape(converted.height, converted.width, channels)


def read_label_map(path: str, label_nc: int, instances: str | None) -> np.ndarray:
    """The label map at `path` as the pipeline ships it: uint8 [H, W, 1 (+ 1)] (`labels`).

    With `instances` (a folder), the instance map of the same file name there adds the
    boundary channel.
    """
    try:
        with open(path, "rb") as f:
            ids = images.decode_ids(f.read(), path)
    except OSError as e:
        raise DataError(f"{path}: cannot read the label map ({e})") from e
    labels.check_ids(ids, label_nc, path)
    channels = [ids.astype(np.uint8)]
    if instances is not None:
        inst_path = os.path.join(instances, os.path.basename(path))
        if not os.path.isfile(inst_path):
            raise MissingFileError(f"{path}: no instance map {inst_path} (--instances)")
        with open(inst_path, "rb") as f:
            inst = images.decode_ids(f.read(), inst_path)
        if inst.shape != ids.shape:
            raise DataError(f"{inst_path} is {inst.shape}, its label map {path} {ids.shape}")
        channels.append(labels.instance_edges(inst))
    return np.stack(channels, -1)


def read_input(path: str, config, instances: str | None = None) -> np.ndarray:
    """The model input at `path`: an image (`read_image`) or a label map (`read_label_map`)."""
    ds = config.dataset
    if not ds.label_nc:
        return read_image(path, ds.input_channels)
    if ds.instance_maps and instances is None:
        raise ConfigError("the model takes instance maps (dataset.instance_maps): pass --instances")
    return read_label_map(path, ds.label_nc, instances if ds.instance_maps else None)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A uint8 HWC image resized to (height, width), bicubic."""
    if image.shape[:2] == (height, width):
        return image
    channels = image.shape[-1]
    pil = Image.fromarray(image.squeeze(-1) if channels == 1 else image)
    return np.asarray(pil.resize((width, height), Image.BICUBIC)).reshape(height, width, channels)


def output_names(inputs: list[str], num_samples: int) -> list[list[str]]:
    """For each input, the file names of its `num_samples` outputs (DataError on a clash)."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in inputs]
    seen: dict[str, str] = {}
    for stem, path in zip(stems, inputs, strict=True):
        if stem in seen:
            raise DataError(f"inputs {seen[stem]!r} and {path!r} would both be written as {stem}")
        seen[stem] = path
    if num_samples == 1:
        return [[f"{stem}.png"] for stem in stems]
    return [[f"{stem}_sample{k}.png" for k in range(num_samples)] for stem in stems]


def check_outputs(input_path: str, inputs: list[str], outputs: list[str], output: str) -> None:
    """Raise a ConfigError if writing `outputs` (in folder `output`) would touch an input.

    Refused: an output that is an input file (by path, through links, or a hard link to it),
    and, when `input_path` is a folder, an `output` folder inside it or equal to it.
    On an object store (either side a URI) paths are compared as names.
    """
    if paths_lib.is_uri(input_path) or paths_lib.is_uri(output):
        _check_outputs_by_name(input_path, inputs, outputs, output)
        return
    if os.path.isdir(input_path):
        folder, out = os.path.realpath(input_path), os.path.realpath(output)
        if os.path.commonpath([folder, out]) == folder:
            where = "the input folder" if out == folder else "inside the input folder"
            raise ConfigError(
                f"--output={output!r} is {where} {input_path!r}: choose an output folder "
                "outside it (predict never writes into its inputs)"
            )
    # Compared by real path and by (device, inode): symlinks and hard links included.
    real = {os.path.realpath(p): p for p in inputs}
    ids = {(st.st_dev, st.st_ino): p for p in inputs for st in [os.stat(p)]}
    for target in outputs:
        existing = os.stat(target) if os.path.exists(target) else None
        hit = real.get(os.path.realpath(target)) or (
            existing and ids.get((existing.st_dev, existing.st_ino))
        )
        if hit:
            raise ConfigError(
                f"--output={output!r} would overwrite the input {hit} (as {target}); "
                "choose another output folder"
            )


def _check_outputs_by_name(
    input_path: str, inputs: list[str], outputs: list[str], output: str
) -> None:
    """`check_outputs` where a side is a URI: object stores have no links, names suffice."""
    folder, out = paths_lib.resolve(input_path), paths_lib.resolve(output)
    if paths_lib.is_dir(input_path) and (out == folder or out.startswith(folder + "/")):
        where = "the input folder" if out == folder else "inside the input folder"
        raise ConfigError(
            f"--output={output!r} is {where} {input_path!r}: choose an output folder "
            "outside it (predict never writes into its inputs)"
        )
    named = {paths_lib.resolve(p): p for p in inputs}
    for target in outputs:
        hit = named.get(paths_lib.resolve(target))
        if hit:
            raise ConfigError(
                f"--output={output!r} would overwrite the input {hit} (as {target}); "
                "choose another output folder"
            )


def make_translate(state, setup: steps.Setup, mode: str) -> Callable:
    """A jitted (uint8 images [B, S, S, C], keys [B]) -> float images in [-1, 1], image by image."""
    return jax.jit(
        lambda images, keys: steps.generate_each(
            state, steps.encode_input(images, setup), setup, mode, keys
        )
    )


def generator_multiple(generator: nn.Module) -> int:
    """The multiple every image side must be for `generator`: 2**depth (U-Nets), 4 (ResNets)."""
    depth = getattr(generator, "num_downs", None)
    return 4 if depth is None else 2**depth


def _reflect_indices(n, size, before) -> jax.Array:
    """Indices into a side of length `n` that reflect-pad it to `size`, `before` in front.

    Index arithmetic, not `jnp.pad`: it works with the symbolic sides of an exported
    program, and it reflects again and again where the padding exceeds the side.
    """
    position = jnp.arange(size) - before
    period = jnp.maximum(2 * (jnp.asarray(n) - 1), 1)  # a side of 1 repeats its pixel
    folded = jnp.mod(position, period)
    return jnp.where(folded >= n, period - folded, folded)


def native_generate(
    state, x: jax.Array, setup: steps.Setup, mode: str, keys: jax.Array
) -> jax.Array:
    """G(x) at the images' own size: reflect-pad to the generator's multiple, crop back.

    `x` is a float NHWC batch in [-1, 1] of any (also symbolic) height and width; the
    padding is split evenly between the two sides. Images are translated one by one
    (`steps.generate_each`): in `paper` mode each is normalised by the statistics of
    its padded self and draws its dropout from its key.
    """
    multiple = generator_multiple(setup.generator)
    _, height, width, _ = x.shape
    padded_h = (height + multiple - 1) // multiple * multiple
    padded_w = (width + multiple - 1) // multiple * multiple
    top, left = (padded_h - height) // 2, (padded_w - width) // 2
    x = jnp.take(x, _reflect_indices(height, padded_h, top), axis=1)
    x = jnp.take(x, _reflect_indices(width, padded_w, left), axis=2)
    fake = steps.generate_each(state, x, setup, mode, keys)
    fake = jnp.take(fake, jnp.arange(height) + top, axis=1)
    return jnp.take(fake, jnp.arange(width) + left, axis=2)


def make_native_translate(state, setup: steps.Setup, mode: str) -> Callable:
    """A jitted (uint8 images [B, H, W, C], keys [B]) -> float images in [-1, 1], any H, W.

    One compilation per input shape.
    """
    return jax.jit(
        lambda images, keys: native_generate(
            state, steps.encode_input(images, setup), setup, mode, keys
        )
    )


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side `tile` covering [0, size), neighbours sharing `overlap`."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]  # the last tile ends at the border


def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    """[H, W, 1] weights of a tile: 1 inside, ramping linearly down across `overlap` edges.

    Overlapping tiles are averaged with these weights, so each tile fades out where its
    neighbour fades in and no seam shows; the weights never reach 0, so a pixel covered
    by one tile only (the image border) keeps that tile's value.
    """

    def ramp(n: int) -> np.ndarray:
        i = np.arange(n, dtype=np.float32)
        return np.minimum(1.0, np.minimum(i + 1, n - i) / (overlap + 1))

    return (ramp(height)[:, None] * ramp(width)[None, :])[..., None]


def translate_tiled(
    translate: Callable, image: np.ndarray, key: jax.Array, tile: int, overlap: int, batch: int
) -> np.ndarray:
    """Translate one uint8 HWC `image` tile by tile and blend the tiles: float HWC in [-1, 1].

    `translate` takes (uint8 tiles, keys) as `make_native_translate`'s function; tile t
    draws its noise from `fold_in(key, t)`. At most `batch` tiles go through at once.
    """
    height, width, _ = image.shape
    th, tw = min(tile, height), min(tile, width)
    corners = [
        (r, c) for r in tile_starts(height, th, overlap) for c in tile_starts(width, tw, overlap)
    ]
    tiles = np.stack([image[r : r + th, c : c + tw] for r, c in corners])
    keys = jax.vmap(lambda t: jax.random.fold_in(key, t))(jnp.arange(len(corners)))
    batch = min(batch, len(corners))  # every call this size: one compiled shape
    outputs = []
    for start in range(0, len(corners), batch):
        part, part_keys = tiles[start : start + batch], keys[start : start + batch]
        pad = batch - len(part)
        part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
        part_keys = jnp.concatenate([part_keys, jnp.repeat(part_keys[-1:], pad, axis=0)])
        outputs.append(np.asarray(translate(part, part_keys))[: batch - pad])
    return blend_tiles(np.concatenate(outputs), corners, (height, width), overlap)


def blend_tiles(
    tiles: np.ndarray, corners: list[tuple[int, int]], size: tuple[int, int], overlap: int
) -> np.ndarray:
    """The [H, W, C] image of float `tiles` [N, h, w, C] placed at `corners` (top, left).

    Each pixel is the `blend_weights`-weighted mean of the tiles that cover it.
    """
    _, th, tw, channels = tiles.shape
    weights = blend_weights(th, tw, overlap)
    total = np.zeros((*size, channels), np.float32)
    norm = np.zeros((*size, 1), np.float32)
    for (r, c), tile in zip(corners, tiles, strict=True):
        total[r : r + th, c : c + tw] += weights * tile
        norm[r : r + th, c : c + tw] += weights
    return total / norm


def predict(
    workdir: str,
    input_path: str,
    output: str,
    checkpoint: str | int = "latest",
    mode: str | None = None,
    num_samples: int = 1,
    batch_size: int = 8,
    seed: int | None = None,
    progress: bool = True,
    resize: bool = False,
    tile: int = 0,
    tile_overlap: int | None = None,
    seed_index: int | None = None,
    instances: str | None = None,
) -> list[str]:
    """Translate the image(s) at `input_path` into folder `output`; returns the written paths.

    `mode` defaults to the run's `eval.mode` and `seed` to its `seed`. Images are
    translated at their own size, in `tile` x `tile` tiles overlapping by
    `tile_overlap` (default tile / 4) if `tile` > 0, or at the trained size if `resize`.
    For a run of num_seeds replicas, `seed_index` picks one (default 0, seed + 0).
    A model trained on label maps takes label maps (ids), and with instance maps the
    folder `instances` holding one of the same name for each.
    """
    if num_samples < 1 or batch_size < 1:
        raise ConfigError(
            f"num_samples and batch_size must be >= 1, got {num_samples} and {batch_size}"
        )
    tiling = check_tiling(tile, tile_overlap, resize)
    evaluate.check_mode(mode)
    inputs = list_inputs(input_path)
    names = [[os.path.join(output, n) for n in ns] for ns in output_names(inputs, num_samples)]
    check_outputs(input_path, inputs, [n for ns in names for n in ns], output)
    config, state, _ = assembly.restore_for_inference(workdir, checkpoint, seed_index)
    mode = config.eval.mode if mode is None else mode
    if mode == "deterministic" and num_samples > 1:
        raise ConfigError("num_samples > 1 needs mode=paper: deterministic mode has no noise")
    seed = config.seed if seed is None else seed
    if resize and config.dataset.label_nc:
        raise ConfigError("--resize is for images; label maps are translated at their own size")
    make = make_translate if resize else make_native_translate
    translate = make(state, assembly.inference_setup(config), mode)
    trained = input_pipeline.image_shape(config) if resize else None
    paths_lib.makedirs(output)
    batch_size = min(batch_size, len(inputs))  # every batch this size: one compiled shape
    written = []
    with tqdm.tqdm(total=len(inputs), unit="image", file=sys.stdout, disable=not progress) as bar:
        for start in range(0, len(inputs), batch_size):
            paths = inputs[start : start + batch_size]
            outputs = names[start : start + len(paths)]
            written += _translate_batch(
                translate, config, paths, outputs, seed, batch_size, trained, tiling, instances
            )
            bar.update(len(paths))
    return written


def check_tiling(tile: int, overlap: int | None, resize: bool) -> tuple[int, int] | None:
    """(tile, overlap) for tiled translation, None without tiles; ConfigError if unusable."""
    if tile == 0:
        return None
    overlap = tile // 4 if overlap is None else overlap
    if resize:
        raise ConfigError("--tile and --resize exclude each other: tiles run at the native size")
    if tile < 1 or not 0 <= overlap < tile:
        raise ConfigError(f"--tile={tile} needs 0 <= --tile_overlap < tile, got {overlap}")
    return tile, overlap


def _translate_batch(
    translate, config, paths, outputs, seed, batch_size, trained, tiling, instances=None
) -> list[str]:
    """Translate the images at `paths`; write each to its `outputs` (one file per sample).

    `trained`: the trained (height, width) to resize to, None for the native size.
    """
    originals = [read_input(p, config, instances) for p in paths]
    ids = [input_pipeline.image_id(p) for p in paths]
    written = []
    for sample in range(len(outputs[0])):
        keys = steps.image_keys(seed, sample, ids)
        if tiling:
            fakes = [
                writers.to_uint8(translate_tiled(translate, im, key, *tiling, batch_size))
                for im, key in zip(originals, keys, strict=True)
            ]
        elif trained:
            fakes = _translate_resized(translate, originals, keys, trained, batch_size)
        else:
            fakes = _translate_native(translate, originals, keys)
        for fake, targets in zip(fakes, outputs, strict=True):
            writers.save_png(targets[sample], fake)
            written.append(targets[sample])
    return written


def _translate_resized(translate, originals, keys, trained, batch_size) -> list[np.ndarray]:
    """uint8 outputs of `originals` resized to `trained` (a batch padded to `batch_size`)."""
    x = np.stack([resize(im, *trained) for im in originals])
    pad = batch_size - len(x)
    x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, axis=0)])
    fake = writers.to_uint8(translate(x, keys))
    return [resize(f, *im.shape[:2]) for f, im in zip(fake, originals, strict=False)]


def _translate_native(translate, originals, keys) -> list[np.ndarray]:
    """uint8 outputs of `originals` at their own sizes: one call per distinct image shape."""
    fakes: list[np.ndarray] = [np.empty(0, np.uint8)] * len(originals)
    for shape in dict.fromkeys(im.shape for im in originals):
        same = [i for i, im in enumerate(originals) if im.shape == shape]
        fake = translate(np.stack([originals[i] for i in same]), keys[np.asarray(same)])
        for i, image in zip(same, writers.to_uint8(fake), strict=True):
            fakes[i] = image
    return fakes


def define_flags() -> None:
    """The command line's flags."""
    flags.DEFINE_string("workdir", None, "Training workdir (config.json, checkpoints/).")
    flags.DEFINE_string("input", None, "An image, or a folder of images.")
    flags.DEFINE_string("output", None, "Folder for the translated images.")
    flags.DEFINE_string("checkpoint", "latest", "latest, best or a step number.")
    flags.DEFINE_enum("mode", None, steps.EVAL_MODES, "Test-time mode (default: eval.mode).")
    flags.DEFINE_integer("num_samples", 1, "Dropout samples per input (mode paper).")
    flags.DEFINE_integer("batch_size", 8, "Images per generator call.")
    flags.DEFINE_integer("seed", None, "Seed of the dropout keys (default: the run's seed).")
    flags.DEFINE_integer("tile", 0, "Translate in tiles of this side (0: the whole image).")
    flags.DEFINE_integer("tile_overlap", None, "Pixels shared by neighbouring tiles (tile/4).")
    flags.DEFINE_boolean("resize", False, "Resize to the trained size and back (the old way).")
    flags.DEFINE_integer("seed_index", None, "num_seeds runs: the replica (0..K-1); default 0.")
    flags.DEFINE_string("instances", None, "Label maps: the folder of their instance maps.")
    flags.mark_flags_as_required(["workdir", "input", "output"])


def predict_from_flags() -> None:
    """Translate with the parsed flags."""
    f = flags.FLAGS
    cli.start_runtime_of(f.workdir)
    written = predict(
        f.workdir, f.input, f.output, f.checkpoint, f.mode, f.num_samples, f.batch_size, f.seed,
        resize=f.resize, tile=f.tile, tile_overlap=f.tile_overlap, seed_index=f.seed_index,
        instances=f.instances,
    )  # fmt: skip
    print(f"Wrote {len(written)} image(s) to {f.output}")


def run() -> None:
    """The command: parse the command line, translate, report bad input in one line."""
    cli.run(PROG, define_flags, predict_from_flags)


if __name__ == "__main__":
    run()
