"""Noise schedules: the cumulative signal fractions abar_t, t = 0..T-1.

Computed once in NumPy float64; the model keeps them as constants.
"""

import math

import numpy as np

SCHEDULES = ("linear", "cosine")


def alphas_cumprod(schedule, timesteps):
    """`abar_t = prod_{s<=t} (1 - beta_s)` for `schedule` over `timesteps` steps.

    - "linear": betas from 1e-4 to 0.02 at T=1000 (Ho et al., 2020), scaled
      by 1000/T so other horizons keep the same end points in continuous time.
    - "cosine": `abar(t) = cos^2(((t/T + s) / (1 + s)) pi/2)`, s = 0.008,
      betas clipped at 0.999 (Nichol & Dhariwal, 2021).
    """
    timesteps = int(timesteps)
    if timesteps < 1:
        raise ValueError(f"`timesteps` must be >= 1; received {timesteps}.")
    if schedule == "linear":
        scale = 1000.0 / timesteps
        betas = np.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=np.float64)
    elif schedule == "cosine":
        s = 0.008
        steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
        f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
    else:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}; received {schedule!r}.")
    return np.cumprod(1.0 - betas)
