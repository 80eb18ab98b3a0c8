"""Export a trained generator as a self-contained `jax.export` artifact.

    python -m pix2pix_jax.export --workdir=DIR --output=FILE [--checkpoint=latest]
        [--mode=deterministic|paper] [--dtype=float32|bfloat16] [--platforms=cpu,cuda,tpu]

FILE holds the serialized StableHLO of the generator with its parameters
inside, for a batch, height and width chosen at call time (symbolic shapes).
Loading it needs jax (and flatbuffers, jax's serialization dependency), not
this package:

    import jax
    translate = jax.export.deserialize(open(FILE, "rb").read())
    y = translate.call(x)          # deterministic mode
    y = translate.call(x, keys)    # paper mode

`x` is float32 NHWC in [-1, 1] with the model's input channels, of any batch
and size; `y` is float32 NHWC in [-1, 1] of the same batch, height and width.
Inside, each image is reflect-padded to the generator's multiple and cropped
back, as `predict` does (`predict.native_generate`). In `paper` mode (dropout on,
each image normalised by its own statistics) `keys` is uint32 [batch, 2]: one raw
threefry key per image, e.g. `jax.random.key_data(jax.random.split(jax.random.key(0), n))`;
`predict`'s key of an image is `steps.image_keys(seed, sample, [image_id])`.
The program is lowered for every platform in --platforms, so a model trained
on a CPU serves on a GPU or TPU. Installed as the console script `pix2pix-export`.
"""

import dataclasses
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from absl import flags

from pix2pix_jax import assembly, cli, input_pipeline, predict, steps
from pix2pix_jax.errors import ConfigError
from pix2pix_jax.models import cpu_kernels

PROG = "pix2pix_jax.export"

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_options(mode: str, dtype: str, platforms: Sequence[str]) -> tuple[str, ...]:
    """The platforms as a tuple; ConfigError for an unknown mode, dtype or platform."""
    if mode not in steps.EVAL_MODES:
        raise ConfigError(f"mode={mode!r} is not one of {steps.EVAL_MODES}")
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not one of {tuple(DTYPES)}")
    chosen = tuple(p.strip().lower() for p in platforms if p.strip())
    unknown = [p for p in chosen if p not in PLATFORMS]
    if unknown or not chosen:
        raise ConfigError(f"--platforms={','.join(platforms)!r}: choose from {PLATFORMS}")
    return tuple(dict.fromkeys(chosen))


def export_generator(
    state: steps.TrainState,
    setup: steps.Setup,
    input_channels: int,
    mode: str = "deterministic",
    dtype: str = "float32",
    platforms: Sequence[str] = ("cpu", "cuda", "tpu"),
) -> jax.export.Exported:
    """The generator of `state` as an Exported function of symbolic batch, height and width.

    `dtype` bfloat16 stores the parameters in bfloat16 and computes in it (inputs
    and outputs stay float32, batch statistics float32).
    """
    platforms = check_options(mode, dtype, platforms)
    compute = DTYPES[dtype]
    setup = dataclasses.replace(setup, generator=setup.generator.clone(dtype=compute))
    state = state.replace(g_params=jax.tree.map(lambda a: jnp.asarray(a, compute), state.g_params))

    def translate(x: jax.Array, keys: jax.Array | None = None) -> jax.Array:
        typed = None if keys is None else jax.random.wrap_key_data(keys)
        return predict.native_generate(state, x, setup, mode, typed).astype(jnp.float32)

    batch, height, width = jax.export.symbolic_shape("batch, height, width")
    args = [jax.ShapeDtypeStruct((batch, height, width, input_channels), jnp.float32)]
    if mode == "paper":  # one raw threefry key per image
        args.append(jax.ShapeDtypeStruct((batch, 2), jnp.uint32))
    with cpu_kernels.primitives_only():
        return jax.export.export(jax.jit(translate), platforms=platforms)(*args)


def export_workdir(
    workdir: str,
    output: str,
    checkpoint: str | int = "latest",
    mode: str = "deterministic",
    dtype: str = "float32",
    platforms: Sequence[str] = ("cpu", "cuda", "tpu"),
) -> jax.export.Exported:
    """Export the generator of a checkpoint of the run in `workdir` to the file `output`."""
    check_options(mode, dtype, platforms)
    config, state, _ = assembly.restore_for_inference(workdir, checkpoint)
    setup = assembly.inference_setup(config)
    # Label maps: the artifact takes the encoded input (`steps.encode_input`: one-hot + edges).
    channels = input_pipeline.model_input_channels(config)
    exported = export_generator(state, setup, channels, mode, dtype, platforms)
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    # Written to a temporary name and renamed: a reader never sees half an artifact.
    partial = f"{output}.partial"
    with open(partial, "wb") as f:
        f.write(exported.serialize())
    os.replace(partial, output)
    return exported


def define_flags() -> None:
    """The command line's flags."""
    flags.DEFINE_string("workdir", None, "Training workdir (config.json, checkpoints/).")
    flags.DEFINE_string("output", None, "File to write the serialized artifact to.")
    flags.DEFINE_string("checkpoint", "latest", "latest, best or a step number.")
    flags.DEFINE_enum("mode", "deterministic", steps.EVAL_MODES, "Test-time mode.")
    flags.DEFINE_enum("dtype", "float32", tuple(DTYPES), "Parameter and compute dtype.")
    flags.DEFINE_list("platforms", ["cpu", "cuda", "tpu"], f"Platforms to lower for: {PLATFORMS}.")
    flags.mark_flags_as_required(["workdir", "output"])


def export_from_flags() -> None:
    """Export with the parsed flags."""
    f = flags.FLAGS
    cli.start_runtime_of(f.workdir)
    exported = export_workdir(f.workdir, f.output, f.checkpoint, f.mode, f.dtype, f.platforms)
    shape = ", ".join(str(d) for d in exported.in_avals[0].shape)
    print(
        f"Wrote {f.output} ({os.path.getsize(f.output):,} bytes): {f.mode} mode, {f.dtype}, "
        f"input float32[{shape}], platforms {', '.join(exported.platforms)}"
    )


def run() -> None:
    """The command: parse the command line, export, report bad input in one line."""
    cli.run(PROG, define_flags, export_from_flags)


if __name__ == "__main__":
    run()
