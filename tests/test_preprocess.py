"""Preprocessing modes against their definitions: resize then crop, at any size and aspect."""

import itertools

import numpy as np
import pytest
from PIL import Image

from pix2pix_jax import config as config_lib
from pix2pix_jax import input_pipeline
from pix2pix_jax.datasets import preprocess


def picture(h, w, seed=0):
    """A smooth random image (resampling differences stay small but visible)."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(-6, 7, (h, w, 3))
    return Image.fromarray((np.cumsum(steps, axis=1) % 256).astype(np.uint8))


def resize(p, w, h):
    return np.asarray(p.resize((w, h), Image.BICUBIC))


def draws(seed):
    """The crop offsets and flip a transform with this seed draws (same order as it)."""
    return np.random.default_rng(seed)


@pytest.mark.parametrize("shape", [(32, 32), (24, 40)])
def test_resize_and_crop_equals_resize_then_crop(shape):
    p = picture(50, 70)
    height, width = shape
    ratio = 36 / 32
    load_w, load_h = round(width * ratio), round(height * ratio)
    full = resize(p, load_w, load_h)
    for seed in range(20):
        rng = draws(seed)
        top, left = rng.integers(0, (load_h - height + 1, load_w - width + 1))
        flip = rng.random() < 0.5
        want = full[top : top + height, left : left + width]
        want = want[:, ::-1] if flip else want
        out = preprocess.transform([p], "resize_and_crop", shape, ratio, True, draws(seed))
        got = np.asarray(out[0])
        assert got.shape == (height, width, 3)
        np.testing.assert_array_equal(got, want)  # Pillow's resize, then the crop: one resample


def test_draw_jitter_draws_what_transform_draws():
    p = picture(40, 40)
    for seed, shape in itertools.product(range(10), [(32, 32), (24, 40)]):
        height, width = shape
        load_w, load_h = round(width * 1.2), round(height * 1.2)
        rng = draws(seed)
        want = tuple(rng.integers(0, (load_h - height + 1, load_w - width + 1))), rng.random() < 0.5
        after_transform = draws(seed)
        preprocess.transform([p], "resize_and_crop", shape, 1.2, True, after_transform)
        rng = draws(seed)
        assert preprocess.draw_jitter(shape, 1.2, True, rng) == want
        assert rng.random() == after_transform.random()  # and it leaves the rng where it did
        assert preprocess.draw_jitter(shape, 1.2, False, draws(seed)) == (want[0], False)


def test_crop_is_exact_at_the_original_scale_and_covers_small_images():
    p = picture(40, 50)
    for seed in range(5):
        rng = draws(seed)
        top, left = rng.integers(0, (40 - 32 + 1, 50 - 32 + 1))
        out = np.asarray(preprocess.transform([p], "crop", (32, 32), 1.5, False, draws(seed))[0])
        np.testing.assert_array_equal(out, np.asarray(p)[top : top + 32, left : left + 32])
    centre = np.asarray(preprocess.transform([p], "crop", (32, 32), 1.5, True, None)[0])
    np.testing.assert_array_equal(centre, np.asarray(p)[4:36, 9:41])
    small = preprocess.transform([picture(10, 20)], "crop", (32, 32), 1.0, True, draws(0))[0]
    assert small.size == (32, 32)


def test_scale_width_keeps_the_aspect_ratio_then_centres_the_height():
    p = picture(30, 60)  # 2:1 -> width 32 gives height 16, raised to 32 as the reference does
    out = np.asarray(preprocess.transform([p], "scale_width", (32, 32), 1.0, False, draws(0))[0])
    np.testing.assert_array_equal(out, resize(p, 32, 32))
    tall = picture(80, 40)  # 1:2 -> 32 x 64, centre crop of the height
    out = np.asarray(preprocess.transform([tall], "scale_width", (32, 32), 1.0, False, None)[0])
    want = resize(tall, 32, 64)[16:48]
    assert np.abs(out.astype(int) - want).max() <= 1


def test_scale_width_and_crop_and_none():
    p = picture(60, 40)
    load_w = round(32 * 1.25)  # 40: the source width, height 60
    out = preprocess.transform([p], "scale_width_and_crop", (32, 32), 1.25, False, draws(3))[0]
    top, left = draws(3).integers(0, (60 - 32 + 1, load_w - 32 + 1))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(p)[top : top + 32, left : left + 32])
    same = picture(24, 40)
    out = preprocess.transform([same], "none", (24, 40), 2.0, False, draws(0))[0]
    np.testing.assert_array_equal(np.asarray(out), np.asarray(same))
    other = preprocess.transform([p], "none", (24, 40), 2.0, False, None)[0]
    np.testing.assert_array_equal(np.asarray(other), resize(p, 40, 24))


@pytest.mark.parametrize("mode", preprocess.MODES)
def test_every_mode_gives_the_model_shape_and_one_crop_for_a_and_b(mode):
    for (h, w), shape in itertools.product([(20, 50), (64, 30), (33, 33)], [(16, 16), (16, 24)]):
        a = picture(h, w, 1)
        b = a.transpose(Image.Transpose.ROTATE_180).transpose(Image.Transpose.ROTATE_180)
        for rng in (draws(7), None):
            x, y = preprocess.transform([a, b], mode, shape, 1.2, True, rng)
            assert x.size == y.size == (shape[1], shape[0])
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with pytest.raises(ValueError, match="same|differ"):
        preprocess.transform([picture(8, 8), picture(8, 9)], mode, (8, 8), 1.0, False, None)


def test_flip_mirrors_about_half_of_the_draws():
    p = picture(16, 16)
    mirrored = 0
    for seed in range(40):
        out = preprocess.transform([p], "none", (16, 16), 1.0, True, draws(seed))[0]
        mirrored += not np.array_equal(np.asarray(out), np.asarray(p))
    assert 10 < mirrored < 30
    out = preprocess.transform([p], "none", (16, 16), 1.0, False, draws(0))[0]
    np.testing.assert_array_equal(np.asarray(out), np.asarray(p))


def test_unknown_mode_and_bad_fields_are_named(tiny_config):
    with pytest.raises(ValueError, match="dataset.preprocess='zoom'"):
        preprocess.transform([picture(8, 8)], "zoom", (8, 8), 1.0, False, None)
    for field, value, match in [
        ("preprocess", "zoom", "dataset.preprocess='zoom'"),
        ("image_width", -1, "dataset.image_width=-1"),
        ("load_size_ratio", 0.5, "dataset.load_size_ratio=0.5"),
        ("direction", "AtoC", "dataset.direction='AtoC'"),
    ]:
        config = tiny_config.copy_and_resolve_references()
        config.dataset[field] = value
        with pytest.raises(ValueError, match=match):
            config_lib.validate(config)


def test_a_pair_of_two_sizes_is_named_before_the_device_jitter(tiny_config):
    record = {
        "image_a": np.zeros((32, 32, 3), np.uint8),
        "image_b": np.zeros((32, 30, 3), np.uint8),
    }
    recipe = input_pipeline.Recipe.from_config(tiny_config)
    assert recipe.load_shape is not None
    with pytest.raises(ValueError, match="differ in size"):
        input_pipeline.make_example(record, recipe, draws(0))


@pytest.mark.parametrize("mode", ["resize_and_crop", "none", "scale_width"])
def test_non_square_batches(tiny_config, mode):
    rng = np.random.default_rng(0)
    source = [
        {"image": None, "image_a": rng.integers(0, 256, (20, 48, 3), dtype=np.uint8)}
        for _ in range(4)
    ]
    for record in source:
        del record["image"]
        record["image_b"] = record["image_a"].copy()
    tiny_config.dataset.preprocess = mode
    tiny_config.dataset.image_width = 64
    assert input_pipeline.image_shape(tiny_config) == (32, 64)
    batch = next(iter(input_pipeline.train_dataset(tiny_config, source)))
    assert batch["input"].shape[-3:] == (32, 64, 3)
    np.testing.assert_array_equal(batch["input"], batch["target"])
    evals = next(input_pipeline.eval_batches(tiny_config, source))
    assert evals["input"].shape[-3:] == (32, 64, 3) and evals["input"].dtype == np.uint8
