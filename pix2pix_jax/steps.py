"""The functional core of training: the train state and the pure step functions.

`train_step(state, batch, setup)` runs on one device and is the same function
whether `jax.pmap` maps it over one device or many: it derives its dropout key
(and the gradient penalty's key) from (seed, step, device index), runs the
generator forward once, updates D, then pulls the G gradient back through the
saved VJP of that forward pass.
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

from pix2pix_jax import augment, labels, losses, metrics, models, schedules
from pix2pix_jax.errors import ConfigError
from pix2pix_jax.parallel import BATCH_AXIS

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
    """The static pieces a step closes over: networks, optimisers and the loss.

    `loss` holds the GAN objective, G's weighted loss terms, whether D is
    conditional and the gradient penalty's weight (see `losses.LossSettings`);
    `load_shape` is the size the paper's jitter resizes to on the device, when
    the input pipeline leaves it to the step (see `augment`); `label_nc` > 0 says the
    input is a label map (class ids, with `instance_maps` boundaries) that `encode_input`
    one-hot encodes.
    """

    generator: nn.Module
    discriminator: nn.Module
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    seed: int
    loss: losses.LossSettings = losses.LossSettings()
    load_shape: tuple[int, int] | None = None
    label_nc: int = 0
    instance_maps: bool = False

    @property
    def use_gan(self) -> bool:
        """Whether D is trained: some active generator term needs it."""
        return self.loss.use_gan


def init_state(setup: Setup, image_shape: tuple[int, int, int], input_channels: int) -> TrainState:
    """A fresh train state for images of `image_shape` (H, W, output channels)."""
    h, w, out_channels = image_shape
    g_key, d_key = jax.random.split(jax.random.key(setup.seed))
    x = jnp.zeros((1, h, w, input_channels))
    g_vars = setup.generator.init({"params": g_key}, x, train=False)
    # D is built (and checkpointed) even when use_gan is False: one state layout for all rows.
    d_channels = out_channels + (input_channels if setup.loss.conditional_d else 0)
    d_vars = setup.discriminator.init(
        {"params": d_key}, jnp.zeros((1, h, w, d_channels)), train=False
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


GP_STREAM = 1  # fold_in constant separating the penalty's key from the dropout key


def dropout_key(seed: int, step: jax.Array) -> jax.Array:
    """The dropout key of `step` on this device: a function of seed, step and device only."""
    key = jax.random.fold_in(jax.random.key(seed), step)
    return jax.random.fold_in(key, lax.axis_index(BATCH_AXIS))


def penalty_key(seed: int, step: jax.Array) -> jax.Array:
    """The key of the gradient penalty's interpolation weights: also (seed, step, device) only."""
    return jax.random.fold_in(dropout_key(seed, step), GP_STREAM)


def to_model_range(images: jax.Array) -> jax.Array:
    """Images as the networks take them: uint8 [0, 255] -> float32 [-1, 1]; floats pass through.

    The input pipeline ships uint8 batches (a quarter of float32's host-to-device
    traffic) and the conversion runs on the device, inside the step.
    """
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 127.5 - 1.0
    return images


def encode_input(x: jax.Array, setup: Setup) -> jax.Array:
    """The generator's input from a batch's `input`, on the device.

    Images go to [-1, 1] (`to_model_range`); label maps to one-hot classes plus the
    instance-boundary channel (`labels.encode`). Every path that feeds the generator
    (train, eval, predict, export) goes through here.
    """
    if setup.label_nc:
        return labels.encode(x, setup.label_nc, setup.instance_maps)
    return to_model_range(x)


def d_input(setup: Setup, x: jax.Array, y: jax.Array) -> jax.Array:
    """What D sees: the (input, image) pair, or the image alone when not conditional."""
    y = y.astype(x.dtype)
    return jnp.concatenate([x, y], axis=-1) if setup.loss.conditional_d else y


