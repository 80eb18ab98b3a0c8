"""L1, PSNR and SSIM against numpy and scikit-image on the same images."""

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pix2pix_jax import metrics


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (3, 32, 40, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.2, a.shape), -1, 1).astype(np.float32)
    b[2] = a[2]  # one perfect prediction
    return a, b


def test_ssim_matches_scikit_image(images):
    a, b = images
    ours = np.asarray(metrics.ssim(a, b))
    for i in range(len(a)):
        ref = structural_similarity(
            (b[i] + 1) / 2, (a[i] + 1) / 2, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1.0, channel_axis=-1,
        )  # fmt: skip
        assert ours[i] == pytest.approx(ref, abs=1e-5)
    assert ours[2] == pytest.approx(1.0, abs=1e-6)


def test_psnr_matches_scikit_image(images):
    a, b = images
    ours = np.asarray(metrics.psnr(a[:2], b[:2]))
    for i in range(2):
        ref = peak_signal_noise_ratio((a[i] + 1) / 2, (b[i] + 1) / 2, data_range=1.0)
        assert ours[i] == pytest.approx(ref, rel=1e-5)


def test_l1_per_image(images):
    a, b = images
    np.testing.assert_allclose(metrics.l1(a, b), np.abs(a - b).mean(axis=(1, 2, 3)), rtol=1e-6)
    assert float(metrics.l1(a, b)[2]) == 0.0
