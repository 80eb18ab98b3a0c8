"""Convert a generator of the reference PyTorch pix2pix to a pix2pix_jax workdir.

    python -m pix2pix_jax.convert_weights --pth=latest_net_G.pth --workdir=DIR \
        [--config=PATH] [--config.FIELD=VALUE ...]

reads a generator state_dict saved by junyanz/pytorch-CycleGAN-and-pix2pix
(`UnetGenerator`: unet_256, unet_128; `ResnetGenerator`: resnet_6blocks,
resnet_9blocks; norm batch or instance), e.g. one of its released
`<name>_pretrained/latest_net_G.pth` models, without torch and without
executing anything in the file (see `torch_weights`). The config must
describe the same generator: `model.generator`, `model.ngf`, `model.norm`,
`dataset.input_channels` / `output_channels` (and `image_size`, which fixes
the U-Net's depth for `unet`); every tensor's name and shape is checked and a
mismatch stops with the offending key.

DIR then holds config.json and an orbax checkpoint at step 0 whose G
variables are the file's; D and the optimizer states are freshly initialised
from the config's seed (a released G comes without its D and Adam moments),
and the data iterator state is empty (`{}`). `pix2pix_jax.evaluate` and
`pix2pix_jax.predict` use DIR as they use a trained one, and `pix2pix_jax.main`
continues training from the converted generator.

Weights map by transposition: Conv2d (out, in, kh, kw) -> HWIO; ConvTranspose2d
(in, out, kh, kw) -> (kh, kw, in, out); BatchNorm weight/bias/running_mean/
running_var -> scale/bias/mean/var. `num_batches_tracked`, and the running
statistics that old reference versions kept for InstanceNorm (which the
reference itself drops when loading), are ignored.
"""

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from flax import traverse_util
from ml_collections import config_flags

from pix2pix_jax import checkpointing, input_pipeline, models, torch_weights, train

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "default.py")
UNET_GENERATORS = ("unet_256", "unet_128", "unet")
RESNET_GENERATORS = ("resnet_6blocks", "resnet_9blocks")
SUPPORTED_NORMS = ("batch", "instance")

# (torch module prefix, flax module path, kind) with kind conv | upconv | norm.
Layer = tuple[str, tuple[str, ...], str]


def unet_layers(num_downs: int) -> list[Layer]:
    """Where each layer of the reference's UnetGenerator lives in ours.

    The reference nests one UnetSkipConnectionBlock per level, each a
    Sequential: outermost [down conv, submodule, ReLU, up conv, Tanh]; middle
    [LeakyReLU, down conv, norm, submodule, ReLU, up conv, norm(, Dropout)];
    innermost [LeakyReLU, down conv, ReLU, up conv, norm]. Ours names the
    down convs Conv_<level>, the up convs UpConv_<n-1-level> and the norms in
    the order they run: encoder levels 1..n-2, then decoder levels n-1..1.
    """
    n, innermost = num_downs, num_downs - 1
    layers: list[Layer] = []
    for level in range(n):
        prefix = (
            "model.model." if level == 0 else "model.model.1." + "model.3." * (level - 1) + "model."
        )
        down, up = (0, 3) if level == 0 else (1, 3 if level == innermost else 5)
        layers.append((f"{prefix}{down}", (f"Conv_{level}",), "conv"))
        layers.append((f"{prefix}{up}", (f"UpConv_{innermost - level}",), "upconv"))
        if 0 < level < innermost:
            layers.append((f"{prefix}2", (f"Norm_{level - 1}",), "norm"))
        if level > 0:
            up_norm = 4 if level == innermost else 6
            layers.append((f"{prefix}{up_norm}", (f"Norm_{2 * n - 3 - level}",), "norm"))
    return layers


