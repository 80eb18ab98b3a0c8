"""Learning-rate schedules against independent re-implementations of the reference's."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pix2pix_jax import config as config_lib
from pix2pix_jax import input_pipeline, schedules, steps
from pix2pix_jax.configs import default

BASE = 2e-4
N_EPOCHS, N_EPOCHS_DECAY, LR_DECAY_ITERS = 3, 4, 2
NUM_EXAMPLES, BATCH = 10, 4  # ceil(10 / 4) = 3 steps per epoch


def reference_rates(policy, num_epochs):
    """The rate of each 0-based epoch as PyTorch's schedulers produce it, stepping once an epoch.

    LambdaLR evaluates the reference's lambda_rule; StepLR and CosineAnnealingLR
    are run in their recursive (chainable) form, as `scheduler.step()` computes them.
    """
    if policy == "linear":

        def lambda_rule(epoch, epoch_count=1):
            return 1.0 - max(0, epoch + epoch_count - N_EPOCHS) / float(N_EPOCHS_DECAY + 1)

        return [BASE * lambda_rule(e) for e in range(num_epochs)]
    rates, lr = [], BASE
    for e in range(num_epochs):
        if policy == "step" and e > 0 and e % LR_DECAY_ITERS == 0:
            lr *= 0.1
        if policy == "cosine" and e > 0:
            t = N_EPOCHS
            if (e - 1 - t) % (2 * t) == 0:
                lr = lr + BASE * (1 - math.cos(math.pi / t)) / 2
            else:
                lr = (1 + math.cos(math.pi * e / t)) / (1 + math.cos(math.pi * (e - 1) / t)) * lr
        rates.append(lr)
    return rates


def make_config(policy, unit):
    config = default.get_config()
    opt = config.optimizer
    opt.learning_rate, opt.schedule, opt.schedule_unit = BASE, policy, unit
    opt.n_epochs, opt.n_epochs_decay, opt.lr_decay_iters = N_EPOCHS, N_EPOCHS_DECAY, LR_DECAY_ITERS
    config.batch_size = BATCH
    return config


@pytest.mark.parametrize("unit", schedules.UNITS)
@pytest.mark.parametrize("policy", ["linear", "step", "cosine"])
def test_schedule_follows_the_reference(policy, unit):
    # linear ends at e = n_epochs + n_epochs_decay - 1; cosine passes T_max and climbs back.
    num_units = N_EPOCHS + N_EPOCHS_DECAY
    per_unit = 3 if unit == "epochs" else 1
    expected = reference_rates(policy, num_units)
    schedule = steps.learning_rate_schedule(make_config(policy, unit), NUM_EXAMPLES)
    counts = np.arange(num_units * per_unit)
    got = jax.jit(jax.vmap(schedule))(counts)
    want = [expected[c // per_unit] for c in counts]  # staircase: constant within an epoch
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-10)
    assert float(schedule(int(counts[-1]))) == pytest.approx(want[-1], rel=1e-5, abs=1e-10)


def test_linear_endpoints_and_floor():
    schedule = steps.learning_rate_schedule(make_config("linear", "steps"))
    assert float(schedule(N_EPOCHS - 1)) == pytest.approx(BASE)  # last step at the full rate
    assert float(schedule(N_EPOCHS)) == pytest.approx(BASE * (1 - 1 / (N_EPOCHS_DECAY + 1)))
    last = N_EPOCHS + N_EPOCHS_DECAY - 1  # the reference's last epoch: base / (decay + 1)
    assert float(schedule(last)) == pytest.approx(BASE / (N_EPOCHS_DECAY + 1))
    # Past the reference's end its formula turns negative; ours stays at 0.
    assert [float(schedule(last + k)) for k in (1, 2, 50)] == [0.0, 0.0, 0.0]


def test_constant_is_the_default_and_needs_no_dataset():
    config = make_config("constant", "epochs")
    schedule = steps.learning_rate_schedule(config)  # no examples count, no data access
    assert [float(schedule(c)) for c in (0, 10**6)] == [BASE, BASE]


def test_the_optimizer_steps_with_the_scheduled_rate():
    # Adam's update of a constant gradient is -lr * g / (|g| + eps): the rate itself.
    tx = steps.make_optimizer(make_config("cosine", "epochs"), NUM_EXAMPLES)
    schedule = steps.learning_rate_schedule(make_config("cosine", "epochs"), NUM_EXAMPLES)
    params = jnp.zeros(())
    opt_state = tx.init(params)
    for count in range(12):
        updates, opt_state = tx.update(jnp.ones(()), opt_state, params)
        assert float(-updates) == pytest.approx(float(schedule(count)), rel=1e-5)


def test_a_rebuilt_schedule_gives_the_same_rates():
    # What a resumed run does: build the schedule again and read it at the saved count.
    counts = jnp.arange(40)
    for policy in ("linear", "step", "cosine"):
        first = steps.learning_rate_schedule(make_config(policy, "epochs"), NUM_EXAMPLES)
        config = make_config(policy, "epochs")
        second = steps.learning_rate_schedule(config, NUM_EXAMPLES)
        config.optimizer.n_epochs = 50  # later edits of the config do not leak in
        np.testing.assert_array_equal(jax.vmap(first)(counts), jax.vmap(second)(counts))


def test_steps_per_epoch_is_the_reference_dataloader_length():
    assert [schedules.steps_per_epoch(n, 4) for n in (1, 4, 5, 400)] == [1, 1, 2, 100]
    with pytest.raises(ValueError, match="empty"):
        schedules.steps_per_epoch(0, 4)


def test_epoch_schedule_counts_the_train_split_the_loop_passes(tiny_config):
    tiny_config.optimizer.schedule = "step"
    tiny_config.optimizer.lr_decay_iters = 1
    # The functional core reads no dataset: without the split size the schedule is refused.
    with pytest.raises(ValueError, match="needs the number of steps per epoch"):
        steps.learning_rate_schedule(tiny_config)
    size = len(input_pipeline.load_split(tiny_config.dataset, tiny_config.dataset.train_split))
    per_epoch = schedules.steps_per_epoch(size, tiny_config.batch_size)
    schedule = steps.learning_rate_schedule(tiny_config, size)  # as the train loop calls it
    lr = tiny_config.optimizer.learning_rate
    assert float(schedule(per_epoch - 1)) == pytest.approx(lr)
    assert float(schedule(per_epoch)) == pytest.approx(lr * 0.1)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("schedule", "foo", r"optimizer.schedule='foo' is not one of \('constant', 'linear'"),
        ("schedule_unit", "iters", r"optimizer.schedule_unit='iters' is not one of \('epochs'"),
        ("n_epochs", -1, "optimizer.n_epochs must be a non-negative integer"),
        ("n_epochs_decay", 1.5, "optimizer.n_epochs_decay must be a non-negative integer"),
        ("lr_decay_iters", 0, "optimizer.lr_decay_iters must be a positive integer"),
    ],
)
def test_bad_schedule_fields_are_named(field, value, message):
    config = make_config("linear", "epochs")
    with config.unlocked(), config.optimizer.ignore_type():
        config.optimizer[field] = value
    with pytest.raises(ValueError, match=message):
        config_lib.validate(config)
    with pytest.raises(ValueError, match=message):
        steps.learning_rate_schedule(config, NUM_EXAMPLES)


def test_cosine_needs_a_positive_t_max():
    config = make_config("cosine", "steps")
    config.optimizer.n_epochs = 0
    with pytest.raises(ValueError, match="optimizer.n_epochs must be a positive integer"):
        steps.learning_rate_schedule(config)


def test_epoch_units_without_a_count_are_refused_by_make_schedule():
    with pytest.raises(ValueError, match="steps per epoch"):
        schedules.make_schedule(make_config("linear", "epochs").optimizer)
