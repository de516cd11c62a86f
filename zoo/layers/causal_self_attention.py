"""`CausalSelfAttention`: multi-head self-attention that looks only backwards,
with an optional preallocated key/value cache for incremental decoding."""

import keras
from keras import ops

from zoo.layers.networks import offset_seed
from zoo.layers.rotary_embedding import RotaryEmbedding


@keras.saving.register_keras_serializable(package="zoo")
class CausalSelfAttention(keras.layers.Layer):
    """Causal multi-head self-attention, with or without a key/value cache.

    Position `t` attends to positions `0..t`. Queries, keys and values come
    from one fused projection, the heads are joined by an output projection,
    and dropout (seeded) is applied to the output during training.

    Two ways to call it, with `x` of shape `(batch, length, hidden_dim)`:

    - `layer(x)`: plain causal attention over `x`.
    - `layer(x, cache=cache, cache_index=i)`: `x` holds positions
      `i..i+length-1` of a sequence whose earlier keys and values sit in
      `cache`, a tensor of shape `(batch, 2, cache_length, num_heads,
      head_dim)` (keys, then values; `empty_cache` makes one). The new keys
      and values are written into it at `i` and the layer returns
      `(output, cache)`. Slots past `i + length - 1` are masked, so the
      cache is preallocated once for the whole generation; `cache_index`
      may be a tensor (the index of a compiled loop).

    Args:
        num_heads: number of attention heads; must divide `hidden_dim`.
        hidden_dim: width of the input and output.
        dropout: dropout rate of the output, in [0, 1).
        use_rotary: rotate queries and keys by their position (RoPE)
            instead of relying on position embeddings added to the input.
        rotary_max_wavelength: see `RotaryEmbedding`.
        initializer_stddev: standard deviation of the normal initializer of
            the input projection.
        output_stddev: that of the output projection (GPT-2 shrinks it with
            depth); defaults to `initializer_stddev`.
        seed: seeds the initializers and the dropout.

    Example:

    ```python
    from keras import ops
    from zoo.layers.causal_self_attention import CausalSelfAttention

    attention = CausalSelfAttention(num_heads=2, hidden_dim=8, seed=0)
    x = ops.ones((3, 5, 8))
    full = attention(x)                                  # (3, 5, 8)
    cache = attention.empty_cache(batch_size=3, length=5)
    first, cache = attention(x[:, :4], cache=cache, cache_index=0)
    last, cache = attention(x[:, 4:], cache=cache, cache_index=4)  # == full[:, 4:]
    ```
    """

    def __init__(
        self,
        num_heads,
        hidden_dim,
        dropout=0.0,
        use_rotary=False,
        rotary_max_wavelength=10000,
        initializer_stddev=0.02,
        output_stddev=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("num_heads", num_heads), ("hidden_dim", hidden_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer; received {name}={value!r}."
                )
        if hidden_dim % num_heads:
            raise ValueError(
                f"`num_heads` must divide `hidden_dim`; received num_heads="
                f"{num_heads}, hidden_dim={hidden_dim}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1); received dropout={dropout!r}.")
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.head_dim = hidden_dim // num_heads
        if use_rotary and self.head_dim % 2:
            raise ValueError(
                "Rotary positions need an even head size hidden_dim / num_heads; "
                f"received hidden_dim={hidden_dim}, num_heads={num_heads}."
            )
        self.dropout = float(dropout)
        self.use_rotary = bool(use_rotary)
        self.rotary_max_wavelength = rotary_max_wavelength
        self.initializer_stddev = float(initializer_stddev)
        self.output_stddev = (
            self.initializer_stddev if output_stddev is None else float(output_stddev)
        )
        self.seed = seed
        self.rotary = (
            RotaryEmbedding(rotary_max_wavelength, dtype=self.dtype_policy)
            if self.use_rotary else None
        )
        self.output_dropout = keras.layers.Dropout(
            self.dropout, seed=offset_seed(seed, 2)
        )
        self.build((None, None, hidden_dim))

    def build(self, input_shape):
        if self.built:
            return
        d = self.hidden_dim
        self.qkv_kernel = self.add_weight(
            name="qkv_kernel", shape=(d, 3 * d),
            initializer=keras.initializers.RandomNormal(
                stddev=self.initializer_stddev, seed=offset_seed(self.seed, 0)
            ),
        )
        self.qkv_bias = self.add_weight(
            name="qkv_bias", shape=(3 * d,), initializer="zeros"
        )
        self.output_kernel = self.add_weight(
            name="output_kernel", shape=(d, d),
            initializer=keras.initializers.RandomNormal(
                stddev=self.output_stddev, seed=offset_seed(self.seed, 1)
            ),
        )
        self.output_bias = self.add_weight(
            name="output_bias", shape=(d,), initializer="zeros"
        )
        self.built = True

    def empty_cache(self, batch_size, length, dtype=None):
        """A zero key/value cache for `length` positions of `batch_size` sequences."""
        return ops.zeros(
            (batch_size, 2, length, self.num_heads, self.head_dim),
            dtype=dtype or self.compute_dtype,
        )

    def call(self, x, cache=None, cache_index=0, training=None):
        length = ops.shape(x)[1]  # a tensor where TensorFlow relaxed the shape
        qkv = ops.matmul(x, self.qkv_kernel) + self.qkv_bias
        qkv = ops.reshape(qkv, (-1, length, 3 * self.num_heads, self.head_dim))
        if self.rotary is not None:
            # Queries and keys rotate together: one call for both.
            qk = qkv[:, :, : 2 * self.num_heads]
            # While decoding, `call` skips `Layer.__call__`'s bookkeeping.
            qk = self.rotary(qk) if cache is None else self.rotary.call(qk, cache_index)
            q, k = qk[:, :, : self.num_heads], qk[:, :, self.num_heads :]
        else:
            q, k = qkv[:, :, : self.num_heads], qkv[:, :, self.num_heads : 2 * self.num_heads]
        v = qkv[:, :, 2 * self.num_heads :]
        if cache is None:
            out = ops.dot_product_attention(q, k, v, is_causal=True)
        else:
            cache = ops.slice_update(
                cache, [0, 0, cache_index, 0, 0], ops.stack([k, v], axis=1)
            )
            # A query at position p sees the cache slots 0..p; later slots are
            # empty (or stale) and masked.
            query_positions = ops.arange(0, length, dtype="int32") + cache_index
            key_positions = ops.arange(0, cache.shape[2], dtype="int32")
            mask = key_positions[None, :] <= query_positions[:, None]
            # Written out rather than `ops.dot_product_attention`: for a few
            # queries it is as fast, and it compiles into a few fused
            # kernels everywhere (torch.compile stops at the fused kernel's
            # eligibility check).
            scores = ops.einsum("bqhd,bkhd->bhqk", q, cache[:, 0])
            scores = ops.cast(scores, "float32") * (1.0 / self.head_dim**0.5)
            scores = ops.where(mask[None, None], scores, float("-inf"))
            weights = ops.cast(ops.softmax(scores, axis=-1), q.dtype)
            out = ops.einsum("bhqk,bkhd->bqhd", weights, cache[:, 1])
        out = ops.reshape(out, (-1, length, self.hidden_dim))
        out = ops.matmul(out, self.output_kernel) + self.output_bias
        if training and self.dropout > 0:
            out = self.output_dropout(out, training=training)
        return out if cache is None else (out, cache)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            dropout=self.dropout,
            use_rotary=self.use_rotary,
            rotary_max_wavelength=self.rotary_max_wavelength,
            initializer_stddev=self.initializer_stddev,
            output_stddev=self.output_stddev,
            seed=self.seed,
        )
        return config