def resnet_layers(n_blocks: int, state_dict: dict[str, np.ndarray]) -> list[Layer]:
    """Where each layer of the reference's ResnetGenerator (a flat Sequential) lives in ours.

    Inside a ResnetBlock the second conv is at index 5, or 6 when the
    reference built it with dropout (`use_dropout`, pix2pix's default); the
    file tells which.
    """
    layers: list[Layer] = [
        ("model.1", ("Conv_0",), "conv"),
        ("model.2", ("Norm_0",), "norm"),
        ("model.4", ("Conv_1",), "conv"),
        ("model.5", ("Norm_1",), "norm"),
        ("model.7", ("Conv_2",), "conv"),
        ("model.8", ("Norm_2",), "norm"),
    ]
    for i in range(n_blocks):
        block, ours = f"model.{10 + i}.conv_block", f"ResnetBlock_{i}"
        second = 5 if f"{block}.5.weight" in state_dict else 6
        layers += [
            (f"{block}.1", (ours, "Conv_0"), "conv"),
            (f"{block}.2", (ours, "Norm_0"), "norm"),
            (f"{block}.{second}", (ours, "Conv_1"), "conv"),
            (f"{block}.{second + 1}", (ours, "Norm_1"), "norm"),
        ]
    b = n_blocks
    layers += [
        (f"model.{10 + b}", ("UpConv_0",), "upconv"),
        (f"model.{11 + b}", ("Norm_3",), "norm"),
        (f"model.{13 + b}", ("UpConv_1",), "upconv"),
        (f"model.{14 + b}", ("Norm_4",), "norm"),
        (f"model.{17 + b}", ("Conv_3",), "conv"),
    ]
    return layers


def _same(w: np.ndarray) -> np.ndarray:
    return w


# kind -> {torch tensor name: (collection, flax leaf path, conversion)}.
_RULES: dict[str, dict[str, tuple[str, tuple[str, ...], Callable]]] = {
    "conv": {
        "weight": ("params", ("kernel",), lambda w: w.transpose(2, 3, 1, 0)),  # OIHW -> HWIO
        "bias": ("params", ("bias",), _same),
    },
    "upconv": {
        "weight": ("params", ("kernel",), lambda w: w.transpose(2, 3, 0, 1)),  # IOHW -> HWIO
        "bias": ("params", ("bias",), _same),
    },
    "norm": {
        "weight": ("params", ("BatchNorm_0", "scale"), _same),
        "bias": ("params", ("BatchNorm_0", "bias"), _same),
        "running_mean": ("batch_stats", ("BatchNorm_0", "mean"), _same),
        "running_var": ("batch_stats", ("BatchNorm_0", "var"), _same),
    },
}
_TO_TORCH = {"conv": (3, 2, 0, 1), "upconv": (2, 3, 0, 1)}  # HWIO -> the torch layout


def generator_layers(config: ml_collections.ConfigDict, state_dict: dict) -> list[Layer]:
    """The layer map for the generator that `config` describes (a ValueError if unsupported)."""
    name, norm = config.model.generator, config.model.norm
    if norm not in SUPPORTED_NORMS:
        raise ValueError(
            f"model.norm={norm!r}: the reference's weights convert for {SUPPORTED_NORMS}"
        )
    generator = models.create_generator(
        config.model, input_pipeline.image_shape(config), config.dataset.output_channels
    )
    if name in UNET_GENERATORS:
        return unet_layers(generator.num_downs)
    if name in RESNET_GENERATORS:
        return resnet_layers(generator.n_blocks, state_dict)
    raise ValueError(
        f"model.generator={name!r} has no reference counterpart; the converter supports "
        f"{UNET_GENERATORS + RESNET_GENERATORS}"
    )


