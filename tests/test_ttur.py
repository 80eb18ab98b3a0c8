"""Two time-scale update rule: D's own Adam rate and betas (optimizer.d_*), G's unchanged."""

import flax
import jax
import numpy as np
import optax
import pytest

from pix2pix_jax import assembly, parallel, steps
from pix2pix_jax import config as config_lib
from pix2pix_jax.configs import default
from pix2pix_jax.errors import ConfigError

# SPADE's TTUR (Park et al. 2019): lr_G 1e-4, lr_D 4e-4, betas (0, 0.9) for both.
G_LR, D_LR, B1, B2 = 1e-4, 4e-4, 0.0, 0.9


def ttur_config():
    config = default.get_config()
    config.image_size, config.batch_size = 16, 2
    config.model.ngf = config.model.ndf = 8
    # A small, fast-compiling pair: the optimizers are what is tested.
    config.model.generator, config.model.discriminator = "resnet_6blocks", "pixel"
    opt = config.optimizer
    opt.learning_rate, opt.b1, opt.b2 = G_LR, B1, B2
    opt.d_learning_rate, opt.d_b1, opt.d_b2 = D_LR, B1, B2
    return config


def test_default_d_shares_g_optimizer():
    """The paper's default: one Adam for both (the same object, so the same updates)."""
    config = default.get_config()
    config_lib.validate(config)
    setup = assembly.make_setup(config, num_train_examples=10)
    assert setup.d_tx is setup.g_tx
    assert steps.adam_settings(config.optimizer, "d") == (2e-4, 0.5, 0.999)


def test_adam_settings_sentinels():
    opt = default.get_config().optimizer
    opt.learning_rate, opt.b1, opt.b2 = 1e-3, 0.5, 0.99
    opt.d_b1 = 0.0  # a real beta of 0, not "G's"
    assert steps.adam_settings(opt, "d") == (1e-3, 0.0, 0.99)
    opt.d_learning_rate, opt.d_b2 = 5e-3, 0.9
    assert steps.adam_settings(opt, "d") == (5e-3, 0.0, 0.9)
    assert steps.adam_settings(opt, "g") == (1e-3, 0.5, 0.99)


@pytest.mark.parametrize("unit", ["steps", "epochs"])
def test_d_optimizer_is_adam_with_its_settings_and_the_schedule(unit):
    config = ttur_config()
    config.optimizer.schedule, config.optimizer.schedule_unit = "linear", unit
    config.optimizer.n_epochs, config.optimizer.n_epochs_decay = 1, 2
    setup = assembly.make_setup(config, num_train_examples=2)  # one step per epoch
    factor = lambda count: max(0.0, 1.0 - max(0, count + 1 - 1) / 3.0)  # noqa: E731
    for tx, lr in ((setup.d_tx, D_LR), (setup.g_tx, G_LR)):
        ref = optax.scale_by_adam(b1=B1, b2=B2)
        params = {"w": np.linspace(-1, 1, 5, dtype=np.float32)}
        state, ref_state = tx.init(params), ref.init(params)
        for count in range(4):
            grads = {"w": np.cos(np.arange(5, dtype=np.float32) * (count + 1))}
            updates, state = tx.update(grads, state, params)
            expected, ref_state = ref.update(grads, ref_state, params)
            np.testing.assert_allclose(
                updates["w"], -lr * factor(count) * expected["w"], rtol=1e-5, atol=1e-12
            )


def test_one_train_step_uses_each_networks_adam():
    """After one step, each network's change is -lr * m_hat / (sqrt(v_hat) + eps) of its
    own Adam moments, and the moments carry its own betas (mu = (1 - b1) g, nu = (1 - b2) g^2).
    """
    config = ttur_config()
    config.optimizer.b1, config.optimizer.b2 = 0.5, 0.999  # G: the paper's; D: SPADE's
    setup = assembly.make_setup(config, num_train_examples=10)
    initial = assembly.initial_state(config, setup)
    rng = np.random.default_rng(0)
    n = jax.local_device_count()
    batch = {k: rng.integers(0, 256, (n, 2 // n, 16, 16, 3), np.uint8) for k in ("input", "target")}
    state = flax.jax_utils.replicate(initial)
    step = parallel.pmap_train_step(steps.train_step, setup=setup)
    new, _ = step(state, batch)
    new = jax.device_get(flax.jax_utils.unreplicate(new))
    for net, (lr, b1, b2) in {"d": (D_LR, B1, B2), "g": (G_LR, 0.5, 0.999)}.items():
        adam = getattr(new, f"{net}_opt_state")[0]
        before, after = getattr(initial, f"{net}_params"), getattr(new, f"{net}_params")
        for mu, nu, p0, p1 in zip(
            *map(jax.tree.leaves, (adam.mu, adam.nu, before, after)), strict=True
        ):
            g = mu / (1 - b1)
            np.testing.assert_allclose(nu, (1 - b2) * g * g, rtol=1e-4, atol=1e-30)
            expected = p0 - lr * g / (np.sqrt(nu / (1 - b2)) + 1e-8)
            np.testing.assert_allclose(p1, expected, rtol=1e-4, atol=lr * 1e-3)


@pytest.mark.parametrize(
    "field, value",
    [("d_learning_rate", -1e-4), ("d_b1", 1.0), ("d_b2", float("nan")), ("b1", -0.1)],
)
def test_bad_d_settings_name_the_field(field, value):
    config = default.get_config()
    config.optimizer[field] = value
    with pytest.raises(ConfigError, match=f"optimizer.{field}"):
        config_lib.validate(config)
