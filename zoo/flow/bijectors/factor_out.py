"""`FactorOut`: the multi-scale split of RealNVP and Glow."""

import keras
from keras import ops

from zoo.flow.bijectors.bijector import Bijector
from zoo.flow.bijectors.chain import deserialize_bijectors


@keras.saving.register_keras_serializable(package="zoo")
class FactorOut(Bijector):
    """Passes the first channels straight to the latent and transforms only
    the rest with `bijector`.

    The multi-scale architecture (Dinh et al., 2017): after each scale half
    of the dimensions are "factored out", Gaussianized as they are, and the
    deeper (squeezed, coarser) scales work on the other half only, which
    saves computation and lets early dimensions model local detail. Here
    the factored-out channels keep their place in the output instead of
    being stored apart, so the whole flow maps `x` to a `z` of one shape
    and every piece is an ordinary bijector.

    `event_shape[:-1]` must equal `bijector.event_shape[:-1]`, and the
    bijector must keep its shape; it gets the last
    `bijector.event_shape[-1]` channels.

    Args:
        bijector: the `Bijector` applied to the kept channels.
        channels: the number of channels of the input, `event_shape[-1]`.

    Example:

    ```python
    from zoo.flow import AffineCoupling, FactorOut

    # (4, 4, 4) events: channels 0-1 factored out, 2-3 coupled further.
    layer = FactorOut(AffineCoupling((4, 4, 2), mask="checkerboard"), channels=4)
    ```
    """

    def __init__(self, bijector, channels, **kwargs):
        (bijector,) = deserialize_bijectors([bijector], "FactorOut")
        inner = tuple(bijector.event_shape)
        if tuple(bijector.output_event_shape) != inner:
            raise ValueError(
                "FactorOut: `bijector` must keep the shape of its events; "
                f"{bijector.name} maps {inner} to {bijector.output_event_shape}."
            )
        if (
            isinstance(channels, bool)
            or not isinstance(channels, int)
            or not inner[-1] < channels
        ):
            raise ValueError(
                f"FactorOut: `channels` must be an integer greater than the "
                f"{inner[-1]} channels `bijector` transforms; received "
                f"channels={channels!r}."
            )
        kwargs.pop("event_shape", None)
        kwargs.pop("seed", None)
        super().__init__((*inner[:-1], channels), **kwargs)
        self.channels = channels
        self.bijector = bijector
        self._kept = channels - inner[-1]
        self.built = True

    def forward(self, x, training=False):
        kept, rest = x[..., : self._kept], x[..., self._kept:]
        rest, log_det = self.bijector.forward(rest, training=training)
        return ops.concatenate([kept, rest], axis=-1), log_det

    def inverse_and_log_det(self, z):
        kept, rest = z[..., : self._kept], z[..., self._kept:]
        rest, log_det = self.bijector.inverse_and_log_det(rest)
        return ops.concatenate([kept, rest], axis=-1), log_det

    def inverse(self, z):
        kept, rest = z[..., : self._kept], z[..., self._kept:]
        return ops.concatenate([kept, self.bijector.inverse(rest)], axis=-1)

    def finish_initialization(self):
        self.bijector.finish_initialization()

    def check_invertible(self):
        self.bijector.check_invertible()

    def get_config(self):
        config = super().get_config()
        del config["event_shape"], config["seed"]
        config.update(
            bijector=keras.saving.serialize_keras_object(self.bijector),
            channels=self.channels,
        )
        return config
