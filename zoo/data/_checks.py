"""Argument checks shared by the data modules, so every error names its argument."""

import numbers

import numpy as np


def check_int(value, name, minimum=None):
    """Return ``value`` as an int, or raise ValueError naming ``name``."""
    # bool is an int subclass; True as a sample count is always a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {value!r}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}.")
    return value


def check_positive(value, name):
    """Return ``value`` as a finite float > 0, or raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive number; got {value!r}.")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number; got {value!r}.")
    return value


def make_rng(seed, name="seed"):
    """A NumPy Generator from None (fresh entropy), an int >= 0, or a Generator."""
    if seed is None or isinstance(seed, np.random.Generator):
        return np.random.default_rng(seed)
    return np.random.default_rng(check_int(seed, name, minimum=0))


def check_points(x, name, dim=None):
    """Return ``x`` as a float64 array of shape ``(n, dim)``, or raise ValueError."""
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a real-valued array; got dtype {arr.dtype}.")
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, d)"
        raise ValueError(f"{name} must have shape {want}; got shape {arr.shape}.")
    return arr.astype(np.float64, copy=False)