def convert_generator(
    state_dict: dict[str, np.ndarray], config: ml_collections.ConfigDict, source: str
) -> tuple[dict, dict]:
    """(params, batch_stats) of our generator from a reference generator state_dict.

    Checks that every variable of our generator is set once with the right
    shape and that the file holds nothing else; a ValueError names the key,
    the shapes and `source`.
    """
    state_dict = _strip_data_parallel(state_dict)
    shapes = _expected_shapes(config)
    hint = (
        f"is this a {config.model.generator} generator with model.ngf={config.model.ngf}, "
        f"model.norm={config.model.norm!r}, {config.dataset.input_channels} input and "
        f"{config.dataset.output_channels} output channels?"
    )
    variables: dict[tuple[str, ...], np.ndarray] = {}
    used = set()
    for prefix, module, kind in generator_layers(config, state_dict):
        for tensor, (collection, leaf, convert) in _RULES[kind].items():
            path = (collection, *module, *leaf)
            key = f"{prefix}.{tensor}"
            if path not in shapes:
                continue  # e.g. no bias before a batch norm, no parameters in an instance norm
            if key not in state_dict:
                raise ValueError(f"{source}: missing key {key!r} ({hint})")
            value = np.asarray(state_dict[key], np.float32)
            expected = tuple(shapes[path].shape)
            needed = (
                tuple(expected[i] for i in _TO_TORCH[kind]) if leaf == ("kernel",) else expected
            )
            if value.shape != needed:
                raise ValueError(
                    f"{source}: {key!r} has shape {value.shape}, the config's generator needs "
                    f"{needed} ({hint})"
                )
            variables[path] = convert(value)
            used.add(key)
    unset = sorted(set(shapes) - set(variables))
    if unset:  # a layer map that misses one of our variables is a bug, not bad input
        raise AssertionError(f"no reference tensor maps to {'/'.join(unset[0])}")
    for key in state_dict:
        if key not in used and not _ignored(key):
            raise ValueError(f"{source}: unexpected key {key!r} ({hint})")
    nested = traverse_util.unflatten_dict(variables)
    return nested["params"], nested.get("batch_stats", {})


def _ignored(key: str) -> bool:
    # Counters, and the instance-norm running statistics of old reference versions.
    return key.endswith((".num_batches_tracked", ".running_mean", ".running_var"))


def _strip_data_parallel(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # Saved from nn.DataParallel, every key starts with "module.".
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return state_dict


def _expected_shapes(config: ml_collections.ConfigDict) -> dict[tuple[str, ...], Any]:
    shape = input_pipeline.image_shape(config)
    generator = models.create_generator(config.model, shape, config.dataset.output_channels)
    x = jax.ShapeDtypeStruct((1, *shape, config.dataset.input_channels), np.float32)
    shapes = jax.eval_shape(lambda x: generator.init(jax.random.key(0), x, train=False), x)
    return traverse_util.flatten_dict(shapes)


def converted_state(pth: str, config: ml_collections.ConfigDict) -> Any:
    """The step-0 train state of `config` with G's variables from the reference file `pth`."""
    train.validate_config(config)
    params, batch_stats = convert_generator(torch_weights.load_state_dict(pth), config, pth)
    state = train.initial_state(config, train.make_setup(config, num_train_examples=1))
    return state.replace(g_params=params, g_batch_stats=batch_stats)


def convert(pth: str, config: ml_collections.ConfigDict, workdir: str) -> Any:
    """Write `workdir` (config.json, a step-0 checkpoint) for the reference generator `pth`."""
    workdir = os.path.abspath(workdir)
    checkpoints = os.path.join(workdir, "checkpoints")
    if os.path.isdir(checkpoints) and os.listdir(checkpoints):
        raise ValueError(f"{checkpoints} already holds checkpoints: convert into a new workdir")
    state = converted_state(pth, config)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json(indent=2) + "\n")
    checkpointer = checkpointing.Checkpointer(checkpoints, config.max_checkpoints_to_keep)
    try:
        checkpointer.save(0, state, {})
    finally:
        checkpointer.close()
    return state


def define_flags() -> None:
    """The command line's flags (defined on demand: other commands define --workdir too)."""
    flags.DEFINE_string("pth", None, "Reference generator state_dict, e.g. latest_net_G.pth.")
    flags.DEFINE_string("workdir", None, "New workdir to write (config.json, checkpoints/).")
    config_flags.DEFINE_config_file(
        "config", _DEFAULT_CONFIG, "Config file describing the generator.", lock_config=True
    )
    flags.mark_flags_as_required(["pth", "workdir"])


def main(argv: list[str]) -> None:
    """Convert with the parsed flags; bad input ends with one line naming the problem."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    try:
        state = convert(f.pth, f.config, f.workdir)
    except (ValueError, OSError) as e:
        sys.exit(f"pix2pix_jax.convert_weights: error: {e}")
    count = models.count_params(state.g_params)
    summary = {"generator": f.config.model.generator, "params": count, "workdir": f.workdir}
    print(f"Converted {f.pth}: {json.dumps(summary)}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
