"""Label maps as inputs (dataset.label_nc, dataset.instance_maps), against pix2pixHD's code.

pix2pixHD (models/pix2pixHD_model.py) one-hot encodes the label map with `scatter_` into
label_nc channels and appends `get_edges(inst_map)`; its data loader resizes label and
instance maps with NEAREST. The references below re-express that code in numpy.
"""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from pix2pix_jax import (
    assembly,
    demo,
    evaluate,
    fcn_score,
    input_pipeline,
    labels,
    predict,
    steps,
    trainer,
    writers,
)
from pix2pix_jax import config as config_lib
from pix2pix_jax.configs import default
from pix2pix_jax.datasets import folder
from pix2pix_jax.errors import ConfigError, DataError, MissingFileError

LABEL_NC = 35  # pix2pixHD's Cityscapes setting (labelIds 0-33)
CITIES = {"train": ["aachen", "bremen"], "val": ["frankfurt"]}


def reference_get_edges(t: np.ndarray) -> np.ndarray:
    """pix2pixHD's get_edges on an [N, 1, H, W] tensor, line by line (ByteTensor ops)."""
    edge = np.zeros(t.shape, np.uint8)
    edge[:, :, :, 1:] = edge[:, :, :, 1:] | (t[:, :, :, 1:] != t[:, :, :, :-1])
    edge[:, :, :, :-1] = edge[:, :, :, :-1] | (t[:, :, :, 1:] != t[:, :, :, :-1])
    edge[:, :, 1:, :] = edge[:, :, 1:, :] | (t[:, :, 1:, :] != t[:, :, :-1, :])
    edge[:, :, :-1, :] = edge[:, :, :-1, :] | (t[:, :, 1:, :] != t[:, :, :-1, :])
    return edge.astype(np.float32)


def reference_encode_input(label_map: np.ndarray, inst_map: np.ndarray, label_nc: int):
    """pix2pixHD's encode_input (NCHW): scatter_(1, label, 1.0), then cat the edge map."""
    n, _, h, w = label_map.shape
    one_hot = np.zeros((n, label_nc, h, w), np.float32)
    ni, _, hi, wi = np.indices(label_map.shape)
    one_hot[ni, label_map.astype(np.int64), hi, wi] = 1.0
    return np.concatenate([one_hot, reference_get_edges(inst_map)], axis=1)


def cityscapes_instances(rng, h, w) -> tuple[np.ndarray, np.ndarray]:
    """(labelIds uint8, instanceIds int32) as Cityscapes writes them: cars (26) and persons
    (24) with instances (class * 1000 + k), road (7) and sky (23) without."""
    ids = np.full((h, w), 7, np.int32)
    ids[: h // 3] = 23
    inst = ids.copy()
    for k in range(3):
        top, left = rng.integers(0, h - 6), rng.integers(0, w - 6)
        cls = (26, 24)[k % 2]
        ids[top : top + 6, left : left + 6] = cls
        inst[top : top + 6, left : left + 6] = cls * 1000 + k
    return ids.astype(np.uint8), inst


def test_encode_matches_pix2pixhd():
    rng = np.random.default_rng(0)
    label_map = rng.integers(0, LABEL_NC, (2, 1, 12, 10))
    inst_map = np.stack([cityscapes_instances(rng, 12, 10)[1][None] for _ in range(2)])
    expected = reference_encode_input(label_map, inst_map, LABEL_NC).transpose(0, 2, 3, 1)
    edges = np.stack([labels.instance_edges(m[0]) for m in inst_map])
    shipped = np.stack([label_map[:, 0].astype(np.uint8), edges], -1)  # what the host ships
    got = labels.encode(jnp.asarray(shipped), LABEL_NC, True)
    assert got.dtype == jnp.float32 and got.shape == (2, 12, 10, LABEL_NC + 1)
    np.testing.assert_array_equal(np.asarray(got), expected)
    no_inst = labels.encode(jnp.asarray(shipped[..., :1]), LABEL_NC, False)
    np.testing.assert_array_equal(np.asarray(no_inst), expected[..., :LABEL_NC])
    with pytest.raises(TypeError, match="integer ids"):
        labels.encode(jnp.zeros((1, 4, 4, 1)), LABEL_NC, False)


def test_edges_of_a_16_bit_instance_map():
    inst = np.array([[26001, 26001, 7], [26001, 26002, 7], [7, 7, 7]], np.int32)
    expected = reference_get_edges(inst[None, None])[0, 0]
    np.testing.assert_array_equal(labels.instance_edges(inst), expected)
    assert expected.sum() == 7 and expected[0, 0] == expected[2, 2] == 0  # same neighbours


def test_default_input_is_unchanged():
    """The default (label_nc 0): `encode_input` is `to_model_range`, the device jitter stays."""
    config = default.get_config()
    setup = assembly.make_setup(config, 10)
    assert (setup.label_nc, setup.instance_maps, setup.load_shape) == (0, False, (72, 72))
    x = jnp.arange(256, dtype=jnp.uint8).reshape(1, 16, 16, 1)
    np.testing.assert_array_equal(steps.encode_input(x, setup), steps.to_model_range(x))
    assert input_pipeline.model_input_channels(config) == 3


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)  # uint16: a 16-bit PNG, as Cityscapes' instanceIds


