"""`ActNorm`: Glow's activation normalization with data-dependent initialization."""

import math

import keras
from keras import ops

from zoo.flow._checks import check_float
from zoo.flow.bijectors.bijector import Bijector


@keras.saving.register_keras_serializable(package="zoo")
class ActNorm(Bijector):
    """Per-channel affine map `z = (x + loc) * exp(log_scale)` (Kingma &
    Dhariwal, 2018), initialized from the first training batch so that its
    output has zero mean and unit variance per channel.

    Channels are the last axis; `log_det = sum(log_scale)` times the number
    of positions (pixels) per example.

    How the data-dependent initialization works inside a compiled training
    step, where nothing may branch on a value in Python: while `initialized`
    (a saved, non-trainable flag) is 0, `forward(x, training=True)` uses the
    batch's own statistics in place of `loc` and `log_scale`, so the first
    step's loss is already that of the initialized flow, and records them
    in non-trainable `pending_*` variables. The model calls
    `finish_initialization()` after each update, which copies the pending
    values into `loc` and `log_scale` (overwriting that one step's update)
    and sets the flag; from then on the statistics are ignored. Until a
    first training step, or with `data_init=False`, the layer is the
    identity. `initialize(x)` does the same eagerly, outside training.

    Args:
        event_shape: shape of one example; one `loc` and `log_scale` per
            channel (the last axis).
        data_init: initialize from the first training batch (above);
            False starts as the identity.
        epsilon: added to the batch's standard deviation at initialization.
        seed: unused (no random initializer); kept for a uniform signature.

    Example:

    ```python
    import numpy as np
    from zoo.flow import ActNorm

    layer = ActNorm((4, 4, 3))
    x = 5.0 + 2.0 * np.random.randn(64, 4, 4, 3).astype("float32")
    layer.initialize(x)
    z, _ = layer.forward(x)      # per channel: mean 0, variance 1
    ```
    """

    def __init__(self, event_shape, data_init=True, epsilon=1e-6, seed=None, **kwargs):
        super().__init__(event_shape, seed=seed, **kwargs)
        if not isinstance(data_init, bool):
            raise ValueError(f"`data_init` must be True or False; received {data_init!r}.")
        self.data_init = data_init
        self.epsilon = check_float(epsilon, "epsilon", low=0.0)
        channels = (self.event_shape[-1],)
        self.loc = self.add_weight(shape=channels, initializer="zeros", name="loc")
        self.log_scale = self.add_weight(
            shape=channels, initializer="zeros", name="log_scale"
        )
        self.initialized = self.add_weight(
            shape=(), dtype="int32", initializer="zeros", trainable=False,
            name="initialized",
        )
        self.pending_loc = self.add_weight(
            shape=channels, initializer="zeros", trainable=False, name="pending_loc"
        )
        self.pending_log_scale = self.add_weight(
            shape=channels, initializer="zeros", trainable=False,
            name="pending_log_scale",
        )
        self._positions = math.prod(self.event_shape[:-1])
        self.built = True

    def _statistics(self, x):
        axes = tuple(range(len(x.shape) - 1))
        mean = ops.mean(x, axis=axes)
        var = ops.var(x, axis=axes)
        return -mean, -0.5 * ops.log(var + self.epsilon)

    def _affine(self, x, training):
        loc = ops.convert_to_tensor(self.loc)
        log_scale = ops.convert_to_tensor(self.log_scale)
        if training and self.data_init:
            init_loc, init_log_scale = self._statistics(ops.stop_gradient(x))
            self.pending_loc.assign(init_loc)
            self.pending_log_scale.assign(init_log_scale)
            ready = ops.greater(ops.convert_to_tensor(self.initialized), 0)
            loc = ops.where(ready, loc, init_loc)
            log_scale = ops.where(ready, log_scale, init_log_scale)
        return loc, log_scale

    def forward(self, x, training=False):
        x = ops.convert_to_tensor(x)
        loc, log_scale = self._affine(x, training)
        z = (x + loc) * ops.exp(log_scale)
        log_det = self._positions * ops.sum(log_scale)
        return z, log_det * ops.ones_like(z[(slice(None),) + (0,) * len(self.event_shape)])

    def inverse_and_log_det(self, z):
        z = ops.convert_to_tensor(z)
        log_scale = ops.convert_to_tensor(self.log_scale)
        x = z * ops.exp(-log_scale) - ops.convert_to_tensor(self.loc)
        log_det = -self._positions * ops.sum(log_scale)
        return x, log_det * ops.ones_like(z[(slice(None),) + (0,) * len(self.event_shape)])

    def inverse(self, z):
        return self.inverse_and_log_det(z)[0]

    def finish_initialization(self):
        if not self.data_init:
            return
        value = ops.convert_to_tensor
        ready = ops.greater(value(self.initialized), 0)
        self.loc.assign(ops.where(ready, value(self.loc), value(self.pending_loc)))
        self.log_scale.assign(
            ops.where(ready, value(self.log_scale), value(self.pending_log_scale))
        )
        self.initialized.assign(ops.ones((), dtype="int32"))

    def initialize(self, x):
        """Sets `loc` and `log_scale` from the batch `x` now (eagerly)."""
        loc, log_scale = self._statistics(ops.convert_to_tensor(x, dtype="float32"))
        self.loc.assign(loc)
        self.log_scale.assign(log_scale)
        self.initialized.assign(ops.ones((), dtype="int32"))

    def get_config(self):
        config = super().get_config()
        config.update(data_init=self.data_init, epsilon=self.epsilon)
        return config
