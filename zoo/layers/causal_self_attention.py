"""`CausalSelfAttention`: multi-head self-attention that looks only backwards,
with an optional preallocated key/value cache for incremental decoding."""

import keras
from keras import ops

from zoo.layers.networks import offset_seed
from zoo.layers.rotary_embedding import RotaryEmbedding


class Projection(keras.layers.Dense):
    """A `Dense` layer whose weights its parent layer saves and loads, as
    its own variables: files keep the layout they had before the
    projections were `Dense` layers (with LoRA, the merged kernel, as
    Keras's `Dense` saves it)."""

    def save_own_variables(self, store):
        pass

    def load_own_variables(self, store):
        pass


def kernel_variable(projection):
    """A Dense layer's kernel variable (its `kernel` is, with LoRA, a sum)."""
    return next(v for v in projection.weights if v.name == "kernel")


def merged_kernel(projection):
    """The kernel as a NumPy array, with LoRA's update added (as Keras's
    `Dense` merges it when saving), in the variable's dtype."""
    kernel = ops.convert_to_numpy(kernel_variable(projection))
    if projection.lora_enabled:
        update = ops.convert_to_numpy(
            ops.matmul(projection.lora_kernel_a, projection.lora_kernel_b)
        )
        kernel = kernel + (projection.lora_alpha / projection.lora_rank) * update
    return kernel.astype(kernel_variable(projection).dtype)


def save_projections(store, projections, start=0):
    """Writes each projection's kernel (LoRA merged) and bias into a parent's
    `store` from index `start`."""
    index = start
    for projection in projections:
        store[str(index)] = merged_kernel(projection)
        index += 1
        if projection.bias is not None:
            store[str(index)] = ops.convert_to_numpy(projection.bias)
            index += 1


def load_projections(store, projections, owner, start=0):
    """Reads what `save_projections` wrote; LoRA factors restart at zero (as
    Keras's `Dense` does when loading)."""
    expected = start + sum(1 + (p.bias is not None) for p in projections)
    if len(store.keys()) != expected:
        raise ValueError(
            f"Layer '{owner}' expected {expected} variables, but received "
            f"{len(store.keys())} variables during loading."
        )
    index = start
    for projection in projections:
        for variable in (kernel_variable(projection), projection.bias):
            if variable is None:
                continue
            variable.assign(store[str(index)])
            index += 1
        if projection.lora_enabled:
            projection.lora_kernel_a.assign(ops.zeros(projection.lora_kernel_a.shape))
            projection.lora_kernel_b.assign(ops.zeros(projection.lora_kernel_b.shape))


