"""Fréchet Inception Distance and Kernel Inception Distance of two feature sets.

Both take Inception pool3 features (see `inception`), one row per image, and
compute in float64 with numpy.

FID (Heusel et al., 2017): fit a Gaussian to each set and take the Fréchet
distance  |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)).
pytorch-fid computes the last trace with `scipy.linalg.sqrtm`, adding 1e-6 to
the diagonals if the root is not finite and discarding a small imaginary
part. We compute the same quantity without a general matrix square root:
S_a S_b is similar to the symmetric PSD matrix M = S_a^(1/2) S_b S_a^(1/2),
so tr((S_a S_b)^(1/2)) = sum_i sqrt(lambda_i(M)). Both roots come from
symmetric eigendecompositions (`numpy.linalg.eigh`), whose eigenvalues are
real; rounding can make the smallest ones slightly negative, and those are
clipped to 0. This is stable for the singular covariances of small sets
(fewer images than 2048 features), where sqrtm needs its offset.

Sets of at most d images (an eval split of a few hundred) take a shortcut
that gives the same distance without any d x d matrix: with the centred
features A (N_a x d) and B, S_a = A^T A / (N_a - 1), S_b likewise, and the
non-zero eigenvalues of S_a S_b are those of M M^T for M = A B^T /
sqrt((N_a - 1)(N_b - 1)), so tr((S_a S_b)^(1/2)) is the sum of M's singular
values, and tr(S_a) = |A|_F^2 / (N_a - 1). That costs N_a N_b d instead of
two d x d eigendecompositions (seconds each at d = 2048).

KID (Binkowski et al., 2018), as torch-fidelity computes it: the unbiased
estimate of MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
averaged over `num_subsets` random subsets of `subset_size` rows drawn without
replacement from each set; returns (mean, standard deviation) over subsets.
"""

import numpy as np

from pix2pix_jax.errors import DataError


def _checked(features: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    array = np.asarray(features, np.float64)
    if array.ndim != 2:
        raise DataError(f"{name} must be a [num_images, dim] array, got shape {array.shape}")
    if len(array) < min_rows:
        raise DataError(f"{name} needs at least {min_rows} images, got {len(array)}")
    if not np.isfinite(array).all():
        raise DataError(f"{name} holds non-finite values")
    return array


def _checked_pair(features_a, features_b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _checked(features_a, "features_a"), _checked(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"feature dimensions differ: {a.shape[1]} and {b.shape[1]}")
    return a, b


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N - 1) covariance of the rows of `features`, as pytorch-fid."""
    array = _checked(features, "features")
    return array.mean(axis=0), np.cov(array, rowvar=False).reshape(array.shape[1], -1)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance_from_stats(
    mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray
) -> float:
    """The Fréchet distance of N(mu_a, sigma_a) and N(mu_b, sigma_b) (see the module docstring)."""
    root_a = _psd_sqrt(sigma_a)
    middle = root_a @ sigma_b @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * trace_sqrt)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID of two feature sets ([N_a, d] and [N_b, d], at least 2 rows each)."""
    a, b = _checked_pair(features_a, features_b)
    if max(len(a), len(b)) > a.shape[1]:
        return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b))
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    centred_a, centred_b = a - mu_a, b - mu_b
    scale_a, scale_b = len(a) - 1, len(b) - 1
    cross = centred_a @ centred_b.T / np.sqrt(scale_a * scale_b)
    trace_sqrt = np.linalg.svd(cross, compute_uv=False).sum()
    diff = mu_a - mu_b
    traces = np.sum(centred_a**2) / scale_a + np.sum(centred_b**2) / scale_b
    return float(diff @ diff + traces - 2.0 * trace_sqrt)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel matrix k(x_i, y_j) = (x_i . y_j / d + 1)^3."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    m = len(k_xx)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 estimate of two equal-sized samples under `polynomial_kernel`."""
    return _mmd2(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))


# Up to this many images per set, KID computes the kernel matrices once and indexes them.
_WHOLE_KERNEL_MAX = 4096


def kernel_inception_distance(
    features_a: np.ndarray,
    features_b: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID of two feature sets: (mean, std) of `mmd2_unbiased` over random subsets.

    Each of the `num_subsets` draws takes min(subset_size, N_a, N_b) rows of
    each set without replacement (numpy's RandomState(seed), as torch-fidelity).
    Sets of up to 4096 images reuse kernel matrices computed once over them
    (the same dot products, far fewer of them); larger ones compute per subset.
    """
    a, b = _checked_pair(features_a, features_b)
    if num_subsets < 1 or subset_size < 2:
        raise DataError(
            f"KID needs num_subsets >= 1 and subset_size >= 2, got {num_subsets}, {subset_size}"
        )
    m = min(subset_size, len(a), len(b))
    rng = np.random.RandomState(seed)
    draws = [
        (rng.choice(len(a), m, replace=False), rng.choice(len(b), m, replace=False))
        for _ in range(num_subsets)
    ]
    if max(len(a), len(b)) <= _WHOLE_KERNEL_MAX:
        k_aa, k_bb = polynomial_kernel(a, a), polynomial_kernel(b, b)
        k_ab = polynomial_kernel(a, b)
        values = [
            _mmd2(k_aa[np.ix_(i, i)], k_bb[np.ix_(j, j)], k_ab[np.ix_(i, j)]) for i, j in draws
        ]
    else:
        values = [mmd2_unbiased(a[i], b[j]) for i, j in draws]
    return float(np.mean(values)), float(np.std(values))
