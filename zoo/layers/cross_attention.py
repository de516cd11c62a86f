"""Cross-attention from image tokens to text tokens, with a key padding mask."""

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="zoo")
class CrossAttention(layers.Layer):
    """Pre-norm residual cross-attention: `x + MHA(norm(x), context)`.

    Each query token (an image position or patch) attends over the text
    tokens of its own example; padded text tokens are masked out of the
    attention (keys and values), as in Stable Diffusion's and PixArt's
    denoisers. Queries of shape `(batch, n, dim)` or images
    `(batch, height, width, dim)` (flattened and restored around the
    attention).

    Args:
        num_heads: attention heads; `dim` (the queries' width) must divide
            by it.
        key_dim: width per head (default `dim // num_heads`).
        kernel_initializer: initializer of the projections.
        gated: if True, the attended values are scaled by a learned gate
            starting at zero (Flamingo's `tanh` gating), so the layer starts
            as the identity. Default False (plain residual, as SD does).

    Call arguments:
        x: queries, `(batch, n, dim)` or `(batch, height, width, dim)`.
        context: keys and values, `(batch, m, context_dim)`.
        context_mask: `(batch, m)`, True (or 1) at real tokens, False at
            padding; None: every token is real. Every row must keep at least
            one real token.

    Example:

    ```python
    import numpy as np
    from zoo.layers.cross_attention import CrossAttention

    layer = CrossAttention(num_heads=2)
    x = np.zeros((2, 16, 8), "float32")
    context = np.ones((2, 5, 12), "float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool)
    layer(x, context, mask).shape  # (2, 16, 8)
    ```
    """

    def __init__(self, num_heads, key_dim=None, kernel_initializer="glorot_uniform",
                 gated=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"`num_heads` must be a positive integer; received {num_heads!r}.")
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.gated = bool(gated)

    def build(self, x_shape, context_shape=None, context_mask_shape=None):
        dim = x_shape[-1]
        if dim % self.num_heads and self.key_dim is None:
            raise ValueError(f"The queries' width ({dim}) must be divisible by "
                             f"num_heads={self.num_heads} (or pass `key_dim`).")
        self.norm = layers.LayerNormalization(epsilon=1e-5, dtype=self.dtype_policy,
                                              name="norm")
        self.norm.build((None, None, dim))
        self.attention = layers.MultiHeadAttention(
            self.num_heads, self.key_dim or dim // self.num_heads,
            kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy,
            name="attention")
        self.attention.build((None, None, dim), (None, None, context_shape[-1]))
        if self.gated:
            self.gate = self.add_weight(shape=(), initializer="zeros", name="gate")

    def call(self, x, context, context_mask=None):
        shape = ops.shape(x)
        images = len(x.shape) == 4
        h = ops.reshape(x, (shape[0], -1, shape[-1])) if images else x
        query = self.norm(h)
        mask = None
        if context_mask is not None:
            # (batch, m) -> (batch, queries, m): every query sees the same keys.
            mask = ops.cast(context_mask, "bool")[:, None, :]
            mask = ops.broadcast_to(mask, (ops.shape(h)[0], ops.shape(h)[1],
                                           ops.shape(context)[1]))
        context = ops.cast(context, query.dtype)
        # Scores returned: Keras's einsum path (its fused attention asks for
        # float16 x float16 -> float32 products, refused by JAX on a CPU
        # under `mixed_float16`).
        attended, _ = self.attention(query, context, context, attention_mask=mask,
                                     return_attention_scores=True)
        if self.gated:
            attended = ops.tanh(ops.cast(self.gate, attended.dtype)) * attended
        out = h + attended
        return ops.reshape(out, shape) if images else out

    def compute_output_shape(self, x_shape, context_shape=None, context_mask_shape=None):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "gated": self.gated,
        }
