"""Default denoisers for diffusion: a residual MLP and a small U-Net.

Both are functional Keras models taking `[x_t, t]` (and `labels` when
`num_classes` is set; label `num_classes` is the "no label" token used for
classifier-free guidance; the U-Net takes `[x_t, t, context, context_mask]`
when `context_dim` is set: text tokens, `(batch, m, context_dim)`, and their
padding mask, `(batch, m)`) and returning a tensor shaped like `x_t`. `t` is an
int32 timestep for DDPM and a float32 time (in [0, 1000]) for flow matching
(`time_dtype`). Given a `seed`, every initializer is seeded, so two builds
with one seed have equal weights.
"""

import keras
from keras import layers, ops

from zoo.layers.cross_attention import CrossAttention
from zoo.layers.time_embedding import SinusoidalEmbedding

CL = "channels_last"
TIME_DTYPES = ("int32", "float32")


class Seeds:
    """Hands out a distinct initializer seed per layer (None throughout
    without a seed, Keras's default then)."""

    def __init__(self, seed):
        self.next_seed = None if seed is None else int(seed)

    def kernel(self):
        return keras.initializers.GlorotUniform(seed=self._draw())

    def embedding(self):
        return keras.initializers.RandomUniform(-0.05, 0.05, seed=self._draw())

    def normal(self, stddev):
        return keras.initializers.RandomNormal(stddev=stddev, seed=self._draw())

    def _draw(self):
        if self.next_seed is None:
            return None
        self.next_seed += 1
        return self.next_seed - 1


@keras.saving.register_keras_serializable(package="zoo")
class MaskedMean(layers.Layer):
    """Mean of the real (unpadded) tokens: `(batch, m, d)`, `(batch, m)` ->
    `(batch, d)`; the pooled text embedding the denoisers add to the time
    embedding (as Imagen and SDXL add a pooled text embedding)."""

    def call(self, tokens, mask):
        weights = ops.cast(mask, tokens.dtype)[:, :, None]
        total = ops.sum(tokens * weights, axis=1)
        return total / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_output_shape(self, tokens_shape, mask_shape=None):
        return (tokens_shape[0], tokens_shape[-1])


def _condition(t, labels, num_classes, dim, prefix, seeds, text=None):
    emb = SinusoidalEmbedding(dim, name=f"{prefix}time_sinusoid")(t)
    emb = layers.Dense(dim, activation="silu", kernel_initializer=seeds.kernel(),
                       name=f"{prefix}time_dense1")(emb)
    emb = layers.Dense(dim, kernel_initializer=seeds.kernel(), name=f"{prefix}time_dense2")(emb)
    if num_classes:
        label_emb = layers.Embedding(num_classes + 1, dim,
                                     embeddings_initializer=seeds.embedding(),
                                     name=f"{prefix}label_embedding")(labels)
        emb = layers.Add(name=f"{prefix}condition")([emb, label_emb])
    if text is not None:
        pooled = MaskedMean(name=f"{prefix}text_pool")(*text)
        pooled = layers.Dense(dim, kernel_initializer=seeds.kernel(),
                              name=f"{prefix}text_dense")(pooled)
        emb = layers.Add(name=f"{prefix}text_condition")([emb, pooled])
    return layers.Activation("silu", name=f"{prefix}condition_act")(emb)


def _inputs(data_shape, num_classes, time_dtype, context_dim=None):
    if time_dtype not in TIME_DTYPES:
        raise ValueError(f"`time_dtype` must be one of {TIME_DTYPES}; received {time_dtype!r}.")
    if num_classes and context_dim:
        raise ValueError("A denoiser is conditioned on classes (`num_classes`) or on text "
                         "(`context_dim`), not both.")
    x = keras.Input(data_shape, name="x_t")
    t = keras.Input((), dtype=time_dtype, name="t")
    labels = keras.Input((), dtype="int32", name="labels") if num_classes else None
    if context_dim:
        context = keras.Input((None, int(context_dim)), name="context")
        mask = keras.Input((None,), dtype="bool", name="context_mask")
        return x, t, (context, mask), [x, t, context, mask]
    return x, t, labels, [x, t] + ([labels] if num_classes else [])


