"""The FCN-score: label ids, the scipy resize, preprocessing, scores, frames, and `evaluate`."""

import importlib.util
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image
from test_best_checkpoint import shared_trained_workdir
from test_caffemodel import caffemodel_bytes, write

from pix2pix_jax import evaluate, fcn8s, fcn_score
from pix2pix_jax.errors import ConfigError, DataError, MissingFileError

# cityscapesScripts (mcordts/cityscapesScripts) helpers/labels.py, as published:
# (name, id, trainId); the 19 classes with a trainId other than 255 are those evaluated.
CITYSCAPES_LABELS = [
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255),
    ("out of roi", 3, 255), ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255),
    ("road", 7, 0), ("sidewalk", 8, 1), ("parking", 9, 255), ("rail track", 10, 255),
    ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4), ("guard rail", 14, 255),
    ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8),
    ("terrain", 22, 9), ("sky", 23, 10), ("person", 24, 11), ("rider", 25, 12),
    ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15), ("caravan", 29, 255),
    ("trailer", 30, 255), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
    ("license plate", -1, -1),
]  # fmt: skip


def test_label_ids_map_to_train_ids_as_cityscapes_publishes():
    for name, label_id, train_id in CITYSCAPES_LABELS:
        if label_id >= 0:
            assert fcn_score.ID_TO_TRAIN_ID[label_id] == train_id, name
    assert (fcn_score.ID_TO_TRAIN_ID[34:] == 255).all()  # not in labels.py: ignored
    evaluated = sorted((t, n) for n, _, t in CITYSCAPES_LABELS if 0 <= t < 255)
    assert tuple(n for _, n in evaluated) == fcn_score.CLASSES
    ids = np.array([[7, 8, 0], [33, 255, 24]], np.uint8)
    np.testing.assert_array_equal(fcn_score.train_ids(ids), [[0, 1, 255], [18, 255, 11]])


def scipy_imresize(arr, size, interp="bilinear"):
    """scipy.misc.imresize (scipy <= 1.2) for a tuple size, written out from its source:
    toimage (bytescale leaves uint8 as it is; 'RGB' for 3 channels last), PIL's resize to
    (size[1], size[0]) with the filter's PIL number, fromimage (numpy array of the image)."""
    data = np.asarray(arr)
    assert data.dtype == np.uint8 and data.ndim == 3 and data.shape[2] == 3
    image = Image.frombytes("RGB", (data.shape[1], data.shape[0]), data.tobytes())
    filters = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "cubic": 3}
    resized = image.resize((size[1], size[0]), resample=filters[interp])
    return np.array(resized)


@pytest.mark.parametrize("shape, size", [((256, 256), (1024, 2048)), ((37, 50), (20, 64))])
def test_imresize_is_scipys(shape, size):
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    got = fcn_score.imresize(image, size)
    assert got.shape == (*size, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, scipy_imresize(image, size))
    with pytest.raises(DataError, match="uint8 RGB"):
        fcn_score.imresize(image.astype(np.float32), size)


def test_preprocess_is_bgr_minus_the_scripts_mean():
    image = np.array([[[10, 20, 30], [255, 0, 128]]], np.uint8)
    got = fcn_score.preprocess(image)
    expected = np.array(image[..., ::-1], np.float32) - [72.78044, 83.21195, 73.45286]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_confusion_counts_labels_by_prediction_and_ignores_255():
    labels = np.array([[0, 0, 1], [255, 2, 1]])
    predictions = np.array([[0, 1, 1], [2, 2, 0]])
    expected = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(fcn_score.confusion(labels, predictions, n=3), expected)


def test_scores_are_the_scripts_with_absent_classes_counting_zero():
    # Class 2 is absent from labels and predictions.
    got = fcn_score.scores(np.array([[3, 1, 0], [2, 4, 0], [0, 0, 0]]))
    assert got["per_pixel_acc"] == pytest.approx(7 / 10)
    np.testing.assert_allclose(got["class_accs"], [3 / 4, 4 / 6, 0])
    assert got["per_class_acc"] == pytest.approx((3 / 4 + 4 / 6) / 3)
    np.testing.assert_allclose(got["class_ious"], [3 / 6, 4 / 7, 0])
    assert got["class_iou"] == pytest.approx((3 / 6 + 4 / 7) / 3)
    # Class 1 is predicted once but never in the labels: accuracy 0, IoU 0.
    got = fcn_score.scores(np.array([[2, 1], [0, 0]]))
    assert got["per_pixel_acc"] == pytest.approx(2 / 3)
    assert got["per_class_acc"] == pytest.approx((2 / 3) / 2)
    assert got["class_iou"] == pytest.approx((2 / 3) / 2)


