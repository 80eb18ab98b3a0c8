"""WGAN-GP and the Table 1 switches: values by hand, what each row trains, validation."""

import math

import flax.jax_utils
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pix2pix_jax import assembly, losses, parallel, steps
from pix2pix_jax import config as config_lib


def test_wgangp_values():
    real, fake = jnp.array([2.0, 0.5]), jnp.array([-3.0, 0.5])
    # D: 0.5 * (-mean(real) + mean(fake)) = 0.5 * (-1.25 - 1.25); G: -mean(fake).
    assert float(losses.discriminator_loss(real, fake, "wgangp")) == pytest.approx(-1.25)
    assert float(losses.generator_gan_loss(fake, "wgangp")) == pytest.approx(1.25)


def test_gradient_penalty_of_a_linear_d_is_lambda_times_norm_minus_one_squared():
    w = jnp.array([[[[3.0, 0.0], [0.0, 4.0]]]])  # ||w|| = 5 whatever the interpolate

    def linear_d(v):
        return (v * w).sum(axis=(1, 2, 3))

    real, fake = jnp.ones((3, 1, 2, 2)), -jnp.ones((3, 1, 2, 2))
    alpha = jnp.array([0.0, 0.3, 1.0]).reshape(3, 1, 1, 1)
    penalty = losses.gradient_penalty(linear_d, real, fake, alpha, lambda_gp=10.0)
    assert float(penalty) == pytest.approx(10.0 * (5.0 - 1.0) ** 2)


def test_gradient_penalty_interpolates_per_example():
    # D(v) = |v|^2 / 2 has gradient v: the norm is that of alpha * real + (1 - alpha) * fake.
    def quadratic_d(v):
        return 0.5 * (v**2).sum(axis=(1, 2, 3))

    real, fake = jnp.ones((2, 2, 2, 4)), jnp.zeros((2, 2, 2, 4))  # 16 values per example
    alpha = jnp.array([0.25, 1.0]).reshape(2, 1, 1, 1)
    norms = [0.25 * 4.0, 1.0 * 4.0]
    expected = 2.0 * np.mean([(n - 1.0) ** 2 for n in norms])
    penalty = losses.gradient_penalty(quadratic_d, real, fake, alpha, lambda_gp=2.0)
    assert float(penalty) == pytest.approx(expected, rel=1e-6)


def test_gradient_penalty_has_finite_gradients_where_d_is_flat():
    def penalty(scale):
        return losses.gradient_penalty(
            lambda v: scale * v.sum(axis=(1, 2, 3)),
            jnp.ones((2, 2, 2, 1)), jnp.zeros((2, 2, 2, 1)), jnp.full((2, 1, 1, 1), 0.5),
        )  # fmt: skip

    value, grad = jax.value_and_grad(penalty)(0.0)
    assert float(value) == pytest.approx(10.0)  # (0 - 1)^2 * 10
    assert np.isfinite(float(grad))


def test_penalty_key_is_a_pure_function_distinct_from_the_dropout_key():
    def keys(step):
        both = (steps.dropout_key(0, step), steps.penalty_key(0, step))
        return tuple(jax.random.key_data(k) for k in both)

    mapped = jax.vmap(keys, axis_name=parallel.BATCH_AXIS)
    dropout, penalty = mapped(jnp.array([3, 3]))
    again = mapped(jnp.array([3, 3]))[1]
    assert not np.array_equal(dropout, penalty)
    np.testing.assert_array_equal(penalty, again)
    assert not np.array_equal(penalty[0], penalty[1])  # one draw per device


def test_unconditional_d_is_built_on_the_image_channels(tiny_config):
    ndf, first_kernels = tiny_config.model.ndf, {}
    for conditional in (True, False):
        tiny_config.loss.conditional_d = conditional
        setup = assembly.make_setup(tiny_config)
        # Shapes only: abstract evaluation builds D without compiling anything.
        state = jax.eval_shape(lambda setup=setup: steps.init_state(setup, (32, 32, 3), 3))
        kernels = [a.shape for a in jax.tree.leaves(state.d_params) if a.ndim == 4]
        first_kernels[conditional] = [k for k in kernels if k[-1] == ndf]  # only layer 1 has ndf
    assert first_kernels == {True: [(4, 4, 6, ndf)], False: [(4, 4, 3, ndf)]}


def fixed_batch(seed=0):
    n = jax.local_device_count()
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 2 // n, 32, 32, 3)).astype(np.float32)
    return {"input": x, "target": np.tanh(-x[..., ::-1] + 0.1)}