def make_cityscapes(root, h=32, w=64):
    """A miniature official Cityscapes tree (leftImg8bit + gtFine labelIds / instanceIds)."""
    rng = np.random.default_rng(1)
    for split, cities in CITIES.items():
        for city in cities:
            for seq in range(2):
                frame = f"{city}_{seq:06d}_000019"
                ids, inst = cityscapes_instances(rng, h, w)
                photo = (labels.COLOR_MAP[ids] // 2 + rng.integers(0, 60, (h, w, 3))).astype(
                    np.uint8
                )
                write_png(f"{root}/leftImg8bit/{split}/{city}/{frame}_leftImg8bit.png", photo)
                gt = f"{root}/gtFine/{split}/{city}/{frame}_gtFine"
                write_png(f"{gt}_labelIds.png", ids)
                write_png(f"{gt}_instanceIds.png", inst.astype(np.uint16))  # 16-bit, as official
                write_png(f"{gt}_color.png", photo)  # the other gtFine files are ignored
    return root


def make_label_folder(root, h=24, w=24, with_instances=True):
    """The separate folder layout with label maps: A/ (ids), B/ (photos), inst/ (instances)."""
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for i in range(3):
            ids, inst = cityscapes_instances(rng, h, w)
            write_png(f"{root}/A/{split}/{i}.png", ids)
            write_png(f"{root}/B/{split}/{i}.png", rng.integers(0, 256, (h, w, 3), np.uint8))
            if with_instances:
                write_png(f"{root}/inst/{split}/{i}.png", inst.astype(np.uint16))
    return root


def label_config(path, data_dir, instance_maps=True):
    config = default.get_config()
    config.dataset.name, config.dataset.path, config.dataset.data_dir = "folder", path, data_dir
    config.dataset.label_nc, config.dataset.instance_maps = LABEL_NC, instance_maps
    config.image_size = 32
    config.batch_size, config.num_train_steps = 2, 2
    config.model.ngf = config.model.ndf = 8
    config.model.generator, config.model.norm = "resnet_6blocks", "instance"
    config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
    config.eval.batch_size, config.eval.num_samples = 2, 2
    config.eval.mode = "deterministic"  # the evaluate and predict calls compile the same G
    return config


def test_folder_layouts_with_label_maps(tmp_path):
    city = folder.discover(make_cityscapes(str(tmp_path / "cs")))
    assert city.kind == folder.CITYSCAPES and city.keys == ("image_a", "image_b", "instance")
    assert len(city.files["train"]) == 4 and len(city.files["val"]) == 2
    label, photo, inst = city.paths("val", city.files["val"][0])
    assert label.endswith("gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png")
    assert photo.endswith("leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png")
    assert inst.endswith("_gtFine_instanceIds.png") and os.path.isfile(inst)
    frame = "frankfurt_000000_000019"  # the FCN-score reads the same label files
    assert fcn_score.label_path(str(tmp_path / "cs"), "val", frame) == label
    sep = folder.discover(make_label_folder(str(tmp_path / "sep")))
    assert sep.kind == folder.SEPARATE and sep.instances and "instance" in sep.keys
    os.remove(tmp_path / "sep" / "inst" / "val" / "1.png")
    with pytest.raises(MissingFileError, match="inst/val/1.png: missing"):
        folder.discover(str(tmp_path / "sep"))
    assert len(folder.discover(str(tmp_path / "sep"), skip_bad_files=True).files["val"]) == 2
    os.remove(city.paths("train", city.files["train"][0])[2])
    with pytest.raises(MissingFileError, match="_instanceIds.png: missing"):
        folder.discover(str(tmp_path / "cs"))


