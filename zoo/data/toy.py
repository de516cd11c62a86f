"""2-D toy densities with exact log-densities and known entropies, and mode coverage.

Every density here is, or is computed as, an equal-weight mixture of isotropic
Gaussians with a common standard deviation ``s``. For such a mixture with ``K``
components and component label ``C`` the entropy splits exactly into closed-form
parts and one small Monte Carlo term:

    H(X) = H(X | C) + H(C) - H(C | X) = log(2 pi e s^2) + log K - E_x[H(C | x)]

``H(C | x)``, the entropy of the posterior over components at ``x``, is bounded
by ``log K`` and is nearly constant (zero for well-separated modes), so its
Monte Carlo average has a far smaller standard error than the plain estimate
``-mean(log p(x))``. For the ring and grid at their defaults it is zero to
machine precision and the entropy is exact.

Two moons and the swiss roll are points on curves, with the curve parameter
uniform, plus Gaussian noise. Their density is the curve's uniform measure
convolved with the Gaussian; it is computed by midpoint quadrature over the
curve parameter with nodes spaced at most ``noise / 20`` apart along the curve
(2000 nodes per curve at least), i.e. as a mixture of Gaussians centred on the
nodes. Within 5 noise standard deviations of the curves this changes
log-densities by at most about 3e-3 nats, and by a few 1e-4 where most of the
mass lies (the tests compare against a quadrature 16 times finer). Far past a curve's end
point the error grows, to about 0.01 nats at 10 standard deviations, where the
log-density is already some 50 nats below the data's. The entropy inherits the
small error and adds its Monte Carlo standard error (about 2e-3 nats).
"""

import math
from typing import NamedTuple

import numpy as np

from zoo.data._checks import check_int, check_points, check_positive, make_rng

__all__ = [
    "EntropyEstimate",
    "ToyDensity",
    "GaussianMixture",
    "Ring",
    "Grid",
    "TwoMoons",
    "SwissRoll",
    "toy_density",
    "mode_coverage",
    "TOY_DENSITIES",
]

# Rows x components per work array: 2 MB of float64, small enough to stay in
# cache across the several passes made over it.
_CHUNK_ELEMENTS = 1 << 18


class EntropyEstimate(NamedTuple):
    """A differential entropy in nats with its Monte Carlo standard error."""

    value: float
    stderr: float


def _logsumexp(a):
    """Row-wise log(sum(exp(a))) of a 2-D array (overwritten), stable for very
    negative rows."""
    peak = a.max(axis=1)
    a -= peak[:, None]
    np.exp(a, out=a)
    return peak + np.log(a.sum(axis=1))


