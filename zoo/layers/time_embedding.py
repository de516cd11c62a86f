"""Sinusoidal embedding of diffusion timesteps."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class SinusoidalEmbedding(keras.layers.Layer):
    """Maps integer timesteps `(batch,)` to `(batch, dim)` sines and cosines.

    Frequencies are geometric from 1 to `1 / max_period`, as in the
    Transformer and DDPM, so nearby timesteps get nearby embeddings.

    Example:

    ```python
    SinusoidalEmbedding(32)(keras.ops.arange(4))  # shape (4, 32)
    ```
    """

    def __init__(self, dim, max_period=10000.0, **kwargs):
        super().__init__(**kwargs)
        if int(dim) < 2 or int(dim) % 2:
            raise ValueError(f"`dim` must be an even integer >= 2; received {dim}.")
        self.dim = int(dim)
        self.max_period = float(max_period)

    def call(self, t):
        half = self.dim // 2
        freqs = ops.exp(
            -math.log(self.max_period) * ops.arange(half, dtype="float32") / half
        )
        args = ops.cast(ops.reshape(t, (-1, 1)), "float32") * freqs[None, :]
        return ops.concatenate([ops.cos(args), ops.sin(args)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "max_period": self.max_period}