def record_of(root, i=0, split="train"):
    record = {"file_name": f"{i}.png"}
    for key, side in (("image_a", "A"), ("image_b", "B"), ("instance", "inst")):
        with open(f"{root}/{side}/{split}/{i}.png", "rb") as f:
            record[key] = f.read()
    return record


def test_jitter_resamples_ids_nearest(tmp_path):
    """Training examples: ids and instances go through Pillow's NEAREST resize, crop, flip."""
    root = make_label_folder(str(tmp_path / "f"), h=24, w=24)
    config = label_config(root, str(tmp_path / "tfds"))
    config.image_size = 16  # 24 -> load 18x18 -> crop 16x16
    recipe = input_pipeline.Recipe.from_config(config)
    assert recipe.load_shape is None  # label maps: the host jitters (the device is bicubic)
    record = record_of(root)
    source_ids = np.asarray(Image.open(f"{root}/A/train/0.png"))
    source_inst = np.asarray(Image.open(f"{root}/inst/train/0.png")).astype(np.int32)
    for seed in range(4):
        example = input_pipeline.make_example(record, recipe, np.random.default_rng(seed))
        x = example["input"]
        assert x.shape == (16, 16, 2) and x.dtype == np.uint8
        assert set(np.unique(x[..., 0])) <= set(np.unique(source_ids))  # never blended
        rng = np.random.default_rng(seed)  # the same draws as transform's
        (top, left), mirror = input_pipeline.preprocess.draw_jitter((16, 16), 18 / 16, True, rng)
        load = round(16 * config.dataset.load_size_ratio)
        for source, got in ((source_ids, x[..., 0]), (source_inst, None)):
            resized = np.asarray(Image.fromarray(source).resize((load, load), Image.NEAREST))
            crop = resized[top : top + 16, left : left + 16]
            crop = crop[:, ::-1] if mirror else crop
            if got is not None:
                np.testing.assert_array_equal(got, crop)
            else:  # edges computed after the transform, as pix2pixHD
                np.testing.assert_array_equal(x[..., 1], labels.instance_edges(crop))


