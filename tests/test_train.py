"""The train step and the loop: learning, workdir contents, exact resume, divergence."""

import functools
import gc
import glob
import json
import os

import flax.jax_utils
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pix2pix_jax import assembly, models, parallel, steps, trainer


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_steps_on_a_fixed_batch_lower_the_loss(tiny_config):
    tiny_config.optimizer.learning_rate = 1e-3
    setup = assembly.make_setup(tiny_config)
    state = flax.jax_utils.replicate(assembly.initial_state(tiny_config, setup), axis_name="batch")
    rng = np.random.default_rng(0)
    n = jax.local_device_count()
    coarse = rng.uniform(-1, 1, (n, 2 // n, 4, 4, 3)).astype(np.float32)
    x = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)
    batch = {"input": x, "target": -x[..., ::-1]}  # a learnable mapping
    step = parallel.pmap_train_step(steps.train_step, setup=setup)
    history = []
    for _ in range(25):
        state, m = step(state, batch)
        history.append(jax.device_get(m))
    first, last = history[0], history[-1]
    assert last["g_l1"][0] < 0.75 * first["g_l1"][0], [h["g_l1"][0] for h in history]
    assert last["g_loss"][0] < first["g_loss"][0]
    assert int(flax.jax_utils.unreplicate(state).step) == 25
    assert all(np.isfinite(h["d_loss"][0]) for h in history)


def test_one_generator_forward_per_step(tiny_config, monkeypatch):
    monkeypatch.setattr(
        models.cpu_kernels, "DOT_MAX_POSITIONS", {"down": 0, "up": 0}
    )  # convs stay convs
    setup = assembly.make_setup(tiny_config)
    state = assembly.initial_state(tiny_config, setup)
    batch = {"input": jnp.zeros((1, 2, 32, 32, 3)), "target": jnp.zeros((1, 2, 32, 32, 3))}
    step = jax.vmap(functools.partial(steps.train_step, setup=setup), axis_name=parallel.BATCH_AXIS)
    jaxpr = str(jax.make_jaxpr(step)(jax.tree.map(lambda a: a[None], state), batch))
    # Only the generator's first conv takes a 3 -> ngf kernel; a second generator forward
    # (e.g. for the G update) would show a second such convolution.
    kernel = f"f32[4,4,3,{tiny_config.model.ngf}]"
    conv_lines = [ln for ln in jaxpr.splitlines() if "conv_general_dilated" in ln and kernel in ln]
    assert len(conv_lines) == 1, conv_lines


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    from conftest import make_tiny_config

    workdir = str(tmp_path_factory.mktemp("full"))
    final = trainer.train_and_evaluate(make_tiny_config(data_dir), workdir)
    return workdir, final


def test_workdir_holds_what_the_contract_says(uninterrupted):
    workdir, final = uninterrupted
    assert int(final.step) == 4
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["image_size"] == 32
    records = read_metrics(workdir)
    train_lines = [r for r in records if "split" not in r]
    eval_lines = [r for r in records if r.get("split") == "val"]
    assert [r["step"] for r in train_lines] == [2, 4]
    for r in train_lines:
        assert {"g_loss", "g_gan", "g_l1", "d_loss", "learning_rate", "images_per_second"} <= set(r)
        assert r["learning_rate"] == pytest.approx(2e-4)
    assert [r["step"] for r in eval_lines] == [0, 2, 4]
    assert all({"l1", "psnr", "ssim"} <= set(r) for r in eval_lines)
    samples = sorted(os.listdir(os.path.join(workdir, "samples")))
    assert samples == ["step_0000000.png", "step_0000002.png", "step_0000004.png"]
    assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]


