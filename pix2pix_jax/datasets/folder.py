"""Your own paired images as a tfds dataset: `dataset.name='folder'`, `dataset.path=DIR`.

Three layouts are recognised:

* side by side: DIR/train, DIR/val, DIR/test hold A|B images (A left, B right), as the
  official pix2pix archives;
* separate: DIR/A/{train,val,test} and DIR/B/{train,val,test} hold A and B images matched by
  their path relative to the split folder (the layout the reference implementation's
  `combine_A_and_B.py` reads). An optional DIR/inst/{train,val,test} holds an instance-id map
  (single-channel, 8- or 16-bit) for each A file, of the same relative path: with
  `dataset.label_nc` (A: class-id maps) and `dataset.instance_maps` they give pix2pixHD's
  instance-boundary channel;
* Cityscapes: DIR is the official Cityscapes root, holding
  leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png (B: photos) and
  gtFine/<split>/<city>/<frame>_gtFine_labelIds.png (A: class ids 0-33) and
  `_gtFine_instanceIds.png` (instance ids, 16-bit: class * 1000 + instance for the instance
  classes, the class id for the others).

Splits are the split folders present; subfolders are searched too. Files are JPEG, PNG, TIFF or
BMP (by suffix; other files are ignored), 8- or 16-bit, grayscale, RGB or RGBA, of any size.
Their bytes are stored untouched and decoded when read.

The layout, the file lists and the partners are checked before anything is written (a file name
that is not valid UTF-8, a dangling symbolic link, a named pipe, device or socket, a file larger
than any image of `max_pixels` pixels), and every image is decoded and checked while preparing;
the first problem stops with one error naming the file, unless `skip_bad_files`, which leaves
bad files (and A files without a B partner, or B without A) out and prints them. The prepared
dataset lives in DATA_DIR/paired_folder/<config>, where the config name is the folder's name
plus a fingerprint of its file list (names, sizes, modification times) and of `skip_bad_files`
(with it, of `max_pixels`): a changed folder is prepared anew, and a failed prepare leaves
nothing behind that a later run would use.
"""

import dataclasses
import hashlib
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from pix2pix_jax.datasets import images
from pix2pix_jax.errors import ConfigError, DataError, MissingFileError

SPLITS = ("train", "val", "test")
SIDE_BY_SIDE, SEPARATE, CITYSCAPES = "side_by_side", "separate", "cityscapes"
INSTANCES = "inst"  # the separate layout's folder of instance maps, beside A/ and B/
# The Cityscapes file names (fcn_score.py reads the same labelIds files).
PHOTO_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX, INSTANCE_SUFFIX = "_gtFine_labelIds.png", "_gtFine_instanceIds.png"


@dataclasses.dataclass(frozen=True)
class Layout:
    """What was found in a folder: its layout and, per split, the files (or A/B partners)."""

    root: str
    kind: str  # SIDE_BY_SIDE or SEPARATE
    # split -> paths relative to the split folder(s); not in the repr, which tfds logs
    files: dict[str, tuple[str, ...]] = dataclasses.field(repr=False)
    # skip_bad_files only: why each left-out file was left out (bad files, lonely partners)
    skipped: tuple[str, ...] = dataclasses.field(default=(), repr=False)

    instances: bool = False  # separate layout: DIR/inst/ holds instance maps

    def split_dirs(self, split: str) -> tuple[str, ...]:
        """The folder(s) holding `split`: one for side-by-side, A and B (and inst) for separate."""
        if self.kind == SIDE_BY_SIDE:
            return (os.path.join(self.root, split),)
        sides = ("A", "B", INSTANCES) if self.instances else ("A", "B")
        return tuple(os.path.join(self.root, side, split) for side in sides)

    @property
    def keys(self) -> tuple[str, ...]:
        """The record keys of the encoded files of one example."""
        if self.kind == SIDE_BY_SIDE:
            return ("image",)
        has_instances = self.instances or self.kind == CITYSCAPES
        return ("image_a", "image_b") + (("instance",) if has_instances else ())

    def paths(self, split: str, rel: str) -> tuple[str, ...]:
        """The files of the example `rel` of `split`, in the order of `keys`."""
        if self.kind != CITYSCAPES:
            return tuple(os.path.join(d, rel) for d in self.split_dirs(split))
        frame = rel[: -len(PHOTO_SUFFIX)]  # <city>/<city>_<seq>_<frame>
        gt = os.path.join(self.root, "gtFine", split, frame)
        photo = os.path.join(self.root, "leftImg8bit", split, rel)
        return gt + LABEL_SUFFIX, photo, gt + INSTANCE_SUFFIX


