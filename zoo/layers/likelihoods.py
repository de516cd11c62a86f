"""Decoder likelihoods p(x | z) for latent-variable models, with `keras.ops`.

Data live in [-1, 1]. Two families:

- `"gaussian"`: mean and scale per dimension (the scale learned by the
  decoder or fixed). With `num_levels=None` it is a *density*; on discrete
  data a density is not a probability of the data and its "likelihood" can
  grow without bound as the scale shrinks. With `num_levels=L` the data are
  taken to lie on the grid of `L` evenly spaced values from -1 to 1 and the
  Gaussian is *discretized*: each grid value gets the probability mass of its
  bin (width `2 / (L - 1)`), the two end bins reaching to -inf and +inf, so
  the masses sum to one and `-log p` is an honest code length in nats.
- `"bernoulli"`: one logit per dimension. With `num_levels=None` or 2 it is
  the Bernoulli of binary data in {-1, 1} (the cross-entropy with soft
  targets on other data, which is then not a likelihood). With `num_levels=L`
  it is the binomial with `L - 1` trials over the `L` grid values, whose
  masses sum to one.

The sklearn digits have 17 intensity levels (`x / 8 - 1`), so
`num_levels=17` makes either family a proper likelihood of them.

Example:

```python
import numpy as np
from zoo.layers import likelihoods

grid = np.linspace(-1, 1, 17, dtype="float32")
mass = np.exp(likelihoods.discretized_gaussian_log_prob(grid, 0.2, -1.0, 17))
float(mass.sum())  # 1.0
```
"""

import math
import numbers

import numpy as np
from keras import ops

LIKELIHOODS = ("gaussian", "bernoulli")
# A learned scale is kept above this, smoothly: at 1e-3 a density on [-1, 1]
# is already near 6 nats per dimension above a uniform one.
MIN_SCALE = 1e-3
_LOG_2PI = math.log(2.0 * math.pi)
# Standardized positions of the open ends of the outer bins: far enough that
# the Gaussian mass beyond is 0 in float32, finite so gradients stay finite.
_OPEN_END = 1e4
# Below this mass the difference of erfc values underflows or loses its
# digits, and the asymptotic tail expansion takes over.
_TINY_MASS = 1e-30


def check_likelihood(likelihood, scale, num_levels):
    """Validates the likelihood arguments shared by the VAE family."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(
            f"`likelihood` must be one of {', '.join(map(repr, LIKELIHOODS))}; "
            f"received likelihood={likelihood!r}."
        )
    fixed = (
        isinstance(scale, numbers.Real)
        and not isinstance(scale, bool)
        and scale > 0
        and math.isfinite(scale)
    )
    if scale != "learned" and not fixed:
        raise ValueError(
            "`scale` must be 'learned' (the decoder outputs a scale per "
            "dimension) or a positive float (a fixed standard deviation; "
            f"used by 'gaussian' only); received scale={scale!r}."
        )
    if num_levels is not None and (
        not isinstance(num_levels, numbers.Integral)
        or isinstance(num_levels, bool)
        or num_levels < 2
    ):
        raise ValueError(
            "`num_levels` must be None (continuous data) or an integer >= 2, "
            "the number of evenly spaced values the data take in [-1, 1] "
            f"(17 for the sklearn digits); received num_levels={num_levels!r}."
        )


def num_parameters(likelihood, scale):
    """Decoder outputs per data dimension: 2 for a learned scale, else 1."""
    return 2 if likelihood == "gaussian" and scale == "learned" else 1


def split_parameters(params, likelihood, scale):
    """`(location, log_scale)` from the decoder output (channels last).

    For "bernoulli" the location is the logit and `log_scale` is None.
    Computed in float32 whatever the network's dtype: the tails of a
    discretized likelihood are beyond float16.
    """
    params = ops.cast(params, "float32")
    if likelihood == "bernoulli":
        return params, None
    if scale == "learned":
        mean, raw = ops.split(params, 2, axis=-1)
        # A soft floor: a hard clip would stop the gradient of the scale.
        log_min = math.log(MIN_SCALE)
        return mean, log_min + ops.softplus(raw - log_min)
    return params, ops.full_like(params, math.log(scale))


def log_likelihood(x, params, likelihood, scale, num_levels):
    """`log p(x | z)` per example, summed over all data dimensions (nats)."""
    location, log_scale = split_parameters(params, likelihood, scale)
    x = ops.cast(x, location.dtype)
    if likelihood == "bernoulli":
        per_dim = binomial_log_prob(x, location, num_levels or 2)
    elif num_levels is None:
        per_dim = gaussian_log_prob(x, location, log_scale)
    else:
        per_dim = discretized_gaussian_log_prob(x, location, log_scale, num_levels)
    return ops.sum(ops.reshape(per_dim, (ops.shape(per_dim)[0], -1)), axis=1)


def mean(params, likelihood, scale, num_levels):
    """The decoder's mean in data space ([-1, 1] for discrete data)."""
    location, _ = split_parameters(params, likelihood, scale)
    if likelihood == "bernoulli":
        return 2.0 * ops.sigmoid(location) - 1.0
    if num_levels is not None:
        # The end bins are open, so a location beyond +-1 still means +-1.
        return ops.clip(location, -1.0, 1.0)
    return location


