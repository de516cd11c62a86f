"""DiT: a diffusion transformer denoiser for images (Peebles & Xie, 2023)."""

import keras
import numpy as np
from keras import layers, ops

from zoo.layers.cross_attention import CrossAttention
from zoo.layers.denoisers import MaskedMean, Seeds
from zoo.layers.time_embedding import SinusoidalEmbedding

CL = "channels_last"
POSITIONS = ("learned", "sinusoidal")


def sinusoidal_positions_2d(grid_height, grid_width, dim):
    """Fixed 2-D sine-cosine positions `(grid_height * grid_width, dim)`:
    half the channels encode the row, half the column (as in MAE and DiT)."""
    if dim % 4:
        raise ValueError(f"2-D sinusoidal positions need `hidden_dim` divisible by 4; "
                         f"received {dim}.")
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)

    def encode(pos):
        args = pos[:, None] * freqs[None, :]
        return np.concatenate([np.sin(args), np.cos(args)], axis=1)

    rows, cols = np.meshgrid(np.arange(grid_height), np.arange(grid_width), indexing="ij")
    table = np.concatenate([encode(rows.reshape(-1).astype(np.float64)),
                            encode(cols.reshape(-1).astype(np.float64))], axis=1)
    return table.astype(np.float32)


def _modulate(x, shift, scale):
    return x * (1.0 + scale[:, None, :]) + shift[:, None, :]


