"""`SpectralNorm`: spectral normalization that never writes to the kernel."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class SpectralNorm(keras.layers.Wrapper):
    """Divides a linear layer's kernel by its largest singular value.

    Spectral normalization (Miyato et al., 2018) as the paper and PyTorch's
    `spectral_norm` define it: the layer computes with `W / sigma(W)`, where
    `sigma` comes from power iteration on a stored vector `u`, and gradients
    flow through `sigma`. Only `u` (non-trainable) is updated, in training.

    Why not `keras.layers.SpectralNormalization`: it assigns `W / sigma` back
    into the trainable kernel during the forward pass. Inside a zoo training
    step that write survives on TensorFlow and PyTorch but is discarded for
    the player being differentiated on JAX, so the three backends would train
    different models, and a generator update would rewrite the
    discriminator's kernel. Here the kernel is only ever changed by its
    optimizer.

    The wrapped layer must be linear in its kernel: `Dense`, `Conv*` or
    `Conv*Transpose` without activation (put the activation in a separate
    layer), or `Embedding`. Since such a layer computes `f(x; W) + b`, the
    normalized output is `(layer(x) - b) / sigma + b`, which needs no access
    to the layer's internals.

    Args:
        layer: the wrapped layer (above).
        power_iterations: power-iteration steps per training call.

    Example:

    ```python
    import keras
    from zoo.layers import SpectralNorm

    layer = SpectralNorm(keras.layers.Dense(4))
    y = layer(keras.random.normal((2, 3), seed=0), training=True)
    ```
    """

    def __init__(self, layer, power_iterations=1, **kwargs):
        super().__init__(layer, **kwargs)
        if int(power_iterations) != power_iterations or power_iterations < 1:
            raise ValueError(
                "`power_iterations` must be a positive integer; received "
                f"power_iterations={power_iterations!r}."
            )
        self.power_iterations = int(power_iterations)

    def build(self, input_shape):
        super().build(input_shape)
        activation = getattr(self.layer, "activation", None)
        if activation is not None and activation is not keras.activations.linear:
            raise ValueError(
                f"SpectralNorm needs a layer that is linear in its kernel; "
                f"{self.layer.name!r} has activation "
                f"{getattr(activation, '__name__', activation)!r}. Apply the "
                "activation in a separate layer."
            )
        kernel = self._kernel_variable()
        self.vector_u = self.add_weight(
            shape=(1, kernel.shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
            trainable=False,
            name="vector_u",
        )
        self.built = True

    def _kernel_variable(self):
        # Looked up rather than stored: an attribute would make this wrapper
        # track the inner layer's kernel a second time.
        for name in ("kernel", "embeddings"):
            if hasattr(self.layer, name):
                return getattr(self.layer, name)
        raise ValueError(
            f"SpectralNorm wraps layers with a `kernel` or `embeddings`; "
            f"{type(self.layer).__name__} has neither."
        )

    def _sigma(self, training):
        kernel = ops.convert_to_tensor(self._kernel_variable())
        weights = ops.reshape(kernel, (-1, kernel.shape[-1]))
        u = ops.convert_to_tensor(self.vector_u)
        for _ in range(self.power_iterations):
            v = _unit(ops.matmul(u, ops.transpose(weights)))
            u = _unit(ops.matmul(v, weights))
        # The power-iteration vectors are constants for the gradient, as in
        # the paper: d sigma / dW = v u^T.
        u = ops.stop_gradient(u)
        v = ops.stop_gradient(v)
        if training:
            self.vector_u.assign(u)
        return ops.sum(ops.matmul(v, weights) * u)

    def call(self, inputs, training=False):
        sigma = self._sigma(training)
        outputs = self.layer(inputs)
        bias = getattr(self.layer, "bias", None)
        if bias is None:
            return outputs / sigma
        bias = ops.convert_to_tensor(bias)
        return (outputs - bias) / sigma + bias

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config["power_iterations"] = self.power_iterations
        return config


def _unit(x):
    return x / ops.sqrt(ops.sum(ops.square(x)) + 1e-12)
