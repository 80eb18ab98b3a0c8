"""The objects a config describes: the step's `Setup`, the initial state, a state template.

The one place where config fields become networks, optimisers and loss
settings, for the trainer and for the commands that run a trained model.
Nothing here reads a dataset: callers that train pass the train split's size
(epoch-based schedules need it).
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from pix2pix_jax import checkpointing, input_pipeline, losses, models, replicas, steps
from pix2pix_jax import config as config_lib
from pix2pix_jax.errors import ConfigError, DataError


def make_setup(
    config: ml_collections.ConfigDict, num_train_examples: int | None = None
) -> steps.Setup:
    """The networks, optimisers and loss settings that `config` describes.

    `num_train_examples` (the train split's size) sets the epoch length of
    epoch-based learning-rate schedules, which refuse to run without it.
    """
    g_tx = steps.make_optimizer(config, num_train_examples, "g")
    same = steps.adam_settings(config.optimizer, "d") == steps.adam_settings(config.optimizer, "g")
    # D shares G's optimizer object unless TTUR gives it its own settings.
    d_tx = g_tx if same else steps.make_optimizer(config, num_train_examples, "d")
    return steps.Setup(
        generator=models.create_generator(
            config.model, input_pipeline.image_shape(config), config.dataset.output_channels
        ),
        discriminator=models.create_discriminator(config.model),
        g_tx=g_tx,
        d_tx=d_tx,
        seed=config.seed,
        loss=losses.LossSettings.from_config(config.loss),
        load_shape=input_pipeline.load_shape(config),
        label_nc=config.dataset.label_nc,
        instance_maps=config.dataset.instance_maps,
    )


def frozen_params(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """The fixed networks of G's perceptual terms, for `steps.train_step(..., frozen=)`.

    {'vgg': VGG19 parameters} with `loss.lambda_vgg` != 0 and {'lpips': LPIPS
    parameters} with `loss.lambda_lpips` != 0, read from their weights files
    (a DataError names the field, the file and the key); None, reading
    nothing, when both weights are 0.
    """
    loss, frozen = config.loss, {}
    if loss.get("lambda_vgg", 0.0):
        from pix2pix_jax import vgg  # only this term needs it

        frozen["vgg"] = _named("loss.vgg_weights", vgg.load_vgg19, loss.vgg_weights)
    if loss.get("lambda_lpips", 0.0):
        from pix2pix_jax import lpips  # only this term needs it

        frozen["lpips"] = _named(
            "loss.lpips_weights/lpips_backbone", lpips.load_lpips,
            loss.lpips_weights, loss.lpips_backbone,
        )  # fmt: skip
    return frozen or None


def _named(field: str, load: Callable[..., Any], *paths: str) -> Any:
    """`load(*paths)`, its DataError prefixed with the config field that named the files."""
    try:
        return load(*paths)
    except DataError as e:
        raise type(e)(f"{field}: {e}") from None


def inference_setup(config: ml_collections.ConfigDict) -> steps.Setup:
    """The `Setup` of `config` for running (not training) its networks.

    The optimizer has the right state layout, whatever its schedule's values.
    """
    return make_setup(config, num_train_examples=1)


def _state_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    return (*input_pipeline.image_shape(config), config.dataset.output_channels)


def initial_state(config: ml_collections.ConfigDict, setup: steps.Setup) -> steps.TrainState:
    """The step-0 train state on the host: a function of the config and seed only.

    Its draws use the classic (non-partitionable) threefry: the same values on
    every backend, and XLA:CPU compiles the initialisation ~5x faster.
    """
    init = jax.jit(steps.init_state, static_argnums=(0, 1, 2))
    with jax.threefry_partitionable(False):
        channels = input_pipeline.model_input_channels(config)
        return jax.device_get(init(setup, _state_shape(config), channels))


def initial_states(config: ml_collections.ConfigDict, setup: steps.Setup) -> Any:
    """The step-0 host state of every replica: `initial_state`, stacked when num_seeds > 1.

    Replica k's is exactly the initial state of the single run of seed + k.
    """
    k = replicas.num_seeds(config)
    if k == 1:
        return initial_state(config, setup)
    shape, channels = _state_shape(config), input_pipeline.model_input_channels(config)

    def init(seed: jax.Array) -> steps.TrainState:  # one compilation for every seed
        return steps.init_state(dataclasses.replace(setup, seed=seed), shape, channels)

    with jax.threefry_partitionable(False):
        compiled = jax.jit(init)
        states = [jax.device_get(compiled(np.uint32(s))) for s in replicas.seeds(config)]
    return replicas.stack(states)


def state_template(config: ml_collections.ConfigDict) -> Any:
    """A host train state of zeros shaped as `config`'s, without running the networks.

    With num_seeds = K > 1, every leaf has a leading replica axis of K.
    """
    init = functools.partial(
        steps.init_state,
        inference_setup(config),
        _state_shape(config),
        input_pipeline.model_input_channels(config),
    )
    k = replicas.num_seeds(config)
    lead = () if k == 1 else (k,)
    return jax.tree.map(lambda a: np.zeros(lead + a.shape, a.dtype), jax.eval_shape(init))


def restore_for_inference(
    workdir: str, which: str | int = "latest", seed_index: int | None = None
) -> tuple[ml_collections.ConfigDict, steps.TrainState, int]:
    """(config, train state on the host, step) of a checkpoint of the run in `workdir`.

    `which` is 'latest', 'best' or a step number (see `checkpointing.restore_state`).
    For a run of num_seeds = K > 1, `seed_index` (0 .. K-1) picks the replica,
    and the config returned is that replica's (seed + seed_index, num_seeds 1).
    """
    config = config_lib.load_workdir_config(workdir)
    k = replicas.num_seeds(config)
    index = _seed_index(k, seed_index)
    single = replicas.replica_config(config, index) if k > 1 else config
    if which == "best":  # kept per replica, in its own folder
        best = checkpointing.best_dir("", single.seed, k)  # relative to the workdir
        state, step = checkpointing.restore_state(workdir, state_template(single), which, best)
        return single, state, step
    state, step = checkpointing.restore_state(workdir, state_template(config), which)
    return single, (replicas.unstack(state, index) if k > 1 else state), step


def _seed_index(k: int, seed_index: int | None) -> int:
    if seed_index is None:
        return 0
    if not 0 <= seed_index < k:
        raise ConfigError(f"seed_index={seed_index} must be in [0, {k}) for this run of {k} seeds")
    return seed_index
