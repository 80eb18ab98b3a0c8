"""The official pix2pix datasets as the tfds builder `pix2pix`, one config per archive.

    import tensorflow_datasets as tfds
    import pix2pix_jax.datasets  # registers the builders

    builder = tfds.builder("pix2pix/facades", data_dir="/tmp/tfds")  # or path="facades.tar.gz"
    builder.download_and_prepare(file_format="array_record")
    train = builder.as_data_source()["train"]  # train[i]: {"image": A|B JPEG bytes, "file_name"}

Each archive (`URL_TEMPLATE`) holds NAME/SPLIT/*.jpg, every file a side-by-side A|B JPEG. The
JPEG bytes are stored untouched (exact pixels, no re-encoding) and split into A and B when read
(`images.decode_ab`). Where the archive comes from, first match wins: the `path` argument (the
archive itself, or a directory holding NAME.tar.gz), tfds' manual_dir (NAME.tar.gz there), the
download. Every image is decoded and checked while preparing; a bad one stops the prepare
(nothing is kept: tfds writes to a temporary directory that is renamed only at the end) unless
`skip_bad_files`, which leaves it out and reports it. The archive is streamed: a member whose
header declares more bytes than an image of `max_pixels` pixels can take is refused before it
is read (a few MB of gzip can declare gigabytes of zeros), and links, devices and other
members that are not regular files are passed over.
"""

import dataclasses
import os
import tarfile
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from pix2pix_jax.datasets import images
from pix2pix_jax.errors import DataError, MissingFileError

URL_TEMPLATE = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{name}.tar.gz"

_CITATION = """\
@inproceedings{isola2017image,
  title = {Image-to-Image Translation with Conditional Adversarial Networks},
  author = {Isola, Phillip and Zhu, Jun-Yan and Zhou, Tinghui and Efros, Alexei A.},
  booktitle = {Computer Vision and Pattern Recognition (CVPR)},
  year = {2017}
}
"""


@dataclasses.dataclass(eq=False, kw_only=True)
class Pix2pixConfig(tfds.core.BuilderConfig):
    """One official archive.

    Attributes:
      splits: the split folders of the archive.
      a: what the A (left) halves show.
      b: what the B (right) halves show.
      default_direction: the direction of the task the dataset is named after.

    """

    splits: tuple[str, ...] = ("train", "val")
    a: str = ""
    b: str = ""
    default_direction: str = "AtoB"


def _config(name: str, splits: tuple[str, ...], a: str, b: str, direction: str, about: str):
    what = f"A: {a}, B: {b}; {'A -> B' if direction == 'AtoB' else 'B -> A'} by default"
    return Pix2pixConfig(
        name=name, description=f"{about} {what}.", splits=splits, a=a, b=b,
        default_direction=direction,
    )  # fmt: skip


BUILDER_CONFIGS = [
    _config("facades", ("train", "val", "test"), "photo", "label map", "BtoA",
            "CMP Facades, 400/100/106 pairs of 256x256."),
    _config("cityscapes", ("train", "val"), "photo", "label map", "BtoA",
            "Cityscapes, 2,975/500 pairs of 256x256."),
    _config("maps", ("train", "val"), "aerial photo", "map", "AtoB",
            "Google Maps, 1,096/1,098 pairs of 600x600."),
    _config("edges2shoes", ("train", "val"), "edges", "photo", "AtoB",
            "UT Zappos50K shoes, 49,825/200 pairs of 256x256."),
    _config("edges2handbags", ("train", "val"), "edges", "photo", "AtoB",
            "iGAN handbags, 138,567/200 pairs of 256x256."),
    _config("night2day", ("train", "val", "test"), "night", "day", "AtoB",
            "Transient Attributes, 17,823/10/2,287 pairs of 256x256."),
]  # fmt: skip
DEFAULT_DIRECTIONS = {c.name: c.default_direction for c in BUILDER_CONFIGS}


