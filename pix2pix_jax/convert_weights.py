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

DIR then holds config.json (with `model.dropout_layout='pytorch'`: the
reference's U-Net has its dropout one block further out than the paper's, and
its generators were trained so) and an orbax checkpoint at step 0 whose G
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

import copy
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import flags
from flax import traverse_util

from pix2pix_jax import assembly, checkpointing, cli, input_pipeline, models, paths, torch_weights
from pix2pix_jax import config as config_lib
from pix2pix_jax import workdir as workdir_lib
from pix2pix_jax.errors import ConfigError, DataError

PROG = "pix2pix_jax.convert_weights"
UNET_GENERATORS = ("unet_256", "unet_128", "unet")
RESNET_GENERATORS = ("resnet_6blocks", "resnet_9blocks")
SUPPORTED_NORMS = ("batch", "instance")

# (torch module prefix, flax module path, kind) with kind conv | upconv | norm.
Layer = tuple[str, tuple[str, ...], str]
# One entry of a reference nn.Sequential, in its order: (our module name, kind) for a
# layer with weights, None for one without (activations, padding, dropout), and
# _SUBMODULE where the next nested block sits.
Entry = tuple[str, str] | str | None
_SUBMODULE = "submodule"

# The Sequential of each UnetSkipConnectionBlock as the reference builds it, with our
# names of block k (1 = outermost .. num_downs = innermost) as templates.
_UNET_BLOCKS: dict[str, list[Entry]] = {
    # [downconv, submodule, uprelu, upconv, Tanh]
    "outermost": [("down_{k}", "conv"), _SUBMODULE, None, ("up_{k}", "upconv"), None],
    # [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm(, Dropout)]
    "middle": [
        None,
        ("down_{k}", "conv"),
        ("down_{k}_norm", "norm"),
        _SUBMODULE,
        None,
        ("up_{k}", "upconv"),
        ("up_{k}_norm", "norm"),
    ],
    # [downrelu, downconv, uprelu, upconv, upnorm]
    "innermost": [None, ("down_{k}", "conv"), None, ("up_{k}", "upconv"), ("up_{k}_norm", "norm")],
}


def _sequential(prefix: str, entries: list[Entry], scope: tuple[str, ...] = ()) -> list[Layer]:
    """The layers of a reference nn.Sequential at `prefix`, by their index in `entries`."""
    return [
        (f"{prefix}{index}", (*scope, entry[0]), entry[1])
        for index, entry in enumerate(entries)
        if isinstance(entry, tuple)
    ]


def unet_layers(num_downs: int) -> list[Layer]:
    """Where each layer of the reference's UnetGenerator lives in ours.

    The reference nests one UnetSkipConnectionBlock per level, outermost first,
    each a Sequential (`_UNET_BLOCKS`) whose submodule entry holds the next;
    our U-Net names block k's layers `down_k`, `down_k_norm`, `up_k`, `up_k_norm`.
    """
    layers: list[Layer] = []
    block = "model."  # UnetGenerator.model is the outermost block
    for k in range(1, num_downs + 1):
        role = "outermost" if k == 1 else "innermost" if k == num_downs else "middle"
        entries = _UNET_BLOCKS[role]
        named = [(e[0].format(k=k), e[1]) if isinstance(e, tuple) else e for e in entries]
        layers += _sequential(f"{block}model.", named)
        if _SUBMODULE in entries:
            block = f"{block}model.{entries.index(_SUBMODULE)}."
    return layers


def _resnet_block(dropout: bool) -> list[Entry]:
    """The reference ResnetBlock's conv_block, with our names inside `block_<i>`."""
    # [pad, conv, norm, ReLU, (Dropout,) pad, conv, norm]
    return [None, ("conv_1", "conv"), ("norm_1", "norm"), None, *([None] if dropout else []),
            None, ("conv_2", "conv"), ("norm_2", "norm")]  # fmt: skip


def resnet_layers(n_blocks: int, state_dict: dict[str, np.ndarray]) -> list[Layer]:
    """Where each layer of the reference's ResnetGenerator (a flat Sequential) lives in ours.

    Inside a ResnetBlock a Dropout follows the first ReLU when the reference
    built it with `use_dropout` (pix2pix's default); the file tells which.
    """
    blocks = [f"block_{i}" for i in range(1, n_blocks + 1)]
    model: list[Entry] = [
        None, ("stem", "conv"), ("stem_norm", "norm"), None,  # ReflectionPad2d(3), c7s1, ReLU
        ("down_1", "conv"), ("down_1_norm", "norm"), None,
        ("down_2", "conv"), ("down_2_norm", "norm"), None,
        *[(name, "block") for name in blocks],
        ("up_1", "upconv"), ("up_1_norm", "norm"), None,
        ("up_2", "upconv"), ("up_2_norm", "norm"), None,
        None, ("head", "conv"), None,  # ReflectionPad2d(3), c7s1-out, Tanh
    ]  # fmt: skip
    layers: list[Layer] = []
    for prefix, (name,), kind in _sequential("model.", model):
        if kind != "block":
            layers.append((prefix, (name,), kind))
            continue
        # Without dropout the second conv sits where the dropout's pad would be.
        dropout = f"{prefix}.conv_block.5.weight" not in state_dict
        layers += _sequential(f"{prefix}.conv_block.", _resnet_block(dropout), (name,))
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
        "weight": ("params", ("batch_norm", "scale"), _same),
        "bias": ("params", ("batch_norm", "bias"), _same),
        "running_mean": ("batch_stats", ("batch_norm", "mean"), _same),
        "running_var": ("batch_stats", ("batch_norm", "var"), _same),
    },
}
_TO_TORCH = {"conv": (3, 2, 0, 1), "upconv": (2, 3, 0, 1)}  # HWIO -> the torch layout


