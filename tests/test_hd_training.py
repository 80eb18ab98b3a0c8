"""Tiny training runs with the pix2pixHD / SPADE switches, and an exact resume with all of them on.

The pmapped train step that training runs, on random uint8 batches, 4 filters: one
step per switch at 8x8 with the PixelGAN (each run is one XLA compile, the cost of
these tests), and four steps with every switch on at 16x16 with a 1-layer PatchGAN
(two scales still fit: 16 and 8 pixels), straight and resumed from a checkpoint.
"""

import jax
import numpy as np
import pytest

from pix2pix_jax import assembly, benchmark, checkpointing, parallel, steps
from pix2pix_jax import config as config_lib
from pix2pix_jax.configs import default

ALL_ON = {
    "model.num_d": 2,
    "loss.lambda_feat": 10.0,
    "model.spectral_norm": "both",
    "model.upsample": "resize_conv",
    "model.upsample_method": "bilinear",
    "model.remat": True,
}


def tiny_config(size=16, discriminator="n_layers", **overrides):
    config = default.get_config()
    config.image_size, config.batch_size = size, 2
    config.model.ngf = config.model.ndf = 4
    config.model.discriminator, config.model.n_layers_d = discriminator, 1
    for field, value in overrides.items():
        section, name = field.split(".")
        config[section][name] = value
    config_lib.validate(config)
    return config


def batches(config, count):
    rng = np.random.default_rng(0)
    return [benchmark.random_batch(config, rng) for _ in range(count)]


def step_of(config):
    return parallel.pmap_step(steps.train_step, setup=assembly.make_setup(config, 100))


def train(step, state, data):
    history = []
    for batch in data:
        state, m = step(state, batch)
        history.append({k: float(v[0]) for k, v in jax.device_get(m).items()})
    return state, history


def fresh_state(config):
    setup = assembly.make_setup(config, num_train_examples=100)
    return parallel.replicate(assembly.initial_state(config, setup))


# upsample_method alone changes nothing (it is resize_conv's): resize_conv runs nearest here.
@pytest.mark.parametrize("field", [f for f in ALL_ON if f != "model.upsample_method"])
def test_one_training_step_per_switch(field):
    config = tiny_config(8, "pixel", **{field: ALL_ON[field]})
    start = fresh_state(config)
    before = jax.device_get(parallel.unreplicate(start))
    state, [m] = train(step_of(config), start, batches(config, 1))
    assert all(np.isfinite(v) for v in m.values()), m
    assert (m["g_feat"] > 0) == (field == "loss.lambda_feat")
    after = jax.device_get(parallel.unreplicate(state))
    assert int(after.step) == 1
    for name in ("g_params", "d_params"):  # both networks learned
        moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), getattr(before, name),
                             getattr(after, name))  # fmt: skip
        assert any(jax.tree.leaves(moved)), name
    if field == "model.spectral_norm":  # the power iteration's state advanced, in the state
        u = [k for k in after.d_batch_stats["conv_0_sn"] if k.endswith("/u")][0]
        assert not np.array_equal(before.d_batch_stats["conv_0_sn"][u],
                                  after.d_batch_stats["conv_0_sn"][u])  # fmt: skip
        assert "down_1_sn" in after.g_batch_stats
    if field == "model.num_d":
        assert set(after.d_params) == {"scale_0", "scale_1"}


def test_resume_is_bitwise_exact_with_every_switch_on(tmp_path):
    config = tiny_config(**ALL_ON)
    data, step = batches(config, 4), step_of(config)
    straight, history = train(step, fresh_state(config), data)
    assert all(np.isfinite(v) for m in history for v in m.values())
    assert all(m["g_feat"] > 0 for m in history)

    half, _ = train(step, fresh_state(config), data[:2])
    saver = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=2)
    saver.save(2, parallel.unreplicate(half), {"step": 2})
    saver.close()
    # A new process would see only the config: the template comes from it alone.
    template = assembly.state_template(config)
    restored, data_state = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), 2).restore(
        2, template
    )
    assert data_state == {"step": 2} and int(restored.step) == 2
    resumed, _ = train(step, parallel.replicate(restored), data[2:])

    expected = jax.tree_util.tree_flatten_with_path(jax.device_get(straight))[0]
    got = jax.tree_util.tree_flatten_with_path(jax.device_get(resumed))[0]
    assert [p for p, _ in expected] == [p for p, _ in got]
    names = [jax.tree_util.keystr(p) for p, _ in expected]
    assert any("/kernel/u" in n for n in names)  # spectral norm's state is checkpointed
    for (path, a), (_, b) in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
