"""`Bijector`: the base class of the flow family's invertible layers."""

import keras

from zoo.flow._checks import check_seed, check_shape


@keras.saving.register_keras_serializable(package="zoo")
class Bijector(keras.layers.Layer):
    """An invertible map of one example's shape with a tractable log-determinant.

    Subclasses create their weights (and build their networks) in
    `__init__` from `event_shape`, the shape of one example without the
    batch axis, and implement:

    - `forward(x, training=False) -> (z, log_det)`: `z = f(x)` and
      `log |det df/dx|` per example, shape `(batch,)`;
    - `inverse(z) -> x`, with `inverse(forward(x)[0]) == x`.

    Both take NumPy arrays or backend tensors and return backend tensors
    (the models' eager methods return NumPy arrays).

    `inverse_and_log_det(z)` returns `(x, log |det dx/dz|)`; the default
    runs `forward` on the result, and bijectors override it where that is
    cheaper. Calling the layer runs `forward`. Bijectors compose with
    `Chain`, `FactorOut` and `Invert`, and any of them can be trained as a
    density by `zoo.flow.FlowModel`.

    Two hooks let a model drive layers whose state is not learned by
    gradients: `finish_initialization()` runs after every training update
    (ActNorm's data-dependent initialization), and `check_invertible()`
    raises `numpy.linalg.LinAlgError` where a layer cannot be inverted
    accurately (a singular 1x1 convolution). Both do nothing by default.

    Args:
        event_shape: shape of one example, rank 1 to 3.
        seed: seeds the layer's initializers, where it has any.
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).

    Example:

    ```python
    import numpy as np
    from zoo.flow import AffineCoupling

    layer = AffineCoupling((2,), mask="alternating", parity=0)
    x = np.random.randn(5, 2).astype("float32")
    z, log_det = layer.forward(x)          # (5, 2), (5,)
    x_again = layer.inverse(z)
    ```
    """

    def __init__(self, event_shape, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.event_shape = check_shape(event_shape, "event_shape", ranks=(1, 2, 3))
        self.seed = check_seed(seed)

    @property
    def output_event_shape(self):
        """The shape of one example of `z`."""
        return self.event_shape

    def forward(self, x, training=False):
        raise NotImplementedError(f"{type(self).__name__} must implement `forward`.")

    def inverse(self, z):
        raise NotImplementedError(f"{type(self).__name__} must implement `inverse`.")

    def inverse_and_log_det(self, z):
        """`(x, log |det dx/dz|)` per example."""
        x = self.inverse(z)
        _, log_det = self.forward(x)
        return x, -log_det

    def call(self, x, training=False):
        return self.forward(x, training=training)

    def finish_initialization(self):
        """Runs after each training update; see ActNorm."""

    def check_invertible(self):
        """Raises `numpy.linalg.LinAlgError` if this layer cannot be inverted."""

    def get_config(self):
        config = super().get_config()
        config.update(event_shape=list(self.event_shape), seed=self.seed)
        return config
