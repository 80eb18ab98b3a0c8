"""The input pipeline: shapes, range, shared jitter, direction, determinism, resumable state."""

import itertools

import jax
import numpy as np
import pytest
from PIL import Image

from pix2pix_jax import input_pipeline, parallel
from pix2pix_jax.datasets import preprocess


def fake_source(n=6, size=40):
    """Records whose A and B are the same random image, tagged by index in the red channel."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        records.append({"image_a": a, "image_b": a.copy(), "index": i})
    return records


def take(config, source, n):
    return list(itertools.islice(iter(input_pipeline.train_dataset(config, source)), n))


def test_train_batches_shape_range_and_shared_jitter(tiny_config):
    batches = take(tiny_config, fake_source(), 3)
    devices = jax.local_device_count()
    for batch in batches:
        for key in ("input", "target"):
            assert batch[key].shape == (devices, 2 // devices, 32, 32, 3)
            assert batch[key].dtype == np.uint8
        # The device jitters: crops of 32 in 36 = round(32 * 286 / 256), and flips.
        assert batch["crop"].shape == (devices, 2 // devices, 2) and batch["crop"].dtype == np.int32
        assert batch["crop"].min() >= 0 and batch["crop"].max() <= 36 - 32
        assert batch["flip"].shape == (devices, 2 // devices) and batch["flip"].dtype == bool
        # A == B in the source, so one shared crop and flip keeps input == target.
        np.testing.assert_array_equal(batch["input"], batch["target"])


def test_jitter_crops_and_flips():
    image = Image.fromarray(np.arange(40 * 40 * 3, dtype=np.uint8).reshape(40, 40, 3))

    def jitter(seed, flip, ratio=36 / 32):
        rng = np.random.default_rng(seed)
        out = preprocess.transform([image], "resize_and_crop", (32, 32), ratio, flip, rng)
        return np.asarray(out[0])

    outs = [jitter(s, True) for s in range(20)]
    assert all(o.shape == (32, 32, 3) for o in outs)
    assert len({o.tobytes() for o in outs}) > 10  # different crops and flips
    flipped, unflipped = jitter(0, True, 1.0), jitter(0, False, 1.0)
    assert np.array_equal(flipped, unflipped[:, ::-1]) or np.array_equal(flipped, unflipped)


def test_direction_picks_input_and_target(tiny_config):
    source = [
        {"image_a": np.zeros((32, 32, 3), np.uint8), "image_b": np.full((32, 32, 3), 255, np.uint8)}
    ] * 4
    tiny_config.dataset.direction = "AtoB"
    batch = take(tiny_config, source, 1)[0]
    assert batch["input"].max() == 0 and batch["target"].min() == 255
    tiny_config.dataset.direction = "BtoA"
    batch = take(tiny_config, source, 1)[0]
    assert batch["input"].min() == 255 and batch["target"].max() == 0


def assert_batches_equal(got, want):
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_stream_is_a_function_of_the_seed(tiny_config):
    source = fake_source(size=32)  # the model's size: the device jitters, with drawn crops
    first, again = take(tiny_config, source, 4), take(tiny_config, source, 4)
    for a, b in zip(first, again, strict=True):
        assert_batches_equal(a, b)
    tiny_config.seed = 1
    other = take(tiny_config, source, 4)
    for key in ("input", "crop"):
        assert not all(np.array_equal(a[key], b[key]) for a, b in zip(first, other, strict=True))


def test_iterator_state_resumes_the_stream(tiny_config):
    source = fake_source()
    iterator = iter(input_pipeline.train_dataset(tiny_config, source))
    next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(5)]  # crosses an epoch boundary
    resumed = iter(input_pipeline.train_dataset(tiny_config, source))
    resumed.set_state(state)
    for want in expected:
        assert_batches_equal(next(resumed), want)


def test_load_shape_says_when_the_device_jitters(tiny_config):
    assert input_pipeline.load_shape(tiny_config) == (36, 36)
    tiny_config.dataset.image_width = 48
    assert input_pipeline.load_shape(tiny_config) == (36, 54)
    for field, value in [
        ("preprocess", "crop"),  # other modes jitter on the host
        ("load_size_ratio", 1.0),  # nothing to resize: the host crops and flips
        ("output_channels", 4),  # Pillow resizes RGBA premultiplied by alpha
    ]:
        config = tiny_config.copy_and_resolve_references()
        config.dataset[field] = value
        assert input_pipeline.load_shape(config) is None
        batch = take(config, fake_source(), 1)[0]
        assert set(batch) == {"input", "target"}
        assert batch["input"].shape[-3:-1] == (32, 48)


def test_prefetch_carries_each_batch_with_its_state(tiny_config):
    iterator = iter(input_pipeline.train_dataset(tiny_config, fake_source()))
    pairs = list(itertools.islice(parallel.prefetch_to_devices(iterator, size=2), 3))
    states = [state for _, state in pairs]
    assert len({str(s) for s in states}) == 3
    fresh = iter(input_pipeline.train_dataset(tiny_config, fake_source()))
    fresh.set_state(states[0])
    np.testing.assert_array_equal(np.asarray(pairs[1][0]["input"]), next(fresh)["input"])


def test_eval_batches_cover_the_split_once(tiny_config):
    source = fake_source(n=7)
    tiny_config.eval.batch_size = 4
    batches = list(input_pipeline.eval_batches(tiny_config, source))
    masks = np.concatenate([b["mask"].reshape(-1) for b in batches])
    assert len(batches) == 2 and masks.sum() == 7 and not masks[-1]
    # No jitter at eval: the 40x40 image is only resized to 32x32.
    first = batches[0]["input"].reshape(-1, 32, 32, 3)[0]
    resized = Image.fromarray(source[0]["image_a"]).resize((32, 32), Image.BICUBIC)
    np.testing.assert_array_equal(first, np.asarray(resized))


def test_unknown_dataset_and_split_are_named(tiny_config):
    tiny_config.dataset.name = "no_such_dataset"
    with pytest.raises(ValueError, match="dataset.name='no_such_dataset'"):
        input_pipeline.load_split(tiny_config.dataset, "train")


def test_missing_split_is_named(tiny_config):
    with pytest.raises(ValueError, match="no split 'validation'"):
        input_pipeline.load_split(tiny_config.dataset, "validation")


@pytest.mark.parametrize("input_channels, output_channels", [(1, 3), (3, 4), (4, 1)])
def test_channel_counts_are_converted(tiny_config, input_channels, output_channels):
    tiny_config.dataset.input_channels = input_channels
    tiny_config.dataset.output_channels = output_channels
    batch = take(tiny_config, fake_source(), 1)[0]
    assert batch["input"].shape[-1] == input_channels
    assert batch["target"].shape[-1] == output_channels
    evals = next(input_pipeline.eval_batches(tiny_config, fake_source()))
    assert evals["input"].shape[-1] == input_channels


def test_to_channels_matches_pil():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    gray = input_pipeline.to_channels(rgb, 1)
    assert gray.shape == (5, 7, 1)
    # ITU-R 601-2 luma, as PIL's "L" conversion.
    luma = rgb @ np.array([299, 587, 114]) / 1000
    np.testing.assert_allclose(gray[..., 0], luma, atol=1)
    rgba = input_pipeline.to_channels(gray, 4)
    assert rgba.shape == (5, 7, 4) and (rgba[..., 3] == 255).all()
    np.testing.assert_array_equal(rgba[..., 0], gray[..., 0])
    with pytest.raises(ValueError, match="2-channel"):
        input_pipeline.to_channels(np.zeros((2, 2, 2), np.uint8), 3)