class ToyDensity:
    """Base class of the 2-D toy densities.

    Subclasses provide ``sample(n, seed=None)`` (float32, shape ``(n, 2)``),
    ``log_prob(x)`` (float64, shape ``(n,)``, in nats), ``entropy()`` (nats),
    ``std`` (the Gaussian noise level) and ``modes`` (an array ``(k, 2)`` of mode
    centres, or ``None`` for densities without isolated modes), and
    ``get_config()`` so that ``type(d)(**d.get_config())`` rebuilds ``d``.

    Example:
        >>> from zoo.data import toy_density
        >>> density = toy_density("ring")
        >>> x = density.sample(1000, seed=0)
        >>> x.shape, x.dtype
        ((1000, 2), dtype('float32'))
        >>> round(density.entropy(), 4)  # nats
        -2.9067
    """

    name = None
    dim = 2
    modes = None
    std = None

    def sample(self, n, seed=None):
        """Draw ``n`` points, float32 of shape ``(n, 2)``.

        ``seed`` is None (fresh randomness), an int >= 0 (reproducible), or a
        ``numpy.random.Generator`` (drawn from and advanced).
        """
        n = check_int(n, "n", minimum=0)
        rng = make_rng(seed)
        return self._sample(n, rng).astype(np.float32)

    def log_prob(self, x):
        """Log-density in nats of each row of ``x`` (shape ``(n, 2)``), float64 ``(n,)``."""
        raise NotImplementedError(f"{type(self).__name__} does not define log_prob.")

    def entropy(self):
        """Differential entropy in nats (Monte Carlo with a fixed seed; see the module doc).

        Computed once per instance with ``entropy_estimate()``'s defaults.
        """
        if getattr(self, "_entropy", None) is None:
            self._entropy = self.entropy_estimate().value
        return self._entropy

    def entropy_estimate(self, num_samples=None, seed=0):
        """Entropy in nats with its Monte Carlo standard error, as an ``EntropyEstimate``."""
        raise NotImplementedError(f"{type(self).__name__} does not define entropy_estimate.")

    def _sample(self, n, rng):
        raise NotImplementedError

    def get_config(self):
        """Constructor arguments as a dict."""
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class GaussianMixture(ToyDensity):
    """Equal-weight mixture of isotropic Gaussians with a common standard deviation.

    The parent of ``Ring`` and ``Grid``; use it directly for any other layout.
    ``log_prob`` is exact; ``entropy`` uses the decomposition in the module
    docstring, exact up to a Monte Carlo term whose standard error
    ``entropy_estimate`` reports (zero for well-separated modes).

    Args:
        centres: array-like ``(k, 2)``, the component means (also ``modes``).
        std: the components' common standard deviation.

    Example:
        >>> import numpy as np
        >>> from zoo.data import GaussianMixture
        >>> density = GaussianMixture([[0.0, 0.0]], std=1.0)
        >>> bool(np.isclose(density.entropy(), np.log(2 * np.pi * np.e)))
        True
        >>> density.log_prob([[0.0, 0.0]]).round(4)
        array([-1.8379])
    """

    name = "gaussian_mixture"

    def __init__(self, centres, std):
        centres = check_points(centres, "centres", dim=2)
        if len(centres) == 0:
            raise ValueError("centres must hold at least one point; got shape (0, 2).")
        if not np.all(np.isfinite(centres)):
            raise ValueError("centres must be finite.")
        # A private read-only copy: the caller's array must stay writable.
        self._centres = centres.copy()
        self._centres.setflags(write=False)
        self.std = check_positive(std, "std")

    @property
    def modes(self):
        """The component means, float64 ``(k, 2)`` (read-only)."""
        return self._centres

    @property
    def num_modes(self):
        return len(self._centres)

    def get_config(self):
        return {"centres": self._centres.tolist(), "std": self.std}

    def _sample(self, n, rng):
        component = rng.integers(len(self._centres), size=n)
        return self._centres[component] + self.std * rng.standard_normal((n, 2))

    def _log_kernels(self, x):
        """Yield ``(rows, a)`` with ``a[i, j] = -|x_i - c_j|^2 / (2 s^2)`` in chunks."""
        # -|x - c|^2 / (2 s^2) = x.c / s^2 - |x|^2 / (2 s^2) - |c|^2 / (2 s^2): one
        # matrix product and two in-place adds, several times faster than
        # differencing. The rounding error (~1e-16 |x|^2 / s^2) is negligible.
        inv_var = 1.0 / self.std**2
        c = self._centres
        c_scaled = c.T * inv_var
        c_term = -0.5 * inv_var * np.einsum("ij,ij->i", c, c)
        step = max(1, _CHUNK_ELEMENTS // len(c))
        for start in range(0, len(x), step):
            rows = slice(start, start + step)
            xr = x[rows]
            a = xr @ c_scaled
            a += c_term
            a += (-0.5 * inv_var * np.einsum("ij,ij->i", xr, xr))[:, None]
            yield rows, np.minimum(a, 0.0, out=a)

    def log_prob(self, x):
        """Exact log-density in nats of each row of ``x``, float64 ``(n,)``.

        Example:
            >>> from zoo.data import Grid
            >>> Grid().log_prob([[0.0, 0.0], [1.0, 1.0]]).round(2)
            array([    2.77, -2495.85])
        """
        x = check_points(x, "x", dim=2)
        out = np.empty(len(x))
        norm = math.log(len(self._centres)) + math.log(2 * math.pi * self.std**2)
        for rows, a in self._log_kernels(x):
            out[rows] = _logsumexp(a) - norm
        return out

    def posterior_entropy(self, x):
        """Entropy in nats of the posterior over components at each row of ``x``."""
        x = check_points(x, "x", dim=2)
        out = np.empty(len(x))
        for rows, a in self._log_kernels(x):
            a -= a.max(axis=1, keepdims=True)
            w = np.exp(a)
            total = w.sum(axis=1)
            # With q = w / total: H = -sum q log q = log(total) - sum(w * a) / total,
            # which needs one exp and lets q == 0 terms add exactly 0.
            out[rows] = np.log(total) - np.einsum("ij,ij->i", w, a) / total
        return np.maximum(out, 0.0)

    def entropy_estimate(self, num_samples=None, seed=0):
        """Entropy in nats and its Monte Carlo standard error.

        Args:
            num_samples: points for the ``E_x[H(C | x)]`` term. Default: as many
                as keep the work near 5e7 distance evaluations, between 10_000
                and 200_000 (the standard error it gives is returned).
            seed: seed of the Monte Carlo draw (fixed, so results repeat).

        Example:
            >>> from zoo.data import Ring
            >>> estimate = Ring().entropy_estimate()
            >>> estimate.stderr == 0.0  # modes 76 std apart: no overlap at all
            True
        """
        k = len(self._centres)
        if num_samples is None:
            num_samples = int(np.clip(5e7 // k, 10_000, 200_000))
        num_samples = check_int(num_samples, "num_samples", minimum=2)
        x = self._sample(num_samples, make_rng(seed))
        h = self.posterior_entropy(x)
        value = math.log(2 * math.pi * math.e * self.std**2) + math.log(k) - h.mean()
        stderr = h.std(ddof=1) / math.sqrt(num_samples)
        return EntropyEstimate(float(value), float(stderr))

    def mode_coverage(self, samples, threshold=3.0, min_count=1):
        """``mode_coverage(samples, self.modes, self.std, ...)``; see ``mode_coverage``."""
        return mode_coverage(
            samples, self._centres, self.std, threshold=threshold, min_count=min_count
        )


class Ring(GaussianMixture):
    """A ring of equally spaced isotropic Gaussians (the "8 Gaussians" benchmark).

    Mode ``i`` sits at angle ``2 pi i / n_modes`` on a circle of ``radius``
    around the origin. The defaults (8 modes, radius 2, std 0.02) are the 2-D
    ring of the mode-collapse literature (Unrolled GAN, VEEGAN, PacGAN).

    Example:
        >>> from zoo.data import Ring
        >>> ring = Ring()
        >>> ring.modes.shape
        (8, 2)
        >>> ring.mode_coverage(ring.sample(2500, seed=0))["modes_covered"]
        8
    """

    name = "ring"

    def __init__(self, n_modes=8, radius=2.0, std=0.02):
        self.n_modes = check_int(n_modes, "n_modes", minimum=1)
        self.radius = check_positive(radius, "radius")
        angles = 2 * np.pi * np.arange(self.n_modes) / self.n_modes
        centres = self.radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        super().__init__(centres, std)

    def get_config(self):
        return {"n_modes": self.n_modes, "radius": self.radius, "std": self.std}


class Grid(GaussianMixture):
    """A ``size`` x ``size`` grid of isotropic Gaussians centred on the origin.

    Centres are at ``(i - (size - 1) / 2) * spacing`` on each axis, so the
    default 5 x 5 grid has centres at -4, -2, 0, 2, 4, as in VEEGAN and PacGAN.
    Modes are listed row-major: x varies slowest.

    Example:
        >>> from zoo.data import Grid
        >>> grid = Grid()
        >>> grid.modes[:2].tolist()
        [[-4.0, -4.0], [-4.0, -2.0]]
    """

    name = "grid"

    def __init__(self, size=5, spacing=2.0, std=0.02):
        self.size = check_int(size, "size", minimum=1)
        self.spacing = check_positive(spacing, "spacing")
        axis = (np.arange(self.size) - (self.size - 1) / 2) * self.spacing
        gx, gy = np.meshgrid(axis, axis, indexing="ij")
        super().__init__(np.stack([gx.ravel(), gy.ravel()], axis=1), std)

    def get_config(self):
        return {"size": self.size, "spacing": self.spacing, "std": self.std}


class _CurveDensity(ToyDensity):
    """Points on parametric curves (parameter uniform, curves equally likely) plus
    isotropic Gaussian noise; density by quadrature (see the module docstring)."""

    modes = None

    def __init__(self, noise):
        self.noise = check_positive(noise, "noise")
        self.std = self.noise
        self._quadrature = GaussianMixture(self._nodes(), self.noise)

    def _curves(self, u):
        """List of ``(len(u), 2)`` arrays: each curve at parameters ``u`` in [0, 1]."""
        raise NotImplementedError

    def _nodes(self):
        # Fastest speed |dc/du| over all curves, measured on a fine polyline.
        fine = np.linspace(0.0, 1.0, 20_001)
        speed = max(
            np.linalg.norm(np.diff(c, axis=0), axis=1).max() * (len(fine) - 1)
            for c in self._curves(fine)
        )
        per_curve = max(2000, math.ceil(20 * speed / self.noise))
        u = (np.arange(per_curve) + 0.5) / per_curve
        return np.concatenate(self._curves(u))

    def _sample(self, n, rng):
        curves = self._curves(rng.random(n))
        which = rng.integers(len(curves), size=n)
        points = np.stack(curves)[which, np.arange(n)]
        return points + self.noise * rng.standard_normal((n, 2))

    def log_prob(self, x):
        """Log-density in nats of each row of ``x``, float64 ``(n,)``.

        Midpoint quadrature over the curve parameter; accurate to about 3e-3
        nats near the data (see the module docstring). Cost grows with the
        number of nodes, ``~1 / noise``.
        """
        return self._quadrature.log_prob(x)

    def entropy_estimate(self, num_samples=None, seed=0):
        """Entropy in nats and its Monte Carlo standard error.

        The quadrature mixture's entropy (see ``GaussianMixture.entropy_estimate``);
        the default ``num_samples`` gives a standard error of about 2e-3 nats.
        """
        return self._quadrature.entropy_estimate(num_samples=num_samples, seed=seed)


class TwoMoons(_CurveDensity):
    """Two interleaved half circles plus Gaussian noise (scikit-learn's ``make_moons``).

    Same coordinates as ``sklearn.datasets.make_moons``: the upper moon is
    ``(cos(pi u), sin(pi u))``, the lower ``(1 - cos(pi u), 0.5 - sin(pi u))``.
    Unlike ``make_moons`` (evenly spaced ``u``, exactly half the points per
    moon) the samples here are i.i.d. from the density: ``u`` uniform on [0, 1],
    each moon with probability 1/2, noise of standard deviation ``noise``.

    Example:
        >>> from zoo.data import TwoMoons
        >>> moons = TwoMoons(noise=0.1)
        >>> moons.sample(500, seed=0).shape
        (500, 2)
        >>> round(moons.entropy(), 2)  # nats
        1.01
    """

    name = "moons"

    def __init__(self, noise=0.1):
        super().__init__(noise)

    def _curves(self, u):
        angle = np.pi * u
        upper = np.stack([np.cos(angle), np.sin(angle)], axis=1)
        lower = np.stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
        return [upper, lower]

    def get_config(self):
        return {"noise": self.noise}


class SwissRoll(_CurveDensity):
    """A 2-D swiss roll (spiral) plus Gaussian noise, as in FFJORD's toy data.

    The curve is ``(t cos t, t sin t) / 5`` with ``t = 1.5 pi (1 + 2u)`` and ``u``
    uniform on [0, 1]: scikit-learn's ``make_swiss_roll`` restricted to its
    ``(x, z)`` coordinates and divided by 5. ``make_swiss_roll(noise=1.0)``
    followed by ``/ 5`` (FFJORD's version) is ``SwissRoll(noise=0.2)``, the default.

    Example:
        >>> from zoo.data import SwissRoll
        >>> roll = SwissRoll()
        >>> x = roll.sample(1000, seed=0)
        >>> bool(abs(x).max() < 4.0)
        True
    """

    name = "swiss_roll"

    def __init__(self, noise=0.2):
        super().__init__(noise)

    def _curves(self, u):
        t = 1.5 * np.pi * (1.0 + 2.0 * u)
        return [np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 5.0]

    def get_config(self):
        return {"noise": self.noise}


TOY_DENSITIES = {"ring": Ring, "grid": Grid, "moons": TwoMoons, "swiss_roll": SwissRoll}


def toy_density(name, **kwargs):
    """Build a toy density by name: ``"ring"``, ``"grid"``, ``"moons"`` or ``"swiss_roll"``.

    Keyword arguments go to the class (``Ring``, ``Grid``, ``TwoMoons``,
    ``SwissRoll``).

    Example:
        >>> from zoo.data import toy_density
        >>> toy_density("grid", std=0.05)
        Grid(size=5, spacing=2.0, std=0.05)
    """
    if name not in TOY_DENSITIES:
        raise ValueError(
            f"toy_density(name=...) must be one of "
            f"{', '.join(map(repr, TOY_DENSITIES))}; got {name!r}."
        )
    return TOY_DENSITIES[name](**kwargs)


def mode_coverage(samples, modes, std, threshold=3.0, min_count=1):
    """How many modes of a mixture the samples reach, and how many samples are good.

    Each sample is assigned to its nearest mode. It is *high quality* when it
    lies within ``threshold * std`` of that mode (the three-standard-deviation
    rule of VEEGAN and PacGAN). A mode is *covered* when at least ``min_count``
    high-quality samples land on it: ``min_count=1`` is VEEGAN's count of
    captured modes; PacGAN, drawing 2500 samples from the 25-mode grid, counts a
    mode as lost below 20 samples (``min_count=20``).

    Args:
        samples: array-like ``(n, d)``, e.g. a generator's output, n >= 1.
        modes: array-like ``(k, d)`` of mode centres (``density.modes``).
        std: the modes' standard deviation (``density.std``).
        threshold: distance, in units of ``std``, that counts as high quality.
        min_count: high-quality samples a mode needs to count as covered.

    Returns:
        A dict with ``modes_covered`` (int), ``num_modes`` (int, k),
        ``high_quality`` (float, fraction of samples within ``threshold * std``
        of their nearest mode), ``counts`` (int64 ``(k,)``, high-quality samples
        per mode), ``covered`` (bool ``(k,)``), and ``reverse_kl`` (float, nats:
        KL divergence from the histogram of *all* samples over their nearest
        modes to the uniform distribution over modes; 0 when the samples spread
        evenly, ``log k`` when all fall on one mode).

    Example:
        >>> from zoo.data import Grid, mode_coverage
        >>> grid = Grid()
        >>> result = mode_coverage(grid.sample(2500, seed=0), grid.modes, grid.std)
        >>> result["modes_covered"], result["num_modes"]
        (25, 25)
    """
    modes = check_points(modes, "modes")
    samples = check_points(samples, "samples")
    if len(modes) == 0:
        raise ValueError("modes must hold at least one mode; got shape (0, d).")
    if len(samples) == 0:
        raise ValueError("samples must hold at least one point; got shape (0, d).")
    if samples.shape[1] != modes.shape[1]:
        raise ValueError(
            f"samples and modes must have the same number of columns; got "
            f"samples {samples.shape} and modes {modes.shape}."
        )
    if not np.all(np.isfinite(samples)):
        bad = int(np.sum(~np.all(np.isfinite(samples), axis=1)))
        raise ValueError(f"samples must be finite; {bad} rows hold NaN or inf.")
    std = check_positive(std, "std")
    threshold = check_positive(threshold, "threshold")
    min_count = check_int(min_count, "min_count", minimum=1)

    k = len(modes)
    nearest = np.empty(len(samples), dtype=np.int64)
    distance = np.empty(len(samples))
    step = max(1, _CHUNK_ELEMENTS // k)
    for start in range(0, len(samples), step):
        diff = samples[start : start + step, None, :] - modes[None, :, :]
        d2 = np.einsum("ijk,ijk->ij", diff, diff)
        nearest[start : start + step] = d2.argmin(axis=1)
        distance[start : start + step] = np.sqrt(d2.min(axis=1))

    good = distance <= threshold * std
    counts = np.bincount(nearest[good], minlength=k).astype(np.int64)
    covered = counts >= min_count
    share = np.bincount(nearest, minlength=k) / len(samples)
    nonzero = share > 0
    reverse_kl = float(np.sum(share[nonzero] * np.log(share[nonzero] * k)))
    return {
        "modes_covered": int(covered.sum()),
        "num_modes": k,
        "high_quality": float(good.mean()),
        "counts": counts,
        "covered": covered,
        "reverse_kl": max(reverse_kl, 0.0),
    }
