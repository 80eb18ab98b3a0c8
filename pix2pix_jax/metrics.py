"""Per-image evaluation metrics: L1, PSNR and SSIM, as pure jnp functions.

Images come in the model's range [-1, 1], shaped [N, H, W, C]. L1 is measured
in that range (the scale of the training loss); PSNR and SSIM on the images
mapped to [0, 1] with data range 1. SSIM is Wang et al. (2004): an 11x11
Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, population covariances,
averaged over valid window positions and channels -- the same numbers as
scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)``.
"""

import math

import jax
import jax.numpy as jnp

#: Metrics that can pick the best checkpoint, and whether lower or higher is better.
BEST_DIRECTIONS = {
    "l1": "lower", "psnr": "higher", "ssim": "higher", "fid": "lower", "kid": "lower",
}  # fmt: skip
#: Set-level metrics: computed over the whole split from Inception features, not per image.
SET_METRICS = ("fid", "kid")


def improves(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` of `metric` is strictly better than `best` (None: nothing yet).

    A non-finite value never is.
    """
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if BEST_DIRECTIONS[metric] == "lower" else value > best


def _to_unit(images: jax.Array) -> jax.Array:
    return (images.astype(jnp.float32) + 1.0) / 2.0


def l1(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean absolute error per image, in [-1, 1] units. Returns [N]."""
    return jnp.mean(jnp.abs(outputs.astype(jnp.float32) - targets.astype(jnp.float32)), (1, 2, 3))


def psnr(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio per image in dB, data range [0, 1]. Returns [N]."""
    mse = jnp.mean((_to_unit(outputs) - _to_unit(targets)) ** 2, axis=(1, 2, 3))
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def _gaussian_window(size: int, sigma: float) -> jax.Array:
    offsets = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    g = jnp.exp(-(offsets**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(outputs: jax.Array, targets: jax.Array, window: int = 11, sigma: float = 1.5) -> jax.Array:
    """Structural similarity per image (mean over valid windows and channels). Returns [N]."""
    window = min(window, outputs.shape[1], outputs.shape[2])
    window -= 1 - window % 2  # an odd window, centred on a pixel
    x, y = _to_unit(outputs), _to_unit(targets)
    g = _gaussian_window(window, sigma)
    channels = x.shape[-1]
    # A separable depthwise Gaussian filter over valid positions only.
    kh = jnp.tile(g[:, None, None, None], (1, 1, 1, channels))
    kw = jnp.tile(g[None, :, None, None], (1, 1, 1, channels))

    def blur(z: jax.Array) -> jax.Array:
        for kernel in (kh, kw):
            z = jax.lax.conv_general_dilated(
                z,
                kernel,
                (1, 1),
                "VALID",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=channels,
            )
        return z

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return jnp.mean(s, axis=(1, 2, 3))


def image_metrics(outputs: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
    """All per-image metrics as a dict of [N] arrays."""
    return {
        "l1": l1(outputs, targets),
        "psnr": psnr(outputs, targets),
        "ssim": ssim(outputs, targets),
    }