def shown(path: str) -> str:
    """`path` printable: bytes that are not UTF-8 (os' surrogate escapes) as backslash-x codes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def file_problem(path: str, max_bytes: int) -> str | None:
    """Why the listed image file `path` cannot be read (a one-line message naming it), or None.

    Checked before anything is prepared, without opening the file: a name that is not valid
    UTF-8 (tfds stores names as UTF-8 text), a dangling link, a named pipe (reading it hangs),
    a device (reading /dev/zero never ends), a file larger than `max_bytes`.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return f"{shown(path)}: the file name is not valid UTF-8; rename the file"
    try:
        info = os.stat(path)  # follows links: what a read would see
    except OSError as e:
        if os.path.islink(path) and not os.path.exists(path):
            return f"{path}: a dangling symbolic link (to {os.readlink(path)!r})"
        return f"{path}: cannot be read ({e.strerror})"
    kind = images.special_file_kind(info.st_mode)
    if kind:
        return f"{path}: is {kind}, not a regular file; images must be files"
    if info.st_size > max_bytes:
        return images.too_large(path, info.st_size, max_bytes)
    return None


def _image_files(directory: str, max_bytes: int) -> tuple[tuple[str, ...], list[str]]:
    """Image files under `directory` (searched recursively), relative to it, sorted, and problems.

    The problems are those of the image files that cannot be read (see `file_problem`).
    """
    found, problems = [], []
    for parent, dirs, names in os.walk(directory):
        dirs.sort()
        for name in filter(images.is_image_name, names):
            path = os.path.join(parent, name)
            problem = file_problem(path, max_bytes)
            if problem:
                problems.append(problem)
            else:
                found.append(os.path.relpath(path, directory))
    return tuple(sorted(found)), problems


def _checked_files(directory: str, skip_bad_files: bool, max_bytes: int, skipped: list[str]):
    """The readable image files of `directory`; a bad one raises, or is added to `skipped`."""
    files, problems = _image_files(directory, max_bytes)
    if problems and not skip_bad_files:
        raise DataError(problems[0])
    skipped += problems
    if not files:
        raise DataError(
            f"{directory}: no {'readable ' if problems else ''}image files (looked for "
            f"{', '.join(images.SUFFIXES)}); remove the empty split folder or add images"
        )
    return files


def discover(root: str, skip_bad_files: bool = False, max_pixels: int = images.MAX_PIXELS):
    """The layout of the paired-image folder `root`, checked; see the module docstring.

    Returns a Layout; `max_pixels` bounds the size of the files (see `images.max_file_bytes`).
    """
    if not root:
        raise ConfigError("dataset.path is empty; dataset.name='folder' needs the image folder")
    root = os.path.abspath(os.path.expanduser(root))
    try:
        root.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"dataset.path={shown(root)!r}: the name is not valid UTF-8") from None
    if not os.path.isdir(root):
        raise MissingFileError(f"dataset.path={root!r}: no such directory")
    has = {d: os.path.isdir(os.path.join(root, d)) for d in ("A", "B") + SPLITS}
    if all(os.path.isdir(os.path.join(root, d)) for d in ("leftImg8bit", "gtFine")):
        return _discover_cityscapes(root, skip_bad_files, images.max_file_bytes(max_pixels))
    if has["A"] or has["B"]:
        if not (has["A"] and has["B"]):
            there, missing = ("A", "B") if has["A"] else ("B", "A")
            raise MissingFileError(f"{root} has {there}/ but no {missing}/ (separate layout)")
        return _discover_separate(root, skip_bad_files, images.max_file_bytes(max_pixels))
    splits = [s for s in SPLITS if has[s]]
    if not splits:
        raise MissingFileError(
            f"{root} holds neither split folders {'/, '.join(SPLITS)}/ of A|B images nor "
            "A/ and B/ folders with those splits"
        )
    max_bytes, skipped = images.max_file_bytes(max_pixels), []
    files = {
        s: _checked_files(os.path.join(root, s), skip_bad_files, max_bytes, skipped) for s in splits
    }
    return Layout(root, SIDE_BY_SIDE, files, tuple(skipped))


