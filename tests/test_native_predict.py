"""predict at the image's own size: reflect padding to the generator's multiple, tiles."""

import jax
import numpy as np
import pytest
from PIL import Image
from test_best_checkpoint import shared_trained_workdir

from pix2pix_jax import assembly, input_pipeline, predict, steps, writers
from pix2pix_jax.configs import default
from pix2pix_jax.errors import ConfigError

# Tiled vs whole-image outputs of the tiny trained model, deterministic mode, on [-1, 1]:
# a tile sees less context than the whole image (and zero rather than reflected padding at
# its inner borders), so they differ slightly; measured max 0.026, mean 0.0003.
TILE_MAX_DIFFERENCE = 0.05
TILE_MEAN_DIFFERENCE = 0.005


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, data_dir):
    return shared_trained_workdir(tmp_path_factory, data_dir)


@pytest.fixture(scope="module")
def model(workdir):
    config, state, _ = assembly.restore_for_inference(workdir)
    return config, state, assembly.inference_setup(config)


def smooth_image(height, width, seed=0):
    """A photo-like uint8 RGB image: upsampled noise."""
    small = np.random.default_rng(seed).integers(0, 256, (height // 10, width // 10, 3), np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


def by_hand(state, setup, image, mode, key, multiple):
    """An independent path: numpy's reflect pad, one generator call, the crop."""
    h, w, _ = image.shape
    ph, pw = -h % multiple, -w % multiple
    padding = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))
    x = np.pad(image.astype(np.float32) / 127.5 - 1.0, padding, mode="reflect")
    generate = jax.jit(lambda x, key: steps.generate(state, x, setup, mode, key))
    fake = np.asarray(generate(x[None], key))[0]
    return fake[ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]


def test_the_generator_multiple():
    c = default.get_config()
    c.image_size, c.model.generator = 256, "unet_256"
    assert predict.generator_multiple(assembly.inference_setup(c).generator) == 256
    c.model.generator = "resnet_6blocks"
    assert predict.generator_multiple(assembly.inference_setup(c).generator) == 4


def test_a_300x500_image_comes_back_300x500_in_both_modes(workdir, model, tmp_path):
    config, state, setup = model
    folder = tmp_path / "in"
    folder.mkdir()
    image = smooth_image(300, 500)
    Image.fromarray(image).save(folder / "wide.png")
    out = tmp_path / "out"
    predict.predict(workdir, str(folder), str(out), mode="deterministic", progress=False)
    got = np.asarray(Image.open(out / "wide.png"))
    assert got.shape == (300, 500, 3)
    want = writers.to_uint8(by_hand(state, setup, image, "deterministic", None, 32))
    assert np.abs(got.astype(int) - want).max() <= 1
    # Paper mode stays defined: the padded image's own statistics, the image's dropout key.
    small = smooth_image(40, 70, seed=1)
    Image.fromarray(small).save(folder / "small.png")
    paper = tmp_path / "paper"
    predict.predict(workdir, str(folder / "small.png"), str(paper), mode="paper", progress=False)
    key = steps.image_keys(config.seed, 0, [input_pipeline.image_id("small.png")])[0]
    want = writers.to_uint8(by_hand(state, setup, small, "paper", key, 32))
    got = np.asarray(Image.open(paper / "small.png"))
    assert got.shape == (40, 70, 3) and np.abs(got.astype(int) - want).max() <= 1


def test_blending_tiles_of_a_pointwise_function_is_exact():
    """Weights that sum to one everywhere and tiles that cover the image: no seam at all."""
    image = smooth_image(90, 130)

    def pointwise(tiles, keys):
        return np.tanh(tiles.astype(np.float32) / 127.5 - 1.0)

    want = np.tanh(image.astype(np.float32) / 127.5 - 1.0)
    for tile, overlap in ((32, 8), (40, 0), (64, 31), (200, 50)):
        key = steps.image_keys(0, 0, [1])[0]
        got = predict.translate_tiled(pointwise, image, key, tile, overlap, batch=3)
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"tile {tile}/{overlap}")
    assert predict.tile_starts(100, 40, 10) == [0, 30, 60]
    assert predict.tile_starts(30, 40, 10) == [0]


def test_tiled_equals_untiled_within_the_stated_tolerance(model):
    _, state, setup = model
    image = smooth_image(96, 150)
    translate = predict.make_native_translate(state, setup, "deterministic")
    key = steps.image_keys(0, 0, [1])
    whole = np.asarray(translate(image[None], key))[0]
    tiled = predict.translate_tiled(translate, image, key[0], 64, 16, batch=6)
    difference = np.abs(tiled - whole)
    # Everywhere, and on the overlaps (where tiles are blended) on their own.
    overlaps = np.zeros(image.shape[:2], bool)
    for starts, axis in (
        (predict.tile_starts(96, 64, 16), 0),
        (predict.tile_starts(150, 64, 16), 1),
    ):
        for a, b in zip(starts, starts[1:], strict=False):
            index = [slice(None), slice(None)]
            index[axis] = slice(b, a + 64)
            overlaps[tuple(index)] = True
    assert overlaps.any()
    for region in (difference, difference[overlaps]):
        assert region.max() <= TILE_MAX_DIFFERENCE and region.mean() <= TILE_MEAN_DIFFERENCE
    # One tile as large as the image is the untiled translation.
    alone = predict.translate_tiled(translate, image, key[0], 160, 40, 1)
    np.testing.assert_allclose(alone, whole, atol=1e-6)


def test_tiles_through_predict_and_bad_tiling(workdir, tmp_path):
    image = smooth_image(96, 150)
    Image.fromarray(image).save(tmp_path / "big.png")
    out = tmp_path / "out"
    predict.predict(workdir, str(tmp_path / "big.png"), str(out), num_samples=2, tile=64)
    samples = [np.asarray(Image.open(out / f"big_sample{k}.png")) for k in range(2)]
    assert samples[0].shape == (96, 150, 3) and not np.array_equal(*samples)
    for kwargs, message in (
        (dict(tile=64, resize=True), "exclude each other"),
        (dict(tile=64, tile_overlap=64), "tile_overlap < tile"),
        (dict(tile=-3), "tile_overlap < tile"),
    ):
        with pytest.raises(ConfigError, match=message):
            predict.predict(workdir, str(tmp_path / "big.png"), str(out), **kwargs)
