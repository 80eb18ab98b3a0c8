"""The paper's FCN-score: how well FCN-8s recognises generated Cityscapes photos.

The protocol of phillipi/pix2pix scripts/eval_cityscapes/ (evaluate.py,
cityscapes.py, util.py), which the paper's tables 1-3 and 5 report:

1. the frames are those of `gtFine/<split>/<city>/*_gtFine_labelIds.png` in the
   official Cityscapes download (`list_frames`); each label's ids are mapped to
   the 19 train ids of cityscapesScripts' labels.py, all others to 255 and
   ignored (`train_ids`);
2. each 256x256 image is resized to its label's size (1024x2048) with
   `scipy.misc.imresize` (`imresize`: PIL's bilinear on uint8), converted RGB ->
   BGR and mean-subtracted (`preprocess`), segmented by FCN-8s (`fcn8s`), the
   argmax of its scores being the prediction;
3. one confusion matrix (rows: labels, columns: predictions) is summed over
   all frames (`confusion`), and `scores` gives per-pixel accuracy, mean
   per-class accuracy and mean class IoU, each denominator + 1e-12, so that a
   class absent from labels and predictions counts as 0 in the means.

The paper's table 1, "ground truth" row (the real 256x256 photos, resized the
same way): 0.80 / 0.26 / 0.21; L1+cGAN 0.66 / 0.23 / 0.17.
"""

import html
import os
import re
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image

from pix2pix_jax import evaluation
from pix2pix_jax.datasets.folder import LABEL_SUFFIX
from pix2pix_jax.errors import ConfigError, DataError, MissingFileError

