"""`Chain`: bijectors composed in sequence."""

import keras

from zoo.flow.bijectors.bijector import Bijector


def deserialize_bijectors(bijectors, owner):
    bijectors = [
        keras.saving.deserialize_keras_object(b) if isinstance(b, dict) else b
        for b in bijectors
    ]
    bad = [type(b).__name__ for b in bijectors if not isinstance(b, Bijector)]
    if bad:
        raise ValueError(
            f"{owner} takes zoo.flow Bijector layers; received {', '.join(bad)}."
        )
    return bijectors


@keras.saving.register_keras_serializable(package="zoo")
class Chain(Bijector):
    """`bijectors[0]` first, then `bijectors[1]`, ...: the log-determinants add.

    Each bijector's `output_event_shape` must be the next one's
    `event_shape`. `finish_initialization` and `check_invertible` reach
    every member.

    Args:
        bijectors: a non-empty list of `Bijector`s, applied in order.

    Example:

    ```python
    import numpy as np
    from zoo.flow import ActNorm, AffineCoupling, Chain

    flow = Chain([ActNorm((2,)), AffineCoupling((2,), parity=0),
                  AffineCoupling((2,), parity=1)])
    z, log_det = flow.forward(np.random.randn(8, 2).astype("float32"))
    x = flow.inverse(z)
    ```
    """

    def __init__(self, bijectors, **kwargs):
        bijectors = deserialize_bijectors(list(bijectors), "Chain")
        if not bijectors:
            raise ValueError("`bijectors` must hold at least one Bijector; received [].")
        for i, (a, b) in enumerate(zip(bijectors[:-1], bijectors[1:])):
            if tuple(a.output_event_shape) != tuple(b.event_shape):
                raise ValueError(
                    f"Chain: bijector {i} ({a.name}) outputs events of shape "
                    f"{a.output_event_shape} but bijector {i + 1} ({b.name}) "
                    f"expects {b.event_shape}."
                )
        kwargs.pop("event_shape", None)
        kwargs.pop("seed", None)
        super().__init__(bijectors[0].event_shape, **kwargs)
        self.bijectors = bijectors
        self.built = True

    @property
    def output_event_shape(self):
        return self.bijectors[-1].output_event_shape

    def forward(self, x, training=False):
        total = 0.0
        for bijector in self.bijectors:
            x, log_det = bijector.forward(x, training=training)
            total = total + log_det
        return x, total

    def inverse_and_log_det(self, z):
        total = 0.0
        for bijector in reversed(self.bijectors):
            z, log_det = bijector.inverse_and_log_det(z)
            total = total + log_det
        return z, total

    def inverse(self, z):
        for bijector in reversed(self.bijectors):
            z = bijector.inverse(z)
        return z

    def finish_initialization(self):
        for bijector in self.bijectors:
            bijector.finish_initialization()

    def check_invertible(self):
        for bijector in self.bijectors:
            bijector.check_invertible()

    def get_config(self):
        config = super().get_config()
        del config["event_shape"], config["seed"]
        config["bijectors"] = [
            keras.saving.serialize_keras_object(b) for b in self.bijectors
        ]
        return config
