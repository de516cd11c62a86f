"""`Invert`: a bijector run backwards."""

import keras

from zoo.flow.bijectors.bijector import Bijector


@keras.saving.register_keras_serializable(package="zoo")
class Invert(Bijector):
    """Swaps `forward` and `inverse` of `bijector`.

    Its `event_shape` is the wrapped bijector's output shape. The multi-scale
    architectures use `Invert(Squeeze(...))` to restore each scale's shape,
    so that the whole flow maps an image to a latent of the same shape.
    `training` does not reach the wrapped layer (its `inverse` takes none).

    Args:
        bijector: the `Bijector` to run backwards.

    Example:

    ```python
    import numpy as np
    from zoo.flow import Invert, Squeeze

    unsqueeze = Invert(Squeeze((8, 8, 1)))        # (4, 4, 4) -> (8, 8, 1)
    x, log_det = unsqueeze.forward(np.zeros((2, 4, 4, 4), "float32"))
    ```
    """

    def __init__(self, bijector, **kwargs):
        if isinstance(bijector, dict):
            bijector = keras.saving.deserialize_keras_object(bijector)
        if not isinstance(bijector, Bijector):
            raise ValueError(
                "`bijector` must be a zoo.flow Bijector; received "
                f"{type(bijector).__name__}."
            )
        kwargs.pop("event_shape", None)
        kwargs.pop("seed", None)
        super().__init__(bijector.output_event_shape, **kwargs)
        self.bijector = bijector
        self.built = True

    @property
    def output_event_shape(self):
        return self.bijector.event_shape

    def forward(self, x, training=False):
        return self.bijector.inverse_and_log_det(x)

    def inverse_and_log_det(self, z):
        return self.bijector.forward(z)

    def inverse(self, z):
        return self.bijector.forward(z)[0]

    def finish_initialization(self):
        self.bijector.finish_initialization()

    def check_invertible(self):
        self.bijector.check_invertible()

    def get_config(self):
        config = super().get_config()
        del config["event_shape"], config["seed"]
        config["bijector"] = keras.saving.serialize_keras_object(self.bijector)
        return config