FRAMES = [
    "frankfurt_000000_000294", "frankfurt_000000_000576", "lindau_000000_000019",
    "lindau_000001_000019", "munster_000000_000019", "munster_000001_000019",
    "munster_000002_000019", "munster_000003_000019",
]  # fmt: skip
LABEL_SIZE = (32, 64)


def make_cityscapes(root, frames=FRAMES, size=LABEL_SIZE, seed=0):
    """gtFine/val/<city>/<frame>_gtFine_labelIds.png with random ids 0-33 (and other files)."""
    rng = np.random.default_rng(seed)
    for frame in frames:
        folder = root / "gtFine" / "val" / frame.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        ids = rng.integers(0, 34, size, dtype=np.uint8)
        Image.fromarray(ids, "L").save(folder / f"{frame}_gtFine_labelIds.png")
        Image.fromarray(np.zeros((*size, 3), np.uint8)).save(folder / f"{frame}_gtFine_color.png")
    return str(root)


def test_frames_are_listed_sorted_and_labels_checked(tmp_path):
    root = make_cityscapes(tmp_path / "cs", FRAMES[::-1])
    assert fcn_score.list_frames(root) == FRAMES
    assert fcn_score.check_labels(root, "val", FRAMES) == LABEL_SIZE
    with pytest.raises(MissingFileError, match="gtFine/test/"):
        fcn_score.list_frames(root, "test")
    odd = make_cityscapes(tmp_path / "odd", FRAMES[:2] + ["zurich_000000_000001"])
    path = fcn_score.label_path(odd, "val", "zurich_000000_000001")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(path)
    with pytest.raises(DataError, match=r"zurich_000000_000001_gtFine_labelIds.png: .*\(32, 32\)"):
        fcn_score.check_labels(odd, "val", fcn_score.list_frames(odd))
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(path)
    with pytest.raises(DataError, match="8-bit gray PNG, this one is RGB"):
        fcn_score.check_labels(odd, "val", fcn_score.list_frames(odd))
    with pytest.raises(MissingFileError, match="berlin_000000_000001_gtFine_labelIds.png"):
        fcn_score.check_labels(odd, "val", ["berlin_000000_000001"])


def test_images_are_matched_to_frames_by_name_or_number():
    named = [f"val/{f}_leftImg8bit.png" for f in FRAMES[::-1]]
    assert fcn_score.match_frames(named, FRAMES) == FRAMES[::-1]
    # The pix2pix archive's numbered images: in the frames' sorted order, whatever the base.
    numbered = [f"cityscapes/val/{n}.jpg" for n in (2, 1, 3, 4, 5, 6, 7, 8)]
    assert fcn_score.match_frames(numbered, FRAMES) == [FRAMES[1], FRAMES[0], *FRAMES[2:]]
    assert fcn_score.match_frames([None] * 8, FRAMES) == FRAMES  # unnamed: the split's order
    with pytest.raises(DataError, match="'val/photo.png' is not named <city>_<seq>_<frame>"):
        fcn_score.match_frames(named[:-1] + ["val/photo.png"], FRAMES)
    with pytest.raises(DataError, match=f"frame {FRAMES[0]} has no image"):
        fcn_score.match_frames(named[:-1], FRAMES)
    with pytest.raises(DataError, match="no Cityscapes label for frame berlin_000000_000001"):
        fcn_score.match_frames(named + ["berlin_000000_000001_leftImg8bit.png"], FRAMES)
    with pytest.raises(DataError, match=f"7 numbered images for 8 .* first frame .* {FRAMES[7]}"):
        fcn_score.match_frames(numbered[:7], FRAMES)
    with pytest.raises(ConfigError, match="needs --cityscapes_dir"):
        fcn_score.consumer_for_split("fcn.caffemodel", None, [])


WIDTH = 2


def tiny_fcn_file(path) -> str:
    """A narrow FCN-8s with random weights, as a .caffemodel (Caffe's blob layouts)."""
    x = jax.ShapeDtypeStruct((1, 1, 1, 3), np.float32)
    params = jax.jit(fcn8s.FCN8s(WIDTH).init)(jax.random.key(1), x)["params"]
    layers = []
    for name, leaves in params.items():
        up = name.startswith("upscore")
        kernel = np.asarray(leaves["kernel"]).transpose((2, 3, 0, 1) if up else (3, 2, 0, 1))
        blobs = [kernel] + ([np.asarray(leaves["bias"]) + 0.1] if "bias" in leaves else [])
        layers.append((name, "Deconvolution" if up else "Convolution", blobs))
    return write(path, caffemodel_bytes(layers))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, data_dir):
    return shared_trained_workdir(tmp_path_factory, data_dir)


