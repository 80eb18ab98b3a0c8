"""FID and KID against scipy/numpy references and closed forms, on synthetic features."""

import itertools

import numpy as np
import pytest
import scipy.linalg

from pix2pix_jax import fid


def gaussian_features(seed, n, d, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return shift + scale * rng.normal(size=(n, d)) @ mixing


def pytorch_fid_reference(a, b, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance, with scipy.linalg.sqrtm."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s1)) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def test_frechet_distance_matches_scipy_sqrtm():
    a = gaussian_features(0, 400, 16)
    b = gaussian_features(1, 300, 16, shift=0.3, scale=1.5)
    expected = pytorch_fid_reference(a, b)
    assert expected > 1.0
    assert fid.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert fid.frechet_distance(b, a) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_closed_forms():
    a = gaussian_features(2, 500, 8)
    assert fid.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # A constant shift moves the mean only: FID = |delta|^2.
    delta = np.linspace(-1.0, 2.0, 8)
    assert fid.frechet_distance(a, a + delta) == pytest.approx(delta @ delta, rel=1e-9)
    # Diagonal covariances: FID = |mu_a - mu_b|^2 + sum (sqrt(var_a) - sqrt(var_b))^2.
    mu_a, mu_b = np.zeros(3), np.array([1.0, 0.0, -2.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = fid.frechet_distance_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_singular_covariances_matches_scipy():
    # Fewer images than features, as in a small eval split: rank-deficient covariances.
    a = gaussian_features(3, 20, 64)
    b = gaussian_features(4, 30, 64, shift=0.1)
    assert fid.frechet_distance(a, b) == pytest.approx(pytorch_fid_reference(a, b), rel=1e-5)


@pytest.mark.parametrize("n_a, n_b", [(20, 30), (64, 64), (5, 2)])
def test_small_sets_shortcut_equals_the_covariance_form(n_a, n_b):
    """At most d images per set: the N x N form gives the d x d form's distance.

    Within 1e-7: the d x d form adds the square roots of the rounding-level
    eigenvalues (about 1e-16 each) of its rank-deficient matrices.
    """
    a = gaussian_features(5, n_a, 64)
    b = gaussian_features(6, n_b, 64, shift=0.2, scale=0.7)
    expected = fid.frechet_distance_from_stats(*fid.gaussian_stats(a), *fid.gaussian_stats(b))
    assert fid.frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)
    assert fid.frechet_distance(b, a) == pytest.approx(expected, rel=1e-7)
    assert fid.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def unbiased_mmd2_by_loops(x, y):
    d = x.shape[1]

    def k(u, v):
        return (u @ v / d + 1.0) ** 3

    m = len(x)
    pairs = list(itertools.permutations(range(m), 2))
    xx = sum(k(x[i], x[j]) for i, j in pairs) / len(pairs)
    yy = sum(k(y[i], y[j]) for i, j in pairs) / len(pairs)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return xx + yy - 2 * xy


def test_kid_matches_the_unbiased_mmd_definition():
    a = gaussian_features(5, 12, 6)
    b = gaussian_features(6, 12, 6, shift=0.5)
    # One subset as large as both sets: a permutation, to which MMD is invariant.
    mean, std = fid.kernel_inception_distance(a, b, num_subsets=1, subset_size=50)
    assert mean == pytest.approx(unbiased_mmd2_by_loops(a, b), rel=1e-10)
    assert std == 0.0


def test_kid_closed_form_and_subsets():
    # Point masses: MMD^2 = k(a, a) + k(b, b) - 2 k(a, b) exactly.
    pa, pb = np.array([1.0, 2.0, 0.0]), np.array([0.0, 1.0, 1.0])
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    mean, _ = fid.kernel_inception_distance(np.tile(pa, (10, 1)), np.tile(pb, (7, 1)), 5, 4)
    assert mean == pytest.approx(k(pa, pa) + k(pb, pb) - 2 * k(pa, pb), rel=1e-12)
    # Subsets: the mean and std of the per-subset estimates, drawn as torch-fidelity draws them.
    a = gaussian_features(7, 60, 4)
    b = gaussian_features(8, 50, 4, shift=1.0)
    rng = np.random.RandomState(3)
    values = [
        unbiased_mmd2_by_loops(
            a[rng.choice(60, 5, replace=False)], b[rng.choice(50, 5, replace=False)]
        )
        for _ in range(4)
    ]
    mean, std = fid.kernel_inception_distance(a, b, num_subsets=4, subset_size=5, seed=3)
    assert (mean, std) == pytest.approx((np.mean(values), np.std(values)), rel=1e-9)
    same, _ = fid.kernel_inception_distance(a, gaussian_features(9, 60, 4), 20, 30)
    assert abs(same) < mean


def test_bad_inputs_are_named():
    good = np.zeros((4, 3))
    with pytest.raises(ValueError, match="dimensions differ"):
        fid.frechet_distance(good, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2 images"):
        fid.kernel_inception_distance(good, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        fid.frechet_distance(good, np.full((4, 3), np.nan))


def test_kid_per_subset_path_equals_the_whole_kernel_path(monkeypatch):
    a, b = gaussian_features(10, 40, 5), gaussian_features(11, 30, 5, shift=0.2)
    whole = fid.kernel_inception_distance(a, b, num_subsets=6, subset_size=10, seed=1)
    monkeypatch.setattr(fid, "_WHOLE_KERNEL_MAX", 0)  # as for sets too large to hold N x N
    per_subset = fid.kernel_inception_distance(a, b, num_subsets=6, subset_size=10, seed=1)
    assert per_subset == pytest.approx(whole, rel=1e-10)
