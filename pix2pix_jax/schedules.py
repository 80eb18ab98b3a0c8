"""Learning-rate schedules of the reference implementation, as pure functions of the step.

The reference (junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py,
`get_scheduler`) steps a PyTorch scheduler once per epoch. Here a schedule
maps optax's update count (0 for the update of step 1) to a rate, so the rate
of any step follows from the step alone and a resumed run is exact.

With `schedule_unit='epochs'` the count is turned into the 0-based epoch
index e = count // steps_per_epoch (a staircase, as the reference's per-epoch
scheduler); with `'steps'` the same formulas read e = count.

* constant: base.
* linear: the reference's `lambda_rule` with epoch_count = 1:
  base * (1 - max(0, e + 1 - n_epochs) / (n_epochs_decay + 1)), floored at 0
  (the reference never runs past e = n_epochs + n_epochs_decay, where the
  formula would turn negative).
* step: StepLR(step_size=lr_decay_iters, gamma=0.1): base * 0.1 ** (e // lr_decay_iters).
* cosine: CosineAnnealingLR(T_max=n_epochs, eta_min=0) in closed form:
  base * (1 + cos(pi * e / n_epochs)) / 2. As in PyTorch it is periodic: past
  T_max the rate rises again (the reference trains n_epochs + n_epochs_decay
  epochs with T_max = n_epochs, so its second half climbs back to base).
"""

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax

from pix2pix_jax.errors import ConfigError
from pix2pix_jax.registry import Registry

UNITS = ("epochs", "steps")
EPOCH_COUNT = 1  # The reference's --epoch_count: we resume by step, so it stays 1.

Factor = Callable[[jnp.ndarray], jnp.ndarray]  # 0-based epoch (or step) index -> rate factor
#: optimizer.schedule -> a function of `config.optimizer` giving the rate's factor of e
#: (None: a constant rate).
SCHEDULES: Registry[Callable[[Any], Factor | None]] = Registry("optimizer.schedule")


def _check_int(opt: Any, name: str, minimum: int) -> None:
    value = opt[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise ConfigError(f"optimizer.{name} must be {kind}, got {value!r}")


def check(opt: Any) -> None:
    """Raise a ConfigError naming the first unusable schedule field of `config.optimizer`."""
    SCHEDULES.get(opt.schedule)
    if opt.schedule_unit not in UNITS:
        raise ConfigError(f"optimizer.schedule_unit={opt.schedule_unit!r} is not one of {UNITS}")
    # cosine divides by n_epochs (its T_max); linear accepts 0 (decay from the start).
    _check_int(opt, "n_epochs", 1 if opt.schedule == "cosine" else 0)
    _check_int(opt, "n_epochs_decay", 0)
    _check_int(opt, "lr_decay_iters", 1)


def needs_epochs(opt: Any) -> bool:
    """Whether the schedule needs the number of steps per epoch to be evaluated."""
    return opt.schedule != "constant" and opt.schedule_unit == "epochs"


def steps_per_epoch(num_train_examples: int, batch_size: int) -> int:
    """Optimisation steps in one epoch: ceil(N / batch), the reference's len(DataLoader)."""
    if num_train_examples < 1:
        raise ConfigError(f"the train split is empty ({num_train_examples} examples)")
    return -(-num_train_examples // batch_size)


def linear_factor(e: jnp.ndarray, n_epochs: int, n_epochs_decay: int) -> jnp.ndarray:
    """The reference's `lambda_rule(e)` (epoch_count = 1), floored at 0."""
    decayed = jnp.maximum(0, e + EPOCH_COUNT - n_epochs) / float(n_epochs_decay + 1)
    return jnp.maximum(0.0, 1.0 - decayed)


def step_factor(e: jnp.ndarray, step_size: int) -> jnp.ndarray:
    """StepLR's factor gamma ** (e // step_size) with gamma = 0.1."""
    return jnp.power(0.1, (e // step_size).astype(jnp.float32))


def cosine_factor(e: jnp.ndarray, t_max: int) -> jnp.ndarray:
    """CosineAnnealingLR's closed form with eta_min = 0 (periodic past t_max, as PyTorch)."""
    return 0.5 * (1.0 + jnp.cos(math.pi * e.astype(jnp.float32) / t_max))


# The fields are read when the schedule is made: it must not follow later edits of the config.
SCHEDULES.register("constant")(lambda opt: None)
SCHEDULES.register("linear")(
    lambda opt: lambda e, n=opt.n_epochs, d=opt.n_epochs_decay: linear_factor(e, n, d)
)
SCHEDULES.register("step")(lambda opt: lambda e, k=opt.lr_decay_iters: step_factor(e, k))
SCHEDULES.register("cosine")(lambda opt: lambda e, t=opt.n_epochs: cosine_factor(e, t))


def make_schedule(
    opt: Any, steps_in_epoch: int | None = None, base: float | None = None
) -> optax.Schedule:
    """The schedule that `config.optimizer` describes, as a jittable function of the count.

    `steps_in_epoch` is required when the schedule counts epochs (see `needs_epochs`);
    `base` is the rate it scales (default `opt.learning_rate`; D's under TTUR).
    """
    check(opt)
    base = opt.learning_rate if base is None else base
    factor = SCHEDULES.get(opt.schedule)(opt)
    if factor is None:
        return optax.constant_schedule(base)
    if opt.schedule_unit == "epochs" and not steps_in_epoch:
        raise ConfigError(
            f"optimizer.schedule={opt.schedule!r} with schedule_unit='epochs' needs the "
            "number of steps per epoch (pass num_train_examples)"
        )
    per_unit = steps_in_epoch if opt.schedule_unit == "epochs" else 1

    def schedule(count):
        e = jnp.asarray(count, jnp.int32) // per_unit  # staircase: one value per epoch
        return base * factor(e)

    return schedule