def test_bad_ids_and_configs(tmp_path):
    root = make_label_folder(str(tmp_path / "f"))
    config = label_config(root, str(tmp_path / "tfds"))
    config.dataset.label_nc = 20  # the maps hold 23, 24, 26
    recipe = input_pipeline.Recipe.from_config(config)
    with pytest.raises(DataError, match=r"0.png \(image_a\): label map holds class id 2\d"):
        input_pipeline.make_example(record_of(root), recipe, None)
    for field, value, match in [
        ("label_nc", 300, "dataset.label_nc"),
        ("label_nc", -1, "dataset.label_nc"),
        ("label_nc", 257, "dataset.label_nc"),
    ]:
        bad = label_config(root, "")
        bad.dataset[field] = value
        with pytest.raises(ConfigError, match=match):
            config_lib.validate(bad)
    bad = label_config(root, "")
    bad.dataset.label_nc = 0
    with pytest.raises(ConfigError, match="instance_maps=True needs label maps"):
        config_lib.validate(bad)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(DataError, match="single-channel"):
        predict.read_label_map(str(rgb), LABEL_NC, None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two steps on a miniature Cityscapes tree (32x64 frames): labelIds + instanceIds -> photo."""
    tmp = tmp_path_factory.mktemp("labels")
    config = label_config(make_cityscapes(str(tmp / "cityscapes")), str(tmp / "tfds"))
    workdir = str(tmp / "work")
    trainer.train_and_evaluate(config, workdir)
    return config, workdir, tmp


def test_training_on_label_maps(trained):
    config, workdir, _ = trained
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert any("g_loss" in r and np.isfinite(r["g_loss"]) for r in lines)
    assert any(r.get("split") == "val" for r in lines)
    _, state, step = assembly.restore_for_inference(workdir)
    assert step == 2
    # G's first kernel takes label_nc one-hot channels + the boundary; D those + the photo.
    g_in = {a.shape[2] for a in jax.tree.leaves(state.g_params) if a.ndim == 4}
    d_in = {a.shape[2] for a in jax.tree.leaves(state.d_params) if a.ndim == 4}
    assert LABEL_NC + 1 in g_in and LABEL_NC + 1 + 3 in d_in
    grids = os.listdir(os.path.join(workdir, "samples"))
    assert grids
    grid = np.asarray(Image.open(os.path.join(workdir, "samples", sorted(grids)[-1])))
    assert grid.shape == (2 * 32, 3 * 32, 3)  # input (coloured ids) | output | target


def test_evaluate_and_predict_on_label_maps(trained):
    config, workdir, tmp = trained
    record, out = evaluate.evaluate(workdir, split="val", mode="deterministic", progress=False)
    assert record["num_images"] == 2 and np.isfinite(record["l1"])
    # predict: the val label maps at their own size, with their instance maps.
    gt = os.path.join(config.dataset.path, "gtFine", "val", "frankfurt")
    maps, insts = tmp / "maps", tmp / "insts"
    os.makedirs(maps), os.makedirs(insts)
    for name in sorted(os.listdir(gt)):
        frame = name.split("_gtFine_")[0]
        if name.endswith("_labelIds.png"):
            os.link(os.path.join(gt, name), maps / f"{frame}.png")
        if name.endswith("_instanceIds.png"):
            os.link(os.path.join(gt, name), insts / f"{frame}.png")
    with pytest.raises(ConfigError, match="label maps .* demo page cannot draw"):
        demo.load_model(workdir)
    with pytest.raises(ConfigError, match="--instances"):
        predict.predict(workdir, str(maps), str(tmp / "none"), mode="deterministic")
    written = predict.predict(
        workdir, str(maps), str(tmp / "out"), mode="deterministic", progress=False,
        instances=str(insts),
    )  # fmt: skip
    assert len(written) == 2
    # predict's output is G of the one-hot ids and pix2pixHD's edges of the instance map.
    frame = "frankfurt_000000_000019"
    ids = np.asarray(Image.open(maps / f"{frame}.png")).astype(np.int64)
    inst = np.asarray(Image.open(insts / f"{frame}.png")).astype(np.int64)
    x = reference_encode_input(ids[None, None], inst[None, None], LABEL_NC).transpose(0, 2, 3, 1)
    _, state, _ = assembly.restore_for_inference(workdir)
    setup = assembly.inference_setup(config)
    fake = steps.generate(state, jnp.asarray(x), setup, "deterministic", None)
    mine = np.asarray(Image.open(tmp / "out" / f"{frame}.png"))
    assert mine.shape == (32, 64, 3)  # predict runs at the map's own size
    np.testing.assert_allclose(mine, writers.to_uint8(fake)[0], atol=1)
    # evaluate's input pictures are the coloured ids, boundaries white.
    shown = np.asarray(Image.open(os.path.join(out, "images", "00000_input.png")))
    palette = {tuple(c) for c in labels.COLOR_MAP[[7, 23, 24, 26]]} | {(255, 255, 255)}
    assert {tuple(c) for c in shown.reshape(-1, 3)} <= palette


def test_pix2pixhd_and_spade_recipes():
    """The experiment's recipes: label maps with instances; SPADE's TTUR resolves as SPADE's."""
    path = os.path.join(os.path.dirname(__file__), "..", "experiments", "pix2pixhd_cityscapes.py")
    spec = importlib.util.spec_from_file_location("pix2pixhd_cityscapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hd, spade = module.get_config("pix2pixhd_1024x512"), module.get_config("spade_512x256")
    assert (hd.image_size, hd.dataset.image_width, hd.batch_size) == (512, 1024, 1)
    assert input_pipeline.model_input_channels(hd) == LABEL_NC + 1
    assert hd.num_train_steps == 200 * 2975 and hd.loss.gan_mode == "lsgan"
    assert steps.adam_settings(hd.optimizer, "d") == (2e-4, 0.5, 0.999)
    assert steps.adam_settings(spade.optimizer, "g") == (1e-4, 0.0, 0.9)
    assert steps.adam_settings(spade.optimizer, "d") == (4e-4, 0.0, 0.9)
    assert spade.loss.gan_mode == "hinge" and (spade.image_size, spade.batch_size) == (256, 16)