def _discriminate(setup: Setup, d_params, batch_stats, d_in, **kwargs):
    """D's output on `d_in` in train mode, and its new batch statistics.

    The output is logits (a list of them, one per scale, for a multi-scale D),
    or with `return_features=True` what the discriminator returns then. The
    statistics include spectral norm's power-iteration state, when D has it.
    """
    logits, updates = setup.discriminator.apply(
        {"params": d_params, "batch_stats": batch_stats},
        d_in,
        train=True,
        mutable=["batch_stats"],
        **kwargs,
    )
    return logits, updates.get("batch_stats", {})


def _discriminate_features(setup: Setup, state: TrainState, x, fake, y):
    """D's logits on the fake pair, both pairs' features (`models.scales`), D's new stats.

    For pix2pixHD's feature matching: the real pair's features come from the same
    (freshly updated) D as the fake's, as in pix2pixHD, where both come from one D
    before either update; they are constants (stop_gradient), and the batch
    statistics of that extra real call are dropped (the D update already counted
    the real pair once this step; nothing reads D's running averages).
    """
    out, stats = _discriminate(
        setup, state.d_params, state.d_batch_stats, d_input(setup, x, fake), return_features=True
    )
    real_out, _ = _discriminate(
        setup, state.d_params, state.d_batch_stats, d_input(setup, x, y), return_features=True
    )
    fake_scales = models.scales(out)
    real_scales = jax.tree.map(lax.stop_gradient, models.scales(real_out))
    logits = [scale[-1] for scale in fake_scales]
    return (logits if isinstance(out, list) else logits[0]), fake_scales, real_scales, stats


def _d_loss_fn(d_params, state: TrainState, setup: Setup, real_in, fake_in):
    """D's loss on the fake and the real pair (plus the gradient penalty), and its aux."""
    fake_logits, stats = _discriminate(setup, d_params, state.d_batch_stats, fake_in)
    real_logits, stats = _discriminate(setup, d_params, stats, real_in)
    loss = losses.discriminator_loss(real_logits, fake_logits, setup.loss.gan_mode)
    objective = losses.GAN_OBJECTIVES.get(setup.loss.gan_mode)
    if not (objective.gradient_penalty and setup.loss.lambda_gp > 0):
        return loss, (stats, {})
    alpha = jax.random.uniform(penalty_key(setup.seed, state.step), (real_in.shape[0], 1, 1, 1))
    # D runs in train mode, as in its loss terms, so the penalised function is the one
    # trained (normalised by batch statistics). The interpolates' batch-stat updates
    # are dropped: they are not pairs D is ever asked about, and keeping them would
    # make the running averages differ between modes for no use (D always runs in
    # train mode, so nothing reads them). PyTorch would fold them in.
    gp = losses.gradient_penalty(
        lambda v: _discriminate(setup, d_params, stats, v)[0],
        real_in, fake_in, alpha, setup.loss.lambda_gp,
    )  # fmt: skip
    # Added after the 0.5: the halving is the reference's for its two GAN terms.
    return loss + gp, (stats, {"d_gp": gp})


def _update_discriminator(state: TrainState, setup: Setup, x, y, fake) -> tuple[TrainState, dict]:
    """`state` with D's params, batch stats and optimizer state updated; and D's metrics."""
    real_in, fake_in = d_input(setup, x, y), d_input(setup, x, lax.stop_gradient(fake))
    loss_fn = functools.partial(
        _d_loss_fn, state=state, setup=setup, real_in=real_in, fake_in=fake_in
    )
    (d_loss, (stats, extra)), d_grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
    d_grads = lax.pmean(d_grads, BATCH_AXIS)
    d_updates, d_opt_state = setup.d_tx.update(d_grads, state.d_opt_state, state.d_params)
    state = state.replace(
        d_params=optax.apply_updates(state.d_params, d_updates),
        d_batch_stats=stats,
        d_opt_state=d_opt_state,
    )
    return state, {"d_loss": d_loss, **extra}


def _generator_forward(state: TrainState, setup: Setup, x):
    """G(x) in train mode, the VJP of G's params, and G's new batch statistics."""

    def forward(g_params):
        fake, updates = setup.generator.apply(
            {"params": g_params, "batch_stats": state.g_batch_stats},
            x,
            train=True,
            rngs={"dropout": dropout_key(setup.seed, state.step)},
            mutable=["batch_stats"],
        )
        return fake, updates.get("batch_stats", {})

    return jax.vjp(forward, state.g_params, has_aux=True)


