"""The `pix2pix` builder on tiny archives in the official layout, downloaded over HTTP."""

import functools
import http.server
import importlib.util
import io
import pathlib
import tarfile
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import make_tiny_config
from PIL import Image

from pix2pix_jax import input_pipeline
from pix2pix_jax.datasets import images, pix2pix

SPLITS = {"facades": ("train", "val", "test"), "maps": ("train", "val")}


def jpeg(seed, h=8, w=16):
    """A side-by-side A|B JPEG: A dark, B bright, so the halves are told apart."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 100, (h, w // 2, 3), dtype=np.uint8)
    b = rng.integers(156, 256, (h, w - w // 2, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.concatenate([a, b], axis=1)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def make_archive(directory, name="facades", counts=None, extra=None):
    """directory/NAME.tar.gz holding NAME/SPLIT/i.jpg as the published archives do."""
    counts = counts or {split: 2 + i for i, split in enumerate(SPLITS[name])}
    files = {f"{name}/{split}/{i}.jpg": jpeg(i) for split, n in counts.items() for i in range(n)}
    files.update(extra or {})
    path = pathlib.Path(directory) / f"{name}.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path, files


@pytest.fixture
def server(tmp_path, monkeypatch):
    """An HTTP server for tmp_path/www, with the builder's URL pointed at it."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setattr(
        pix2pix, "URL_TEMPLATE", f"http://127.0.0.1:{httpd.server_address[1]}/{{name}}.tar.gz"
    )
    yield www
    httpd.shutdown()


def dataset_config(data_dir, name="pix2pix/facades", **fields):
    config = make_tiny_config(str(data_dir))
    config.dataset.name = name
    config.dataset.direction = ""  # the dataset's own task
    config.dataset.update(fields)
    return config


def test_download_prepares_every_split_with_the_original_bytes(tmp_path, server):
    _, files = make_archive(server)
    config = dataset_config(tmp_path / "tfds")
    for split in SPLITS["facades"]:
        source = input_pipeline.load_split(config.dataset, split)
        got = {source[i]["file_name"].decode(): source[i]["image"] for i in range(len(source))}
        want = {m: d for m, d in files.items() if m.split("/")[1] == split}
        assert got == want  # untouched JPEG bytes, every file once
    # facades is labels -> photo by default: input = B (bright), target = A (dark).
    x, y = input_pipeline.pair(source[0], input_pipeline.Recipe.from_config(config))
    assert np.asarray(x).min() > 128 and np.asarray(y).max() < 128
    a, b = images.decode_ab(source[0]["image"], "x")
    np.testing.assert_array_equal(np.asarray(x), np.asarray(b))
    batch = next(iter(input_pipeline.train_dataset(config)))
    assert batch["input"].dtype == np.uint8 and batch["input"].shape[-3:] == (32, 32, 3)


def test_archive_given_by_path_or_manual_dir(tmp_path):
    path, files = make_archive(tmp_path / "mine", name="maps")
    for given in (str(path), str(path.parent)):  # the archive, or the folder that holds it
        data_dir = tmp_path / f"tfds_{len(given)}"
        config = dataset_config(data_dir, "pix2pix/maps", path=given)
        source = input_pipeline.load_split(config.dataset, "val")
        assert len(source) == 3
        x, _ = input_pipeline.pair(source[0], input_pipeline.Recipe.from_config(config))
        assert np.asarray(x).max() < 128  # maps: aerial (A) -> map by default
    builder = tfds.builder("pix2pix/maps", data_dir=str(tmp_path / "tfds_manual"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(path.parent))
    )
    assert builder.info.splits["train"].num_examples == 2


@pytest.mark.parametrize("problem", ["corrupt", "odd width", "not an image", "empty split"])
def test_bad_archive_fails_cleanly_then_a_fixed_one_prepares(tmp_path, problem, capsys):
    extra = {
        "corrupt": {"facades/train/bad.jpg": jpeg(9)[:200]},
        "odd width": {"facades/train/bad.jpg": jpeg(9, w=15)},
        "not an image": {"facades/train/bad.jpg": b"<html>not found</html>"},
        "empty split": {},
    }[problem]
    counts = {"train": 2, "val": 1, "test": 0 if problem == "empty split" else 1}
    path, _ = make_archive(tmp_path / "mine", counts=counts, extra=extra)
    config = dataset_config(tmp_path / "tfds", path=str(path))
    message = "facades/test/" if problem == "empty split" else "facades/train/bad.jpg"
    with pytest.raises(ValueError, match=message):
        input_pipeline.load_split(config.dataset, "train")
    assert not tfds.builder("pix2pix/facades", data_dir=str(tmp_path / "tfds")).is_prepared()
    if problem != "empty split":
        skipping = dataset_config(tmp_path / "tfds_skip", path=str(path), skip_bad_files=True)
        assert len(input_pipeline.load_split(skipping.dataset, "train")) == 2
        assert "Skipped 1 bad files" in capsys.readouterr().out
    make_archive(tmp_path / "mine")  # fixed, in place: the same data_dir now prepares cleanly
    assert len(input_pipeline.load_split(config.dataset, "test")) == 4


def test_unreadable_archive_is_named(tmp_path):
    broken = tmp_path / "facades.tar.gz"
    broken.write_bytes(make_archive(tmp_path / "ok")[0].read_bytes()[:100])
    config = dataset_config(tmp_path / "tfds", path=str(broken))
    with pytest.raises(ValueError, match="facades.tar.gz: not a readable tar.gz archive"):
        input_pipeline.load_split(config.dataset, "train")
    config.dataset.path = str(tmp_path / "nowhere.tar.gz")
    with pytest.raises(FileNotFoundError, match="nowhere.tar.gz"):
        input_pipeline.load_split(config.dataset, "train")


def test_configs_and_paper_recipes_agree():
    names = {c.name for c in pix2pix.BUILDER_CONFIGS}
    assert names == {"facades", "cityscapes", "maps", "edges2shoes", "edges2handbags", "night2day"}
    spec = importlib.util.spec_from_file_location("paper", "experiments/paper_datasets.py")
    paper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paper)
    for recipe_name, recipe in paper.RECIPES.items():
        family, config_name = recipe.dataset.split("/")
        assert family == "pix2pix" and config_name in names, recipe_name
        task = pix2pix.DEFAULT_DIRECTIONS[config_name]
        # A recipe named after the dataset's own task uses its default direction.
        if recipe_name in ("facades", "edges2shoes", "edges2handbags", "maps_aerial2map"):
            assert recipe.direction == task, recipe_name
    assert pix2pix.DEFAULT_DIRECTIONS["facades"] == "BtoA"
    assert pix2pix.DEFAULT_DIRECTIONS["cityscapes"] == "BtoA"
