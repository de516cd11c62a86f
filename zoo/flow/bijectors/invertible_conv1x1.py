"""`InvertibleConv1x1`: Glow's learned channel mixing, optionally LU-parameterized."""

import math

import keras
import numpy as np
from keras import ops

from zoo.flow._checks import check_float
from zoo.flow.bijectors.bijector import Bijector


def _random_rotation(channels, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((channels, channels)))
    # Fixing the signs of R's diagonal makes Q Haar-distributed.
    return q * np.sign(np.diag(r))


def _plu(a):
    """`a = p @ l @ u` with partial pivoting: permutation, unit-lower, upper."""
    n = len(a)
    u = a.astype(np.float64).copy()
    l = np.eye(n)
    perm = np.arange(n)
    for k in range(n - 1):
        pivot = k + int(np.argmax(np.abs(u[k:, k])))
        if pivot != k:
            u[[k, pivot]] = u[[pivot, k]]
            l[[k, pivot], :k] = l[[pivot, k], :k]
            perm[[k, pivot]] = perm[[pivot, k]]
        factors = u[k + 1:, k] / u[k, k]
        l[k + 1:, k] = factors
        u[k + 1:] -= np.outer(factors, u[k])
    p = np.eye(n)[perm].T  # rows of `a` were taken in the order `perm`
    return p, l, np.triu(u)