@pytest.fixture(scope="module")
def initial_states(data_dir):
    """Host initial states of the tiny model for a conditional and an unconditional D.

    Each init compiles for tens of seconds on CPU, so there is one: the
    unconditional D's first kernel is the conditional one's image half, a draw
    from the same N(0, 0.02), of the shape `init_state` gives (checked here).
    """
    from conftest import make_tiny_config

    config = make_tiny_config(data_dir)
    setup = assembly.make_setup(config)
    conditional = assembly.initial_state(config, setup)  # the same compile as test_train's
    d_params = jax.tree.map(lambda a: a[:, :, 3:] if a.ndim == 4 and a.shape[2] == 6 else a,
                            conditional.d_params)  # fmt: skip
    unconditional = conditional.replace(
        d_params=d_params, d_opt_state=jax.device_get(setup.d_tx.init(d_params))
    )
    config.loss.conditional_d = False
    setup = assembly.make_setup(config)
    expected = jax.eval_shape(lambda: steps.init_state(setup, (32, 32, 3), 3))
    assert jax.tree.map(np.shape, unconditional) == jax.tree.map(np.shape, expected)
    return {True: conditional, False: unconditional}


def run(config, initial, num_steps=2):
    """The final host state and the per-step host metrics of a few steps from `initial`."""
    setup = assembly.make_setup(config)
    state = flax.jax_utils.replicate(initial, axis_name=parallel.BATCH_AXIS)
    step = parallel.pmap_train_step(steps.train_step, setup=setup)
    history = []
    for _ in range(num_steps):
        state, m = step(state, fixed_batch())
        history.append({k: float(v[0]) for k, v in jax.device_get(m).items()})
    return jax.device_get(flax.jax_utils.unreplicate(state)), history


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def assert_changed(a, b):
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    assert any(not np.array_equal(x, y) for x, y in pairs)


# Four compiled steps: one per objective (vanilla is test_train's), each on a row of Table 1.
# "L1+GAN" (conditional_d=False with L1) is the GAN row's D with the L1+cGAN row's G loss.
ROWS = {
    "L1 only": dict(use_gan=False),
    "GAN (lsgan)": dict(gan_mode="lsgan", conditional_d=False, lambda_l1=0.0),
    "cGAN (hinge)": dict(gan_mode="hinge", lambda_l1=0.0),
    "L1+cGAN (wgangp)": dict(gan_mode="wgangp"),
}


@pytest.mark.parametrize("row", ROWS, ids=list(ROWS))
def test_table1_rows_train_what_they_say(tiny_config, initial_states, row):
    tiny_config.loss.update(ROWS[row])
    config_lib.validate(tiny_config)
    loss = tiny_config.loss
    initial = initial_states[loss.conditional_d]
    final, history = run(tiny_config, initial)
    assert all(math.isfinite(v) for m in history for v in m.values()), history
    assert final.step == 2
    assert_changed(initial.g_params, final.g_params)
    for m in history:
        assert m["g_l1"] > 0  # reported in every row
        if loss.lambda_l1 == 0:
            assert m["g_loss"] == m["g_gan"]
        else:
            assert m["g_loss"] == pytest.approx(m["g_gan"] + loss.lambda_l1 * m["g_l1"], 1e-5)
    if not loss.use_gan:  # D neither updated nor evaluated
        assert_trees_equal(initial.d_params, final.d_params)
        assert_trees_equal(initial.d_batch_stats, final.d_batch_stats)
        assert_trees_equal(initial.d_opt_state, final.d_opt_state)
        assert all(m["d_loss"] == 0.0 and m["g_gan"] == 0.0 for m in history)
    else:
        assert_changed(initial.d_params, final.d_params)
    if loss.gan_mode == "wgangp":
        assert all(m["d_gp"] > 0 for m in history)
    else:
        assert all("d_gp" not in m for m in history)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("gan_mode", "wgan", r"loss.gan_mode='wgan' is not one of \('vanilla', .*'wgangp'\)"),
        ("use_gan", 0, "loss.use_gan must be True or False"),
        ("conditional_d", "yes", "loss.conditional_d must be True or False"),
        ("lambda_l1", -1.0, "loss.lambda_l1 must be a non-negative number"),
        ("lambda_gp", -0.5, "loss.lambda_gp must be a non-negative number"),
    ],
)
def test_bad_loss_fields_are_named(tiny_config, field, value, message):
    loss = tiny_config.loss.to_dict()
    loss[field] = value  # past ConfigDict's type checks, as a hand-written config could
    tiny_config.loss = ml_collections.ConfigDict(loss)
    with pytest.raises(ValueError, match=message):
        config_lib.validate(tiny_config)


def test_no_gan_and_no_l1_is_nothing_to_train(tiny_config):
    tiny_config.loss.use_gan = False
    tiny_config.loss.lambda_l1 = 0.0
    with pytest.raises(ValueError, match="nothing to train: loss.use_gan=False"):
        config_lib.validate(tiny_config)