@keras.saving.register_keras_serializable(package="zoo")
class _DiTBlock(layers.Layer):
    """Pre-norm transformer block with adaLN-Zero: the condition gives each
    sub-layer a shift, a scale and a gate, the gates starting at zero so the
    block starts as the identity. With `cross_attention`, a cross-attention
    to the text tokens follows the self-attention (as in PixArt-alpha)."""

    def __init__(self, hidden_dim, num_heads, mlp_ratio, seeds, cross_attention=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.cross_attention = CrossAttention(
            num_heads, kernel_initializer=seeds.kernel(), dtype=self.dtype_policy,
            name="cross_attention") if cross_attention else None
        self.norm1 = layers.LayerNormalization(epsilon=1e-6, center=False, scale=False,
                                               dtype=self.dtype_policy)
        self.attention = layers.MultiHeadAttention(
            num_heads, hidden_dim // num_heads, kernel_initializer=seeds.kernel(),
            dtype=self.dtype_policy, name="attention")
        self.norm2 = layers.LayerNormalization(epsilon=1e-6, center=False, scale=False,
                                               dtype=self.dtype_policy)
        self.mlp_in = layers.Dense(int(hidden_dim * mlp_ratio), kernel_initializer=seeds.kernel(),
                                   dtype=self.dtype_policy, name="mlp_in")
        self.mlp_out = layers.Dense(hidden_dim, kernel_initializer=seeds.kernel(),
                                    dtype=self.dtype_policy, name="mlp_out")
        self.modulation = layers.Dense(6 * hidden_dim, kernel_initializer="zeros",
                                       dtype=self.dtype_policy, name="modulation")

    def call(self, x, cond, context=None, context_mask=None):
        shift1, scale1, gate1, shift2, scale2, gate2 = ops.split(self.modulation(cond), 6, axis=-1)
        h = _modulate(self.norm1(x), shift1, scale1)
        # Scores returned: Keras's einsum path (its fused attention asks for
        # float16 x float16 -> float32 products, refused by JAX on a CPU
        # under `mixed_float16`).
        attended, _ = self.attention(h, h, return_attention_scores=True)
        x = x + gate1[:, None, :] * attended
        if self.cross_attention is not None:
            x = self.cross_attention(x, context, context_mask)
        h = _modulate(self.norm2(x), shift2, scale2)
        h = self.mlp_out(ops.gelu(self.mlp_in(h), approximate=True))
        return x + gate2[:, None, :] * h


@keras.saving.register_keras_serializable(package="zoo")
class DiT(keras.Model):
    """Diffusion transformer denoiser: patchify, transformer blocks with
    adaLN-Zero conditioning on the time (and class), unpatchify.

    Takes `[x_t, t]`, `[x_t, t, labels]` with `num_classes` (label
    `num_classes` is "no label", for classifier-free guidance), or
    `[x_t, t, context, context_mask]` with `context_dim` (text tokens
    `(batch, m, context_dim)` and their padding mask `(batch, m)`: every
    block cross-attends to them, and their masked mean joins the time
    embedding), and returns
    a tensor shaped like `x_t`. `t` may be an integer DDPM timestep or a
    flow-matching time scaled to [0, 1000]. Select it with
    `DDPM(..., denoiser="dit", denoiser_options={...})` (or
    `FlowMatching`), or pass an instance as `denoiser`.

    Args:
        data_shape: `(height, width, channels)`, both sides divisible by
            `patch_size`.
        patch_size: side of the square patches that become tokens.
        hidden_dim: token width.
        depth: number of transformer blocks.
        num_heads: attention heads (dividing `hidden_dim`).
        mlp_ratio: width of each block's MLP relative to `hidden_dim`.
        positions: `"learned"` position embeddings (initialized with
            standard deviation 0.02) or fixed 2-D `"sinusoidal"` ones.
        num_classes: enables the class embedding.
        context_dim: width of the text tokens; enables cross-attention.
        seed: seeds every initializer.

    Example:

    ```python
    import numpy as np
    from zoo.layers.dit import DiT

    dit = DiT((8, 8, 1), patch_size=2, hidden_dim=32, depth=2, num_heads=2)
    out = dit([np.zeros((2, 8, 8, 1), "float32"), np.array([0.0, 500.0], "float32")])
    out.shape  # (2, 8, 8, 1)
    ```
    """

    def __init__(self, data_shape, *, patch_size=2, hidden_dim=64, depth=4, num_heads=4,
                 mlp_ratio=4.0, positions="learned", num_classes=None, context_dim=None,
                 seed=None, **kwargs):
        kwargs.setdefault("name", "dit_denoiser")
        super().__init__(**kwargs)
        data_shape = tuple(int(d) for d in data_shape)
        if len(data_shape) != 3:
            raise ValueError(f"`data_shape` must be (height, width, channels); "
                             f"received {data_shape}.")
        for name, value in (("patch_size", patch_size), ("hidden_dim", hidden_dim),
                            ("depth", depth), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; received {value!r}.")
        if data_shape[0] % patch_size or data_shape[1] % patch_size:
            raise ValueError(f"`data_shape` {data_shape}: height and width must be divisible "
                             f"by patch_size={patch_size}.")
        if hidden_dim % num_heads or hidden_dim % 2:
            raise ValueError(f"`hidden_dim` ({hidden_dim}) must be even and divisible by "
                             f"num_heads ({num_heads}).")
        if num_classes and context_dim:
            raise ValueError("A denoiser is conditioned on classes (`num_classes`) or on "
                             "text (`context_dim`), not both.")
        if positions not in POSITIONS:
            raise ValueError(f"`positions` must be one of {POSITIONS}; received {positions!r}.")
        self.data_shape = data_shape
        self.patch_size, self.hidden_dim, self.depth = patch_size, hidden_dim, depth
        self.num_heads, self.mlp_ratio, self.positions = num_heads, float(mlp_ratio), positions
        self.num_classes = int(num_classes) if num_classes else None
        self.context_dim = int(context_dim) if context_dim else None
        self.seed = seed
        seeds = Seeds(seed)
        self.grid = (data_shape[0] // patch_size, data_shape[1] // patch_size)
        num_tokens = self.grid[0] * self.grid[1]
        self.patch_embed = layers.Conv2D(hidden_dim, patch_size, strides=patch_size,
                                         data_format=CL, kernel_initializer=seeds.kernel(),
                                         name="patch_embed")
        if positions == "learned":
            self.position_embedding = self.add_weight(
                shape=(num_tokens, hidden_dim), initializer=seeds.normal(0.02),
                name="position_embedding")
        else:
            self.position_embedding = sinusoidal_positions_2d(*self.grid, hidden_dim)
        self.time_sinusoid = SinusoidalEmbedding(max(hidden_dim, 64), name="time_sinusoid")
        self.time_dense1 = layers.Dense(hidden_dim, activation="silu",
                                        kernel_initializer=seeds.kernel(), name="time_dense1")
        self.time_dense2 = layers.Dense(hidden_dim, kernel_initializer=seeds.kernel(),
                                        name="time_dense2")
        self.label_embedding = layers.Embedding(
            self.num_classes + 1, hidden_dim, embeddings_initializer=seeds.normal(0.02),
            name="label_embedding") if self.num_classes else None
        self.blocks = [_DiTBlock(hidden_dim, num_heads, self.mlp_ratio, seeds,
                                 cross_attention=bool(self.context_dim), name=f"block{i}")
                       for i in range(depth)]
        if self.context_dim:
            self.text_pool = MaskedMean(name="text_pool")
            self.text_dense = layers.Dense(hidden_dim, kernel_initializer=seeds.kernel(),
                                           name="text_dense")
        self.final_norm = layers.LayerNormalization(epsilon=1e-6, center=False, scale=False)
        self.final_modulation = layers.Dense(2 * hidden_dim, kernel_initializer="zeros",
                                             name="final_modulation")
        # Zero output: the untrained model predicts 0, as the U-Net does.
        self.output_dense = layers.Dense(patch_size * patch_size * data_shape[2],
                                         kernel_initializer="zeros", name="output")
        # Built now, so that the weights exist for the EMA and for loading:
        # a symbolic call, which traces `call` without running it.
        inputs = [keras.KerasTensor((None,) + data_shape), keras.KerasTensor((None,))]
        if self.num_classes:
            inputs.append(keras.KerasTensor((None,), "int32"))
        if self.context_dim:
            inputs += [keras.KerasTensor((None, None, self.context_dim)),
                       keras.KerasTensor((None, None), "bool")]
        self(inputs)

    def call(self, inputs, training=False):
        x, t = inputs[0], inputs[1]
        p, (gh, gw) = self.patch_size, self.grid
        h = self.patch_embed(x)
        h = ops.reshape(h, (-1, gh * gw, self.hidden_dim))
        h = h + ops.cast(self.position_embedding, h.dtype)[None]
        cond = self.time_dense2(self.time_dense1(self.time_sinusoid(t)))
        context = mask = None
        if self.num_classes:
            cond = cond + self.label_embedding(inputs[2])
        if self.context_dim:
            context, mask = inputs[2], inputs[3]
            cond = cond + self.text_dense(self.text_pool(context, mask))
        cond = ops.silu(cond)
        for block in self.blocks:
            h = block(h, cond, context, mask)
        shift, scale = ops.split(self.final_modulation(cond), 2, axis=-1)
        h = self.output_dense(_modulate(self.final_norm(h), shift, scale))
        channels = self.data_shape[2]
        h = ops.reshape(h, (-1, gh, gw, p, p, channels))
        h = ops.transpose(h, (0, 1, 3, 2, 4, 5))
        return ops.reshape(h, (-1,) + self.data_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],) + self.data_shape

    def get_config(self):
        return {
            "name": self.name, "data_shape": self.data_shape, "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim, "depth": self.depth, "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio, "positions": self.positions,
            "num_classes": self.num_classes, "context_dim": self.context_dim,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