def mlp_denoiser(data_shape, *, hidden_units=256, num_blocks=3, num_classes=None,
                 time_dtype="int32", seed=None, name="mlp_denoiser"):
    """Residual MLP for vector data; the condition is added in every block."""
    seeds = Seeds(seed)
    x, t, labels, inputs = _inputs(data_shape, num_classes, time_dtype)
    cond = _condition(t, labels, num_classes, hidden_units, "", seeds)
    h = layers.Dense(hidden_units, kernel_initializer=seeds.kernel(), name="input_dense")(x)
    for i in range(num_blocks):
        skip = h
        h = layers.Add(name=f"block{i}_add_condition")(
            [h, layers.Dense(hidden_units, kernel_initializer=seeds.kernel(),
                             name=f"block{i}_condition")(cond)]
        )
        h = layers.Activation("silu", name=f"block{i}_act1")(h)
        h = layers.Dense(hidden_units, activation="silu", kernel_initializer=seeds.kernel(),
                         name=f"block{i}_dense1")(h)
        h = layers.Dense(hidden_units, kernel_initializer=seeds.kernel(),
                         name=f"block{i}_dense2")(h)
        h = layers.Add(name=f"block{i}_residual")([skip, h])
    h = layers.Activation("silu", name="output_act")(h)
    out = layers.Dense(data_shape[-1], kernel_initializer="zeros", name="output")(h)
    return keras.Model(inputs, out, name=name)


def _group_norm(channels, name):
    groups = min(8, channels)
    while channels % groups:
        groups -= 1
    return layers.GroupNormalization(groups, axis=-1, name=name)


def _conv(channels, kernel_size, seeds, name, **kwargs):
    return layers.Conv2D(channels, kernel_size, padding="same", data_format=CL,
                         kernel_initializer=seeds.kernel(), name=name, **kwargs)


def _res_block(h, cond, channels, name, seeds):
    skip = h
    h = _group_norm(h.shape[-1], f"{name}_norm1")(h)
    h = layers.Activation("silu", name=f"{name}_act1")(h)
    h = _conv(channels, 3, seeds, f"{name}_conv1")(h)
    scale_shift = layers.Dense(channels, kernel_initializer=seeds.kernel(),
                               name=f"{name}_condition")(cond)
    h = layers.Add(name=f"{name}_add_condition")(
        [h, layers.Reshape((1, 1, channels), name=f"{name}_condition_reshape")(scale_shift)]
    )
    h = _group_norm(channels, f"{name}_norm2")(h)
    h = layers.Activation("silu", name=f"{name}_act2")(h)
    h = _conv(channels, 3, seeds, f"{name}_conv2")(h)
    if skip.shape[-1] != channels:
        skip = _conv(channels, 1, seeds, f"{name}_skip")(skip)
    return layers.Add(name=f"{name}_residual")([skip, h])


def _attention(h, num_heads, name, seeds):
    height, width, channels = h.shape[1:]
    x = _group_norm(channels, f"{name}_norm")(h)
    x = layers.Reshape((height * width, channels), name=f"{name}_flatten")(x)
    # With the scores returned, Keras takes its einsum path: its fused
    # `dot_product_attention` asks for float16 x float16 -> float32 products,
    # which JAX refuses on a CPU under `mixed_float16`.
    x, _ = layers.MultiHeadAttention(num_heads, channels // num_heads,
                                     kernel_initializer=seeds.kernel(),
                                     name=f"{name}_mha")(x, x, return_attention_scores=True)
    x = layers.Reshape((height, width, channels), name=f"{name}_unflatten")(x)
    return layers.Add(name=f"{name}_residual")([h, x])


