"""The `folder` dataset: both layouts, every format, every bad input, and a training run."""

import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_tiny_config
from PIL import Image

from pix2pix_jax import input_pipeline
from pix2pix_jax.datasets import folder

RNG = np.random.default_rng(0)


def pixels(h, w, c=3, dtype=np.uint8):
    high = 65536 if dtype == np.uint16 else 256
    shape = (h, w) if c == 1 else (h, w, c)
    return RNG.integers(0, high, shape).astype(dtype)


def encode(array, fmt="PNG"):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


def write(path, data):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else encode(data))
    return path


def side_by_side(root, splits=("train", "val"), n=3, h=8, w=8):
    """root/SPLIT/i.png A|B images; returns {split: [(a, b), ...]}."""
    pairs = {}
    for split in splits:
        pairs[split] = []
        for i in range(n):
            a, b = pixels(h, w), pixels(h, w)
            write(root / split / f"{i}.png", np.concatenate([a, b], axis=1))
            pairs[split].append((a, b))
    return pairs


def records(path, data_dir, split="train", skip=False, direction="BtoA"):
    config = make_tiny_config(str(data_dir))
    config.dataset.name, config.dataset.path = "folder", str(path)
    config.dataset.direction = direction
    config.dataset.skip_bad_files = skip
    source = input_pipeline.load_split(config.dataset, split)
    recipe = input_pipeline.Recipe.from_config(config)
    return [input_pipeline.pair(source[i], recipe) for i in range(len(source))], config


def arrays(pictures):
    return [tuple(np.asarray(p) for p in pair) for pair in pictures]


def test_side_by_side_layout_reads_exact_pixels(tmp_path):
    pairs = side_by_side(tmp_path / "data", splits=("train", "val", "test"))
    for split in ("train", "val", "test"):
        read, _ = records(tmp_path / "data", tmp_path / "tfds", split)
        # direction BtoA: input is B. PNG is lossless, records are in file-name order.
        got = arrays(read)
        assert [(x.tolist(), y.tolist()) for x, y in got] == [
            (b.tolist(), a.tolist()) for a, b in pairs[split]
        ]


@pytest.mark.parametrize(
    "fmt, mode",
    [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "L16"), ("TIFF", "L"), ("BMP", "RGB"),
     ("TIFF", "L16"), ("PNG", "P")],
)  # fmt: skip
def test_separate_layout_formats_and_depths(tmp_path, fmt, mode):
    root = tmp_path / "data"
    expected = []
    for i, (h, w) in enumerate([(6, 9), (10, 4)]):  # any size and aspect ratio
        sides = []
        for side in "AB":
            if mode == "L16":
                array = pixels(h, w, 1, np.uint16)
                want = ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
            elif mode == "P":
                array = pixels(h, w)
                data = io.BytesIO()
                Image.fromarray(array).convert("P").save(data, fmt)
                want = np.asarray(Image.open(data).convert("RGB"))
                write(root / side / "train" / f"x{i}.{fmt.lower()}", data.getvalue())
                sides.append(want)
                continue
            else:
                array = pixels(h, w, {"RGB": 3, "RGBA": 4, "L": 1}[mode])
                want = array
            data = encode(array, fmt)
            if fmt == "JPEG":  # lossy: compare with Pillow's decoding of the same file
                want = np.asarray(Image.open(io.BytesIO(data)))
            write(root / side / "train" / f"x{i}.{fmt.lower()}", data)
            sides.append(want)
        expected.append(sides)
    read, _ = records(root, tmp_path / "tfds", direction="AtoB")
    for (x, y), (a, b) in zip(arrays(read), expected, strict=True):
        for got, want in ((x, a), (y, b)):
            want = np.asarray(Image.fromarray(want).convert("RGB"))
            np.testing.assert_array_equal(got, want)


def test_folder_trains_in_any_size_and_evaluates(tmp_path):
    root = tmp_path / "data"
    for i, (h, w) in enumerate([(20, 30), (40, 12), (33, 33)]):
        write(root / "train" / f"{i}.jpg", encode(pixels(h, 2 * w), "JPEG"))
        write(root / "val" / f"{i}.png", pixels(h, 2 * w, 4))
    config = make_tiny_config(str(tmp_path / "tfds"))
    config.dataset.name, config.dataset.path = "folder", str(root)
    batch = next(iter(input_pipeline.train_dataset(config)))
    assert batch["input"].reshape(-1, 32, 32, 3).shape[0] == 2
    evals = list(input_pipeline.eval_batches(config))
    assert sum(b["mask"].sum() for b in evals) == 3


