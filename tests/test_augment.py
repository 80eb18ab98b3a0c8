"""The device jitter against the host's Pillow jitter on the same records and draws."""

import dataclasses
import itertools

import jax
import numpy as np
import pytest
from PIL import Image

from pix2pix_jax import augment, input_pipeline


def smooth(h, w, channels, seed):
    """A smooth random uint8 image; the last channel is white noise (overshoot, clipping)."""
    rng = np.random.default_rng(seed)
    ramp = np.cumsum(rng.integers(-6, 7, (h, w, channels)), axis=1) % 256
    ramp[..., -1] = rng.integers(0, 256, (h, w))
    return ramp.astype(np.uint8)


def records(n, h, w, channels=3):
    return [
        {"image_a": smooth(h, w, channels, i), "image_b": smooth(h, w, channels, 100 + i)}
        for i in range(n)
    ]


def recipes(config):
    device = input_pipeline.Recipe.from_config(config)
    return device, dataclasses.replace(device, load_shape=None)


def stack(examples):
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def levels(images):
    return np.asarray(images, np.float64) * 127.5 + 127.5


def assert_same_levels(got, want):
    """Both are Pillow's resize-then-crop: the same 8-bit levels (up to float32 scaling)."""
    assert np.abs(levels(got) - want).max() < 1e-3


@pytest.mark.parametrize("width, channels", [(0, 3), (48, 1)])
def test_device_jitter_matches_the_host_jitter(tiny_config, width, channels):
    tiny_config.dataset.image_width = width
    tiny_config.dataset.input_channels = tiny_config.dataset.output_channels = channels
    device, host = recipes(tiny_config)
    height, width = input_pipeline.image_shape(tiny_config)
    assert device.load_shape == (36, round(width * 286 / 256))
    source = records(8, height, width, channels)
    rngs = [np.random.default_rng(i) for i in range(len(source))]
    shipped = stack(
        [input_pipeline.make_example(r, device, g) for r, g in zip(source, rngs, strict=True)]
    )
    rngs = [np.random.default_rng(i) for i in range(len(source))]
    want = stack(
        [input_pipeline.make_example(r, host, g) for r, g in zip(source, rngs, strict=True)]
    )
    assert shipped["flip"].any() and not shipped["flip"].all()
    out = jax.jit(augment.jitter, static_argnums=1)(shipped, device.load_shape)
    for key in ("input", "target"):
        assert out[key].shape == want[key].shape and out[key].dtype == np.float32
        assert_same_levels(out[key], want[key])
    # And exactly the definition: Pillow's full resize to the load size, then crop and flip.
    for i, record in enumerate(source):
        (top, left), mirror = shipped["crop"][i], shipped["flip"][i]
        load_h, load_w = device.load_shape
        picture = Image.fromarray(
            record["image_b"].squeeze(-1) if channels == 1 else record["image_b"]
        )
        full = np.asarray(picture.resize((load_w, load_h), Image.BICUBIC)).reshape(
            load_h, load_w, -1
        )
        crop = full[top : top + height, left : left + width]
        diff = np.abs(levels(out["input"][i]) - (crop[:, ::-1] if mirror else crop))
        assert diff.max() < 1e-3


def test_jitter_keeps_leading_axes_and_other_keys_and_flips():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 3, 8, 10, 3), dtype=np.uint8)
    crop = np.stack(np.broadcast_arrays(rng.integers(0, 3, (2, 3)), rng.integers(0, 4, (2, 3))), -1)
    batch = {"input": images, "target": images[..., :1], "crop": crop.astype(np.int32)}
    batch["mask"] = np.ones((2, 3), bool)
    jitter = jax.jit(augment.jitter, static_argnums=1)
    plain = jitter({**batch, "flip": np.zeros((2, 3), bool)}, (10, 13))
    mirrored = jitter({**batch, "flip": np.ones((2, 3), bool)}, (10, 13))
    assert set(plain) == {"input", "target", "mask"}
    assert plain["input"].shape == (2, 3, 8, 10, 3) and plain["target"].shape == (2, 3, 8, 10, 1)
    assert plain["input"].dtype == np.float32
    assert np.abs(plain["input"]).max() <= 1 + 1e-6  # 255 / 127.5 - 1 as XLA computes it
    np.testing.assert_array_equal(mirrored["input"], np.asarray(plain["input"])[..., ::-1, :])
    # Each example uses its own crop: example (0, 1) alone gives the same result.
    one = {k: v[:1, 1:2] for k, v in batch.items()} | {"flip": np.zeros((1, 1), bool)}
    np.testing.assert_array_equal(jitter(one, (10, 13))["input"][0, 0], plain["input"][0, 1])


@pytest.mark.parametrize("load_shape", [(8, 9), (11, 6), (13, 10)])
def test_equals_pillows_resize_then_crop_also_when_one_axis_keeps_its_size(load_shape):
    rng = np.random.default_rng(sum(load_shape))
    images = rng.integers(0, 256, (4, 8, 6, 3), dtype=np.uint8)  # noise: overshoot, clipping
    (load_h, load_w), (height, width) = load_shape, images.shape[1:3]
    crop = np.stack(
        [rng.integers(0, load_h - height + 1, 4), rng.integers(0, load_w - width + 1, 4)]
    )
    flip = np.array([False, True, False, True])
    batch = {"input": images, "target": images[..., :1], "crop": crop.T.astype(np.int32)}
    out = jax.jit(augment.jitter, static_argnums=1)({**batch, "flip": flip}, load_shape)
    for i, (top, left) in enumerate(crop.T):
        full = np.asarray(Image.fromarray(images[i]).resize((load_w, load_h), Image.BICUBIC))
        want = full[top : top + height, left : left + width]
        want = want[:, ::-1] if flip[i] else want
        np.testing.assert_allclose(levels(out["input"][i]), want, atol=1e-3)


def test_pipeline_streams_agree_after_the_device_jitter(tiny_config, monkeypatch):
    source = records(6, 32, 32)

    def stream():
        return list(itertools.islice(iter(input_pipeline.train_dataset(tiny_config, source)), 4))

    shipped = stream()
    jitter = jax.jit(augment.jitter, static_argnums=1)
    monkeypatch.setattr(input_pipeline, "load_shape", lambda config: None)
    host = stream()
    for batch, want in zip(shipped, host, strict=True):
        assert batch["crop"].dtype == np.int32 and batch["flip"].dtype == bool
        out = jitter(batch, (36, 36))
        assert_same_levels(out["input"], want["input"])
        assert_same_levels(out["target"], want["target"])
