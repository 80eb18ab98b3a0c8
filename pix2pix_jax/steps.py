"""The functional core of training: the train state and the pure step functions.

`train_step(state, batch, setup)` runs on one device and is the same function
whether `jax.pmap` maps it over one device or many: it derives its dropout key
from (seed, step, device index), runs the generator forward once, updates D,
then pulls the G gradient back through the saved VJP of that forward pass.
"""

import dataclasses
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from pix2pix_jax import losses, metrics
from pix2pix_jax.models import BATCH_AXIS

PyTree = Any
Batch = dict[str, jax.Array]
EVAL_MODES = ("paper", "deterministic")


@flax.struct.dataclass
class TrainState:
    """Everything that training updates: a plain pytree, checkpointed whole."""

    step: jax.Array
    g_params: PyTree
    g_batch_stats: PyTree
    g_opt_state: optax.OptState
    d_params: PyTree
    d_batch_stats: PyTree
    d_opt_state: optax.OptState


@dataclasses.dataclass(frozen=True)
class Setup:
    """The static pieces a step closes over: networks, optimisers and loss settings."""

    generator: nn.Module
    discriminator: nn.Module
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    seed: int
    gan_mode: str = "vanilla"
    lambda_l1: float = 100.0


def init_state(setup: Setup, image_shape: tuple[int, int, int], input_channels: int) -> TrainState:
    """A fresh train state for images of `image_shape` (H, W, output channels)."""
    h, w, out_channels = image_shape
    g_key, d_key = jax.random.split(jax.random.key(setup.seed))
    x = jnp.zeros((1, h, w, input_channels))
    g_vars = setup.generator.init({"params": g_key}, x, train=False)
    d_vars = setup.discriminator.init(
        {"params": d_key}, jnp.zeros((1, h, w, input_channels + out_channels)), train=False
    )
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_vars["params"],
        g_batch_stats=g_vars.get("batch_stats", {}),
        g_opt_state=setup.g_tx.init(g_vars["params"]),
        d_params=d_vars["params"],
        d_batch_stats=d_vars.get("batch_stats", {}),
        d_opt_state=setup.d_tx.init(d_vars["params"]),
    )


def dropout_key(seed: int, step: jax.Array) -> jax.Array:
    """The dropout key of `step` on this device: a function of seed, step and device only."""
    key = jax.random.fold_in(jax.random.key(seed), step)
    return jax.random.fold_in(key, lax.axis_index(BATCH_AXIS))


def _discriminate(setup: Setup, d_params, batch_stats, x, y):
    """D's logits on the (input, image) pair in train mode, and its new batch statistics."""
    logits, updates = setup.discriminator.apply(
        {"params": d_params, "batch_stats": batch_stats},
        jnp.concatenate([x, y.astype(x.dtype)], axis=-1),
        train=True,
        mutable=["batch_stats"],
    )
    return logits, updates.get("batch_stats", {})