# cityscapes.py: the scripts' mean, in BGR order.
MEAN_BGR = np.array((72.78044, 83.21195, 73.45286), np.float32)
IGNORE = 255
# cityscapesScripts (mcordts/cityscapesScripts) helpers/labels.py: (name, id, trainId, color) of
# the labels with a train id; every other id (0-6, 9, 10, 14-16, 18, 29, 30) has trainId 255.
TRAIN_LABELS = (
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("pole", 17, 5, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
)
CLASSES = tuple(name for name, *_ in TRAIN_LABELS)
NUM_CLASSES = len(CLASSES)
FRAME = re.compile(r"^([A-Za-z-]+_\d+_\d+)(_leftImg8bit)?$")  # <city>_<seq>_<frame>


def _id_table() -> np.ndarray:
    table = np.full(256, IGNORE, np.uint8)
    for _, label_id, train_id, _ in TRAIN_LABELS:
        table[label_id] = train_id
    return table


# The script maps ids one by one in the order of labels.py (ids ascending); every train id
# is smaller than every id still to come, so that loop equals this one lookup. Ids that
# labels.py lacks stay as they are there (>= 34), which the confusion ignores: here 255.
ID_TO_TRAIN_ID = _id_table()


def train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids (uint8, `*_gtFine_labelIds.png`) -> train ids 0-18, 255 ignored."""
    return ID_TO_TRAIN_ID[np.asarray(label_ids, np.uint8)]


def palette(train_id_map: np.ndarray) -> np.ndarray:
    """Train ids H x W -> labels.py's colours H x W x 3 (uint8; ignored pixels black)."""
    colors = np.zeros((256, 3), np.uint8)
    for _, _, train_id, color in TRAIN_LABELS:
        colors[train_id] = color
    return colors[np.asarray(train_id_map, np.uint8)]


def imresize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`scipy.misc.imresize(image, size)` of a uint8 H x W x 3 image: to (height, width).

    scipy (< 1.3) made a PIL image of the array (uint8 passes unscaled through
    its bytescale), resized it with PIL's BILINEAR to (width, height) and
    returned the uint8 array.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise DataError(f"FCN-score images must be uint8 RGB, got {image.dtype} {image.shape}")
    height, width = size
    resized = Image.fromarray(image, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def preprocess(image: np.ndarray) -> np.ndarray:
    """cityscapes.py's preprocess, channels last: float32, RGB -> BGR, minus `MEAN_BGR`."""
    return np.asarray(image, np.float32)[..., ::-1] - MEAN_BGR


def confusion(labels: np.ndarray, predictions: np.ndarray, n: int = NUM_CLASSES) -> np.ndarray:
    """util.py's fast_hist: an n x n count matrix, rows labels, columns predictions.

    Pixels whose label is not in [0, n) (255: ignored) are left out.
    """
    a, b = np.asarray(labels).reshape(-1), np.asarray(predictions).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"labels {np.shape(labels)} and predictions {np.shape(predictions)}")
    keep = (a >= 0) & (a < n)
    flat = n * a[keep].astype(np.int64) + b[keep].astype(np.int64)
    return np.bincount(flat, minlength=n * n).reshape(n, n)


def scores(confusion_matrix: np.ndarray) -> dict[str, float | np.ndarray]:
    """util.py's get_scores: the FCN-scores of a confusion matrix (rows: labels).

    `per_pixel_acc` = trace / total, `per_class_acc` = mean of diag / row sums,
    `class_iou` = mean of diag / (row + column sums - diag), every denominator
    + 1e-12 (so an absent class counts 0, not NaN); `class_accs`, `class_ious`:
    the per-class arrays.
    """
    hist = np.asarray(confusion_matrix, np.float64)
    diag = np.diag(hist)
    class_accs = diag / (hist.sum(1) + 1e-12)
    class_ious = diag / (hist.sum(1) + hist.sum(0) - diag + 1e-12)
    return {
        "per_pixel_acc": float(diag.sum() / (hist.sum() + 1e-12)),
        "per_class_acc": float(np.nanmean(class_accs)),
        "class_iou": float(np.nanmean(class_ious)),
        "class_accs": class_accs,
        "class_ious": class_ious,
    }


def list_frames(cityscapes_dir: str, split: str = "val") -> list[str]:
    """The frames `<city>_<seq>_<frame>` of gtFine/<split>/*/*_gtFine_labelIds.png, sorted."""
    root = os.path.join(cityscapes_dir, "gtFine", split)
    if not os.path.isdir(root):
        raise MissingFileError(f"cityscapes_dir {cityscapes_dir!r}: no folder gtFine/{split}/")
    suffix = LABEL_SUFFIX  # the folder dataset's Cityscapes layout reads the same files
    frames = sorted(
        name[: -len(suffix)]
        for city in os.listdir(root)
        if os.path.isdir(os.path.join(root, city))
        for name in os.listdir(os.path.join(root, city))
        if name.endswith(suffix)
    )
    if not frames:
        raise DataError(f"{root}: no */*{suffix} files (the official gtFine download has them)")
    return frames


def label_path(cityscapes_dir: str, split: str, frame: str) -> str:
    """Where the label ids of `frame` are: gtFine/<split>/<city>/<frame>_gtFine_labelIds.png."""
    city = frame.split("_")[0]
    return os.path.join(cityscapes_dir, "gtFine", split, city, frame + LABEL_SUFFIX)


def load_label(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """The train ids (uint8 H x W) of a labelIds PNG; DataError unless 8-bit gray (of `size`)."""
    if not os.path.isfile(path):
        raise MissingFileError(f"{path}: no such label file")
    try:
        with Image.open(path) as picture:
            mode, ids = picture.mode, np.asarray(picture)
    except OSError as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
    if mode != "L":
        raise DataError(f"{path}: label ids must be an 8-bit gray PNG, this one is {mode}")
    if size is not None and ids.shape != tuple(size):
        raise DataError(f"{path}: labels of size {ids.shape}, the others are {tuple(size)}")
    return train_ids(ids)


def frame_of_name(name: str) -> str | None:
    """The Cityscapes frame a file is named after (`<city>_<seq>_<frame>[_leftImg8bit].ext`)."""
    stem = os.path.splitext(os.path.basename(name))[0]
    match = FRAME.match(stem)
    return match.group(1) if match else None


def _numbered(names: Sequence[str | None]) -> list[int] | None:
    """The numbers of images named `<N>.<ext>` (the pix2pix archive) or unnamed (their index)."""
    numbers = []
    for index, name in enumerate(names):
        stem = None if name is None else os.path.splitext(os.path.basename(name))[0]
        if stem is not None and not stem.isdigit():
            return None
        numbers.append(index if stem is None else int(stem))
    return numbers


def match_frames(names: Sequence[str | None], frames: Sequence[str]) -> list[str]:
    """The Cityscapes frame of each image of the split, by its file name (None: unnamed).

    Images named after their frame (`frankfurt_000000_000294_leftImg8bit.png`, the
    script's convention) are matched by name. The pix2pix archive numbers its val
    images (`val/1.jpg` ...), in the sorted order of the frames (the order of
    datasets/prepare_cityscapes_dataset.py's sorted globs): numbered and unnamed
    images are matched to the sorted frames in the order of their numbers. Every
    frame needs exactly one image: a DataError names a misnamed image, a frame
    without an image, or an image without a frame.
    """
    numbers = _numbered(names)
    if numbers is not None:
        if len(numbers) != len(frames) or len(set(numbers)) != len(numbers):
            lacking = frames[len(numbers)] if len(numbers) < len(frames) else None
            what = f"; the first frame without one is {lacking}" if lacking else ""
            raise DataError(
                f"{len(numbers)} numbered images for {len(frames)} Cityscapes frames{what}"
            )
        rank = {n: i for i, n in enumerate(sorted(numbers))}
        return [frames[rank[n]] for n in numbers]
    matched, known = [], set(frames)
    for name in names:
        frame = None if name is None else frame_of_name(name)
        if frame is None:
            raise DataError(f"image {name!r} is not named <city>_<seq>_<frame>_leftImg8bit.png")
        if frame not in known:
            raise DataError(f"image {name!r}: no Cityscapes label for frame {frame}")
        matched.append(frame)
    missing = sorted(known - set(matched))
    if missing or len(set(matched)) != len(matched):
        what = f"frame {missing[0]} has no image" if missing else "two images of one frame"
        raise DataError(f"{what} in the split ({len(names)} images, {len(frames)} frames)")
    return matched


class FCNScores:
    """An eval consumer: the FCN-scores of the generated (or, `real`, the target) photos.

    `frames`: the Cityscapes frame of each image this process sees, in order;
    `segment`: a preprocessed image -> train ids (`fcn8s.make_segmenter`).
    With `save_dir`, the predicted and true segmentations are saved there as
    `<frame>_pred.png` and `<frame>_gt.png` (labels.py's colours).
    """

    def __init__(
        self, segment: Callable[[np.ndarray], np.ndarray], frames: Sequence[str],
        cityscapes_dir: str, split: str = "val", real: bool = False, save_dir: str | None = None,
    ):  # fmt: skip
        self.segment, self.frames, self.cityscapes_dir = segment, list(frames), cityscapes_dir
        self.split, self.real, self.save_dir = split, real, save_dir
        self.matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
        self.seen: list[str] = []
        self.label_size: tuple[int, int] | None = None
        self.per_class: dict[str, dict[str, float]] = {}

    def wants_images(self) -> bool:
        """Every batch's images."""
        return True

    def add(self, images: evaluation.Images | None, per_image: dict[str, np.ndarray]) -> None:
        """Segment the batch's photos at their labels' size and add them to the confusion."""
        for photo in images.targets if self.real else images.outputs:
            frame = self.frames[len(self.seen)]
            path = label_path(self.cityscapes_dir, self.split, frame)
            label = load_label(path, self.label_size)
            self.label_size = label.shape
            predicted = self.segment(preprocess(imresize(_rgb(photo, frame), label.shape)))
            self.matrix += confusion(label, predicted)
            self.seen.append(frame)
            if self.save_dir:
                _save_segmentations(self.save_dir, frame, predicted, label)

    def result(self) -> dict[str, float]:
        """`fcn_per_pixel_acc`, `fcn_per_class_acc`, `fcn_class_iou` over all processes.

        The per-class accuracies and IoUs are kept in `per_class`.
        """
        matrix = self.matrix
        if jax.process_count() > 1:
            matrix = multihost_utils.process_allgather(matrix).sum(0)
        result = scores(matrix)
        self.per_class = {
            name: {"acc": float(acc), "iou": float(iou)}
            for name, acc, iou in zip(
                CLASSES, result["class_accs"], result["class_ious"], strict=True
            )
        }
        return {f"fcn_{k}": result[k] for k in ("per_pixel_acc", "per_class_acc", "class_iou")}


def _rgb(photo: np.ndarray, frame: str) -> np.ndarray:
    if photo.shape[-1] != 3:
        raise DataError(f"the photo of frame {frame} has {photo.shape[-1]} channels, not RGB")
    return photo


def _save_segmentations(out: str, frame: str, predicted: np.ndarray, label: np.ndarray) -> None:
    os.makedirs(out, exist_ok=True)
    for kind, ids in (("pred", predicted), ("gt", label)):
        Image.fromarray(palette(ids)).save(os.path.join(out, f"{frame}_{kind}.png"))


def check_labels(cityscapes_dir: str, split: str, frames: Sequence[str]) -> tuple[int, int]:
    """The common size of the frames' labels, checked before any work (headers only).

    A DataError (MissingFileError) names the first label that is missing, not
    8-bit gray, or not of the first label's size.
    """
    size = None
    for frame in frames:
        path = label_path(cityscapes_dir, split, frame)
        if not os.path.isfile(path):
            raise MissingFileError(f"{path}: no such label file (frame {frame})")
        try:
            with Image.open(path) as picture:
                mode, (width, height) = picture.mode, picture.size
        except OSError as e:
            raise DataError(f"{path}: not a readable image ({e})") from None
        if mode != "L":
            raise DataError(f"{path}: label ids must be an 8-bit gray PNG, this one is {mode}")
        if size is not None and (height, width) != size:
            raise DataError(f"{path}: labels of size {(height, width)}, the others are {size}")
        size = (height, width)
    return size


def make_consumer(
    weights: str, cityscapes_dir: str, names: Sequence[str | None], real: bool = False,
    save_dir: str | None = None, split: str = "val", width: int | None = None,
) -> FCNScores:  # fmt: skip
    """The FCN-score consumer for a split whose images have file names `names`, in order.

    Checks everything before the work: the frames and their labels in
    `cityscapes_dir` (Cityscapes' `split`), the names, the weights file (FCN-8s
    of `width`, by default the real one's).
    """
    from pix2pix_jax import fcn8s  # only the FCN-score needs it

    frames = list_frames(cityscapes_dir, split)
    matched = match_frames(names, frames)
    check_labels(cityscapes_dir, split, frames)
    width = fcn8s.WIDTH if width is None else width
    segmenter = fcn8s.make_segmenter(fcn8s.load_fcn8s(weights, width), width)
    mine = matched[jax.process_index() :: jax.process_count()]  # as eval_batches shards
    return FCNScores(segmenter, mine, cityscapes_dir, split, real, save_dir)


def _record_name(record: dict) -> str | None:
    name = record.get("file_name")
    return name.decode() if isinstance(name, bytes) else name


def consumer_for_split(
    weights: str, cityscapes_dir: str | None, source, real: bool = False,
    save_dir: str | None = None, width: int | None = None,
) -> FCNScores:  # fmt: skip
    """`make_consumer` for a data source (records with or without a `file_name`)."""
    if not cityscapes_dir:
        raise ConfigError("--fcn_weights needs --cityscapes_dir (the Cityscapes labels)")
    names = [_record_name(source[i]) for i in range(len(source))]
    return make_consumer(weights, cityscapes_dir, names, real, save_dir, width=width)


def html_section(
    per_class: dict[str, dict[str, float]], frames: Sequence[str], images: str | None
) -> str:
    """The page's FCN part: the per-class table, then each frame's segmentations.

    The segmentations are shown when `images` (a folder relative to the page) holds them.
    """
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{v['acc']:.4f}</td><td>{v['iou']:.4f}</td></tr>"
        for name, v in per_class.items()
    )
    parts = [
        "<h2>FCN-scores per class</h2>",
        f"<table><tr><th>class</th><th>accuracy</th><th>IoU</th></tr>{rows}</table>",
    ]
    if images:
        parts.append("<h2>FCN segmentations</h2><table><tr><th>frame</th>")
        parts.append("<th>FCN-8s on the photo</th><th>labels</th></tr>")
        for frame in frames:
            cells = "".join(
                f'<td><img src="{html.escape(f"{images}/{frame}_{kind}.png", quote=True)}" '
                f'alt="{kind}" style="width:512px"></td>'
                for kind in ("pred", "gt")
            )
            parts.append(f"<tr><td>{html.escape(frame)}</td>{cells}</tr>")
        parts.append("</table>")
    return "\n".join(parts) + "\n"
