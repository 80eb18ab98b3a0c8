"""K independent training replicas in one program: a seed study at the price of one run.

With `config.num_seeds = K`, replica k is the run that `config.seed = seed + k`
would be: its own initialisation, data order, jitter and dropout. The train
state carries a leading replica axis (on the host: every leaf is [K, ...]),
and the pure `steps.train_step` runs once per replica inside one compiled
program, with the replica's seed as a traced value (so one compilation serves
all K).

Where the replicas run (`config.seeds_layout`):

* `loop`: every device holds K replicated states, and each step calls one
  compiled single-replica step K times (the seed an argument); the batch is
  split over the devices as in a single run. The default on CPU: each
  replica's step is the single run's own arithmetic (bit for bit, tested), and
  batching different weights into one convolution (`vmap`) makes XLA:CPU emit
  grouped convolutions that are many times slower. What K replicas share on a
  CPU is everything around the steps: one process, one compilation, one
  dataset, one set of evaluation programs.
* `map`: as `loop`, but the K states are stacked and stepped one after another
  inside one program (`lax.map`).
* `vmap`: as `map`, but the K replicas' steps are batched into one (`jax.vmap`):
  each convolution sees K weight sets at once. The default on GPU and TPU with
  one device, where a batch-1 step leaves the accelerator mostly idle.
* `devices`: the replicas are spread over the local devices (K divisible by
  their number), each replica taking its whole batch on one device: e.g. 8
  seeds on an 8-core TPU VM, one per core. The default with several local
  devices when K is a multiple of their number (one process only). Replica k
  then equals the single run of seed + k on one device.

`auto` picks as said. With `map`, `vmap` and `devices`, replica k's numbers
equal the single run's up to XLA's rounding: the program that runs the K
steps is compiled as a whole, so the fusion (and with it the order of some
float sums) may differ from a single step's; see the README's reproducibility
section for the measured size.
"""

import copy
import dataclasses
import functools
import math
import statistics
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special
import ml_collections
import numpy as np
from jax import lax

from pix2pix_jax import parallel, steps
from pix2pix_jax.errors import ConfigError

LAYOUTS = ("auto", "loop", "map", "vmap", "devices")
REPLICA_AXIS = "replica"  # the pmap axis of the `devices` layout (replicas, not batch shards)


def num_seeds(config: Any) -> int:
    """K: the number of replicas a config trains (1 for configs without the field)."""
    return int(config.get("num_seeds", 1))


def seeds(config: Any) -> list[int]:
    """The seeds of the replicas: seed, seed + 1, ..., seed + K - 1."""
    return [config.seed + k for k in range(num_seeds(config))]


def replica_config(config: ml_collections.ConfigDict, k: int) -> ml_collections.ConfigDict:
    """The single-run config that replica `k` of `config` is: seed + k, num_seeds 1."""
    single = copy.deepcopy(config)
    with single.unlocked():
        single.seed = config.seed + k
        single.num_seeds = 1
    return single


def layout(config: Any) -> str:
    """The layout `config.seeds_layout` asks for, with `auto` resolved (see the module doc)."""
    chosen = config.get("seeds_layout", "auto")
    if chosen != "auto":
        return chosen
    devices = jax.local_device_count()
    if devices > 1 and num_seeds(config) % devices == 0 and jax.process_count() == 1:
        return "devices"
    return "loop" if jax.default_backend() == "cpu" else "vmap"


def check(config: Any) -> None:
    """Raise a ConfigError naming num_seeds or seeds_layout when they cannot be used."""
    k = config.get("num_seeds", 1)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"num_seeds must be a positive integer, got {k!r}")
    if config.seed + k > 2**32:
        raise ConfigError(f"seed + num_seeds must be at most 2**32, got {config.seed} + {k}")
    chosen = config.get("seeds_layout", "auto")
    if chosen not in LAYOUTS:
        raise ConfigError(f"seeds_layout={chosen!r} is not one of {LAYOUTS}")
    if chosen == "devices":
        devices = jax.local_device_count()
        if k % devices:
            raise ConfigError(
                f"num_seeds={k} must be divisible by the {devices} local devices for "
                "seeds_layout='devices' (or use seeds_layout='map' or 'vmap')"
            )
        if jax.process_count() > 1:
            raise ConfigError("seeds_layout='devices' runs in one process; use 'map' or 'vmap'")


