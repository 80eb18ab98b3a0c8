"""What must precede JAX's first use of a device: determinism flags and multi-host start-up."""

import os

import jax
import ml_collections

from pix2pix_jax.errors import ConfigError

DETERMINISTIC_GPU_FLAG = "--xla_gpu_deterministic_ops=true"


def configure(config: ml_collections.ConfigDict) -> None:
    """Set XLA's determinism flag and start `jax.distributed`, as `config` asks.

    Call it before anything touches a device (the command runner does); XLA
    reads its flags, and `jax.distributed` must start, before the backends.
    """
    if config.deterministic and DETERMINISTIC_GPU_FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " " + DETERMINISTIC_GPU_FLAG
        ).strip()
    dist = config.distributed
    if dist.initialize:
        # CPU processes need a collectives backend of their own (GPUs and TPUs have theirs).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=dist.coordinator_address or None,
            num_processes=dist.num_processes or None,
            process_id=None if dist.process_id < 0 else dist.process_id,
        )


def check(config: ml_collections.ConfigDict) -> None:
    """Refuse a `deterministic` GPU run whose XLA flags came too late to apply."""
    flags_set = DETERMINISTIC_GPU_FLAG in os.environ.get("XLA_FLAGS", "")
    if config.deterministic and jax.default_backend() == "gpu" and not flags_set:
        raise ConfigError(
            "deterministic=True needs XLA_FLAGS=" + DETERMINISTIC_GPU_FLAG + " before JAX starts: "
            "run through pix2pix_jax.main, or call runtime.configure(config) first"
        )


def describe() -> str:
    """One line on the JAX runtime: version, process and local devices."""
    return (
        f"JAX {jax.__version__}: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local {jax.default_backend()} device(s)"
    )