def bad_case(root, case):
    """Writes a folder with one problem; returns a substring the error must contain."""
    if case == "missing folder":
        return str(root)
    if case == "empty folder":
        root.mkdir()
        return "neither"
    if case == "split with no files":
        side_by_side(root, splits=("train",))
        (root / "val").mkdir()
        write(root / "val" / "notes.txt", b"no images here")
        return "val: no image files"
    if case == "A without B":
        write(root / "A" / "train" / "1.png", pixels(4, 4))
        return "no B/"
    if case in ("missing partner", "different sizes"):
        write(root / "A" / "train" / "1.png", pixels(4, 4))
        write(root / "B" / "train" / "1.png", pixels(4, 4))
        if case == "missing partner":
            write(root / "A" / "train" / "2.png", pixels(4, 4))
            return "2.png: no partner"
        write(root / "A" / "train" / "2.png", pixels(4, 4))
        write(root / "B" / "train" / "2.png", pixels(6, 4))
        return "must have the same size"
    side_by_side(root, splits=("train",))
    bad = root / "train" / "bad.png"
    if case == "corrupt":
        data = bytearray(encode(pixels(8, 16)))
        data[60:80] = b"\0" * 20
        write(bad, bytes(data))
        return "bad.png: corrupt"
    if case == "truncated":
        write(bad.with_suffix(".jpg"), encode(pixels(64, 128), "JPEG")[:400])
        return "bad.jpg: corrupt or truncated"
    if case == "not an image":
        write(bad, b"this is text, not a PNG")
        return "bad.png: not an image"
    if case == "odd width":
        write(bad, pixels(8, 15))
        return "bad.png: an A|B image must have an even width"
    if case == "1-pixel":
        write(bad, pixels(1, 1))
        return "bad.png: image is 1x1 pixels"
    raise AssertionError(case)


BAD_CASES = [
    "missing folder", "empty folder", "split with no files", "A without B", "missing partner",
    "different sizes", "corrupt", "truncated", "not an image", "odd width", "1-pixel",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_names_the_file_and_problem(tmp_path, case):
    root = tmp_path / "data"
    match = bad_case(root, case)
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        records(root, tmp_path / "tfds")
    assert match in str(error.value)
    assert not list((tmp_path / "tfds").glob("paired_folder/*/1.0.0"))  # nothing to trust


@pytest.mark.parametrize("case", ["corrupt", "odd width", "missing partner", "different sizes"])
def test_skip_bad_files_skips_and_counts(tmp_path, case, capsys):
    root = tmp_path / "data"
    bad_case(root, case)
    read, _ = records(root, tmp_path / "tfds", skip=True)
    assert len(read) in (1, 3)  # the good files only
    assert "Skipped 1 bad files" in capsys.readouterr().out


def test_failed_prepare_then_fixed_folder_prepares_cleanly(tmp_path):
    root = tmp_path / "data"
    side_by_side(root, splits=("train",))
    write(root / "train" / "bad.png", b"garbage")
    with pytest.raises(ValueError, match="bad.png"):
        records(root, tmp_path / "tfds")
    os.remove(root / "train" / "bad.png")
    read, _ = records(root, tmp_path / "tfds")
    assert len(read) == 3
    prepared = list((tmp_path / "tfds").glob("paired_folder/*/1.0.0"))
    assert len(prepared) == 1  # only the good one; the failed prepare left no directory
    # A changed folder gets a new fingerprint, hence a fresh prepare.
    assert folder.make_config(str(root)).name == folder.make_config(str(root)).name
    write(root / "train" / "9.png", pixels(8, 16))
    assert len(records(root, tmp_path / "tfds")[0]) == 4


def test_unknown_dataset_and_config_names(tmp_path):
    config = make_tiny_config(str(tmp_path))
    for name, match in [("no_such", "no such tfds dataset"), ("pix2pix/nope", "nope")]:
        config.dataset.name = name
        with pytest.raises(ValueError, match=f"dataset.name='{name}'.*{match}"):
            input_pipeline.load_split(config.dataset, "train")
    config.dataset.name, config.dataset.path = "folder", ""
    with pytest.raises(ValueError, match="dataset.path is empty"):
        input_pipeline.load_split(config.dataset, "train")


def test_command_line_trains_on_a_folder(tmp_path):
    root = tmp_path / "data"
    side_by_side(root, splits=("train", "val"), n=4, h=16, w=16)
    workdir = tmp_path / "work"
    # The smallest model that trains (8x8 images, a 3-level U-Net, the 1x1 PixelGAN): its
    # compilation dominates the run, and the data path is what is tested here.
    overrides = {
        "dataset.name": "folder", "dataset.path": str(root), "dataset.direction": "AtoB",
        "dataset.data_dir": str(tmp_path / "tfds"), "image_size": 8, "batch_size": 2,
        "num_train_steps": 2, "model.ngf": 4, "model.ndf": 4, "model.discriminator": "pixel",
        "log_every_steps": 1, "eval_every_steps": 2, "checkpoint_every_steps": 2,
        "eval.batch_size": 4, "eval.num_samples": 2,
    }  # fmt: skip
    command = [sys.executable, "-m", "pix2pix_jax.main", f"--workdir={workdir}"]
    command += [f"--config.{k}={v}" for k, v in overrides.items()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "split" not in line] == [1, 2]
    assert any(line.get("split") == "val" and line["step"] == 2 for line in lines)
    assert list((workdir / "samples").glob("*.png"))