@keras.saving.register_keras_serializable(package="zoo")
class CausalSelfAttention(keras.layers.Layer):
    """Causal multi-head self-attention, with or without a key/value cache.

    Position `t` attends to positions `0..t`. Queries, keys and values come
    from one fused projection (grouped-query attention when there are fewer
    key/value heads than query heads), the heads are joined by an output projection,
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
        num_key_value_heads: heads of the keys and values (grouped-query
            attention: each serves `num_heads / num_key_value_heads` query
            heads); default `num_heads`.
        use_bias: biases in the projections (Llama has none).
        rotary_fraction: the fraction of each head's channels that rotate
            (the first ones; GPT-NeoX rotates 0.25).

    The input projection (`qkv`: queries, keys, values, each head after
    head) and the output projection (`output_projection`) are `Dense`
    layers, so `layer.qkv.enable_lora(rank)` gives them Keras's LoRA.

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
        num_key_value_heads=None,
        use_bias=True,
        rotary_fraction=1.0,
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
        if num_key_value_heads is None:
            num_key_value_heads = num_heads
        if (
            not isinstance(num_key_value_heads, int) or isinstance(num_key_value_heads, bool)
            or num_key_value_heads < 1 or num_heads % num_key_value_heads
        ):
            raise ValueError(
                "`num_key_value_heads` must be a positive integer dividing num_heads="
                f"{num_heads}; received num_key_value_heads={num_key_value_heads!r}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1); received dropout={dropout!r}.")
        if not isinstance(use_bias, bool):
            raise ValueError(f"`use_bias` must be True or False; received {use_bias!r}.")
        self.num_heads = num_heads
        self.num_key_value_heads = num_key_value_heads
        self.hidden_dim = hidden_dim
        self.head_dim = hidden_dim // num_heads
        if not (isinstance(rotary_fraction, (int, float)) and 0 < rotary_fraction <= 1):
            raise ValueError(
                "`rotary_fraction` must be a number in (0, 1]; received "
                f"rotary_fraction={rotary_fraction!r}."
            )
        self.rotary_fraction = float(rotary_fraction)
        # The first `rotary_dim` channels of each head rotate (GPT-NeoX
        # rotates a quarter of them); the rest carry no position.
        self.rotary_dim = int(self.head_dim * self.rotary_fraction)
        if use_rotary and (self.rotary_dim % 2 or self.rotary_dim == 0):
            raise ValueError(
                "Rotary positions need an even, nonzero number of rotated channels "
                "per head (hidden_dim / num_heads * rotary_fraction); received "
                f"hidden_dim={hidden_dim}, num_heads={num_heads}, "
                f"rotary_fraction={rotary_fraction}."
            )
        self.dropout = float(dropout)
        self.use_rotary = bool(use_rotary)
        self.use_bias = use_bias
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
        # Dense sublayers, so that Keras's own LoRA (`enable_lora`) applies
        # to them; called through `call` (see below).
        qkv_width = (num_heads + 2 * num_key_value_heads) * self.head_dim
        self.qkv = Projection(
            qkv_width, use_bias=use_bias,
            kernel_initializer=keras.initializers.RandomNormal(
                stddev=self.initializer_stddev, seed=offset_seed(seed, 0)
            ),
            dtype=self.dtype_policy, name="qkv",
        )
        self.output_projection = Projection(
            hidden_dim, use_bias=use_bias,
            kernel_initializer=keras.initializers.RandomNormal(
                stddev=self.output_stddev, seed=offset_seed(seed, 1)
            ),
            dtype=self.dtype_policy, name="output",
        )
        self.build((None, None, hidden_dim))

    def build(self, input_shape):
        if self.built:
            return
        self.qkv.build((None, None, self.hidden_dim))
        self.output_projection.build((None, None, self.hidden_dim))
        self.built = True

    # The projections' weights are saved as this layer's own variables:
    # the layout files had before the projections were Dense layers.
    def save_own_variables(self, store):
        save_projections(store, [self.qkv, self.output_projection])

    def load_own_variables(self, store):
        load_projections(store, [self.qkv, self.output_projection], self.name)

    def empty_cache(self, batch_size, length, dtype=None):
        """A zero key/value cache for `length` positions of `batch_size` sequences."""
        return ops.zeros(
            (batch_size, 2, length, self.num_key_value_heads, self.head_dim),
            dtype=dtype or self.compute_dtype,
        )

    def _rotate(self, qk, cache, cache_index):
        # While decoding, `call` skips `Layer.__call__`'s bookkeeping.
        rotate = self.rotary if cache is None else (
            lambda t: self.rotary.call(t, cache_index)
        )
        if self.rotary_dim == self.head_dim:
            return rotate(qk)
        return ops.concatenate(
            [rotate(qk[..., : self.rotary_dim]), qk[..., self.rotary_dim :]], axis=-1
        )

    def _attend(self, q, keys, values, mask, length):
        """Attention written out, with `mask` `(queries, keys)`.

        Rather than `ops.dot_product_attention` while decoding: for a few
        queries it is as fast, and it compiles into a few fused kernels
        everywhere (torch.compile stops at the fused kernel's eligibility
        check). Query heads are grouped by the key/value head they read, so
        keys and values are never repeated.
        """
        kv_heads = self.num_key_value_heads
        q = ops.reshape(q, (-1, length, kv_heads, self.num_heads // kv_heads, self.head_dim))
        scores = ops.einsum("bqkgd,bskd->bkgqs", q, keys)
        scores = ops.cast(scores, "float32") * (1.0 / self.head_dim**0.5)
        scores = ops.where(mask[None, None, None], scores, float("-inf"))
        weights = ops.cast(ops.softmax(scores, axis=-1), q.dtype)
        return ops.einsum("bkgqs,bskd->bqkgd", weights, values)

    def call(self, x, cache=None, cache_index=0, training=None):
        length = ops.shape(x)[1]  # a tensor where TensorFlow relaxed the shape
        heads, kv_heads = self.num_heads, self.num_key_value_heads
        qkv = self.qkv.call(x)
        qkv = ops.reshape(qkv, (-1, length, heads + 2 * kv_heads, self.head_dim))
        qk = qkv[:, :, : heads + kv_heads]
        if self.rotary is not None:
            # Queries and keys rotate together: one call for both.
            qk = self._rotate(qk, cache, cache_index)
        q, k = qk[:, :, :heads], qk[:, :, heads:]
        v = qkv[:, :, heads + kv_heads :]
        groups = heads // kv_heads
        if cache is None and keras.backend.standardize_dtype(q.dtype) != "float16":
            if groups > 1:
                # Grouped-query attention: query head h reads key/value head
                # h // groups (transformers' `repeat_kv`).
                k, v = ops.repeat(k, groups, axis=2), ops.repeat(v, groups, axis=2)
            out = ops.dot_product_attention(q, k, v, is_causal=True)
        elif cache is None:
            # Written out under float16: JAX's fused attention has no float16
            # gradient on a CPU (its float32-accumulating dot_general).
            positions = ops.arange(0, length, dtype="int32")
            out = self._attend(q, k, v, positions[None, :] <= positions[:, None], length)
        else:
            cache = ops.slice_update(
                cache, [0, 0, cache_index, 0, 0],
                ops.cast(ops.stack([k, v], axis=1), cache.dtype),
            )
            # A query at position p sees the cache slots 0..p; later slots are
            # empty (or stale) and masked.
            query_positions = ops.arange(0, length, dtype="int32") + cache_index
            key_positions = ops.arange(0, cache.shape[2], dtype="int32")
            mask = key_positions[None, :] <= query_positions[:, None]
            out = self._attend(
                q, ops.cast(cache[:, 0], q.dtype), ops.cast(cache[:, 1], q.dtype), mask,
                length,
            )
        out = ops.reshape(out, (-1, length, self.hidden_dim))
        out = self.output_projection.call(out)
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
            num_key_value_heads=self.num_key_value_heads,
            use_bias=self.use_bias,
            rotary_fraction=self.rotary_fraction,
        )
        return config
