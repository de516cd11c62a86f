"""`Logit`: RealNVP's map from a bounded data range to the real line."""

import math

import keras
from keras import ops

from zoo.flow._checks import check_float, sum_event
from zoo.flow.bijectors.bijector import Bijector


@keras.saving.register_keras_serializable(package="zoo")
class Logit(Bijector):
    """`z = logit(alpha + (1 - 2 alpha) (x - low) / (high - low))`.

    Maps `(low, high)` onto the real line, so a Gaussian base density never
    puts mass outside the data range; `alpha` keeps the ends finite (Dinh et
    al., 2017, used 0.05). Image flows put it first: its log-determinant is
    part of their likelihood, which therefore stays a density over data
    space.

    Args:
        event_shape: shape of one example.
        low, high: the data range, `low < high`.
        alpha: the margin kept at each end, in (0, 0.5).
        seed: unused (no weights); kept for a uniform signature.

    Example:

    ```python
    import numpy as np
    from zoo.flow import Logit

    layer = Logit((8, 8, 1), low=-1.0625, high=1.0625, alpha=0.05)
    z, log_det = layer.forward(np.zeros((2, 8, 8, 1), "float32"))
    ```
    """

    def __init__(self, event_shape, low=-1.0, high=1.0, alpha=0.05, seed=None, **kwargs):
        super().__init__(event_shape, seed=seed, **kwargs)
        self.low = check_float(low, "low")
        self.high = check_float(high, "high", low=self.low)
        self.alpha = check_float(alpha, "alpha", low=0.0, high=0.5)
        self._const = math.log(1.0 - 2.0 * self.alpha) - math.log(self.high - self.low)
        self.built = True

    def forward(self, x, training=False):
        x = ops.convert_to_tensor(x)
        p = (x - self.low) / (self.high - self.low)
        s = self.alpha + (1.0 - 2.0 * self.alpha) * p
        log_s, log_1ms = ops.log(s), ops.log1p(-s)
        z = log_s - log_1ms
        log_det = sum_event(self._const - log_s - log_1ms, len(self.event_shape))
        return z, log_det

    def inverse_and_log_det(self, z):
        z = ops.convert_to_tensor(z)
        s = ops.sigmoid(z)
        x = self.low + (s - self.alpha) / (1.0 - 2.0 * self.alpha) * (self.high - self.low)
        # log s + log(1 - s) = -softplus(-z) - softplus(z), stable for large |z|.
        log_det = sum_event(
            -self._const - ops.softplus(-z) - ops.softplus(z), len(self.event_shape)
        )
        return x, log_det

    def inverse(self, z):
        return self.inverse_and_log_det(z)[0]

    def get_config(self):
        config = super().get_config()
        config.update(low=self.low, high=self.high, alpha=self.alpha)
        return config
