"""Translate your own images with a trained model.

    python -m pix2pix_jax.predict --workdir=DIR --input=PATH --output=OUT [--checkpoint=latest]
        [--mode=paper|deterministic] [--num_samples=K] [--batch_size=N] [--seed=S]

PATH is one image or a folder of images (PNG, JPEG, TIFF, BMP, WebP, GIF; any
size; gray, RGB, RGBA or palette images are converted to the model's input
channels as PIL converts). Each image is resized to the size the model was
trained on (bicubic, as the reference's test script does), translated, and
the result resized back to the input's size, saved as OUT/<name>.png; with
K > 1, K dropout samples OUT/<name>_sample<k>.png (k = 0..K-1).

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

import jax
import numpy as np
import tqdm
from absl import flags
from PIL import Image

from pix2pix_jax import assembly, cli, evaluate, input_pipeline, steps, writers
from pix2pix_jax.datasets import images
from pix2pix_jax.errors import ConfigError, DataError, MissingFileError

PROG = "pix2pix_jax.predict"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")


def list_inputs(path: str) -> list[str]:
    """`path` itself if it is a file, else the images in folder `path`, sorted by name."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise MissingFileError(f"input {path!r}: no such file or folder")
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
    files = [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
    if not files:
        raise DataError(f"input folder {path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def read_image(path: str, channels: int) -> np.ndarray:
    """The image at `path` as uint8 HWC with `channels` channels (1, 3 or 4), as PIL converts."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the image ({e})") from e
    # The training pipeline's decoder: 16-bit images are scaled to 8 bits, not clipped.
    picture = images.decode(data, path)
    converted = picture.convert(input_pipeline.CHANNEL_MODES[channels])
    return np.asarray(converted).reshape(converted.height, converted.width, channels)


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
    """
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


def make_translate(state, setup: steps.Setup, mode: str) -> Callable:
    """A jitted (uint8 images [B, S, S, C], keys [B]) -> float images in [-1, 1], image by image."""
    return jax.jit(
        lambda images, keys: steps.generate_each(
            state, steps.to_model_range(images), setup, mode, keys
        )
    )


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
) -> list[str]:
    """Translate the image(s) at `input_path` into folder `output`; returns the written paths.

    `mode` defaults to the run's `eval.mode` and `seed` to its `seed`.
    """
    if num_samples < 1 or batch_size < 1:
        raise ConfigError(
            f"num_samples and batch_size must be >= 1, got {num_samples} and {batch_size}"
        )
    evaluate.check_mode(mode)
    inputs = list_inputs(input_path)
    names = [[os.path.join(output, n) for n in ns] for ns in output_names(inputs, num_samples)]
    check_outputs(input_path, inputs, [n for ns in names for n in ns], output)
    config, state, _ = assembly.restore_for_inference(workdir, checkpoint)
    mode = config.eval.mode if mode is None else mode
    if mode == "deterministic" and num_samples > 1:
        raise ConfigError("num_samples > 1 needs mode=paper: deterministic mode has no noise")
    seed = config.seed if seed is None else seed
    translate = make_translate(state, assembly.inference_setup(config), mode)
    os.makedirs(output, exist_ok=True)
    batch_size = min(batch_size, len(inputs))  # every batch this size: one compiled shape
    written = []
    with tqdm.tqdm(total=len(inputs), unit="image", file=sys.stdout, disable=not progress) as bar:
        for start in range(0, len(inputs), batch_size):
            paths = inputs[start : start + batch_size]
            outputs = names[start : start + len(paths)]
            written += _translate_batch(translate, config, paths, outputs, seed, batch_size)
            bar.update(len(paths))
    return written


def _translate_batch(translate, config, paths, outputs, seed, batch_size) -> list[str]:
    """Translate the images at `paths` (padded to `batch_size`); write each to its `outputs`."""
    originals = [read_image(p, config.dataset.input_channels) for p in paths]
    x = np.stack([resize(im, *input_pipeline.image_shape(config)) for im in originals])
    pad = batch_size - len(x)
    x, padded = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]), paths + paths[-1:] * pad
    written = []
    for sample in range(len(outputs[0])):
        keys = steps.image_keys(seed, sample, [input_pipeline.image_id(p) for p in padded])
        fake = writers.to_uint8(translate(x, keys))
        for image, original, targets in zip(fake, originals, outputs, strict=False):
            writers.save_png(targets[sample], resize(image, *original.shape[:2]))
            written.append(targets[sample])
    return written


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
    flags.mark_flags_as_required(["workdir", "input", "output"])


def predict_from_flags() -> None:
    """Translate with the parsed flags."""
    f = flags.FLAGS
    cli.start_runtime_of(f.workdir)
    written = predict(
        f.workdir, f.input, f.output, f.checkpoint, f.mode, f.num_samples, f.batch_size, f.seed
    )
    print(f"Wrote {len(written)} image(s) to {f.output}")


def run() -> None:
    """The command: parse the command line, translate, report bad input in one line."""
    cli.run(PROG, define_flags, predict_from_flags)


if __name__ == "__main__":
    run()