def _generator_loss_fn(fake, state: TrainState, setup: Setup, x, y, frozen=None):
    """G's weighted loss terms on `fake` against the freshly updated D; aux: (terms, D stats).

    `frozen`: the fixed networks' parameters that perceptual terms read (or None).
    """
    fake_logits, stats = None, state.d_batch_stats
    features = {}
    if setup.loss.needs_features:
        fake_logits, fake_scales, real_scales, stats = _discriminate_features(
            setup, state, x, fake, y
        )
        features = dict(fake_features=fake_scales, real_features=real_scales)
    elif setup.use_gan:
        fake_logits, stats = _discriminate(
            setup, state.d_params, state.d_batch_stats, d_input(setup, x, fake)
        )
    inputs = losses.GeneratorInputs(
        x, fake, y, fake_logits, setup.loss.gan_mode, frozen, **features
    )
    g_loss, terms = losses.generator_loss(setup.loss.g_terms, inputs)
    return g_loss, (terms, stats)


def train_step(
    state: TrainState, batch: Batch, setup: Setup, frozen: dict[str, Any] | None = None
) -> tuple[TrainState, dict]:
    """One pix2pix step on this device's shard of the batch: a D update, then a G update.

    As in the reference, D sees the fake and the real pair in separate calls
    (separate batch statistics), and G is updated against the freshly updated D.
    With `use_gan=False` ("L1 only") there is no D update and no D in G's loss;
    d_loss and g_gan are then reported as 0.

    `frozen` holds the parameters of the fixed networks of G's perceptual terms
    (`assembly.frozen_params`: VGG19, LPIPS), passed as an argument so that
    they are neither compiled into the step as constants nor part of the
    checkpointed state; None when no such term is active.
    """
    if augment.JITTER_KEYS[0] in batch:
        batch = augment.jitter(batch, setup.load_shape)
    x, y = encode_input(batch["input"], setup), to_model_range(batch["target"])
    fake, g_vjp, g_batch_stats = _generator_forward(state, setup, x)
    d_metrics = {"d_loss": jnp.zeros((), jnp.float32)}
    if setup.use_gan:  # otherwise ("L1 only") D keeps its params, statistics and moments
        state, d_metrics = _update_discriminator(state, setup, x, y, fake)
    loss_fn = functools.partial(
        _generator_loss_fn, state=state, setup=setup, x=x, y=y, frozen=frozen
    )
    (g_loss, (terms, d_batch_stats)), fake_grad = jax.value_and_grad(loss_fn, has_aux=True)(fake)
    (g_grads,) = g_vjp(fake_grad)
    g_grads = lax.pmean(g_grads, BATCH_AXIS)
    g_updates, g_opt_state = setup.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    new_state = state.replace(
        step=state.step + 1,
        g_params=optax.apply_updates(state.g_params, g_updates),
        # Running averages are only read by deterministic evaluation; averaging
        # them keeps the replicas identical, so any device's copy is the state.
        g_batch_stats=lax.pmean(g_batch_stats, BATCH_AXIS),
        g_opt_state=g_opt_state,
        d_batch_stats=lax.pmean(d_batch_stats, BATCH_AXIS),
    )
    step_metrics = {"g_loss": g_loss, **terms, **d_metrics}
    return new_state, lax.pmean(step_metrics, BATCH_AXIS)


def generate(state: TrainState, x: jax.Array, setup: Setup, mode: str, key: jax.Array):
    """G(x) at test time, for the batch `x` as a whole.

    `paper` keeps dropout on and normalises with the batch's own statistics
    (the paper's choice: the noise stays, and batch norm behaves as in
    training); `deterministic` uses the running averages and no dropout.
    """
    variables = {"params": state.g_params, "batch_stats": state.g_batch_stats}
    if mode == "deterministic":
        return setup.generator.apply(variables, x, train=False)
    if mode != "paper":
        raise ConfigError(f"eval.mode={mode!r} is not one of {EVAL_MODES}")
    fake, _ = setup.generator.apply(
        variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
    )
    return fake