def train_step(state: TrainState, batch: Batch, setup: Setup) -> tuple[TrainState, dict]:
    """One pix2pix step on this device's shard of the batch: a D update, then a G update.

    As in the reference, D sees the fake and the real pair in separate calls
    (separate batch statistics), and G is updated against the freshly updated D.
    """
    x, y = batch["input"], batch["target"]

    def generate(g_params):
        fake, updates = setup.generator.apply(
            {"params": g_params, "batch_stats": state.g_batch_stats},
            x,
            train=True,
            rngs={"dropout": dropout_key(setup.seed, state.step)},
            mutable=["batch_stats"],
        )
        return fake, updates.get("batch_stats", {})

    fake, g_vjp, g_batch_stats = jax.vjp(generate, state.g_params, has_aux=True)

    def d_loss_fn(d_params):
        fake_logits, stats = _discriminate(
            setup, d_params, state.d_batch_stats, x, lax.stop_gradient(fake)
        )
        real_logits, stats = _discriminate(setup, d_params, stats, x, y)
        return losses.discriminator_loss(real_logits, fake_logits, setup.gan_mode), stats

    (d_loss, d_batch_stats), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
    d_grads = lax.pmean(d_grads, BATCH_AXIS)
    d_updates, d_opt_state = setup.d_tx.update(d_grads, state.d_opt_state, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_loss_fn(fake):
        fake_logits, stats = _discriminate(setup, d_params, d_batch_stats, x, fake)
        g_gan = losses.generator_gan_loss(fake_logits, setup.gan_mode)
        g_l1 = losses.l1_loss(fake, y)
        return g_gan + setup.lambda_l1 * g_l1, (g_gan, g_l1, stats)

    (g_loss, (g_gan, g_l1, d_batch_stats)), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(
        fake
    )
    (g_grads,) = g_vjp(fake_grad)
    g_grads = lax.pmean(g_grads, BATCH_AXIS)
    g_updates, g_opt_state = setup.g_tx.update(g_grads, state.g_opt_state, state.g_params)

    new_state = TrainState(
        step=state.step + 1,
        g_params=optax.apply_updates(state.g_params, g_updates),
        # Running averages are only read by deterministic evaluation; averaging
        # them keeps the replicas identical, so any device's copy is the state.
        g_batch_stats=lax.pmean(g_batch_stats, BATCH_AXIS),
        g_opt_state=g_opt_state,
        d_params=d_params,
        d_batch_stats=lax.pmean(d_batch_stats, BATCH_AXIS),
        d_opt_state=d_opt_state,
    )
    step_metrics = {"g_loss": g_loss, "g_gan": g_gan, "g_l1": g_l1, "d_loss": d_loss}
    return new_state, lax.pmean(step_metrics, BATCH_AXIS)


def generate(state: TrainState, x: jax.Array, setup: Setup, mode: str, key: jax.Array):
    """G(x) at test time.

    `paper` keeps dropout on and normalises with the test batch's own
    statistics (the paper's choice: the noise stays, and batch norm behaves as
    in training); `deterministic` uses the running averages and no dropout.
    """
    variables = {"params": state.g_params, "batch_stats": state.g_batch_stats}
    if mode == "deterministic":
        return setup.generator.apply(variables, x, train=False)
    if mode != "paper":
        raise ValueError(f"eval.mode={mode!r} is not one of {EVAL_MODES}")
    fake, _ = setup.generator.apply(
        variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
    )
    return fake


def eval_step(state: TrainState, batch: Batch, setup: Setup, mode: str) -> tuple[jax.Array, dict]:
    """Generated images and per-image metrics for this device's shard of an eval batch."""
    key = jax.random.fold_in(jax.random.key(setup.seed), lax.axis_index(BATCH_AXIS))
    fake = generate(state, batch["input"], setup, mode, key)
    return fake, metrics.image_metrics(fake, batch["target"])


def learning_rate_schedule(config: Any) -> optax.Schedule:
    """The learning rate as a function of the step."""
    return optax.constant_schedule(config.optimizer.learning_rate)


def make_optimizer(config: Any) -> optax.GradientTransformation:
    """Adam with the paper's settings (lr 2e-4, beta1 0.5, beta2 0.999 by default)."""
    return optax.adam(
        learning_rate=learning_rate_schedule(config),
        b1=config.optimizer.b1,
        b2=config.optimizer.b2,
    )


def pmapped_train_step(setup: Setup):
    """`train_step` mapped over the local devices, donating the old state's buffers."""
    return jax.pmap(
        functools.partial(train_step, setup=setup), axis_name=BATCH_AXIS, donate_argnums=(0,)
    )


def pmapped_eval_step(setup: Setup, mode: str):
    """`eval_step` mapped over the local devices."""
    return jax.pmap(functools.partial(eval_step, setup=setup, mode=mode), axis_name=BATCH_AXIS)
