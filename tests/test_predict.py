"""The predict command: any image in, the translation out at the input's size."""

import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from test_best_checkpoint import shared_trained_workdir

from pix2pix_jax import assembly, evaluate, input_pipeline, predict, steps, writers


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, data_dir):
    return shared_trained_workdir(tmp_path_factory, data_dir)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Images of several sizes, formats and modes, and a file that is not an image."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), np.uint8)).save(folder / "rgb.jpg")
    Image.fromarray(rng.integers(0, 256, (20, 30), np.uint8)).save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 4), np.uint8)).save(folder / "rgba.tif")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(folder / "exact.bmp")
    (folder / "notes.txt").write_text("not an image")
    return folder


def read(path):
    return np.asarray(Image.open(path))


def test_deterministic_outputs_are_the_generator_at_the_trained_size(workdir, inputs, tmp_path):
    written = predict.predict(
        workdir, str(inputs), str(tmp_path), mode="deterministic", batch_size=3, progress=False,
        resize=True,
    )  # fmt: skip
    names = ["exact.png", "gray.png", "rgb.png", "rgba.png"]
    assert sorted(os.path.basename(p) for p in written) == names
    config, state, _ = assembly.restore_for_inference(workdir)
    setup = assembly.inference_setup(config)
    for name, source in zip(names, ("exact.bmp", "gray.png", "rgb.jpg", "rgba.tif"), strict=True):
        original = Image.open(inputs / source)
        # An independent path to the same result: PIL's conversion and resizes, one image.
        x = np.asarray(original.convert("RGB").resize((32, 32), Image.BICUBIC), np.float32)
        fake = steps.generate(state, x[None] / 127.5 - 1.0, setup, "deterministic", None)
        expected = Image.fromarray(writers.to_uint8(fake[0])).resize(original.size, Image.BICUBIC)
        got = read(tmp_path / name)
        assert got.shape == (original.height, original.width, 3)
        assert np.abs(got.astype(int) - np.asarray(expected, int)).max() <= 1, name


def test_dropout_samples_are_distinct_reproducible_and_independent_of_the_batch(
    workdir, inputs, tmp_path
):
    one = tmp_path / "batch1"
    predict.predict(workdir, str(inputs), str(one), num_samples=3, batch_size=1, progress=False)
    three = tmp_path / "batch3"
    predict.predict(workdir, str(inputs), str(three), num_samples=3, batch_size=3, progress=False)
    assert len(os.listdir(one)) == 12
    for stem in ("exact", "gray", "rgb", "rgba"):
        samples = [read(one / f"{stem}_sample{k}.png").astype(int) for k in range(3)]
        assert not np.array_equal(samples[0], samples[1]), stem  # the paper's noise
        assert not np.array_equal(samples[1], samples[2]), stem
        for k in range(3):  # each image on its own: the batch does not change it
            assert np.abs(samples[k] - read(three / f"{stem}_sample{k}.png")).max() <= 1
    again = tmp_path / "again"
    predict.predict(
        workdir, str(inputs / "rgb.jpg"), str(again), num_samples=3, batch_size=1, progress=False
    )  # alone, not in its folder: the same noise
    assert np.array_equal(read(again / "rgb_sample2.png"), read(one / "rgb_sample2.png"))


def test_an_image_gets_the_noise_it_gets_in_evaluate(workdir, tmp_path):
    # Paper mode: dropout on. The val records of generated data are named by position.
    _, out = evaluate.evaluate(workdir, "val", output=str(tmp_path / "eval"), progress=False)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in (0, 5):
        shutil.copy(os.path.join(out, "images", f"{i:05d}_input.png"), folder / f"{i}.png")
    predict.predict(workdir, str(folder), str(tmp_path / "out"), batch_size=1, progress=False)
    for i in (0, 5):
        want = read(os.path.join(out, "images", f"{i:05d}_output.png"))
        np.testing.assert_array_equal(read(tmp_path / "out" / f"{i}.png"), want)


def test_the_keys_differ_by_sample_and_by_image():
    def keys(seed, sample, names):
        return steps.image_keys(seed, sample, [input_pipeline.image_id(n) for n in names])

    drawn = [keys(0, s, ["dir/a.png", "b.png"]) for s in (0, 1)]
    data = {tuple(np.asarray(jax.random.key_data(k)).ravel()) for ks in drawn for k in ks}
    assert len(data) == 4
    same = keys(0, 1, ["elsewhere/b.jpg"])[0]  # the stem names the image, as in a dataset
    assert np.array_equal(jax.random.key_data(same), jax.random.key_data(drawn[1][1]))


def test_bad_inputs_give_one_clear_error(workdir, inputs, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        predict.predict(workdir, str(tmp_path / "missing.png"), out)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        predict.predict(workdir, str(empty), out)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(ValueError, match="broken.png: not an image"):
        predict.predict(workdir, str(broken), out)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict.predict(str(tmp_path / "nowhere"), str(inputs), out)
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        predict.predict(str(empty), str(inputs), out)
    with pytest.raises(ValueError, match="num_samples > 1 needs mode=paper"):
        predict.predict(workdir, str(inputs), out, mode="deterministic", num_samples=2)
    clash = tmp_path / "clash"
    clash.mkdir()
    for name in ("a.png", "a.jpg"):
        Image.new("RGB", (8, 8)).save(clash / name)
    with pytest.raises(ValueError, match="would both be written as a"):
        predict.predict(workdir, str(clash), out)


def test_the_command_line(workdir, inputs, tmp_path):
    args = [sys.executable, "-m", "pix2pix_jax.predict", f"--workdir={workdir}"]
    args += [f"--input={inputs / 'gray.png'}", f"--output={tmp_path}", "--checkpoint=best"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert read(tmp_path / "gray.png").shape == (20, 30, 3)


def test_sixteen_bit_inputs_are_scaled_as_in_training(tmp_path):
    from pix2pix_jax.datasets import images

    values = np.linspace(0, 60000, 64, dtype=np.uint16).reshape(8, 8)
    path = str(tmp_path / "deep.png")
    Image.fromarray(values).save(path)
    got = predict.read_image(path, 1)[..., 0]
    want = np.asarray(images.decode(pathlib.Path(path).read_bytes(), path))
    np.testing.assert_array_equal(got, want)
    assert 0 < got[4, 4] < 255  # scaled, not clipped to white


def test_paper_mode_translates_a_sync_batch_model_outside_pmap(tiny_config):

    tiny_config.model.norm = "sync_batch"
    setup = assembly.make_setup(tiny_config, num_train_examples=8)
    state = assembly.initial_state(tiny_config, setup)
    translate = predict.make_translate(state, setup, "paper")
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8)
    out = translate(x, jax.random.split(jax.random.key(0), 2))
    alone = translate(x[:1], jax.random.split(jax.random.key(0), 2)[:1])
    np.testing.assert_allclose(out[:1], alone, atol=1e-6)  # each image on its own
