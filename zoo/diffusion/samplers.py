"""Per-step coefficients of the samplers, precomputed in NumPy float64.

Every sampler here updates `x` with one denoiser evaluation per step as a
fixed linear combination, so the sampling loop is the same for all of them
and compiles once: at step i, with the model's data prediction `x0`, noise
prediction `eps`, the previous step's `x0_prev` and fresh noise `z`,

    x <- c_x[i] x + c_x0[i] x0 + c_prev[i] x0_prev + c_eps[i] eps + c_z[i] z

The visited timesteps run from T-1 down to 0: evenly spaced in t for
DDPM and DDIM (as in their papers), evenly spaced in log-SNR for
DPM-Solver++ (as Lu et al. recommend; with the exact denoiser of a Gaussian
it cuts the error at 10-20 steps several-fold). The step from the last of
them lands on clean data (abar = 1).

- "ddim" (Song et al., 2021) with `eta`: x_s = sqrt(abar_s) x0 +
  sqrt(1 - abar_s - sigma^2) eps + sigma z, sigma = eta sqrt((1-abar_s) /
  (1-abar_t)) sqrt(1 - abar_t/abar_s).
- "ddpm": ancestral sampling from the exact posterior q(x_s | x_t, x0),
  which is DDIM with eta = 1; with all T steps it is Ho et al.'s sampler.
- "dpm++2m": DPM-Solver++(2M) (Lu et al., 2022), second-order multistep in
  the data prediction, first order on the first and last steps.
"""

import numpy as np

SAMPLERS = ("ddpm", "ddim", "dpm++2m")


def timesteps_for(num_steps, horizon):
    """`num_steps` integer timesteps from horizon-1 down to 0, evenly spaced."""
    return np.round(np.linspace(horizon - 1, 0, num_steps)).astype(np.int32)


def log_snr_timesteps(num_steps, alphas_cumprod):
    """`num_steps` distinct timesteps from T-1 down to 0, evenly spaced in
    log-SNR; rounding collisions are pushed to the next free timestep, so
    there are exactly `num_steps` denoiser evaluations."""
    log_snr = np.log(alphas_cumprod / (1.0 - alphas_cumprod))  # decreasing in t
    targets = np.linspace(log_snr[-1], log_snr[0], num_steps)
    t = np.interp(targets, log_snr[::-1], np.arange(len(log_snr))[::-1])
    ts = np.round(t).astype(np.int64)
    ts[0] = len(log_snr) - 1
    for i in range(1, num_steps):
        ts[i] = min(ts[i], ts[i - 1] - 1)
    for i in range(num_steps - 1, -1, -1):
        ts[i] = max(ts[i], num_steps - 1 - i)
    if num_steps > 1:
        ts[-1] = 0
    return ts.astype(np.int32)


def coefficients(sampler, alphas_cumprod, num_steps, eta=0.0):
    """Returns `(timesteps, table)`; `table` is `(num_steps, 5)` float32 with
    columns c_x, c_x0, c_prev, c_eps, c_z."""
    horizon = len(alphas_cumprod)
    if sampler not in SAMPLERS:
        raise ValueError(f"`sampler` must be one of {SAMPLERS}; received {sampler!r}.")
    if not 1 <= int(num_steps) <= horizon:
        raise ValueError(
            f"`steps` must be between 1 and the training horizon of {horizon} "
            f"timesteps; received {num_steps}."
        )
    if eta < 0:
        raise ValueError(f"`eta` must be >= 0; received {eta}.")
    if sampler == "dpm++2m":
        ts = log_snr_timesteps(int(num_steps), alphas_cumprod)
    else:
        ts = timesteps_for(int(num_steps), horizon)
    abar_t = alphas_cumprod[ts]
    abar_s = np.append(alphas_cumprod[ts[1:]], 1.0)
    table = np.zeros((len(ts), 5))
    if sampler in ("ddim", "ddpm"):
        eta = 1.0 if sampler == "ddpm" else eta
        sigma = eta * np.sqrt((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s))
        table[:, 1] = np.sqrt(abar_s)
        table[:, 3] = np.sqrt(np.clip(1 - abar_s - sigma**2, 0.0, None))
        table[:, 4] = sigma
        return ts, table.astype(np.float32)
    # DPM-Solver++(2M) in log-SNR half-steps lambda = log(alpha / sigma).
    alpha_t, sigma_t = np.sqrt(abar_t), np.sqrt(1 - abar_t)
    alpha_s, sigma_s = np.sqrt(abar_s), np.sqrt(1 - abar_s)
    lam_t = np.log(alpha_t / sigma_t)
    with np.errstate(divide="ignore"):
        lam_s = np.where(sigma_s > 0, np.log(alpha_s / np.maximum(sigma_s, 1e-300)), np.inf)
    h = lam_s - lam_t
    table[:, 0] = sigma_s / sigma_t
    decay = alpha_s * -np.expm1(-h)  # alpha_s (1 - e^-h); = 1 on the last step
    for i in range(len(ts)):
        first_order = i == 0 or i == len(ts) - 1
        if first_order:
            table[i, 1] = decay[i]
        else:
            r = (lam_t[i] - lam_t[i - 1]) / h[i]
            table[i, 1] = decay[i] * (1 + 1 / (2 * r))
            table[i, 2] = -decay[i] / (2 * r)
    return ts, table.astype(np.float32)
