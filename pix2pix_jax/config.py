"""Config handling in one place: the default's path, validation, a workdir's saved config.

`validate(config)` checks every field a run reads and raises a `ConfigError`
naming the first unusable one; the trainer runs it once, before anything is
built. The choices of the extensible fields (generators, discriminators,
norms, initialisers, GAN objectives, schedules) are read from their
registries, so a new option needs no change here.
"""

import copy
import json
import os
from typing import Any

import ml_collections

from pix2pix_jax import (
    datasets,
    input_pipeline,
    losses,
    metrics,
    models,
    paths,
    replicas,
    schedules,
    steps,
)
from pix2pix_jax.configs import default
from pix2pix_jax.datasets import preprocess
from pix2pix_jax.errors import ConfigError, MissingFileError

#: The embedded default config file, for the commands' --config flag.
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "default.py")
COMPUTE_DTYPES = ("float32", "bfloat16")
POSITIVE_INTS = (
    "num_train_steps", "batch_size", "log_every_steps", "eval_every_steps",
    "checkpoint_every_steps", "max_checkpoints_to_keep", "eval.batch_size", "eval.num_samples",
)  # fmt: skip


def _field(config: Any, dotted: str) -> Any:
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise a ConfigError naming the first config field with an unusable value."""
    for field in POSITIVE_INTS:
        value = _field(config, field)
        if not _is_int(value) or value < 1:
            raise ConfigError(f"{field} must be a positive integer, got {value!r}")
    if not _is_int(config.seed) or not 0 <= config.seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32), got {config.seed!r}")
    _check_dataset(config.dataset)
    _check_model(config)
    _check_loss(config.loss)
    schedules.check(config.optimizer)
    _check_optimizer(config.optimizer)
    _check_eval(config.eval)
    _check_run(config)
    replicas.check(config)


def _check_dataset(ds: Any) -> None:
    datasets.check_data_dir(ds.get("data_dir"))  # a URI: the one-line fix, before any write
    directions = input_pipeline.DIRECTIONS
    if ds.direction not in directions + ("",):
        raise ConfigError(f"dataset.direction={ds.direction!r} is not one of {directions}")
    if ds.preprocess not in preprocess.MODES:
        raise ConfigError(f"dataset.preprocess={ds.preprocess!r} is not one of {preprocess.MODES}")
    if not _is_int(ds.image_width) or ds.image_width < 0:
        raise ConfigError(f"dataset.image_width={ds.image_width!r} must be an integer >= 0")
    for field, low in (("num_workers", 0), ("num_threads", 0), ("prefetch", 1)):
        if not _is_int(ds[field]) or ds[field] < low:
            raise ConfigError(f"dataset.{field}={ds[field]!r} must be an integer >= {low}")
    if not ds.load_size_ratio >= 1:
        raise ConfigError(f"dataset.load_size_ratio={ds.load_size_ratio} must be >= 1")
    if not _is_int(ds.max_image_pixels) or ds.max_image_pixels < 4:  # 2x2, the smallest image
        raise ConfigError(
            f"dataset.max_image_pixels={ds.max_image_pixels!r} must be an integer >= 4"
        )
    channels = tuple(input_pipeline.CHANNEL_MODES)
    for field in ("input_channels", "output_channels"):
        if ds[field] not in channels:
            raise ConfigError(f"dataset.{field}={ds[field]!r} is not one of {channels}")
    _check_label_maps(ds)


def _check_label_maps(ds: Any) -> None:
    # Ids ship as uint8, so at most 256 classes; 0 means the input is an image.
    if not _is_int(ds.label_nc) or not 0 <= ds.label_nc <= 256:
        raise ConfigError(
            f"dataset.label_nc={ds.label_nc!r} must be an integer in [0, 256] (0: the input "
            "is an image)"
        )
    if not isinstance(ds.instance_maps, bool):
        raise ConfigError(f"dataset.instance_maps must be True or False, got {ds.instance_maps!r}")
    if ds.instance_maps and not ds.label_nc:
        raise ConfigError(
            "dataset.instance_maps=True needs label maps: set dataset.label_nc to the number "
            "of classes"
        )


def _check_model(config: Any) -> None:
    model = config.model
    if model.compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(
            f"model.compute_dtype={model.compute_dtype!r} is not one of {COMPUTE_DTYPES}"
        )
    if not 0 <= model.dropout_rate < 1:
        raise ConfigError(f"model.dropout_rate must be in [0, 1), got {model.dropout_rate}")
    # Names, sizes and the options each network reads; no network is built.
    models.check_config(model, input_pipeline.image_shape(config))


def _check_loss(loss: Any) -> None:
    losses.GAN_OBJECTIVES.get(loss.gan_mode)
    for name in ("use_gan", "conditional_d"):
        if not isinstance(loss[name], bool):
            raise ConfigError(f"loss.{name} must be True or False, got {loss[name]!r}")
    for name in ("lambda_l1", "lambda_gp", "lambda_feat"):
        value = loss.get(name, 0.0)  # older configs have no lambda_feat
        # NaN passes on purpose: the loop's divergence check reports it by step.
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"loss.{name} must be a non-negative number, got {value!r}")
    _check_perceptual(loss)
    if not any(weight != 0 for _, weight in losses.generator_terms(loss)):
        raise ConfigError(
            "nothing to train: loss.use_gan=False and loss.lambda_l1=0 leave the generator "
            "without a loss; set lambda_l1 > 0 (L1 only) or use_gan=True (GAN only)"
        )


#: The perceptual terms' weights and the weights files each needs (checked to exist here;
#: their contents are checked by `assembly.frozen_params`, before the workdir is written).
PERCEPTUAL_FILES = {
    "lambda_vgg": ("vgg_weights",),
    "lambda_lpips": ("lpips_weights", "lpips_backbone"),
}


def _check_perceptual(loss: Any) -> None:
    for weight, files in PERCEPTUAL_FILES.items():
        value = loss.get(weight, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"loss.{weight} must be a non-negative number, got {value!r}")
        for field in files:
            path = loss.get(field, "")
            if value != 0 and not path:
                raise ConfigError(f"loss.{weight}={value} needs loss.{field} (a weights file)")
            if path and not os.path.isfile(path):
                raise MissingFileError(f"loss.{field}={path!r}: no such file")


#: Sizes that must be positive whatever the networks (0 or less builds empty layers).
POSITIVE_SIZES = ("image_size", "model.ngf", "model.ndf")
DAMAGED_CHECKPOINT = ("fallback", "stop")


def _check_run(config: Any) -> None:
    for field in POSITIVE_SIZES:
        value = _field(config, field)
        if not _is_int(value) or value < 1:
            raise ConfigError(f"{field} must be a positive integer, got {value!r}")
    if config.damaged_checkpoint not in DAMAGED_CHECKPOINT:
        raise ConfigError(
            f"damaged_checkpoint={config.damaged_checkpoint!r} is not one of {DAMAGED_CHECKPOINT}"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_optimizer(opt: Any) -> None:
    for name in ("learning_rate", "d_learning_rate"):
        if not _is_number(opt[name]) or not opt[name] >= 0:
            raise ConfigError(f"optimizer.{name} must be a number >= 0, got {opt[name]!r}")
    for name in ("b1", "b2"):
        if not _is_number(opt[name]) or not 0 <= opt[name] < 1:
            raise ConfigError(f"optimizer.{name} must be in [0, 1), got {opt[name]!r}")
        d_value = opt[f"d_{name}"]
        # -1 (any negative) is the sentinel for "G's value"; D's own must be a valid beta.
        if not _is_number(d_value) or not d_value < 1:
            raise ConfigError(
                f"optimizer.d_{name} must be in [0, 1), or negative for G's optimizer.{name}; "
                f"got {d_value!r}"
            )


def _check_eval(ev: Any) -> None:
    if ev.mode not in steps.EVAL_MODES:
        raise ConfigError(f"eval.mode={ev.mode!r} is not one of {steps.EVAL_MODES}")
    if ev.best_metric and ev.best_metric not in metrics.BEST_DIRECTIONS:
        raise ConfigError(
            f"eval.best_metric={ev.best_metric!r} is not one of "
            f"{tuple(metrics.BEST_DIRECTIONS)} (or '' for none)"
        )
    weights = ev.get("inception_weights", "")
    if ev.best_metric in metrics.SET_METRICS and not weights:
        raise ConfigError(
            f"eval.best_metric={ev.best_metric!r} needs eval.inception_weights (the FID "
            "Inception weights file)"
        )
    if weights and not paths.is_file(weights):
        raise MissingFileError(f"eval.inception_weights={weights!r}: no such file")


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run wrote to `workdir`/config.json, over today's defaults.

    Fields added to the defaults since the run keep their default values.
    """
    if not paths.is_dir(workdir):
        raise MissingFileError(f"workdir {workdir!r} does not exist")
    path = os.path.join(workdir, "config.json")
    if not paths.is_file(path):
        raise MissingFileError(f"{path} not found: is {workdir!r} a pix2pix_jax workdir?")
    try:
        saved = json.loads(paths.read_bytes(path))
        config = default.get_config()
        config.update(saved)
    except (json.JSONDecodeError, TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"{path}: not a usable pix2pix_jax config ({e})") from e
    return config


def resolved(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with the values that "" leaves to the data filled in.

    `dataset.direction` "" becomes the dataset's own direction, so the run's
    config.json says which side is the input.
    """
    config = copy.deepcopy(config)
    config.dataset.direction = input_pipeline.direction(config.dataset)
    return config


def describe_direction(config: ml_collections.ConfigDict) -> str:
    """The translation a config trains, e.g. 'B -> A (dataset.direction=BtoA)'."""
    direction = input_pipeline.direction(config.dataset)
    source, target = ("A", "B") if direction == "AtoB" else ("B", "A")
    return f"input {source} -> target {target} (dataset.direction={direction})"
