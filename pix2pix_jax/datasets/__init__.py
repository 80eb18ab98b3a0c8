"""tensorflow-datasets builders for pix2pix_jax."""
