"""pix2pix in JAX/Flax: conditional GANs for paired image-to-image translation."""