def sample(params, likelihood, scale, num_levels, rng):
    """One draw from p(x | z) in data space, on the grid when discrete.

    NumPy in and out, the noise from the NumPy generator `rng`, so that a
    seed gives the same draws on every backend.
    """
    location, log_scale = split_parameters(
        ops.convert_to_tensor(params), likelihood, scale
    )
    location = np.asarray(ops.convert_to_numpy(location), dtype=np.float64)
    if likelihood == "bernoulli":
        trials = (num_levels or 2) - 1
        successes = rng.binomial(trials, 1.0 / (1.0 + np.exp(-location)))
        return (2.0 * successes / trials - 1.0).astype(np.float32)
    sigma = np.exp(np.asarray(ops.convert_to_numpy(log_scale), dtype=np.float64))
    x = location + sigma * rng.standard_normal(location.shape)
    if num_levels is not None:
        step = 2.0 / (num_levels - 1)
        x = np.clip(np.round((x + 1.0) / step) * step - 1.0, -1.0, 1.0)
    return x.astype(np.float32)


def gaussian_log_prob(x, mean, log_scale):
    """Log density of N(mean, exp(log_scale)^2) at `x`, elementwise."""
    z = (x - mean) * ops.exp(-log_scale)
    return -0.5 * z * z - log_scale - 0.5 * _LOG_2PI


def _log_upper_tail(t):
    """log Q(t) = log P(N(0,1) > t) for large t, by the asymptotic series."""
    inv2 = 1.0 / (t * t)
    return (
        -0.5 * t * t - ops.log(t) - 0.5 * _LOG_2PI
        + ops.log1p(-inv2 + 3.0 * inv2 * inv2)
    )


def discretized_gaussian_log_prob(x, mean, log_scale, num_levels):
    """Log of the Gaussian mass of the grid bin holding `x`, elementwise.

    `x` is on the grid of `num_levels` values from -1 to 1 (others are
    treated as the bin they fall in). The mass of the bin `[lo, hi]` is
    `Phi(hi) - Phi(lo)` in standardized units; computed as a difference of
    `erfc` on the side of the bin away from the mean, where both terms are
    small and keep their digits, and from the asymptotic expansion of the
    tail when even that underflows (beyond ~11 standard deviations).
    """
    x = ops.convert_to_tensor(x)
    mean = ops.cast(mean, x.dtype)
    log_scale = ops.cast(log_scale, x.dtype)
    half = 1.0 / (num_levels - 1)
    inv_scale = ops.exp(-log_scale)
    lo = (x - half - mean) * inv_scale
    hi = (x + half - mean) * inv_scale
    lo = ops.where(x < -1.0 + half, -_OPEN_END, lo)
    hi = ops.where(x > 1.0 - half, _OPEN_END, hi)
    # Reflect bins below the mean to above it: the mass is unchanged and
    # erfc keeps relative precision for large positive arguments only.
    below = x < mean
    a = ops.where(below, -hi, lo)
    b = ops.where(below, -lo, hi)
    root2 = math.sqrt(2.0)
    mass = 0.5 * (ops.erfc(a / root2) - ops.erfc(b / root2))
    direct = ops.log(ops.maximum(mass, _TINY_MASS))
    # Only used far in the tail; the clamp keeps the unused branch finite.
    a_tail = ops.maximum(a, 5.0)
    b_tail = ops.maximum(b, a_tail + 1e-6)
    log_qa = _log_upper_tail(a_tail)
    log_qb = _log_upper_tail(b_tail)
    tail = log_qa + ops.log(ops.maximum(-ops.expm1(log_qb - log_qa), _TINY_MASS))
    return ops.where(mass > _TINY_MASS, direct, tail)


def _log_binomial_coefficients(trials):
    k = np.arange(trials + 1)
    lgamma = np.vectorize(math.lgamma)
    return (lgamma(trials + 1) - lgamma(k + 1) - lgamma(trials - k + 1)).astype("float32")


def binomial_log_prob(x, logits, num_levels):
    """Log-probability of `x` under a binomial with `num_levels - 1` trials.

    `x` in [-1, 1] counts `(x + 1) / 2 * (num_levels - 1)` successes; with
    `num_levels=2` this is the Bernoulli log-likelihood (the cross-entropy,
    also for soft targets between -1 and 1).
    """
    x = ops.convert_to_tensor(x)
    logits = ops.cast(logits, x.dtype)
    trials = num_levels - 1
    successes = (x + 1.0) * (0.5 * trials)
    log_p = successes * ops.log_sigmoid(logits) + (trials - successes) * ops.log_sigmoid(-logits)
    if trials == 1:
        return log_p
    index = ops.cast(ops.clip(ops.round(successes), 0, trials), "int32")
    coefficients = ops.convert_to_tensor(_log_binomial_coefficients(trials), dtype=x.dtype)
    return log_p + ops.take(coefficients, index)
