"""Flow-matching time grids, samplers and training-time densities.

Time runs from t = 1 (noise) to t = 0 (data) along the rectified-flow path
`x_t = (1 - t) x0 + t noise`, whose velocity is `dx/dt = noise - x0`. The
visited times are `linspace(1, 0, steps + 1)` passed through the time shift
`shift t / (1 + (shift - 1) t)` (SD3's resolution-dependent shift; 1: none),
exactly what diffusers' `FlowMatchEulerDiscreteScheduler(shift=...)` does
with `set_timesteps(sigmas=...)`.

Every sampler is one loop of the same step, `k1 = v(x, t)`, then for the
second-order samplers `k2 = v(x + c_b k1, t_b)`, and
`x <- x + c_1 k1 + c_2 k2`, with per-step coefficients in a table
`(steps, 5)` of columns `t, t_b, c_b, c_1, c_2` (h = t_next - t < 0):

- "euler": `x + h k1` (one evaluation per step);
- "heun": Heun's method (explicit trapezoid): `t_b = t_next`, `c_b = h`,
  `c_1 = c_2 = h / 2` (two evaluations per step);
- "midpoint": the explicit midpoint method: `t_b = t + h / 2`,
  `c_b = h / 2`, `c_1 = 0`, `c_2 = h` (two evaluations per step).
"""

import math
import numbers

import numpy as np

FLOW_SAMPLERS = ("euler", "heun", "midpoint")
TIME_DENSITIES = ("uniform", "logit_normal")


def time_shift(t, shift):
    """`shift t / (1 + (shift - 1) t)`: more time near the noise end for
    shift > 1 (Esser et al., 2024, for higher resolutions)."""
    t = np.asarray(t, np.float64)
    return shift * t / (1.0 + (shift - 1.0) * t)


def resolution_shift(data_shape, base_shape):
    """SD3's resolution-dependent shift `sqrt(m / n)` for data of `m`
    dimensions, when a schedule suits data of `n` (`base_shape`): Esser et
    al. (2024) go from 256x256 to 1024x1024 images with sqrt(16) = 4 (SD3
    ships 3.0). Example: `resolution_shift((16, 16, 1), (8, 8, 1))` is 2."""
    m, n = float(np.prod(data_shape)), float(np.prod(base_shape))
    if m <= 0 or n <= 0:
        raise ValueError(f"shapes must have positive sizes; received {data_shape}, {base_shape}.")
    return math.sqrt(m / n)


def flow_times(steps, shift=1.0):
    """The `steps + 1` visited times from 1 down to 0, shifted."""
    return time_shift(np.linspace(1.0, 0.0, int(steps) + 1), shift)


def check_times(times):
    """Explicit sampling times: float64, decreasing, in [0, 1], at least 2."""
    try:
        times = np.asarray(times, np.float64)
    except (TypeError, ValueError):
        times = None
    if (
        times is None or times.ndim != 1 or len(times) < 2 or not np.all(np.isfinite(times))
        or times.min() < 0 or times.max() > 1 or np.any(np.diff(times) >= 0)
    ):
        raise ValueError(
            "`times` must be a strictly decreasing sequence of at least 2 numbers in "
            f"[0, 1] (from the noise end towards 0); received times={times!r}."
        )
    return times


def flow_coefficients(sampler, steps, shift=1.0, times=None):
    """`(table, evaluations)`: the `(steps, 5)` float32 table (module
    docstring) and the velocity evaluations per step. `times`: explicit
    visited times (`steps + 1` of them) instead of the shifted grid."""
    if sampler not in FLOW_SAMPLERS:
        raise ValueError(f"`sampler` must be one of {FLOW_SAMPLERS}; received {sampler!r}.")
    if isinstance(steps, bool) or not isinstance(steps, (numbers.Integral, np.integer)) \
            or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1; received steps={steps!r}.")
    times = flow_times(steps, shift) if times is None else check_times(times)
    steps = len(times) - 1
    t, t_next = times[:-1], times[1:]
    h = t_next - t
    table = np.zeros((int(steps), 5))
    table[:, 0] = t
    if sampler == "euler":
        table[:, 3] = h
        return table.astype(np.float32), 1
    if sampler == "heun":
        table[:, 1], table[:, 2], table[:, 3], table[:, 4] = t_next, h, h / 2, h / 2
    else:
        table[:, 1], table[:, 2], table[:, 4] = t + h / 2, h / 2, h
    return table.astype(np.float32), 2


def integrate_numpy(table, x, velocity):
    """Runs the sampler of `table` (from `flow_coefficients`) in float64
    NumPy from `x`, calling `velocity(x, t)` (NumPy in, NumPy out): the
    reference the presets' golden probes use, free of any backend's random
    generator and so equal on every backend."""
    x = np.asarray(x, np.float64)
    for t, t_b, c_b, c_1, c_2 in np.asarray(table, np.float64):
        k1 = velocity(x, t)
        update = c_1 * k1
        if c_2:  # the second evaluation only when a coefficient needs it
            update = update + c_2 * velocity(x + c_b * k1, t_b)
        x = x + update
    return x