def _discover_separate(root: str, skip_bad_files: bool, max_bytes: int) -> Layout:
    instances = os.path.isdir(os.path.join(root, INSTANCES))
    split_dirs = {s: [os.path.isdir(os.path.join(root, side, s)) for side in "AB"] for s in SPLITS}
    splits = [s for s, (a, b) in split_dirs.items() if a or b]
    if not splits:
        raise MissingFileError(f"{root}/A and {root}/B hold no split folders {SPLITS}")
    files, skipped = {}, []
    for split in splits:
        for side, present in zip("AB", split_dirs[split], strict=True):
            if not present:
                raise MissingFileError(
                    f"{os.path.join(root, 'B' if side == 'A' else 'A', split)} exists but "
                    f"{os.path.join(root, side, split)} does not"
                )
        a, b = (
            _checked_files(os.path.join(root, side, split), skip_bad_files, max_bytes, skipped)
            for side in "AB"
        )
        lonely = [(f, "A", "B") for f in sorted(set(a) - set(b))]
        lonely += [(f, "B", "A") for f in sorted(set(b) - set(a))]
        for f, side, other in lonely:
            message = (
                f"{os.path.join(root, side, split, f)}: no partner "
                f"{os.path.join(root, other, split, f)} (A and B are matched by file name)"
            )
            if not skip_bad_files:
                raise MissingFileError(message)
            skipped.append(message)
        files[split] = tuple(sorted(set(a) & set(b)))
        if instances:
            files[split] = _with_partners(
                root, split, files[split], INSTANCES, skip_bad_files, max_bytes, skipped
            )
        if not files[split]:
            raise DataError(f"{root}: no A/B pairs in split {split!r}")
    return Layout(root, SEPARATE, files, tuple(skipped), instances)


def _with_partners(
    root: str, split: str, rels: tuple[str, ...], side: str, skip: bool, max_bytes: int,
    skipped: list[str],
) -> tuple[str, ...]:  # fmt: skip
    """The examples `rels` whose file root/side/split/rel is readable.

    The others raise, or with `skip` are left out and listed in `skipped`.
    """
    kept = []
    for rel in rels:
        path = os.path.join(root, side, split, rel)
        problem = file_problem(path, max_bytes) if os.path.lexists(path) else (
            f"{path}: missing, the instance map of {os.path.join(root, 'A', split, rel)}"
        )  # fmt: skip
        if problem and not skip:
            raise MissingFileError(problem)
        if problem:
            skipped.append(problem)
        else:
            kept.append(rel)
    return tuple(kept)


def _discover_cityscapes(root: str, skip_bad_files: bool, max_bytes: int) -> Layout:
    """The official Cityscapes tree: photos of leftImg8bit/, their gtFine label and instance ids."""
    splits = [s for s in SPLITS if os.path.isdir(os.path.join(root, "leftImg8bit", s))]
    if not splits:
        raise MissingFileError(f"{root}/leftImg8bit holds no split folders {SPLITS}")
    files, skipped = {}, []
    layout = Layout(root, CITYSCAPES, {})
    for split in splits:
        photos = _checked_files(
            os.path.join(root, "leftImg8bit", split), skip_bad_files, max_bytes, skipped
        )
        kept = []
        for rel in (f for f in photos if f.endswith(PHOTO_SUFFIX)):
            problems = [
                file_problem(p, max_bytes) if os.path.lexists(p) else f"{p}: missing, the "
                f"ground truth of {layout.paths(split, rel)[1]}"
                for p in layout.paths(split, rel)
            ]  # fmt: skip
            problem = next((p for p in problems if p), None)
            if problem and not skip_bad_files:
                raise MissingFileError(problem)
            skipped += [problem] if problem else []
            kept += [] if problem else [rel]
        if not kept:
            raise DataError(f"{root}: no frames with gtFine labels in split {split!r}")
        files[split] = tuple(kept)
    return Layout(root, CITYSCAPES, files, tuple(skipped))


