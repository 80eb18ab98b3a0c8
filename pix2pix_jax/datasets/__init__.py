"""tensorflow-datasets builders of pix2pix_jax; importing this package registers them.

- `synthetic_facades/<config>`: generated CMP-Facades-like pairs, no download;
- `pix2pix/<config>`: the official pix2pix archives (facades, cityscapes, maps, edges2shoes,
  edges2handbags, night2day);
- `folder` (with `dataset.path`): a folder of the user's paired images.
"""

import os
from typing import Any

import tensorflow_datasets as tfds

from pix2pix_jax import paths
from pix2pix_jax.datasets import folder, images, pix2pix, synthetic_facades  # noqa: F401
from pix2pix_jax.errors import ConfigError

FOLDER = "folder"


def make_builder(dataset_config: Any) -> tfds.core.DatasetBuilder:
    """The tfds builder named by `dataset_config`.

    Reads its name, data_dir, path, skip_bad_files and max_image_pixels.
    """
    name, path = dataset_config.name, dataset_config.get("path", "")
    data_dir = dataset_config.get("data_dir") or None
    check_data_dir(data_dir)
    if path and paths.is_uri(path):  # the builders read local files: a copy, made once
        path = paths.local_copy(path, os.path.join(data_dir or _TFDS_HOME, "downloads", "uri"))
    skip = bool(dataset_config.get("skip_bad_files", False))
    max_pixels = int(dataset_config.get("max_image_pixels", images.MAX_PIXELS))
    if name == FOLDER:
        return folder.make_builder(path, data_dir, skip, max_pixels)
    is_pix2pix = name.split("/")[0] == "pix2pix"
    if path and not is_pix2pix:
        raise ConfigError(
            f"dataset.path={path!r} is only used with dataset.name='folder' or 'pix2pix/...', "
            f"not {name!r}"
        )
    kwargs = {"path": path, "skip_bad_files": skip, "max_pixels": max_pixels} if is_pix2pix else {}
    try:
        return tfds.builder(name, data_dir=data_dir, **kwargs)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ConfigError(f"dataset.name={name!r}: no such tfds dataset ({e})") from None
    except ValueError as e:  # an unknown builder config
        raise ConfigError(f"dataset.name={name!r}: {e}") from None


_TFDS_HOME = os.path.expanduser("~/tensorflow_datasets")  # tfds's default data_dir


def check_data_dir(data_dir: str | None) -> None:
    """Raise a ConfigError for a `dataset.data_dir` URI: prepared datasets must be local.

    The array_record reader that serves prepared tfds datasets opens local files
    only (given a gs:// path it waits forever on the first record).
    """
    if data_dir and paths.is_uri(data_dir):
        raise ConfigError(
            f"dataset.data_dir={data_dir!r}: prepared datasets are read with array_record, "
            "which reads local files only. Copy the dataset to local disk "
            f"(gcloud storage cp -r {data_dir.rstrip('/')}/NAME ~/tensorflow_datasets/) and "
            "set dataset.data_dir to that folder, or mount the bucket with gcsfuse and give "
            "the mount point"
        )


def default_direction(name: str) -> str:
    """The direction of the task a dataset is named after (facades: labels -> photo, BtoA)."""
    family, _, config = name.partition("/")
    if family == "pix2pix":
        return pix2pix.DEFAULT_DIRECTIONS.get(config, "AtoB")
    return "BtoA" if family == "synthetic_facades" else "AtoB"