def stack(trees: list[Any]) -> Any:
    """The pytrees of the replicas as one pytree with a leading replica axis (host arrays)."""
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *trees)


def unstack(tree: Any, k: int) -> Any:
    """Replica `k`'s pytree of a host pytree with a leading replica axis."""
    return jax.tree.map(lambda a: a[k], tree)


def _with_seed(step: Callable, setup: steps.Setup, **static: Any) -> Callable:
    """`step(state, batch, setup, **static)` with the seed as its third, traced argument.

    A fourth argument, when not None, goes to the step as `frozen` (the fixed
    networks of G's perceptual terms, shared by all replicas).
    """

    def one(state, batch, seed, frozen=None):
        extra = {} if frozen is None else {"frozen": frozen}
        return step(state, batch, dataclasses.replace(setup, seed=seed), **static, **extra)

    return one


def _over_replicas(one: Callable, how: str) -> Callable:
    """`one(state, batch, seed, frozen)` over a leading replica axis of all but `frozen`."""
    if how == "vmap":
        return jax.vmap(one, in_axes=(0, 0, 0, None))
    if how == "devices":
        one = _alone(one)

    def many(state, batch, seeds, frozen):
        return lax.map(lambda a: one(*a, frozen), (state, batch, seeds))

    return many


def _alone(one: Callable) -> Callable:
    """`one` with the batch axis bound to a single member: a replica alone on its device.

    The step's collectives over `BATCH_AXIS` (gradient means, the device index of
    its keys) then see one shard, as in a single run on one device.
    """
    single = jax.vmap(one, axis_name=parallel.BATCH_AXIS)

    def alone(*args):
        return jax.tree.map(lambda a: a[0], single(*jax.tree.map(lambda a: a[None], args)))

    return alone


class SinglePlacement:
    """One replica (num_seeds = 1): the state replicated over the devices, as always."""

    k = 1

    def __init__(self, config: Any, setup: steps.Setup):
        self.config, self.setup = config, setup

    def to_devices(self, host_state: Any) -> Any:
        """The host state replicated over the local devices."""
        return parallel.replicate(host_state)

    def to_host(self, state: Any) -> Any:
        """The host state of the replicated state."""
        return jax.device_get(parallel.unreplicate(state))

    def replica(self, state: Any, k: int) -> Any:
        """The (only) replica's state, as placed."""
        return state

    def train_step(self) -> Callable:
        """The compiled single-run step: (state, batch, frozen=None) -> (state, metrics)."""
        return parallel.pmap_train_step(steps.train_step, setup=self.setup)

    def metrics(self, step_metrics: dict) -> list[dict[str, float]]:
        """The step's host metrics, as a list of one."""
        return [{k: float(np.asarray(v)[0]) for k, v in jax.device_get(step_metrics).items()}]


def placement(config: Any, setup: steps.Setup) -> "SinglePlacement | LoopPlacement | Placement":
    """Where `config`'s replicas sit and how they step (see the module doc)."""
    if num_seeds(config) == 1:
        return SinglePlacement(config, setup)
    how = layout(config)
    if how == "loop":
        return LoopPlacement(config, setup)
    return Placement(config, setup, how)


