"""`Squeeze`: trade spatial resolution for channels, volume-preserving."""

import keras
from keras import ops

from zoo.flow._checks import check_int
from zoo.flow.bijectors.bijector import Bijector


@keras.saving.register_keras_serializable(package="zoo")
class Squeeze(Bijector):
    """Reshapes each `factor x factor` block of pixels into channels:
    `(H, W, C) -> (H / factor, W / factor, C * factor**2)`.

    A permutation of the dimensions, so `log_det = 0`. RealNVP and Glow
    squeeze so that the next couplings, with channel masks, mix pixels that
    a checkerboard keeps apart. `Invert(Squeeze(...))` undoes it.

    Args:
        event_shape: `(H, W, C)` of one example; `H` and `W` divisible
            by `factor`.
        factor: the block size.
        seed: unused (a squeeze has no weights); kept for a uniform
            signature.

    Example:

    ```python
    import numpy as np
    from zoo.flow import Squeeze

    layer = Squeeze((8, 8, 1))
    z, log_det = layer.forward(np.zeros((2, 8, 8, 1), "float32"))  # (2, 4, 4, 4)
    ```
    """

    def __init__(self, event_shape, factor=2, seed=None, **kwargs):
        super().__init__(event_shape, seed=seed, **kwargs)
        if len(self.event_shape) != 3:
            raise ValueError(
                "`event_shape` of Squeeze must be (height, width, channels); "
                f"received event_shape={self.event_shape}."
            )
        self.factor = check_int(factor, "factor", minimum=2)
        h, w, _ = self.event_shape
        if h % self.factor or w % self.factor:
            raise ValueError(
                f"Squeeze with factor={self.factor} needs a height and width "
                f"divisible by {self.factor}; received event_shape="
                f"{self.event_shape}."
            )
        self.built = True

    @property
    def output_event_shape(self):
        h, w, c = self.event_shape
        f = self.factor
        return (h // f, w // f, c * f * f)

    def forward(self, x, training=False):
        h, w, c = self.event_shape
        f = self.factor
        x = ops.reshape(x, (-1, h // f, f, w // f, f, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        z = ops.reshape(x, (-1, *self.output_event_shape))
        return z, ops.zeros_like(z[:, 0, 0, 0])

    def inverse_and_log_det(self, z):
        h, w, c = self.event_shape
        f = self.factor
        x = ops.reshape(z, (-1, h // f, w // f, f, f, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (-1, h, w, c))
        return x, ops.zeros_like(x[:, 0, 0, 0])

    def inverse(self, z):
        return self.inverse_and_log_det(z)[0]

    def get_config(self):
        config = super().get_config()
        config.update(factor=self.factor)
        return config
