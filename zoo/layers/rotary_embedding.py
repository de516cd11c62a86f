"""`RotaryEmbedding`: rotary position embedding of queries and keys (RoPE)."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class RotaryEmbedding(keras.layers.Layer):
    """Rotates query or key vectors by angles that grow with their position.

    Su et al. (2021), "RoFormer": channel pair `(j, j + head_dim / 2)` of
    the vector at position `p` is rotated by the angle
    `p / max_wavelength ** (2 j / head_dim)`, so the dot product of a query
    and a key depends only on their relative position. No weights.

    `call(x, start_index=0)` takes `x` of shape
    `(batch, length, num_heads, head_dim)` (`head_dim` even) holding
    positions `start_index, ..., start_index + length - 1`; `start_index`
    may be a tensor, which a cached decoding loop needs.

    Args:
        max_wavelength: the longest wavelength of the rotations, > 1.

    Example:

    ```python
    from keras import ops
    from zoo.layers.rotary_embedding import RotaryEmbedding

    rope = RotaryEmbedding()
    q = ops.ones((2, 5, 4, 8))          # (batch, length, heads, head_dim)
    rotated = rope(q)                   # same shape, positions 0..4
    later = rope(q[:, :1], start_index=4)  # position 4 alone
    ```
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(max_wavelength, (int, float)) or max_wavelength <= 1:
            raise ValueError(
                "`max_wavelength` must be a number > 1; received "
                f"max_wavelength={max_wavelength!r}."
            )
        self.max_wavelength = max_wavelength
        self.built = True

    def call(self, x, start_index=0):
        length, head_dim = ops.shape(x)[1], x.shape[-1]
        if head_dim % 2:
            raise ValueError(
                f"RotaryEmbedding needs an even head_dim; received {head_dim}."
            )
        half = head_dim // 2
        # A tensor: NumPy on the right of `*` would turn the positions into
        # NumPy too, freezing them where the step is traced (PyTorch).
        inverse_frequency = ops.convert_to_tensor(self._inverse_frequency(half))
        positions = ops.cast(ops.arange(0, length, dtype="int32") + start_index, "float32")
        angles = positions[:, None] * inverse_frequency[None, :]
        # (length, half) -> (1, length, 1, half): broadcast over batch and heads.
        cos = ops.cast(ops.cos(angles)[None, :, None, :], x.dtype)
        sin = ops.cast(ops.sin(angles)[None, :, None, :], x.dtype)
        first, second = x[..., :half], x[..., half:]
        return ops.concatenate(
            [first * cos - second * sin, second * cos + first * sin], axis=-1
        )

    def _inverse_frequency(self, half):
        # A NumPy constant, computed once per size: a decoding loop on eager
        # PyTorch calls this layer at every step.
        cached = self.__dict__.get("_frequencies")
        if cached is None or len(cached) != half:
            cached = np.power(
                float(self.max_wavelength), -np.arange(half, dtype="float64") / half
            ).astype("float32")
            object.__setattr__(self, "_frequencies", cached)
        return cached

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["max_wavelength"] = self.max_wavelength
        return config