def memory_maps() -> int:
    """This process's memory maps (0 where the system has no /proc, e.g. macOS)."""
    gc.collect()
    if not os.path.exists("/proc/self/maps"):
        return 0
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def test_resume_continues_exactly(uninterrupted, tiny_config, tmp_path):
    _, expected = uninterrupted
    workdir = str(tmp_path)
    tiny_config.num_train_steps = 2
    trainer.train_and_evaluate(tiny_config, workdir)
    maps_after_one_run = memory_maps()
    tiny_config.num_train_steps = 4
    resumed = trainer.train_and_evaluate(tiny_config, workdir)
    # A finished run releases its executables (XLA:CPU: thousands of memory maps each),
    # or runs one after another in a process would reach the kernel's limit of maps.
    assert memory_maps() - maps_after_one_run < 1000
    assert int(resumed.step) == 4
    steps_logged = [r["step"] for r in read_metrics(workdir) if "split" not in r]
    assert steps_logged == [2, 4]  # the second run started at step 3
    # Same data order, dropout masks and optimizer state: bitwise the same parameters.
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_divergence_stops_with_the_step_and_keeps_checkpoints(tiny_config, tmp_path):
    workdir = str(tmp_path)
    tiny_config.num_train_steps = 2
    trainer.train_and_evaluate(tiny_config, workdir)
    tiny_config.num_train_steps = 4
    tiny_config.loss.lambda_l1 = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite .*g_loss.* at step 4"):
        trainer.train_and_evaluate(tiny_config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("dataset.direction", "AB", "dataset.direction='AB'"),
        ("num_train_steps", 0, "num_train_steps must be a positive integer"),
        ("eval.mode", "noisy", "eval.mode='noisy'"),
        ("model.generator", "unet_256", "divisible by 256"),
    ],
)
def test_bad_config_is_rejected_by_name(tiny_config, tmp_path, field, value, message):
    section, _, name = field.rpartition(".")
    (tiny_config[section] if section else tiny_config)[name] = value
    with pytest.raises(ValueError, match=message):
        trainer.train_and_evaluate(tiny_config, str(tmp_path))
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_eval_modes(tiny_config):
    setup = assembly.make_setup(tiny_config)
    state = assembly.initial_state(tiny_config, setup)
    # Running averages unlike the batch's own statistics, so the two modes must differ.
    state = state.replace(g_batch_stats=jax.tree.map(lambda v: v + 0.5, state.g_batch_stats))
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    paper = [steps.generate(state, x, setup, "paper", k) for k in (k1, k1, k2)]
    np.testing.assert_array_equal(paper[0], paper[1])  # a function of the key
    assert not np.allclose(paper[0], paper[2])  # dropout is on: the key matters
    det = [steps.generate(state, x, setup, "deterministic", k) for k in (k1, k2)]
    np.testing.assert_array_equal(det[0], det[1])  # no dropout
    assert not np.allclose(det[0], paper[0])  # running averages, not batch statistics
    with pytest.raises(ValueError, match="eval.mode='noisy'"):
        steps.generate(state, x, setup, "noisy", k1)


def test_bfloat16_compute_keeps_float32_state_and_losses(tiny_config):
    tiny_config.model.compute_dtype = "bfloat16"
    setup = assembly.make_setup(tiny_config)
    state = jax.tree.map(lambda a: a[None], assembly.initial_state(tiny_config, setup))
    rng = np.random.default_rng(0)
    batch = {k: rng.integers(0, 256, (1, 2, 32, 32, 3), np.uint8) for k in ("input", "target")}
    step = jax.jit(
        jax.vmap(functools.partial(steps.train_step, setup=setup), axis_name=parallel.BATCH_AXIS)
    )
    new_state, step_metrics = step(state, batch)
    floats = [a for a in jax.tree.leaves(new_state) if jnp.issubdtype(a.dtype, jnp.floating)]
    assert floats and all(a.dtype == jnp.float32 for a in floats)
    for name, value in step_metrics.items():
        assert value.dtype == jnp.float32 and np.isfinite(value).all(), name
    # The activations really are bfloat16: G's output has bfloat16 precision.
    fake = setup.generator.apply(
        {"params": jax.tree.map(lambda a: a[0], new_state.g_params),
         "batch_stats": jax.tree.map(lambda a: a[0], new_state.g_batch_stats)},
        steps.to_model_range(batch["input"][0]), train=False,
    )  # fmt: skip
    assert fake.dtype == jnp.bfloat16