def generate_each(state: TrainState, x: jax.Array, setup: Setup, mode: str, keys: jax.Array):
    """G(x) image by image, with one key per image.

    In `paper` mode each image is normalised by its own statistics, as the
    reference tests (batch size 1), so neither the batch size nor the
    batch's padding changes an image's result (its dropout noise comes from its key).
    """
    if getattr(setup.generator, "norm", None) == "sync_batch":
        # Same parameters; per-image statistics must not be averaged across devices.
        setup = dataclasses.replace(setup, generator=setup.generator.clone(norm="batch"))
    return jax.vmap(lambda xi, key: generate(state, xi[None], setup, mode, key)[0])(x, keys)


def image_keys(seed: int, sample: int, ids: jax.Array) -> jax.Array:
    """The test-time dropout keys of sample `sample` of the images `ids` (int32, one each).

    A function of (seed, sample, image id) only, so an image gets the same noise in
    every eval, in any batch or batch slot, and in `evaluate`, training's evals and
    `predict` alike (the id comes from the image's name, see `input_pipeline.image_id`).
    """
    base = jax.random.fold_in(jax.random.key(seed), sample)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(ids, jnp.int32))


def eval_step(state: TrainState, batch: Batch, setup: Setup, mode: str) -> tuple[jax.Array, dict]:
    """Generated images and per-image metrics for this device's shard of an eval batch.

    The batch holds `input`, `target` (uint8) and `id` (each image's id, for its keys).
    """
    x = encode_input(batch["input"], setup)
    fake = generate_each(state, x, setup, mode, image_keys(setup.seed, 0, batch["id"]))
    return fake, metrics.image_metrics(fake, to_model_range(batch["target"]))


def learning_rate_schedule(
    config: Any, num_train_examples: int | None = None, network: str = "g"
) -> optax.Schedule:
    """The learning rate of `network` ("g" or "d") as a function of optax's update count.

    The count is step - 1. D's rate is `optimizer.d_learning_rate` when set (TTUR), else
    G's; one schedule scales both. Epoch-based schedules need the size of the train split
    (`num_train_examples`).
    """
    opt = config.optimizer
    per_epoch = None
    if schedules.needs_epochs(opt) and num_train_examples is not None:
        per_epoch = schedules.steps_per_epoch(num_train_examples, config.batch_size)
    return schedules.make_schedule(opt, per_epoch, adam_settings(opt, network)[0])


def adam_settings(opt: Any, network: str) -> tuple[float, float, float]:
    """(base learning rate, b1, b2) of `network`'s Adam: "g", or "d" (its own where set)."""
    if network not in ("g", "d"):
        raise ValueError(f"network must be 'g' or 'd', got {network!r}")
    g = (opt.learning_rate, opt.b1, opt.b2)
    if network == "g":
        return g
    # Sentinels (0 rate, negative betas) mean "G's value"; older configs lack the fields.
    d = (opt.get("d_learning_rate", 0.0), opt.get("d_b1", -1.0), opt.get("d_b2", -1.0))
    return (d[0] if d[0] > 0 else g[0], d[1] if d[1] >= 0 else g[1], d[2] if d[2] >= 0 else g[2])


def make_optimizer(
    config: Any, num_train_examples: int | None = None, network: str = "g"
) -> optax.GradientTransformation:
    """Adam of `network` ("g" or "d"): the paper's lr 2e-4, beta1 0.5, beta2 0.999 by default.

    D's rate and betas are G's unless `optimizer.d_learning_rate`, `d_b1`, `d_b2` set
    them (see `adam_settings`). The rate follows `learning_rate_schedule`, evaluated at
    optax's own update count, which is part of the (checkpointed) optimizer state.
    """
    _, b1, b2 = adam_settings(config.optimizer, network)
    return optax.adam(
        learning_rate=learning_rate_schedule(config, num_train_examples, network), b1=b1, b2=b2
    )
