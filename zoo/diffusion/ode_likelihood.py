"""Likelihoods of the diffusion models by the probability-flow ODE."""

import contextlib
import math

import numpy as np
from keras import ops

DIVERGENCES = ("auto", "exact", "hutchinson")
# Data of at most this many dimensions get the exact divergence by default.
_EXACT_DIVERGENCE_DIMS = 16


class ODELikelihood:
    """`log_prob` for `DiffusionModel`: a subclass gives its ODE through
    `_ode_grid`, `_ode_drift`, `_ode_entry` and `_ode_exit`."""


    def log_prob(self, x, labels=None, steps=64, divergence="auto", num_probes=1,
                 batch_size=512, seed=0, use_ema=True):
        """Log-density of `x` (nats per example) under the model's
        probability-flow ODE, by the instantaneous change of variables
        (Chen et al., 2018; Song et al., 2021): `x` is carried to the noise
        end with Heun's method in `steps` steps, and the divergence of the
        ODE's velocity is integrated along the way.

        Args:
            x: data, `(n,) + data_shape`, in the model's data space.
            labels: a conditional model's classes (int or `(n,)` ints; None:
                the unconditional density, the "no label" token).
            steps: Heun steps (2 velocity evaluations each, plus the
                divergence's gradients).
            divergence: `"exact"` (one gradient per data dimension: for small
                data such as 2-D toys), `"hutchinson"` (Hutchinson's unbiased
                estimator with `num_probes` Rademacher probes per example,
                the same probes along the whole path, as in FFJORD), or
                `"auto"`: exact up to 16 dimensions.
            num_probes: Rademacher probes of the Hutchinson estimator.
            batch_size: examples per pass.
            seed: seed of the Hutchinson probes.
            use_ema: use the averaged weights when kept.

        Returns float64 NumPy `(n,)`.
        """
        from zoo.diffusion.diffusion_model import check_int

        steps = check_int(steps, "steps")
        num_probes = check_int(num_probes, "num_probes")
        batch_size = check_int(batch_size, "batch_size")
        if divergence not in DIVERGENCES:
            raise ValueError(f"`divergence` must be one of {DIVERGENCES}; "
                             f"received {divergence!r}.")
        x = np.asarray(ops.convert_to_numpy(x), np.float32)
        if x.shape[1:] != self.data_shape or len(x) == 0:
            raise ValueError(f"`x` must have shape (n >= 1,) + {self.data_shape}; "
                             f"received {x.shape}.")
        num_dims = int(np.prod(self.data_shape))
        exact = divergence == "exact" or (
            divergence == "auto" and num_dims <= _EXACT_DIVERGENCE_DIMS
        )
        labels = self._check_labels(labels, None, len(x)) if (
            labels is not None or self.num_classes) else None
        rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
        grid = self._ode_grid(steps)
        out = []
        context = self.ema_weights() if use_ema else contextlib.nullcontext()
        with context:
            for start in range(0, len(x), batch_size):
                xb = x[start:start + batch_size]
                lb = None if labels is None else ops.convert_to_tensor(
                    labels[start:start + batch_size], "int32")
                probes = None if exact else [
                    ops.convert_to_tensor(
                        rng.choice([-1.0, 1.0], size=xb.shape).astype(np.float32))
                    for _ in range(num_probes)
                ]
                out.append(self._ode_log_prob(xb, lb, grid, probes))
        return np.concatenate(out)

    def _ode_log_prob(self, x, labels, grid, probes):
        positions, times, left, right = grid
        n = len(x)
        z, log_det = self._ode_entry(ops.convert_to_tensor(x), times[0])
        total = ops.zeros((n,), "float32")
        step = self._ode_step(n, probes is None, 0 if probes is None else len(probes),
                              labels is not None)
        labels = ops.zeros((n,), "int32") if labels is None else labels
        probes = ops.zeros((1, 1), "float32") if probes is None else ops.stack(probes)
        time_tensor = ops.convert_to_tensor(np.asarray(times).astype(self.time_dtype))
        for k in range(len(positions) - 1):
            coefficients = ops.convert_to_tensor(
                np.array([positions[k + 1] - positions[k], left[k], right[k]], np.float32))
            z, total = step(z, total, time_tensor[k], time_tensor[k + 1], coefficients,
                            labels, probes, seed=0)
        end = self._ode_exit(z, times[-1])
        return ops.convert_to_numpy(end + total).astype(np.float64) + log_det

    def _ode_step(self, batch, exact, num_probes, conditional):
        """One Heun step of the ODE with the divergence's quadrature, as one
        compiled function per setting (gradients inside: `jax.jit`, a
        `tf.function`, eager PyTorch)."""
        key = ("ode", batch, exact, num_probes, conditional)
        if key not in self._samplers:
            def step(z, total, t1, t2, c, labels, probes):
                labels = labels if conditional else None
                probes = None if exact else [probes[j] for j in range(num_probes)]
                f1, d1 = self._drift_and_divergence(z, t1, labels, probes)
                f2, d2 = self._drift_and_divergence(z + c[0] * f1, t2, labels, probes)
                return z + (0.5 * c[0]) * (f1 + f2), total + c[1] * d1 + c[2] * d2

            self._samplers[key] = self.compile_function(step)
        return self._samplers[key]

    def _drift_and_divergence(self, z, time, labels, probes):
        def f(z):
            return self._ode_drift(z, time, labels)

        drift = f(z)
        axes = tuple(range(1, len(self.data_shape) + 1))
        if probes is None:
            flat_dims = int(np.prod(self.data_shape))
            divergence = 0.0
            for i in range(flat_dims):
                unit = np.zeros((1,) + self.data_shape, np.float32)
                unit.reshape(-1)[i] = 1.0
                unit = ops.convert_to_tensor(unit)
                grad = self.gradient(lambda z: f(z) * unit, z)
                divergence = divergence + ops.sum(grad * unit, axis=axes)
            return drift, divergence
        estimates = [ops.sum(self.gradient(lambda z: f(z) * e, z) * e, axis=axes)
                     for e in probes]
        return drift, sum(estimates) / len(estimates)

    def _ode_grid(self, steps):
        """`(positions, times, left, right)`: the ODE variable at `steps + 1`
        points from the data end to the noise end, the matching denoiser
        times, and the quadrature weights of the divergence at the left and
        right end of each step (trapezoid: both `h / 2`)."""
        raise NotImplementedError

    def _ode_drift(self, z, time, labels):
        raise NotImplementedError

    def _ode_entry(self, x, time):
        """`(z, log_det)`: the ODE state at the data end, and the NumPy
        log-Jacobian from `x` to it, per example."""
        raise NotImplementedError

    def _ode_exit(self, z, time):
        """Log-density of the end state under the prior, per example."""
        raise NotImplementedError

    def _standard_normal_log_prob(self, z):
        axes = tuple(range(1, len(self.data_shape) + 1))
        d = float(np.prod(self.data_shape))
        return -0.5 * ops.sum(z * z, axis=axes) - 0.5 * d * math.log(2 * math.pi)
