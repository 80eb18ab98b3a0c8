"""The exported generator: a jax.export artifact that runs without this package."""

import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image
from test_best_checkpoint import shared_trained_workdir

from pix2pix_jax import export, input_pipeline, predict, steps, writers
from pix2pix_jax.errors import ConfigError

# Runs the artifacts in a process where importing pix2pix_jax fails: loading needs jax only.
LOADER = """
import sys
sys.modules["pix2pix_jax"] = None  # any import of the package raises ImportError
import jax
import numpy as np

folder = sys.argv[1]
data = np.load(folder + "/inputs.npz")
results = {}
for name in ("deterministic", "bfloat16", "paper"):
    exported = jax.export.deserialize(open(f"{folder}/{name}.jax", "rb").read())
    args = (data["x"], data["keys"]) if name == "paper" else (data["x"],)
    results[name] = np.asarray(exported.call(*args))
np.savez(folder + "/outputs.npz", **results)
assert not any(m.startswith("pix2pix_jax") and sys.modules[m] for m in sys.modules)
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, data_dir):
    return shared_trained_workdir(tmp_path_factory, data_dir)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two 37x53 inputs (not a multiple of the U-Net's 32) in a folder."""
    folder = tmp_path_factory.mktemp("export_inputs")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        small = rng.integers(0, 256, (4, 6, 3), np.uint8)
        Image.fromarray(small).resize((53, 37), Image.BICUBIC).save(folder / f"{name}.png")
    return folder


def predicted(workdir, images, out, mode):
    predict.predict(workdir, str(images), str(out), mode=mode, progress=False)
    return np.stack([np.asarray(Image.open(out / f"{n}.png")) for n in ("a", "b")])


def test_an_exported_model_runs_without_the_package_as_predict_does(workdir, images, tmp_path):
    exported = export.export_workdir(workdir, str(tmp_path / "deterministic.jax"))
    assert exported.platforms == ("cpu", "cuda", "tpu")
    assert [str(d) for d in exported.in_avals[0].shape] == ["batch", "height", "width", "3"]
    export.export_workdir(
        workdir, str(tmp_path / "bfloat16.jax"), dtype="bfloat16", platforms=["cpu"]
    )
    command = [sys.executable, "-m", "pix2pix_jax.export", f"--workdir={workdir}"]
    command += [f"--output={tmp_path / 'paper.jax'}", "--mode=paper", "--platforms=cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "paper mode" in result.stdout
    x = np.stack([np.asarray(Image.open(images / f"{n}.png")) for n in ("a", "b")])
    seed = 0  # the tiny run's seed: predict's default
    keys = steps.image_keys(seed, 0, [input_pipeline.image_id(n) for n in ("a", "b")])
    np.savez(
        tmp_path / "inputs.npz",
        x=x.astype(np.float32) / 127.5 - 1.0,
        keys=np.asarray(jax.random.key_data(keys)),
    )
    loader = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert loader.returncode == 0, loader.stderr[-3000:]
    outputs = np.load(tmp_path / "outputs.npz")
    for mode in ("deterministic", "paper"):
        want = predicted(workdir, images, tmp_path / mode, mode).astype(int)
        got = writers.to_uint8(outputs[mode]).astype(int)
        assert got.shape == (2, 37, 53, 3) and np.abs(got - want).max() <= 1, mode
    float32, bfloat16 = outputs["deterministic"], outputs["bfloat16"]
    assert np.abs(bfloat16 - float32).mean() < 0.02 and not np.array_equal(bfloat16, float32)


def test_bad_export_options_are_refused_before_reading_the_checkpoint(tmp_path):
    nowhere = str(tmp_path / "no_workdir")
    for kwargs, message in (
        (dict(mode="noisy"), "mode='noisy'"),
        (dict(dtype="float16"), "dtype='float16'"),
        (dict(platforms=["gpu"]), "choose from"),
        (dict(platforms=[]), "choose from"),
    ):
        with pytest.raises(ConfigError, match=message):
            export.export_workdir(nowhere, str(tmp_path / "x.jax"), **kwargs)
