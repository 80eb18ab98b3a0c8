"""The objects a config describes: the step's `Setup`, the initial state, a state template.

The one place where config fields become networks, optimisers and loss
settings, for the trainer and for the commands that run a trained model.
Nothing here reads a dataset: callers that train pass the train split's size
(epoch-based schedules need it).
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from pix2pix_jax import checkpointing, input_pipeline, losses, models, steps
from pix2pix_jax import config as config_lib
from pix2pix_jax.errors import DataError


def make_setup(
    config: ml_collections.ConfigDict, num_train_examples: int | None = None
) -> steps.Setup:
    """The networks, optimisers and loss settings that `config` describes.

    `num_train_examples` (the train split's size) sets the epoch length of
    epoch-based learning-rate schedules, which refuse to run without it.
    """
    tx = steps.make_optimizer(config, num_train_examples)
    return steps.Setup(
        generator=models.create_generator(
            config.model, input_pipeline.image_shape(config), config.dataset.output_channels
        ),
        discriminator=models.create_discriminator(config.model),
        g_tx=tx,
        d_tx=tx,
        seed=config.seed,
        loss=losses.LossSettings.from_config(config.loss),
        load_shape=input_pipeline.load_shape(config),
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
        return jax.device_get(init(setup, _state_shape(config), config.dataset.input_channels))


def state_template(config: ml_collections.ConfigDict) -> Any:
    """A host train state of zeros shaped as `config`'s, without running the networks."""
    init = functools.partial(
        steps.init_state,
        inference_setup(config),
        _state_shape(config),
        config.dataset.input_channels,
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