def generator_layers(config: ml_collections.ConfigDict, state_dict: dict) -> list[Layer]:
    """The layer map for the generator that `config` describes (a ConfigError if unsupported)."""
    name, norm = config.model.generator, config.model.norm
    if norm not in SUPPORTED_NORMS:
        raise ConfigError(
            f"model.norm={norm!r}: the reference's weights convert for {SUPPORTED_NORMS}"
        )
    generator = models.create_generator(
        config.model, input_pipeline.image_shape(config), config.dataset.output_channels
    )
    if name in UNET_GENERATORS:
        return unet_layers(generator.num_downs)
    if name in RESNET_GENERATORS:
        return resnet_layers(generator.n_blocks, state_dict)
    raise ConfigError(
        f"model.generator={name!r} has no reference counterpart; the converter supports "
        f"{UNET_GENERATORS + RESNET_GENERATORS}"
    )


def convert_generator(
    state_dict: dict[str, np.ndarray], config: ml_collections.ConfigDict, source: str
) -> tuple[dict, dict]:
    """(params, batch_stats) of our generator from a reference generator state_dict.

    Checks that every variable of our generator is set once with the right
    shape and that the file holds nothing else; a DataError names the key,
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
                raise DataError(f"{source}: missing key {key!r} ({hint})")
            value = np.asarray(state_dict[key], np.float32)
            expected = tuple(shapes[path].shape)
            needed = (
                tuple(expected[i] for i in _TO_TORCH[kind]) if leaf == ("kernel",) else expected
            )
            if value.shape != needed:
                raise DataError(
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
            raise DataError(f"{source}: unexpected key {key!r} ({hint})")
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


def reference_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with the reference's U-Net dropout blocks (`dropout_layout=pytorch`).

    A converted generator was trained with dropout in those blocks; drawing its test-time
    noise in the paper's blocks would put noise where it was never trained with any.
    """
    config = copy.deepcopy(config)
    config.model.dropout_layout = "pytorch"
    return config


def converted_state(pth: str, config: ml_collections.ConfigDict) -> Any:
    """The step-0 train state of `config` with G's variables from the reference file `pth`."""
    config_lib.validate(config)
    params, batch_stats = convert_generator(torch_weights.load_state_dict(pth), config, pth)
    state = assembly.initial_state(config, assembly.inference_setup(config))
    return state.replace(g_params=params, g_batch_stats=batch_stats)


def convert(pth: str, config: ml_collections.ConfigDict, workdir: str) -> Any:
    """Write `workdir` (config.json, a step-0 checkpoint) for the reference generator `pth`."""
    workdir = paths.resolve(workdir)  # a local folder or a URI (gs://bucket/run)
    checkpoints = os.path.join(workdir, "checkpoints")
    if paths.listdir(checkpoints):
        raise ConfigError(f"{checkpoints} already holds checkpoints: convert into a new workdir")
    config = reference_config(config)
    state = converted_state(pth, config)
    if paths.is_uri(workdir):
        workdir_lib.prepare(workdir)  # a missing or read-only bucket: one line, before writing
    paths.makedirs(workdir)
    paths.write_text(os.path.join(workdir, "config.json"), config.to_json(indent=2) + "\n")
    checkpointer = checkpointing.Checkpointer(checkpoints, config.max_checkpoints_to_keep)
    try:
        checkpointer.save(0, state, {})
    finally:
        checkpointer.close()
    return state


def define_flags() -> None:
    """The command line's flags."""
    flags.DEFINE_string("pth", None, "Reference generator state_dict, e.g. latest_net_G.pth.")
    flags.DEFINE_string("workdir", None, "New workdir to write (config.json, checkpoints/).")
    cli.define_config_flag()
    flags.mark_flags_as_required(["pth", "workdir"])


def convert_from_flags() -> None:
    """Convert with the parsed flags and print a summary."""
    f = flags.FLAGS
    cli.start_runtime(f.config, announce=False)
    state = convert(f.pth, f.config, f.workdir)
    count = models.count_params(state.g_params)
    summary = {"generator": f.config.model.generator, "params": count, "workdir": f.workdir}
    print(f"Converted {f.pth}: {json.dumps(summary)}")


def run() -> None:
    """The command: parse the command line, convert, report bad input in one line."""
    cli.run(PROG, define_flags, convert_from_flags)


if __name__ == "__main__":
    run()
