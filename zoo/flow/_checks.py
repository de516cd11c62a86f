"""Argument checks and small helpers shared by the flow family (not exported)."""

import math
import numbers

import keras
import numpy as np
from keras import ops

from zoo.core import validators


def check_int(value, name, minimum=1):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
    ):
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}; received {name}={value!r}."
        )
    return int(value)


def check_float(value, name, low=None, high=None, low_open=True, high_open=True):
    """`value` as a finite float inside the given (open by default) bounds."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
    )
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        raise ValueError(
            f"`{name}` must be a finite number{' ' + bounds if bounds else ''}; "
            f"received {name}={value!r}."
        )
    return float(value)


def check_seed(seed, name="seed"):
    """None or an integer in [0, 2**31 - 1], as every zoo model takes."""
    return validators.check_seed(seed, name)


def check_shape(shape, name, ranks=(1, 3)):
    """A tuple of positive ints of one of the allowed ranks."""
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or len(shape) not in ranks
        or any(
            isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1
            for s in shape
        )
    ):
        kinds = {1: "(features,)", 2: "(length, channels)", 3: "(height, width, channels)"}
        raise ValueError(
            f"`{name}` must be {' or '.join(kinds[r] for r in ranks)} with "
            f"positive integer sizes; received {name}={shape!r}."
        )
    return tuple(int(s) for s in shape)


def check_units(units, name="hidden_units"):
    if isinstance(units, numbers.Integral) and not isinstance(units, bool):
        units = (units,)
    try:
        units = tuple(units)
    except TypeError:
        units = None
    if (
        not units
        or any(
            isinstance(u, bool) or not isinstance(u, numbers.Integral) or u < 1
            for u in units
        )
    ):
        raise ValueError(
            f"`{name}` must be a non-empty list of positive integers; received "
            f"{name}={units!r}."
        )
    return tuple(int(u) for u in units)


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {', '.join(map(repr, choices))}; received "
            f"{name}={value!r}."
        )
    return value


def derive_seed(seed, *index):
    """A seed for the `index`-th part of something seeded with `seed`."""
    if seed is None:
        return None
    for i in index:
        seed = (seed * 1_000_003 + 7919 * (i + 1)) % (2**31 - 1)
    return int(seed)


def sum_event(x, rank):
    """Sum over the last `rank` axes: per-example totals of a per-dimension term."""
    if rank == 0:
        return x
    return ops.sum(x, axis=tuple(range(-rank, 0)))


def to_numpy(x):
    # On torch this also detaches from any graph.
    return np.asarray(ops.convert_to_numpy(x))


def check_data(x, shape, owner, name="x"):
    """`x` as a float32 NumPy array of shape `(n, *shape)`."""
    x = np.asarray(keras.ops.convert_to_numpy(x))
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{owner}: `{name}` must be real-valued; received dtype {x.dtype}.")
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(
            f"{owner} expects `{name}` of shape (batch, "
            f"{', '.join(map(str, shape))}); received shape {x.shape}."
        )
    return x.astype(np.float32, copy=False)


def batch_slices(n, batch_size):
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
