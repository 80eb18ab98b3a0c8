"""The objects a config describes: the step's `Setup`, the initial state, a state template.

The one place where config fields become networks, optimisers and loss
settings, for the trainer and for the commands that run a trained model.
Nothing here reads a dataset: callers that train pass the train split's size
(epoch-based schedules need it).
"""

import functools
from typing import Any

import jax
import ml_collections
import numpy as np

from pix2pix_jax import checkpointing, input_pipeline, losses, models, steps
from pix2pix_jax import config as config_lib


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


def state_template(config: ml_collections.ConfigDict) -> Any:
    """A host train state of zeros shaped as `config`'s, without running the networks."""
    init = functools.partial(
        steps.init_state,
        inference_setup(config),
        _state_shape(config),
        input_pipeline.model_input_channels(config),
    )
    return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), jax.eval_shape(init))


def restore_for_inference(
    workdir: str, which: str | int = "latest"
) -> tuple[ml_collections.ConfigDict, steps.TrainState, int]:
    """(config, train state on the host, step) of a checkpoint of the run in `workdir`.

    `which` is 'latest', 'best' or a step number (see `checkpointing.restore_state`).
    """
    config = config_lib.load_workdir_config(workdir)
    state, step = checkpointing.restore_state(workdir, state_template(config), which)
    return config, state, step