@keras.saving.register_keras_serializable(package="zoo")
class InvertibleConv1x1(Bijector):
    """Invertible 1x1 convolution (Kingma & Dhariwal, 2018): every position's
    channel vector is multiplied by one learned `C x C` matrix `W`.

    `log_det = positions * log|det W|`. `W` starts as a random rotation
    (`log_det = 0`). With `lu=True`, `W = P L (U + diag(sign * exp(log_s)))`
    with a fixed permutation `P` and sign vector, unit lower-triangular `L`
    and strictly upper-triangular `U`: the log-determinant is `sum(log_s)`,
    and `W` cannot become exactly singular. Otherwise `W` is free and its
    log-determinant comes from `keras.ops.slogdet`.

    A singular or ill-conditioned `W` is detected, not silently turned into
    NaN: `check_invertible()` computes the condition number of `W` (in
    float64, by SVD) and raises `numpy.linalg.LinAlgError` (a `ValueError`)
    if `W` is not finite or its condition number exceeds `max_condition`,
    because then the float32 inverse loses about `log10(cond)` of its ~7
    digits. Flow models call it before every eager method (`log_prob`,
    `sample`, `forward`, `inverse`, `bits_per_dim`) and before `fit` and
    `evaluate`. A compiled step cannot raise; if `W` turns singular during
    training, `log|det W| = -inf` makes the loss `inf`, which
    `keras.callbacks.TerminateOnNaN` stops on. `lu=True` avoids this.

    Works on any event whose last axis is channels: `(H, W, C)` images, or
    `(D,)` vectors, where it is a learned invertible linear map.

    Args:
        event_shape: shape of one example; the map mixes its last axis.
        lu: the LU parameterization (always invertible, cheap
            determinant) instead of a full kernel.
        max_condition: the largest condition number `check_invertible`
            accepts.
        seed: seeds the random rotation `W` starts from.

    Example:

    ```python
    import numpy as np
    from zoo.flow import InvertibleConv1x1

    layer = InvertibleConv1x1((4, 4, 8), lu=True, seed=0)
    x = np.random.randn(2, 4, 4, 8).astype("float32")
    z, log_det = layer.forward(x)          # log_det == 0 at initialization
    layer.check_invertible()               # raises if W is (nearly) singular
    ```
    """

    def __init__(self, event_shape, lu=False, max_condition=1e4, seed=None, **kwargs):
        super().__init__(event_shape, seed=seed, **kwargs)
        if not isinstance(lu, bool):
            raise ValueError(f"`lu` must be True or False; received lu={lu!r}.")
        self.lu = lu
        self.max_condition = check_float(max_condition, "max_condition", low=1.0)
        c = self.event_shape[-1]
        self._positions = math.prod(self.event_shape[:-1])
        w = _random_rotation(c, self.seed)
        const = keras.initializers.Constant
        if not lu:
            self.kernel = self.add_weight(
                shape=(c, c), initializer=const(w.astype("float32")), name="kernel"
            )
        else:
            p, l, u = _plu(w)
            diag = np.diag(u)
            self._lower_mask = np.tril(np.ones((c, c), "float32"), -1)
            self._upper_mask = np.triu(np.ones((c, c), "float32"), 1)
            self.permutation = self.add_weight(
                shape=(c, c), initializer=const(p.astype("float32")),
                trainable=False, name="permutation",
            )
            self.sign = self.add_weight(
                shape=(c,), initializer=const(np.sign(diag).astype("float32")),
                trainable=False, name="sign",
            )
            self.lower = self.add_weight(
                shape=(c, c), initializer=const(np.tril(l, -1).astype("float32")),
                name="lower",
            )
            self.upper = self.add_weight(
                shape=(c, c), initializer=const(np.triu(u, 1).astype("float32")),
                name="upper",
            )
            self.log_s = self.add_weight(
                shape=(c,), initializer=const(np.log(np.abs(diag)).astype("float32")),
                name="log_s",
            )
        self.built = True

    def weight_matrix(self):
        """`W` as a tensor."""
        if not self.lu:
            return ops.convert_to_tensor(self.kernel)
        c = self.event_shape[-1]
        value = ops.convert_to_tensor
        lower = value(self.lower) * value(self._lower_mask) + ops.eye(c)
        diag = value(self.sign) * ops.exp(value(self.log_s))
        upper = value(self.upper) * value(self._upper_mask) + ops.diag(diag)
        return ops.matmul(value(self.permutation), ops.matmul(lower, upper))

    def _log_abs_det(self):
        if self.lu:
            return ops.sum(ops.convert_to_tensor(self.log_s))
        return ops.slogdet(ops.convert_to_tensor(self.kernel))[1]

    def _ones(self, x):
        return ops.ones_like(x[(slice(None),) + (0,) * len(self.event_shape)])

    def forward(self, x, training=False):
        x = ops.convert_to_tensor(x)
        z = ops.matmul(x, self.weight_matrix())
        return z, self._positions * self._log_abs_det() * self._ones(x)

    def inverse_and_log_det(self, z):
        z = ops.convert_to_tensor(z)
        x = ops.matmul(z, ops.inv(self.weight_matrix()))
        return x, -self._positions * self._log_abs_det() * self._ones(z)

    def inverse(self, z):
        return self.inverse_and_log_det(z)[0]

    def condition_number(self):
        """The condition number of `W` (float64, by SVD); `inf` if singular."""
        w = np.asarray(ops.convert_to_numpy(self.weight_matrix()), dtype=np.float64)
        if not np.all(np.isfinite(w)):
            return float("nan")
        s = np.linalg.svd(w, compute_uv=False)
        return float("inf") if s[-1] == 0 else float(s[0] / s[-1])

    def check_invertible(self):
        cond = self.condition_number()
        if not cond <= self.max_condition:  # also catches NaN
            # Past 1 / eps of float32 the matrix is singular to working precision.
            what = (
                "has non-finite entries" if np.isnan(cond)
                else f"is singular (condition number {cond:.3g})"
                if cond * np.finfo(np.float32).eps >= 1.0
                else f"is ill-conditioned (condition number {cond:.3g})"
            )
            raise np.linalg.LinAlgError(
                f"{type(self).__name__} {self.name!r}: its {self.event_shape[-1]}x"
                f"{self.event_shape[-1]} weight matrix {what}; the limit is "
                f"max_condition={self.max_condition:g}. Its inverse and "
                "log-determinant would be inaccurate or NaN. Restore an earlier "
                "checkpoint, lower the learning rate, or use lu=True."
            )

    def get_config(self):
        config = super().get_config()
        config.update(lu=self.lu, max_condition=self.max_condition)
        return config