def fingerprint(layout: Layout, skip_bad_files: bool, max_pixels: int = images.MAX_PIXELS) -> str:
    """A short hash of the folder's files (names, sizes, modification times) and the options."""
    # Which files are skipped depends on max_pixels only when bad files are skipped.
    options = f"{skip_bad_files}|{max_pixels}" if skip_bad_files else f"{skip_bad_files}"
    digest = hashlib.sha256(f"{layout.root}|{layout.kind}|{options}".encode())
    for split, files in layout.files.items():
        for index in range(len(layout.keys)):  # file by file within each side, as before
            for f in files:
                stat = os.stat(layout.paths(split, f)[index])
                digest.update(f"{split}/{f}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


@dataclasses.dataclass(eq=False, kw_only=True)
class FolderConfig(tfds.core.BuilderConfig):
    """A folder of paired images, as found by `discover`."""

    layout: Layout | None = None
    skip_bad_files: bool = False
    max_pixels: int = images.MAX_PIXELS  # dataset.max_image_pixels


def make_config(
    path: str, skip_bad_files: bool = False, max_pixels: int = images.MAX_PIXELS
) -> FolderConfig:
    """The builder config of the folder `path`, named after it and its fingerprint."""
    layout = discover(path, skip_bad_files, max_pixels)
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", os.path.basename(layout.root)).strip("_") or "root"
    return FolderConfig(
        name=f"{slug}_{fingerprint(layout, skip_bad_files, max_pixels)}",
        description=f"Paired images of {layout.root} ({layout.kind}).",
        layout=layout,
        skip_bad_files=skip_bad_files,
        max_pixels=max_pixels,
    )


class PairedFolder(tfds.core.GeneratorBasedBuilder):
    """Paired images of a local folder, stored as their original file bytes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, *, config: FolderConfig, file_format=None, **kwargs: Any):
        """As the base class, for the folder of `config`; defaults to array_record."""
        super().__init__(config=config, file_format=file_format, **kwargs)
        if file_format is None and not self.info.initialized:
            self.info.set_file_format("array_record", override=True)

    @property
    def _layout(self) -> Layout:
        return self.builder_config.layout

    def _info(self) -> tfds.core.DatasetInfo:
        encoded = tfds.features.Tensor(shape=(), dtype=np.object_)
        features = {key: encoded for key in self._layout.keys}  # "image": an A|B file
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.builder_config.description,
            features=tfds.features.FeaturesDict({**features, "file_name": tfds.features.Text()}),
            disable_shuffling=True,  # records in sorted file order
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # nothing to download
        images.report_skipped(list(self._layout.skipped), self._layout.root)
        return {split: self._generate_examples(split) for split in self._layout.files}

    def _generate_examples(self, split: str) -> Iterator[tuple[str, dict]]:
        layout = self._layout
        dirs = layout.split_dirs(split) if layout.kind != CITYSCAPES else (layout.root,)
        skipped = []
        max_pixels = self.builder_config.max_pixels
        for rel in layout.files[split]:
            paths = layout.paths(split, rel)
            try:
                data = [images.read_file(p, images.max_file_bytes(max_pixels)) for p in paths]
                if layout.kind == SIDE_BY_SIDE:
                    images.decode_ab(data[0], paths[0], max_pixels)
                else:
                    a, _ = images.decode_pair(*data[:2], *paths[:2], max_pixels)
                    if len(data) > 2:  # the instance map: ids, of A's size
                        inst = images.decode_ids(data[2], paths[2], max_pixels)
                        if inst.shape != (a.height, a.width):
                            raise images.BadImageError(
                                f"{paths[2]} is {inst.shape[1]}x{inst.shape[0]} but "
                                f"{paths[0]} is {a.width}x{a.height}; they must match"
                            )
                record = dict(zip(layout.keys, data, strict=True))
            except images.BadImageError as e:
                if not self.builder_config.skip_bad_files:
                    raise
                skipped.append(str(e))
                continue
            yield rel, {**record, "file_name": rel}
        images.report_skipped(skipped, ", ".join(dirs))
        if len(skipped) == len(self._layout.files[split]):
            raise DataError(f"{', '.join(dirs)}: every file of split {split!r} is bad")


def make_builder(
    path: str, data_dir: str | None, skip_bad_files: bool = False,
    max_pixels: int = images.MAX_PIXELS,
) -> PairedFolder:  # fmt: skip
    """The builder of the folder `path` (checked now), prepared under `data_dir`."""
    return PairedFolder(config=make_config(path, skip_bad_files, max_pixels), data_dir=data_dir)
