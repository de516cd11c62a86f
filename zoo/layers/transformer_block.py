"""`TransformerBlock`: a pre-LayerNorm decoder block (causal attention + MLP or
mixture of experts), cache-aware for incremental decoding."""

import keras
from keras import ops

from zoo.layers.causal_self_attention import CausalSelfAttention
from zoo.layers.mixture_of_experts import MixtureOfExperts
from zoo.layers.networks import offset_seed


@keras.saving.register_keras_serializable(package="zoo")
class TransformerBlock(keras.layers.Layer):
    """Pre-LayerNorm decoder block, as in GPT-2:

        x = x + attention(layer_norm_1(x))
        x = x + feed_forward(layer_norm_2(x))

    The feed-forward part is a two-layer MLP, or, with `num_experts`, a
    `MixtureOfExperts` of such MLPs. `call` returns `(x, aux_loss)`: the
    experts' load-balancing loss, or 0 for an MLP. With a key/value cache
    (see `CausalSelfAttention`), `call(x, cache=cache, cache_index=i)`
    returns `(x, aux_loss, cache)`.

    The layer norms and the MLP use this layer's own weights and
    `keras.ops` rather than sublayers: a decoding loop on PyTorch runs
    eagerly, where each sublayer call costs more than its arithmetic.

    Args:
        num_heads, hidden_dim: attention heads and model width.
        intermediate_dim: width of the MLP's hidden layer.
        dropout: dropout rate of each residual branch, in [0, 1).
        use_rotary, rotary_max_wavelength: rotary positions in the attention.
        num_experts: None for an MLP, or the number of experts (>= 2).
        experts_per_token: the experts' top k.
        activation: activation of the MLP's hidden layer.
        layer_norm_epsilon: the layer norms' epsilon.
        initializer_stddev, output_stddev: standard deviations of the normal
            initializers of the input and output projections.
        seed: seeds the initializers and the dropout.

    Example:

    ```python
    from keras import ops
    from zoo.layers.transformer_block import TransformerBlock

    block = TransformerBlock(num_heads=2, hidden_dim=8, intermediate_dim=32, seed=0)
    y, aux_loss = block(ops.ones((3, 5, 8)))     # (3, 5, 8), 0.0
    ```
    """

    def __init__(
        self,
        num_heads,
        hidden_dim,
        intermediate_dim,
        dropout=0.0,
        use_rotary=False,
        rotary_max_wavelength=10000,
        num_experts=None,
        experts_per_token=2,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        initializer_stddev=0.02,
        output_stddev=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (
            not isinstance(intermediate_dim, int)
            or isinstance(intermediate_dim, bool)
            or intermediate_dim < 1
        ):
            raise ValueError(
                "`intermediate_dim` must be a positive integer; received "
                f"intermediate_dim={intermediate_dim!r}."
            )
        if num_experts is not None and (
            not isinstance(num_experts, int) or isinstance(num_experts, bool)
            or num_experts < 2
        ):
            raise ValueError(
                "`num_experts` must be None (an MLP) or an integer >= 2; "
                f"received num_experts={num_experts!r}."
            )
        if not layer_norm_epsilon > 0:
            raise ValueError(
                "`layer_norm_epsilon` must be > 0; received "
                f"layer_norm_epsilon={layer_norm_epsilon!r}."
            )
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = float(dropout)
        self.use_rotary = bool(use_rotary)
        self.rotary_max_wavelength = rotary_max_wavelength
        self.num_experts = num_experts
        self.experts_per_token = experts_per_token
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.initializer_stddev = float(initializer_stddev)
        self.output_stddev = (
            self.initializer_stddev if output_stddev is None else float(output_stddev)
        )
        self.seed = seed
        self.attention = CausalSelfAttention(
            num_heads, hidden_dim, dropout=dropout, use_rotary=use_rotary,
            rotary_max_wavelength=rotary_max_wavelength,
            initializer_stddev=initializer_stddev, output_stddev=self.output_stddev,
            seed=offset_seed(seed, 0), dtype=self.dtype_policy, name="attention",
        )
        if num_experts is None:
            self.experts = None
        else:
            self.experts = MixtureOfExperts(
                num_experts, hidden_dim, intermediate_dim, top_k=experts_per_token,
                activation=activation, dropout=dropout,
                initializer_stddev=initializer_stddev,
                output_stddev=self.output_stddev, seed=offset_seed(seed, 10),
                dtype=self.dtype_policy, name="experts",
            )
        self.mlp_dropout = keras.layers.Dropout(self.dropout, seed=offset_seed(seed, 20))
        self.build((None, None, hidden_dim))

    def build(self, input_shape):
        if self.built:
            return
        d, f = self.hidden_dim, self.intermediate_dim
        for i in (1, 2):
            setattr(self, f"norm_{i}_gamma", self.add_weight(
                name=f"norm_{i}_gamma", shape=(d,), initializer="ones"))
            setattr(self, f"norm_{i}_beta", self.add_weight(
                name=f"norm_{i}_beta", shape=(d,), initializer="zeros"))
        if self.num_experts is None:
            self.mlp_kernel_1 = self.add_weight(
                name="mlp_kernel_1", shape=(d, f),
                initializer=keras.initializers.RandomNormal(
                    stddev=self.initializer_stddev, seed=offset_seed(self.seed, 30)
                ),
            )
            self.mlp_bias_1 = self.add_weight(
                name="mlp_bias_1", shape=(f,), initializer="zeros"
            )
            self.mlp_kernel_2 = self.add_weight(
                name="mlp_kernel_2", shape=(f, d),
                initializer=keras.initializers.RandomNormal(
                    stddev=self.output_stddev, seed=offset_seed(self.seed, 31)
                ),
            )
            self.mlp_bias_2 = self.add_weight(
                name="mlp_bias_2", shape=(d,), initializer="zeros"
            )
        self.built = True

    def _norm(self, x, i):
        return ops.layer_normalization(
            x, getattr(self, f"norm_{i}_gamma"), getattr(self, f"norm_{i}_beta"),
            epsilon=self.layer_norm_epsilon,
        )

    def call(self, x, cache=None, cache_index=0, training=None):
        h = self._norm(x, 1)
        if cache is None:
            h = self.attention(h, training=training)
        else:
            # Decoding step: `call` skips `Layer.__call__`'s bookkeeping,
            # which costs more than the step's arithmetic on eager PyTorch.
            h, cache = self.attention.call(
                h, cache=cache, cache_index=cache_index, training=training
            )
        x = x + h
        h = self._norm(x, 2)
        if self.experts is None:
            h = self.activation(ops.matmul(h, self.mlp_kernel_1) + self.mlp_bias_1)
            h = ops.matmul(h, self.mlp_kernel_2) + self.mlp_bias_2
            if training and self.dropout > 0:
                h = self.mlp_dropout(h, training=training)
            aux_loss = ops.zeros((), dtype="float32")
        elif cache is None:
            h, aux_loss = self.experts(h, training=training)
        else:
            h, aux_loss = self.experts.call(h, training=training)
        x = x + h
        return (x, aux_loss) if cache is None else (x, aux_loss, cache)

    def compute_output_shape(self, input_shape):
        return input_shape, ()

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            use_rotary=self.use_rotary,
            rotary_max_wavelength=self.rotary_max_wavelength,
            num_experts=self.num_experts,
            experts_per_token=self.experts_per_token,
            activation=keras.activations.serialize(self.activation),
            layer_norm_epsilon=self.layer_norm_epsilon,
            initializer_stddev=self.initializer_stddev,
            output_stddev=self.output_stddev,
            seed=self.seed,
        )
        return config
