"""Tests for the synthetic CMP-Facades-like tfds builder (no TensorFlow needed)."""

import hashlib
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from pix2pix_jax.datasets import synthetic_facades as sf

RES = 32
SIZES = {"train": 6, "val": 2, "test": 2}


def tiny_config(seed: int = 0, name: str = "tiny") -> sf.SyntheticFacadesConfig:
    return sf.SyntheticFacadesConfig(
        name=name,
        resolution=RES,
        num_train=SIZES["train"],
        num_val=SIZES["val"],
        num_test=SIZES["test"],
        seed=seed,
    )


def prepare(data_dir: pathlib.Path, seed: int = 0) -> sf.SyntheticFacades:
    builder = sf.SyntheticFacades(config=tiny_config(seed), data_dir=str(data_dir))
    builder.download_and_prepare(file_format="array_record")
    return builder


def read_all(builder: sf.SyntheticFacades) -> dict[str, list[dict]]:
    sources = builder.as_data_source()
    return {split: [sources[split][i] for i in range(len(sources[split]))] for split in sources}


def class_ids(label_map: np.ndarray) -> np.ndarray:
    """Maps an exact palette image back to class ids; -1 where a pixel is not a palette colour."""
    match = (label_map[:, :, None, :] == sf.PALETTE[None, None]).all(-1)
    return np.where(match.any(-1), match.argmax(-1), -1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[sf.SyntheticFacades, dict[str, list[dict]]]:
    builder = prepare(tmp_path_factory.mktemp("tfds_a"))
    return builder, read_all(builder)


def test_splits_schema_and_ranges(prepared):
    builder, records = prepared
    assert {s: len(r) for s, r in records.items()} == SIZES
    assert {s: builder.info.splits[s].num_examples for s in SIZES} == SIZES
    assert builder.info.file_format.value == "array_record"
    for split, examples in records.items():
        for i, ex in enumerate(examples):
            assert set(ex) == {"image_a", "image_b", "index"}, split
            assert int(ex["index"]) == i  # shuffling is disabled: record i is example i
            for key in ("image_a", "image_b"):
                img = ex[key]
                assert isinstance(img, np.ndarray)
                assert img.dtype == np.uint8 and img.shape == (RES, RES, 3)
            # Photos use a real dynamic range, not a constant or a saturated image.
            photo = ex["image_a"].astype(int)
            assert photo.max() - photo.min() > 60
    # Nothing on the read or write path pulled TensorFlow in.
    assert "tensorflow" not in sys.modules


def test_label_maps_use_only_palette_colours(prepared):
    _, records = prepared
    seen = set()
    for examples in records.values():
        for ex in examples:
            ids = class_ids(ex["image_b"])
            assert (ids >= 0).all(), "label map has a non-palette colour"
            present = set(np.unique(ids).tolist())
            # Every facade has wall, glass, a door, a roof cornice and some background.
            assert {sf.BACKGROUND, sf.FACADE, sf.DOOR, sf.CORNICE} <= present
            assert present & {sf.WINDOW, sf.SHOP}
            seen |= present
    assert len(seen) >= 8  # the dataset exercises most of the 12 classes


def test_photo_is_not_a_recolouring_of_the_labels(prepared):
    _, records = prepared
    for ex in records["train"]:
        ids, photo = class_ids(ex["image_b"]), ex["image_a"].astype(np.float64)
        wall = photo[ids == sf.FACADE]
        # Texture, shading, lighting and noise: many distinct colours inside one class...
        assert len(np.unique(wall, axis=0)) > 20
        # ...and per-class mean colours leave a large residual.
        residual = sum(
            ((photo[ids == c] - photo[ids == c].mean(0)) ** 2).sum()
            for c in set(np.unique(ids).tolist())
        )
        assert np.sqrt(residual / photo.size) > 5.0


def wall_chroma(photo: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean wall colour divided by its brightness: lighting and exposure cancel."""
    wall = photo[class_ids(labels) == sf.FACADE].astype(np.float64).mean(0)
    return wall / wall.mean()


def test_wall_material_follows_the_layout():
    # The wall's look is chosen from features of the label map: buildings with the same
    # material have (nearly) the same wall chromaticity, different materials differ.
    by_material: dict[str, list[np.ndarray]] = {}
    for i in range(40):
        seq_layout, seq_photo = np.random.SeedSequence([3, 0, i]).spawn(2)
        layout = sf.sample_layout(np.random.default_rng(seq_layout), 64)
        photo = sf.render_photo(layout, np.random.default_rng(seq_photo))
        # generate_example is exactly this composition.
        np.testing.assert_array_equal(photo, sf.generate_example(3, 0, i, 64)[0])
        material = sf.choose_material(layout)
        labels = sf.colorize_labels(layout.labels)
        by_material.setdefault(material.name, []).append(wall_chroma(photo, labels))
    assert len(by_material) >= 4  # the features spread buildings over most materials
    means = {name: np.mean(chroma, 0) for name, chroma in by_material.items()}
    for name, chroma in by_material.items():
        assert np.abs(np.stack(chroma) - means[name]).max() < 0.03, name
    names = sorted(means)
    gaps = [np.abs(means[a] - means[b]).max() for a in names for b in names if a < b]
    assert min(gaps) > 0.01 and max(gaps) > 0.1


def test_shutters_and_roller_blinds_look_different():
    # Both are `blind` in the label map: only their arrangement (beside vs over the glass)
    # tells them apart, so the model needs spatial context, not a per-class lookup.
    mean_colour = {}
    for kind in ("shutters", "roller"):
        colours = []
        for i in range(60):
            seq_layout, _ = np.random.SeedSequence([0, 0, i]).spawn(2)
            layout = sf.sample_layout(np.random.default_rng(seq_layout), 64)
            if layout.blinds == kind:
                photo, labels = sf.generate_example(0, 0, i, 64)
                colours.append(photo[class_ids(labels) == sf.BLIND].astype(np.float64).mean(0))
        assert colours, kind
        mean_colour[kind] = np.mean(colours, 0)
    assert np.abs(mean_colour["shutters"] - mean_colour["roller"]).max() > 30


def test_same_label_map_renders_to_nearly_the_same_photo():
    # The random residual (texture phases, exposure jitter, sensor noise) is small but nonzero.
    layout = sf.sample_layout(np.random.default_rng(7), 64)
    photo_1 = sf.render_photo(layout, np.random.default_rng(1))
    photo_2 = sf.render_photo(layout, np.random.default_rng(2))
    again = sf.render_photo(layout, np.random.default_rng(1))
    np.testing.assert_array_equal(photo_1, again)
    diff = np.abs(photo_1.astype(int) - photo_2.astype(int)).mean()
    assert 1.0 < diff < 8.0  # ~5 levels of 255 here
    # The rendering must not change the layout it was given.
    np.testing.assert_array_equal(
        layout.labels, sf.sample_layout(np.random.default_rng(7), 64).labels
    )


def test_per_class_median_oracle_is_far_below_mean_target(prepared):
    # Predicting each val pixel as its class's median train colour (on the [-1, 1] scale a
    # pix2pix model sees) already removes most of the error of an untrained, all-zero
    # generator; yet not all of it: shadows, frames, reflections need spatial context.
    _, records = prepared

    def stack(split: str) -> tuple[np.ndarray, np.ndarray]:
        photos = np.stack([ex["image_a"] for ex in records[split]]).astype(np.float64)
        ids = np.stack([class_ids(ex["image_b"]) for ex in records[split]])
        return photos.reshape(-1, 3) / 127.5 - 1, ids.reshape(-1)

    train, train_ids = stack("train")
    val, val_ids = stack("val")
    pred = np.zeros_like(val)
    for c in np.unique(val_ids):
        if (train_ids == c).any():
            pred[val_ids == c] = np.median(train[train_ids == c], axis=0)
    mean_target = np.abs(val).mean()
    oracle = np.abs(pred - val).mean()
    assert mean_target > 0.33  # ~0.52: bright plaster, dark glass
    assert oracle < 0.3 * mean_target  # ~0.095
    assert oracle > 0.03


def test_photo_follows_the_labels():
    # Learnable, not random: glass is darker than walls in the vast majority of buildings.
    darker = []
    for i in range(40):
        photo, labels = sf.generate_example(seed=3, split_index=0, index=i, resolution=64)
        ids, lum = class_ids(labels), photo.astype(np.float64).mean(-1)
        if (ids == sf.WINDOW).any():
            darker.append(lum[ids == sf.FACADE].mean() - lum[ids == sf.WINDOW].mean())
    assert np.mean(np.array(darker) > 0) > 0.75
    assert np.mean(darker) > 20.0


def encoded_records(builder: sf.SyntheticFacades, split: str) -> list[dict]:
    """Records with the PNG bytes as stored (no decoding)."""
    skip = {"image_a": tfds.decode.SkipDecoding(), "image_b": tfds.decode.SkipDecoding()}
    source = builder.as_data_source(decoders=skip)[split]
    return [source[i] for i in range(len(source))]


def test_preparing_twice_is_byte_identical(prepared, tmp_path):
    builder_a, records_a = prepared
    builder_b = prepare(tmp_path)
    records_b = read_all(builder_b)
    for split in SIZES:
        for ex_a, ex_b in zip(records_a[split], records_b[split], strict=True):
            for key in ("image_a", "image_b"):
                np.testing.assert_array_equal(ex_a[key], ex_b[key])
        # The stored PNG bytes are identical too. (Not necessarily the .array_record files:
        # protobuf may order a tf.Example's feature map differently in another process.)
        for ex_a, ex_b in zip(
            encoded_records(builder_a, split), encoded_records(builder_b, split), strict=True
        ):
            assert isinstance(ex_a["image_a"], bytes) and ex_a["image_a"].startswith(b"\x89PNG")
            assert ex_a == ex_b


def test_examples_are_identical_in_another_process():
    def digest() -> str:
        h = hashlib.sha256()
        for i in range(3):
            for image in sf.generate_example(seed=0, split_index=2, index=i, resolution=RES):
                h.update(sf._png(image))
        return h.hexdigest()

    code = (
        "import hashlib\n"
        "from pix2pix_jax.datasets import synthetic_facades as sf\n"
        "h = hashlib.sha256()\n"
        "for i in range(3):\n"
        f"    for image in sf.generate_example(seed=0, split_index=2, index=i, resolution={RES}):\n"
        "        h.update(sf._png(image))\n"
        "print(h.hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == digest()


def test_seeds_and_splits_give_different_images(prepared, tmp_path):
    _, records = prepared
    other = read_all(prepare(tmp_path, seed=1))
    for key in ("image_a", "image_b"):
        assert not np.array_equal(records["train"][0][key], other["train"][0][key])
        assert not np.array_equal(records["train"][0][key], records["val"][0][key])
        assert not np.array_equal(records["val"][0][key], records["test"][0][key])
    # Within a split, examples differ too.
    assert not np.array_equal(records["train"][0]["image_b"], records["train"][1]["image_b"])


def test_example_is_pure_function_of_seed_split_index():
    a = sf.generate_example(seed=5, split_index=1, index=3, resolution=RES)
    b = sf.generate_example(seed=5, split_index=1, index=3, resolution=RES)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_registered_name_and_predefined_configs(tmp_path):
    assert [c.name for c in sf.SyntheticFacades.BUILDER_CONFIGS] == [
        "res64",
        "res128",
        "res256",
        "res32_small",
    ]
    builder = tfds.builder("synthetic_facades/res256", data_dir=str(tmp_path))
    assert isinstance(builder, sf.SyntheticFacades)
    assert builder.info.features["image_a"].shape == (256, 256, 3)
    assert builder.info.features["image_b"].shape == (256, 256, 3)
    assert builder.builder_config.num_test == 106
    assert str(builder.info.version) == "1.1.0"
    default = tfds.builder("synthetic_facades", data_dir=str(tmp_path))
    assert default.builder_config.name == "res64"
    assert default.info.file_format.value == "array_record"  # no TF needed to write


def test_data_source_prepares_and_reads_without_file_format(tmp_path):
    sources = tfds.data_source(
        "synthetic_facades", data_dir=str(tmp_path), builder_kwargs={"config": tiny_config()}
    )
    assert {s: len(sources[s]) for s in SIZES} == SIZES
    assert sources["val"][1]["image_a"].shape == (RES, RES, 3)
    # A fresh builder over the prepared directory restores the format from its metadata.
    reopened = sf.SyntheticFacades(config=tiny_config(), data_dir=str(tmp_path))
    assert reopened.info.initialized
    assert len(reopened.as_data_source()["train"]) == SIZES["train"]
