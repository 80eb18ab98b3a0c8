"""Where results could differ from the reference's: batch-norm statistics, dropout placement,
resampling, biases without norm, the default direction and test-time noise."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch_worker
from PIL import Image
from test_model_options import abstract_params, model_config

from pix2pix_jax import augment, convert_weights, input_pipeline, models, steps
from pix2pix_jax.configs import default
from pix2pix_jax.parallel import BATCH_AXIS

torch_worker.want("fidelity")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    torch_worker.requires_torch()
    out = torch_worker.results("fidelity", tmp_path_factory)
    inputs = np.load(out / "inputs.npz")
    return out, {k: inputs[k] for k in inputs.files}, torch_worker.load_arrays(out)


# --- 1. batch norm: PyTorch's (unbiased) running variance ---


def running_statistics(norm, calls, shards=1):
    """Norm(`norm`)'s batch statistics after train-mode `calls` (split over `shards` devices)."""
    layer = models.Norm(norm)
    variables = layer.init(jax.random.key(0), calls[0], train=False)

    def step(stats, x):
        _, updated = layer.apply(
            {**variables, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        return updated["batch_stats"]

    if shards > 1:  # a data-parallel axis, as pmap gives sync_batch
        step = jax.vmap(step, in_axes=(None, 0), out_axes=None, axis_name=BATCH_AXIS)
    stats = variables["batch_stats"]
    for x in calls:
        stats = step(stats, x.reshape((shards, -1) + x.shape[1:]) if shards > 1 else x)
    return stats["batch_norm"]


@pytest.mark.parametrize("case", range(3), ids=["1x2x2", "1x4x4", "3x4x4"])
def test_running_statistics_equal_pytorchs(reference, case):
    _, inputs, want = reference
    calls = [inputs[f"bn/{case}/{t}"] for t in range(3)]
    stats = running_statistics("batch", calls)
    np.testing.assert_allclose(stats["mean"], want[f"bn/{case}/mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], want[f"bn/{case}/var"], rtol=1e-5, atol=1e-6)


def test_sync_batch_counts_the_global_batch(reference):
    _, inputs, want = reference  # two devices of 1x2x2 each: PyTorch's 2x2x2 batch
    calls = [inputs[f"bn/3/{t}"] for t in range(3)]
    stats = running_statistics("sync_batch", calls, shards=2)
    np.testing.assert_allclose(stats["mean"], want["bn/3/mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], want["bn/3/var"], rtol=1e-5, atol=1e-6)


def test_training_outputs_are_flax_batch_norms_and_instance_norm_keeps_no_statistics():
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 5)) * 3 + 1
    ours = models.Norm("batch")
    variables = ours.init(jax.random.key(0), x, train=False)
    flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    got, _ = ours.apply(variables, x, train=True, mutable=["batch_stats"])
    inner = {k: v["batch_norm"] for k, v in variables.items()}
    want, _ = flax_bn.apply(inner, x, mutable=["batch_stats"])
    np.testing.assert_array_equal(got, want)  # only the running variance changed
    assert "batch_stats" not in models.Norm("instance").init(jax.random.key(0), x, train=False)


# --- 2. dropout placement ---


def dropout_layers(generator, size):
    """{layer name: spatial size} of the dropout layers a train-mode call runs."""
    seen = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dropout) and not kwargs.get("deterministic", True):
            seen[context.module.name] = args[0].shape[1]
        return next_fun(*args, **kwargs)

    x = jnp.zeros((1, size, size, 3))
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    with nn.intercept_methods(record):
        jax.eval_shape(functools.partial(generator.init, train=True), keys, x)
    return seen


@pytest.mark.parametrize(
    "name, size, layout, want",
    [
        ("unet_256", 256, "paper", {"up_8_dropout": 2, "up_7_dropout": 4, "up_6_dropout": 8}),
        ("unet_256", 256, "pytorch", {"up_7_dropout": 4, "up_6_dropout": 8, "up_5_dropout": 16}),
        ("unet_128", 128, "paper", {"up_7_dropout": 2, "up_6_dropout": 4, "up_5_dropout": 8}),
        ("unet_128", 128, "pytorch", {"up_6_dropout": 4, "up_5_dropout": 8}),
        ("unet", 32, "pytorch", {}),  # the reference has no dropout block below 6 downs
    ],
)
def test_the_layout_says_which_layers_are_stochastic(name, size, layout, want):
    config = model_config(generator=name, ngf=1, dropout_layout=layout)
    assert dropout_layers(models.create_generator(config, size, 3), size) == want


def test_an_unknown_layout_is_named():
    with pytest.raises(ValueError, match="model.dropout_layout='lua' is not one of"):
        models.check_config(model_config(dropout_layout="lua"), 64)


def test_a_converted_model_in_paper_mode_matches_the_reference_with_its_masks(reference):
    out, inputs, want = reference
    config = default.get_config()
    config.image_size, config.model.generator = 128, "unet_128"
    config.model.ngf = torch_worker.DROPOUT_NGF
    config = convert_weights.reference_config(config)
    assert config.model.dropout_layout == "pytorch"  # what the reference trained with
    state = convert_weights.converted_state(str(out / "unet_128.pth"), config)
    masks = {s: inputs[f"unet/mask/{s}"] for s in torch_worker.DROPOUT_SIZES}
    used = []

    def given_masks(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dropout):
            x = args[0]
            used.append(x.shape[1])
            return x * masks[x.shape[1]] / 0.5
        return next_fun(*args, **kwargs)

    setup = models.create_generator(config.model, 128, 3)
    with nn.intercept_methods(given_masks):
        variables = {"params": state.g_params, "batch_stats": state.g_batch_stats}
        fake, _ = setup.apply(
            variables, inputs["unet/x"], train=True, rngs={"dropout": jax.random.key(0)},
            mutable=["batch_stats"],
        )  # fmt: skip
    assert sorted(used) == [4, 8]
    np.testing.assert_allclose(fake, want["unet/output"], atol=1e-4)


# --- 3. one resample ---


def resample_config(image_size=256):
    config = default.get_config()
    config.image_size = image_size
    config.dataset.direction = "AtoB"
    return config


def maps_pair(size=600):
    rng = np.random.default_rng(0)
    return {f"image_{k}": rng.integers(0, 256, (size, size, 3), np.uint8) for k in "ab"}


def pillow_jitter(image, load, top, left, mirror, crop=256):
    full = np.asarray(Image.fromarray(image).resize((load, load), Image.BICUBIC))
    out = full[top : top + crop, left : left + crop]
    return out[:, ::-1] if mirror else out


def test_a_600px_pair_is_resized_once_to_286_then_cropped():
    record, recipe = maps_pair(), input_pipeline.Recipe.from_config(resample_config())
    assert recipe.load_shape == (286, 286)  # the device jitter is on for this config
    for seed in range(4):
        example = input_pipeline.make_example(record, recipe, np.random.default_rng(seed))
        assert example["host_jittered"]  # not the model's size: jittered here, once
        (top, left), mirror = input_pipeline.preprocess.draw_jitter(
            (256, 256), recipe.load_size_ratio, True, np.random.default_rng(seed)
        )
        batch = {k: np.asarray(v)[None] for k, v in example.items()}
        out = jax.jit(augment.jitter, static_argnums=1)(batch, recipe.load_shape)
        for key, side in (("input", "image_a"), ("target", "image_b")):
            want = pillow_jitter(record[side], 286, top, left, mirror)
            np.testing.assert_array_equal(example[key], want)
            np.testing.assert_array_equal(np.round((out[key][0] + 1) * 127.5), want)


def test_pictures_at_the_model_size_still_jitter_on_the_device():
    record = maps_pair(size=256)
    recipe = input_pipeline.Recipe.from_config(resample_config())
    example = input_pipeline.make_example(record, recipe, np.random.default_rng(1))
    assert not example["host_jittered"]
    (top, left), mirror = example["crop"], example["flip"]
    batch = {k: np.asarray(v)[None] for k, v in example.items()}
    out = jax.jit(augment.jitter, static_argnums=1)(batch, recipe.load_shape)
    want = pillow_jitter(record["image_a"], 286, top, left, mirror)
    np.testing.assert_array_equal(np.round((out["input"][0] + 1) * 127.5), want)


def test_evaluation_resizes_once_to_the_model_size():
    record = maps_pair()
    recipe = input_pipeline.Recipe.from_config(resample_config())
    example = input_pipeline.make_example(record, recipe, None)
    want = np.asarray(Image.fromarray(record["image_a"]).resize((256, 256), Image.BICUBIC))
    np.testing.assert_array_equal(example["input"], want)
    assert "host_jittered" not in example


# --- 4. biases without norm: see test_model_options' parameter counts ---


def test_norm_none_convolutions_have_no_bias_as_in_the_reference():
    generator = models.create_generator(model_config(generator="unet", ngf=4, norm="none"), 32, 3)
    params = abstract_params(generator, (1, 32, 32, 3))
    with_bias = sorted(k for k, v in params.items() if "bias" in v)
    assert with_bias == ["up_1"]  # only the outermost up-conv (then tanh), as the reference


# --- 5. the default direction ---


@pytest.mark.parametrize(
    "name, want",
    [("synthetic_facades/res64", "BtoA"), ("pix2pix/facades", "BtoA"), ("folder", "AtoB"),
     ("pix2pix/edges2shoes", "AtoB")],
)  # fmt: skip
def test_the_default_direction_is_the_datasets_own(name, want):
    config = default.get_config()
    config.dataset.name = name
    assert config.dataset.direction == ""
    assert input_pipeline.direction(config.dataset) == want


# --- the test-time noise: keys follow the image, not its batch slot ---


def test_eval_step_noise_follows_the_image_id(tiny_config):
    from pix2pix_jax import assembly, parallel

    setup = assembly.inference_setup(tiny_config)
    state = parallel.replicate(assembly.initial_state(tiny_config, setup))
    p_eval = parallel.pmap_step(steps.eval_step, setup=setup, mode="paper")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), np.uint8)
    ids = np.array([7, 11, 13, 17], np.int32)

    per_device = 4 // jax.local_device_count()

    def run(order, ids=ids):
        batch = {"input": images[order], "target": images[order], "id": ids[order]}
        fake, _ = p_eval(state, parallel.to_devices(batch, per_device))
        return np.asarray(fake).reshape(4, 32, 32, 3)

    forward, backward = run([0, 1, 2, 3]), run([3, 2, 1, 0])
    np.testing.assert_array_equal(forward, backward[::-1])
    assert not np.array_equal(run([0, 1, 2, 3], ids + 1), forward)
