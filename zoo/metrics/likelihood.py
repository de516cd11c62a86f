"""Unit conversions for likelihood figures."""

import math

import numpy as np


def bits_per_dim(nll_nats, num_dims):
    """Negative log-likelihood in nats per example -> bits per dimension.

    Example: `bits_per_dim(44.36, 64)` is 1.0.
    """
    if int(num_dims) < 1:
        raise ValueError(f"`num_dims` must be >= 1; received {num_dims}.")
    return np.asarray(nll_nats, dtype=np.float64) / (int(num_dims) * math.log(2.0))


def perplexity(nll_nats_per_token):
    """Mean negative log-likelihood in nats per token -> perplexity."""
    return np.exp(np.asarray(nll_nats_per_token, dtype=np.float64))
