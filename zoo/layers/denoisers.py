"""Default denoisers for diffusion: a residual MLP and a small U-Net.

Both are functional Keras models taking `[x_t, t]` (and `labels` when
`num_classes` is set; label `num_classes` is the "no label" token used for
classifier-free guidance) and returning a tensor shaped like `x_t`.
"""

import keras
from keras import layers

from zoo.layers.time_embedding import SinusoidalEmbedding

CL = "channels_last"


def _condition(t, labels, num_classes, dim, prefix):
    emb = SinusoidalEmbedding(dim, name=f"{prefix}time_sinusoid")(t)
    emb = layers.Dense(dim, activation="silu", name=f"{prefix}time_dense1")(emb)
    emb = layers.Dense(dim, name=f"{prefix}time_dense2")(emb)
    if num_classes:
        label_emb = layers.Embedding(num_classes + 1, dim, name=f"{prefix}label_embedding")(labels)
        emb = layers.Add(name=f"{prefix}condition")([emb, label_emb])
    return layers.Activation("silu", name=f"{prefix}condition_act")(emb)


def _inputs(data_shape, num_classes):
    x = keras.Input(data_shape, name="x_t")
    t = keras.Input((), dtype="int32", name="t")
    labels = keras.Input((), dtype="int32", name="labels") if num_classes else None
    return x, t, labels, [x, t] + ([labels] if num_classes else [])


def mlp_denoiser(data_shape, *, hidden_units=256, num_blocks=3, num_classes=None,
                 name="mlp_denoiser"):
    """Residual MLP for vector data; the condition is added in every block."""
    x, t, labels, inputs = _inputs(data_shape, num_classes)
    cond = _condition(t, labels, num_classes, hidden_units, "")
    h = layers.Dense(hidden_units, name="input_dense")(x)
    for i in range(num_blocks):
        skip = h
        h = layers.Add(name=f"block{i}_add_condition")(
            [h, layers.Dense(hidden_units, name=f"block{i}_condition")(cond)]
        )
        h = layers.Activation("silu", name=f"block{i}_act1")(h)
        h = layers.Dense(hidden_units, activation="silu", name=f"block{i}_dense1")(h)
        h = layers.Dense(hidden_units, name=f"block{i}_dense2")(h)
        h = layers.Add(name=f"block{i}_residual")([skip, h])
    h = layers.Activation("silu", name="output_act")(h)
    out = layers.Dense(data_shape[-1], kernel_initializer="zeros", name="output")(h)
    return keras.Model(inputs, out, name=name)


def _group_norm(channels, name):
    groups = min(8, channels)
    while channels % groups:
        groups -= 1
    return layers.GroupNormalization(groups, axis=-1, name=name)


def _res_block(h, cond, channels, name):
    skip = h
    h = _group_norm(h.shape[-1], f"{name}_norm1")(h)
    h = layers.Activation("silu", name=f"{name}_act1")(h)
    h = layers.Conv2D(channels, 3, padding="same", data_format=CL, name=f"{name}_conv1")(h)
    scale_shift = layers.Dense(channels, name=f"{name}_condition")(cond)
    h = layers.Add(name=f"{name}_add_condition")(
        [h, layers.Reshape((1, 1, channels), name=f"{name}_condition_reshape")(scale_shift)]
    )
    h = _group_norm(channels, f"{name}_norm2")(h)
    h = layers.Activation("silu", name=f"{name}_act2")(h)
    h = layers.Conv2D(channels, 3, padding="same", data_format=CL, name=f"{name}_conv2")(h)
    if skip.shape[-1] != channels:
        skip = layers.Conv2D(channels, 1, data_format=CL, name=f"{name}_skip")(skip)
    return layers.Add(name=f"{name}_residual")([skip, h])


def _attention(h, num_heads, name):
    height, width, channels = h.shape[1:]
    x = _group_norm(channels, f"{name}_norm")(h)
    x = layers.Reshape((height * width, channels), name=f"{name}_flatten")(x)
    x = layers.MultiHeadAttention(num_heads, channels // num_heads, name=f"{name}_mha")(x, x)
    x = layers.Reshape((height, width, channels), name=f"{name}_unflatten")(x)
    return layers.Add(name=f"{name}_residual")([h, x])


def unet_denoiser(data_shape, *, channels=32, channel_multipliers=(1, 2), num_res_blocks=1,
                  attention_heads=4, num_classes=None, name="unet_denoiser"):
    """U-Net for `(H, W, C)` images: residual blocks with group norm, the time
    (and label) embedding added in every block, self-attention at the lowest
    resolution. H and W must be divisible by 2**(len(channel_multipliers) - 1).
    """
    height, width, out_channels = data_shape
    factor = 2 ** (len(channel_multipliers) - 1)
    if height % factor or width % factor:
        raise ValueError(
            f"`data_shape` {tuple(data_shape)}: height and width must be divisible by "
            f"{factor} for channel_multipliers={tuple(channel_multipliers)}."
        )
    x, t, labels, inputs = _inputs(data_shape, num_classes)
    cond = _condition(t, labels, num_classes, 4 * channels, "")
    h = layers.Conv2D(channels, 3, padding="same", data_format=CL, name="input_conv")(x)
    skips = []
    for level, mult in enumerate(channel_multipliers):
        for block in range(num_res_blocks):
            h = _res_block(h, cond, channels * mult, f"down{level}_block{block}")
        skips.append(h)
        if level < len(channel_multipliers) - 1:
            h = layers.Conv2D(h.shape[-1], 3, strides=2, padding="same", data_format=CL,
                              name=f"down{level}_downsample")(h)
    h = _res_block(h, cond, h.shape[-1], "middle_block1")
    h = _attention(h, attention_heads, "middle_attention")
    h = _res_block(h, cond, h.shape[-1], "middle_block2")
    for level in reversed(range(len(channel_multipliers))):
        h = layers.Concatenate(name=f"up{level}_skip")([h, skips[level]])
        for block in range(num_res_blocks):
            h = _res_block(h, cond, channels * channel_multipliers[level], f"up{level}_block{block}")
        if level > 0:
            h = layers.UpSampling2D(2, data_format=CL, name=f"up{level}_upsample")(h)
            h = layers.Conv2D(channels * channel_multipliers[level - 1], 3, padding="same",
                              data_format=CL, name=f"up{level}_conv")(h)
    h = _group_norm(h.shape[-1], "output_norm")(h)
    h = layers.Activation("silu", name="output_act")(h)
    out = layers.Conv2D(out_channels, 3, padding="same", data_format=CL,
                        kernel_initializer="zeros", name="output")(h)
    return keras.Model(inputs, out, name=name)
