"""Data parallelism in one place: the axis name, the local mesh, device sharding and pmap.

The step functions of `steps` are written for one device and name the
batch axis `BATCH_AXIS` in their collectives (`lax.pmean`, `lax.axis_index`);
this module maps them over the local devices with `jax.pmap`, places host
batches on the devices, and moves the train state between its host form
and its replicated form.
"""

import collections
import functools
from collections.abc import Callable, Iterator
from typing import Any

import flax.jax_utils
import jax
import numpy as np

from pix2pix_jax.errors import ConfigError

# The pmap axis over which gradients are averaged and `sync_batch` averages statistics.
BATCH_AXIS = "batch"


def local_mesh() -> jax.sharding.Mesh:
    """A one-axis mesh (`BATCH_AXIS`) over this process's devices."""
    return jax.sharding.Mesh(np.array(jax.local_devices()), (BATCH_AXIS,))


def device_sharding() -> jax.NamedSharding:
    """Splits a leading axis over the local devices, as `jax.pmap` over `BATCH_AXIS` expects."""
    return jax.NamedSharding(local_mesh(), jax.P(BATCH_AXIS))


def replicate(tree: Any) -> Any:
    """A host pytree copied to every local device (a leading device axis), as pmap takes it."""
    return flax.jax_utils.replicate(tree, axis_name=BATCH_AXIS)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of a replicated pytree (the replicas are identical)."""
    return flax.jax_utils.unreplicate(tree)


def pmap_train_step(step: Callable, **static: Any) -> Callable:
    """`step(state, batch, **static)` mapped over the local devices, donating the old state.

    Keyword arguments of the call (e.g. train_step's `frozen`) are mapped over
    their leading axis too: pass them `replicate`d.
    """
    return jax.pmap(functools.partial(step, **static), axis_name=BATCH_AXIS, donate_argnums=(0,))


def pmap_step(step: Callable, **static: Any) -> Callable:
    """`step(state, batch, **static)` mapped over the local devices (nothing donated)."""
    return jax.pmap(functools.partial(step, **static), axis_name=BATCH_AXIS)


def to_devices(batch: dict[str, np.ndarray], per_device: int) -> dict[str, np.ndarray]:
    """Reshape [local batch, ...] to [local devices, per-device batch, ...]."""
    return {k: v.reshape((-1, per_device) + v.shape[1:]) for k, v in batch.items()}


def split_batch(batch_size: int, what: str) -> tuple[int, int]:
    """(this process's batch, the per-device batch) of a global `batch_size`.

    Raises a ConfigError naming `what` when the devices cannot share it evenly.
    """
    devices = jax.device_count()
    if batch_size % devices:
        raise ConfigError(f"{what}={batch_size} must be divisible by the {devices} devices")
    return batch_size // jax.process_count(), batch_size // devices


def prefetch_to_devices(iterator: Iterator, size: int = 2) -> Iterator[tuple[Any, Any]]:
    """Yields (batch on the local devices, iterator state after that batch), `size` ahead.

    The state travels with its batch, so the state saved with a checkpoint is
    the one of the last batch the saved step consumed, however far ahead the
    prefetch reads.
    """
    sharding = device_sharding()
    queue = collections.deque()

    def enqueue() -> None:
        batch = next(iterator)
        queue.append((jax.device_put(batch, sharding), iterator.get_state()))

    for _ in range(size):
        enqueue()
    while queue:
        yield queue.popleft()
        enqueue()
