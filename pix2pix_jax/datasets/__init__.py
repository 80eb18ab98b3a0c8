"""tensorflow-datasets builders of pix2pix_jax; importing this package registers them."""

from pix2pix_jax.datasets import synthetic_facades  # noqa: F401