def unet_denoiser(data_shape, *, channels=32, channel_multipliers=(1, 2), num_res_blocks=1,
                  attention_heads=4, num_classes=None, context_dim=None,
                  cross_attention_levels=None, time_dtype="int32", seed=None,
                  name="unet_denoiser"):
    """U-Net for `(H, W, C)` images: residual blocks with group norm, the time
    (and label) embedding added in every block, self-attention at the lowest
    resolution. H and W must be divisible by 2**(len(channel_multipliers) - 1).

    With `context_dim` (text conditioning) the U-Net takes `[x_t, t, context,
    context_mask]`: a `CrossAttention` to the text tokens follows the
    middle self-attention and every residual block of the levels in
    `cross_attention_levels` (indices into `channel_multipliers`; default:
    every level below the full resolution, or the only one), and the
    masked mean of the text tokens joins the time embedding.
    """
    height, width, out_channels = data_shape
    factor = 2 ** (len(channel_multipliers) - 1)
    if height % factor or width % factor:
        raise ValueError(
            f"`data_shape` {tuple(data_shape)}: height and width must be divisible by "
            f"{factor} for channel_multipliers={tuple(channel_multipliers)}."
        )
    levels = len(channel_multipliers)
    if cross_attention_levels is None:
        cross_attention_levels = tuple(range(1, levels)) or (0,)
    cross_attention_levels = tuple(int(level) for level in cross_attention_levels)
    if any(not 0 <= level < levels for level in cross_attention_levels):
        raise ValueError(f"`cross_attention_levels` must be indices in [0, {levels}); "
                         f"received {cross_attention_levels}.")
    seeds = Seeds(seed)
    x, t, condition, inputs = _inputs(data_shape, num_classes, time_dtype, context_dim)
    text = condition if context_dim else None
    cond = _condition(t, None if text else condition, num_classes, 4 * channels, "", seeds,
                      text)

    def cross(h, level, name):
        if text is None or (level is not None and level not in cross_attention_levels):
            return h
        return CrossAttention(attention_heads, kernel_initializer=seeds.kernel(),
                              name=f"{name}_cross_attention")(h, *text)

    h = _conv(channels, 3, seeds, "input_conv")(x)
    skips = []
    for level, mult in enumerate(channel_multipliers):
        for block in range(num_res_blocks):
            h = _res_block(h, cond, channels * mult, f"down{level}_block{block}", seeds)
            h = cross(h, level, f"down{level}_block{block}")
        skips.append(h)
        if level < len(channel_multipliers) - 1:
            h = _conv(h.shape[-1], 3, seeds, f"down{level}_downsample", strides=2)(h)
    h = _res_block(h, cond, h.shape[-1], "middle_block1", seeds)
    h = _attention(h, attention_heads, "middle_attention", seeds)
    h = cross(h, None, "middle")
    h = _res_block(h, cond, h.shape[-1], "middle_block2", seeds)
    for level in reversed(range(len(channel_multipliers))):
        h = layers.Concatenate(name=f"up{level}_skip")([h, skips[level]])
        for block in range(num_res_blocks):
            h = _res_block(h, cond, channels * channel_multipliers[level],
                           f"up{level}_block{block}", seeds)
            h = cross(h, level, f"up{level}_block{block}")
        if level > 0:
            h = layers.UpSampling2D(2, data_format=CL, name=f"up{level}_upsample")(h)
            h = _conv(channels * channel_multipliers[level - 1], 3, seeds, f"up{level}_conv")(h)
    h = _group_norm(h.shape[-1], "output_norm")(h)
    h = layers.Activation("silu", name="output_act")(h)
    # float32 under a mixed policy, as Keras's mixed-precision guide advises
    # for outputs (PyTorch's CPU half convolution also fails to compute the
    # kernel gradient of a one-channel output).
    out = layers.Conv2D(out_channels, 3, padding="same", data_format=CL,
                        kernel_initializer="zeros", dtype="float32", name="output")(h)
    return keras.Model(inputs, out, name=name)