class Pix2pix(tfds.core.GeneratorBasedBuilder):
    """The paired datasets published with pix2pix, as side-by-side A|B JPEG bytes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = BUILDER_CONFIGS
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Optional: put NAME.tar.gz (e.g. facades.tar.gz) here."

    def __init__(
        self, *, path: str = "", skip_bad_files: bool = False,
        max_pixels: int = images.MAX_PIXELS, file_format=None, **kwargs: Any,
    ):  # fmt: skip
        """As the base class, plus `path`, `skip_bad_files` and `max_pixels`.

        `path` is an archive you have; `max_pixels` (dataset.max_image_pixels) makes larger
        images bad files. Defaults to the array_record format (no TensorFlow needed to write
        or read it).
        """
        self._path = path
        self._skip_bad_files = skip_bad_files
        self._max_pixels = max_pixels
        super().__init__(file_format=file_format, **kwargs)
        if file_format is None and not self.info.initialized:
            self.info.set_file_format("array_record", override=True)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="The paired image datasets of pix2pix (Isola et al. 2017).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(), dtype=np.object_),  # A|B JPEG
                    "file_name": tfds.features.Text(),  # path inside the archive
                }
            ),
            homepage="https://phillipi.github.io/pix2pix/",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        archive = self._archive(dl_manager)
        return {split: self._generate_examples(archive, split) for split in self._config.splits}

    @property
    def _config(self) -> Pix2pixConfig:
        return self.builder_config

    def _archive(self, dl_manager: tfds.download.DownloadManager) -> str:
        """The local path of the archive: `path`, manual_dir or the download."""
        file_name = f"{self._config.name}.tar.gz"
        if self._path:
            path = os.path.expanduser(self._path)
            path = os.path.join(path, file_name) if os.path.isdir(path) else path
            if not os.path.isfile(path):
                raise MissingFileError(f"dataset.path={self._path!r}: no archive {path}")
            return path
        manual = os.path.join(os.fspath(dl_manager._manual_dir or ""), file_name)
        if dl_manager._manual_dir and os.path.isfile(manual):
            return manual
        return os.fspath(dl_manager.download(URL_TEMPLATE.format(name=self._config.name)))

    def _generate_examples(self, archive: str, split: str) -> Iterator[tuple[str, dict]]:
        skipped, count = [], 0
        max_bytes = images.max_file_bytes(self._max_pixels)
        for member, data in _members(archive, split, max_bytes):
            try:
                if isinstance(data, images.BadImageError):
                    raise data
                images.decode_ab(data, f"{archive}:{member}", self._max_pixels)
            except images.BadImageError as e:
                if not self._skip_bad_files:
                    raise
                skipped.append(str(e))
                continue
            count += 1
            yield member, {"image": data, "file_name": member}
        images.report_skipped(skipped, f"{archive} ({split})")
        if not count:
            raise DataError(
                f"{archive}: no usable image files in {self._config.name}/{split}/ "
                f"(the split needs .jpg/.png files)"
            )


def _members(
    archive: str, split: str, max_bytes: int
) -> Iterator[tuple[str, bytes | images.BadImageError]]:
    """(path, bytes) of the image files in the `split` folder of a tar(.gz) archive.

    A member larger than `max_bytes` comes with a BadImageError instead of its bytes, unread.
    """
    try:
        # Random access, not a stream: tarfile's stream reader passes over a member
        # decompressing it in 10 kB steps, which takes minutes for a few MB of gzip bomb.
        with open(archive, "rb") as f, tarfile.open(fileobj=f, mode="r:*") as tar:
            for info in tar:
                member = _normpath(info.name)
                parts = member.split("/") if member and info.isfile() else []
                if len(parts) < 2 or parts[-2] != split or not images.is_image_name(member):
                    continue  # folders, links, devices, other splits, other files
                if info.size > max_bytes:  # the header's size, checked before reading
                    yield (
                        member,
                        images.BadImageError(
                            images.too_large(f"{archive}:{member}", info.size, max_bytes)
                        ),
                    )
                    continue
                yield member, tar.extractfile(info).read(info.size)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive}: not a readable tar.gz archive ({e})") from None


def _normpath(name: str) -> str | None:
    """A member's path as tfds' archive reader gave it; None for hidden or absolute paths."""
    path = os.path.normpath(name)
    hidden = path.startswith(".") or os.path.basename(path).startswith(".")
    return None if hidden or os.path.isabs(path) or path.endswith("~") else path
