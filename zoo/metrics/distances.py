"""Distances between sets of features: Fréchet distance and KID.

NumPy in float64, so the numbers do not depend on the backend.
"""

import numpy as np


def _features(x, name):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(
            f"`{name}` must be a (num_samples >= 2, num_features) array; "
            f"received shape {x.shape}."
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return x


def _sqrt_psd(matrix):
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance_from_moments(mean_a, cov_a, mean_b, cov_b):
    """Fréchet (2-Wasserstein) distance squared between two Gaussians.

    `|m_a - m_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)`. The
    matrix square roots are taken of symmetric positive semi-definite
    matrices by eigendecomposition, clipping round-off negatives, so a
    singular covariance (fewer samples than features) gives a finite,
    non-negative result instead of the complex values `scipy.linalg.sqrtm`
    can return.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape:
        raise ValueError(
            f"Moments must match: means {mean_a.shape} vs {mean_b.shape}, "
            f"covariances {cov_a.shape} vs {cov_b.shape}."
        )
    root_a = _sqrt_psd(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_cross = np.sqrt(np.clip(cross, 0.0, None)).sum()
    distance = (
        np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_cross
    )
    return float(max(distance, 0.0))


def frechet_distance(features_a, features_b):
    """Fréchet distance between Gaussians fitted to two feature sets (FID).

    Example:

    ```python
    import numpy as np
    rng = np.random.default_rng(0)
    frechet_distance(rng.normal(size=(500, 4)), rng.normal(1.0, size=(500, 4)))  # ~4
    ```
    """
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"Feature sets differ in width: {a.shape[1]} vs {b.shape[1]}."
        )
    return frechet_distance_from_moments(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    )


def _polynomial_kernel(x, y, degree, gamma, coef0):
    return (gamma * x @ y.T + coef0) ** degree


def kernel_inception_distance(
    features_a, features_b, num_subsets=100, subset_size=1000, degree=3,
    gamma=None, coef0=1.0, seed=0,
):
    """Kernel distance (KID): unbiased MMD^2 with a cubic polynomial kernel.

    As Binkowski et al. (2018): the unbiased MMD^2 estimate averaged over
    `num_subsets` random subsets of `subset_size` from each set (smaller
    sets use all their samples). Returns `(mean, standard_error)`, where
    the error is the standard deviation over subsets, as KID is usually
    reported: the subsets overlap, so dividing by sqrt(num_subsets) would
    overstate the precision. The estimate is unbiased, so it can be
    slightly negative when both sets come from one distribution.
    """
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"Feature sets differ in width: {a.shape[1]} vs {b.shape[1]}.")
    if int(num_subsets) < 1:
        raise ValueError(f"`num_subsets` must be >= 1; received {num_subsets}.")
    gamma = 1.0 / a.shape[1] if gamma is None else gamma
    m = min(int(subset_size), len(a), len(b))
    if m < 2:
        raise ValueError(f"`subset_size` must be >= 2; received {subset_size}.")
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(int(num_subsets)):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx = _polynomial_kernel(x, x, degree, gamma, coef0)
        k_yy = _polynomial_kernel(y, y, degree, gamma, coef0)
        k_xy = _polynomial_kernel(x, y, degree, gamma, coef0)
        off = m * (m - 1)
        estimates.append(
            (k_xx.sum() - np.trace(k_xx)) / off
            + (k_yy.sum() - np.trace(k_yy)) / off
            - 2 * k_xy.mean()
        )
    estimates = np.asarray(estimates)
    stderr = estimates.std(ddof=1) if len(estimates) > 1 else 0.0
    return float(estimates.mean()), float(stderr)


def precision_recall(real_features, fake_features, k=3):
    """Improved precision and recall (Kynkaanniemi et al., 2019).

    Each set's manifold is the union of balls around its points reaching
    their k-th nearest neighbour. Precision: the share of fake samples
    inside the real manifold; recall: the share of real samples inside the
    fake manifold.
    """
    real = _features(real_features, "real_features")
    fake = _features(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"Feature sets differ in width: {real.shape[1]} vs {fake.shape[1]}.")
    k = int(k)
    if k < 1 or k >= min(len(real), len(fake)):
        raise ValueError(
            f"`k` must be in [1, {min(len(real), len(fake)) - 1}]; received {k}."
        )

    def distances(x, y):
        sq = (x**2).sum(1)[:, None] + (y**2).sum(1)[None, :] - 2 * x @ y.T
        return np.sqrt(np.clip(sq, 0.0, None))

    def radii(x):
        # Column 0 of the sorted self-distances is the point itself.
        return np.sort(distances(x, x), axis=1)[:, k]

    def coverage(points, manifold):
        return float(np.mean((distances(points, manifold) <= radii(manifold)[None, :]).any(1)))

    return {"precision": coverage(fake, real), "recall": coverage(real, fake)}