@dataclasses.dataclass
class Placement:
    """How the K replicas' state and batches sit on the devices, and the steps that run them."""

    config: Any
    setup: steps.Setup
    how: str

    @property
    def k(self) -> int:
        """The number of replicas."""
        return num_seeds(self.config)

    def _seeds(self) -> jax.Array:
        values = np.asarray(seeds(self.config), np.uint32)
        if self.how == "devices":
            return jax.device_put(values.reshape(jax.local_device_count(), -1), self._sharding())
        return values

    def _sharding(self) -> jax.NamedSharding:
        return jax.NamedSharding(
            jax.sharding.Mesh(np.array(jax.local_devices()), (REPLICA_AXIS,)),
            jax.P(REPLICA_AXIS),
        )

    def to_devices(self, host_state: Any) -> Any:
        """The host state ([K, ...] leaves) placed for the train step."""
        if self.how == "devices":
            d = jax.local_device_count()
            split = jax.tree.map(lambda a: a.reshape((d, -1) + a.shape[1:]), host_state)
            return jax.device_put(split, self._sharding())
        return parallel.replicate(host_state)

    def to_host(self, state: Any) -> Any:
        """The host state ([K, ...] leaves) of a placed state."""
        if self.how == "devices":
            return jax.tree.map(
                lambda a: np.asarray(a).reshape((-1,) + a.shape[2:]), jax.device_get(state)
            )
        return jax.device_get(parallel.unreplicate(state))

    def replica(self, state: Any, k: int) -> Any:
        """Replica `k`'s state, replicated over the local devices (as single runs hold it)."""
        if self.how == "devices":
            return parallel.replicate(unstack(self.to_host(state), k))
        return jax.tree.map(lambda a: a[:, k], state)

    def train_step(self) -> Callable:
        """The compiled step: (state, batch, frozen=None) -> (state, metrics [devices, K'])."""
        one = _with_seed(steps.train_step, self.setup)
        many = _over_replicas(one, self.how)
        axis, seed_axis = parallel.BATCH_AXIS, None
        if self.how == "devices":
            axis, seed_axis = REPLICA_AXIS, 0
        p_step = jax.pmap(many, axis_name=axis, in_axes=(0, 0, seed_axis, 0), donate_argnums=(0,))
        seed_values = self._seeds()

        def step(state, batch, frozen=None):
            return p_step(state, batch, seed_values, frozen)

        return step

    def batch(self, batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The replicas' host batches ([devices, per device, ...] each) as the step takes them."""
        flat = [{k: v.reshape((-1,) + v.shape[2:]) for k, v in b.items()} for b in batches]
        stacked = stack(flat)  # [K, local batch, ...]
        d = jax.local_device_count()
        if self.how == "devices":
            return {k: v.reshape((d, -1) + v.shape[1:]) for k, v in stacked.items()}
        # [K, devices * per device] -> [devices, K, per device]
        return {
            k: np.swapaxes(v.reshape((v.shape[0], d, -1) + v.shape[2:]), 0, 1)
            for k, v in stacked.items()
        }

    def metrics(self, step_metrics: dict) -> list[dict[str, float]]:
        """Per-replica host metrics of one step's output (means over the batch shards)."""
        host = jax.device_get(step_metrics)
        if self.how == "devices":
            host = {k: np.asarray(v).reshape(-1) for k, v in host.items()}
        else:
            host = {k: np.asarray(v)[0] for k, v in host.items()}
        return [{k: float(v[r]) for k, v in host.items()} for r in range(self.k)]


class LoopPlacement(Placement):
    """K replicas as K replicated states, stepped in turn by one compiled step (`loop`).

    The step is the single run's with the seed as an argument: one compilation,
    no copies between a stacked state and its replicas, and the same arithmetic
    as the single run of each seed.
    """

    def __init__(self, config: Any, setup: steps.Setup):
        super().__init__(config, setup, "loop")  # batches and metrics laid out as `map`'s

    def to_devices(self, host_state: Any) -> list[Any]:
        """The host state ([K, ...] leaves) as K replicated states."""
        return [parallel.replicate(unstack(host_state, k)) for k in range(self.k)]

    def to_host(self, state: list[Any]) -> Any:
        """The host state ([K, ...] leaves) of the K replicated states."""
        return stack([jax.device_get(parallel.unreplicate(s)) for s in state])

    def replica(self, state: list[Any], k: int) -> Any:
        """Replica `k`'s replicated state."""
        return state[k]

    def train_step(self) -> Callable:
        """(K states, batch [devices, K, ...], frozen=None) -> (K states, metrics [devices, K])."""
        one = _with_seed(steps.train_step, self.setup)
        p_one = jax.pmap(
            one, axis_name=parallel.BATCH_AXIS, in_axes=(0, 0, None, 0), donate_argnums=(0,)
        )
        seed_values = [np.uint32(s) for s in seeds(self.config)]

        def step(state, batch, frozen=None):
            outcomes = [
                p_one(s, jax.tree.map(lambda a, k=k: a[:, k], batch), seed, frozen)
                for k, (s, seed) in enumerate(zip(state, seed_values, strict=True))
            ]
            states, step_metrics = zip(*outcomes, strict=True)
            return list(states), jax.tree.map(lambda *m: jnp.stack(m, axis=1), *step_metrics)

        return step


def eval_step_with_seed(setup: steps.Setup, mode: str) -> Callable:
    """The pmapped eval step of one replica: (replicated state, batch, seed) -> outputs.

    The seed is a traced argument, so one compilation evaluates every replica.
    """
    one = _with_seed(steps.eval_step, setup, mode=mode)
    return jax.pmap(one, axis_name=parallel.BATCH_AXIS, in_axes=(0, 0, None))


class StackedIterator:
    """K data iterators advanced together; their states checkpointed as one list."""

    def __init__(self, iterators: list[Iterator], placement: Placement):
        self.iterators, self.placement = iterators, placement

    def __iter__(self) -> "StackedIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return self.placement.batch([next(it) for it in self.iterators])

    def get_state(self) -> dict:
        """The replicas' iterator states, in replica order."""
        return {"replicas": [it.get_state() for it in self.iterators]}

    def set_state(self, state: dict) -> None:
        """Resume every replica's iterator; the count must match num_seeds."""
        saved = state.get("replicas") if isinstance(state, dict) else None
        if saved is None or len(saved) != len(self.iterators):
            found = len(saved) if saved is not None else 1
            raise ConfigError(
                f"num_seeds={len(self.iterators)} does not match the checkpoint, which holds "
                f"{found} replica(s); resume with --config.num_seeds={found}"
            )
        for it, s in zip(self.iterators, saved, strict=True):
            it.set_state(s)


@functools.cache
def _t_cdf() -> Callable:
    return jax.jit(
        lambda t, df: 1 - 0.5 * jax.scipy.special.betainc(df / 2, 0.5, df / (df + t * t))
    )


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (bisection on its CDF)."""
    low, high = 0.0, 1000.0
    cdf = _t_cdf()
    for _ in range(60):
        mid = (low + high) / 2
        if float(cdf(jnp.float32(mid), jnp.float32(df))) < 0.975:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def summary(values: list[float]) -> dict[str, float]:
    """Mean, sample std (0 for one value) and the 95% interval of the mean (Student's t).

    The interval's ends are NaN for a single value: one run says nothing of the spread.
    """
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "std": 0.0, "ci95_low": math.nan, "ci95_high": math.nan}
    std = statistics.stdev(values)
    half = t_quantile_975(len(values) - 1) * std / math.sqrt(len(values))
    return {"mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


def aggregate(per_replica: list[dict[str, float]]) -> dict[str, float]:
    """One flat record over the replicas: NAME_mean, NAME_std, NAME_ci95_low/high per metric."""
    record = {}
    for name in per_replica[0]:
        for stat, value in summary([r[name] for r in per_replica]).items():
            record[f"{name}_{stat}"] = value
    return record