def test_evaluate_adds_the_fcn_scores_of_the_generated_photos(workdir, tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes")
    weights = tiny_fcn_file(tmp_path / "tiny.caffemodel")
    missing = make_cityscapes(tmp_path / "seven", FRAMES[:7])
    with pytest.raises(DataError, match="8 numbered images for 7 Cityscapes frames"):
        evaluate.evaluate(workdir, "val", output=str(tmp_path / "bad"), progress=False,
                          fcn_weights=weights, cityscapes_dir=missing, fcn_width=WIDTH)  # fmt: skip
    assert not (tmp_path / "bad").exists()  # refused before any work
    record, out = evaluate.evaluate(
        workdir, "val", output=str(tmp_path / "out"), progress=False, fcn_weights=weights,
        cityscapes_dir=root, fcn_segmentations=True, fcn_width=WIDTH,
    )  # fmt: skip
    # Recomputed from the saved outputs, with the script's steps written out here.
    variables = fcn8s.load_fcn8s(weights, width=WIDTH)
    matrix = np.zeros((19, 19), np.int64)
    for i, frame in enumerate(FRAMES):  # the synthetic split is unnamed: in its order
        photo = np.asarray(Image.open(os.path.join(out, "images", f"{i:05d}_output.png")))
        ids = np.asarray(Image.open(fcn_score.label_path(root, "val", frame)))
        label = fcn_score.ID_TO_TRAIN_ID[ids]
        x = np.asarray(scipy_imresize(photo, LABEL_SIZE), np.float32)[..., ::-1]
        x = x - np.array([72.78044, 83.21195, 73.45286], np.float32)
        predicted = np.asarray(fcn8s.segment(variables, x[None], WIDTH))[0]
        keep = label < 19
        np.add.at(matrix, (label[keep], predicted[keep]), 1)
        saved = np.asarray(Image.open(os.path.join(out, "fcn", f"{frame}_pred.png")))
        np.testing.assert_array_equal(saved, fcn_score.palette(predicted))
    assert (matrix.sum(0) > 0).sum() > 1  # the random FCN predicts more than one class
    expected = fcn_score.scores(matrix)
    for key in ("per_pixel_acc", "per_class_acc", "class_iou"):
        assert record[f"fcn_{key}"] == pytest.approx(expected[key], abs=1e-12), key
    assert record["fcn_images"] == "generated"
    assert record["fcn_per_class"]["road"]["iou"] == pytest.approx(expected["class_ious"][0])
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f) == record
    with open(os.path.join(out, "index.html")) as f:
        page = f.read()
    assert "FCN-scores per class" in page and "<td>traffic light</td>" in page
    assert f'src="fcn/{FRAMES[0]}_pred.png"' in page and "fcn_class_iou" in page


def load_experiment(name):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "experiments", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ablation_rows_put_fcn_scores_beside_the_papers():
    module = load_experiment("cityscapes_ablations.py")
    assert set(module.ROWS) < set(module.PAPER_FCN_SCORES)
    scores = dict(fcn_per_pixel_acc=0.6612, fcn_per_class_acc=0.2288, fcn_class_iou=0.1749)
    table = module.compare({"l1_cgan": scores, "real": {**scores, "fcn_images": "real"}})
    assert "| l1_cgan | 0.66 / 0.23 / 0.17 | 0.66 / 0.23 / 0.17 |" in table
    assert "| ground_truth | 0.66 / 0.23 / 0.17 | 0.80 / 0.26 / 0.21 |" in table
    with pytest.raises(ValueError, match="l1: no fcn_per_pixel_acc"):
        module.compare({"l1": {"l1": 0.2}})


def test_seed_study_gives_mean_std_and_a_95_interval_per_score():
    module = load_experiment("seed_study.py")
    values = [0.61, 0.64, 0.66, 0.60]
    summary = module.summarise({s: {"fcn_class_iou": v} for s, v in enumerate(values)})
    entry = summary["fcn_class_iou"]
    assert entry["mean"] == pytest.approx(np.mean(values))
    assert entry["std"] == pytest.approx(np.std(values, ddof=1))
    half = 3.182446305284263 * np.std(values, ddof=1) / 2  # t(0.975, 3 dof) * std / sqrt(4)
    assert entry["ci95"] == pytest.approx([np.mean(values) - half, np.mean(values) + half])
    assert module.summarise({0: {"fcn_class_iou": 0.5}})["fcn_class_iou"]["ci95"] is None
