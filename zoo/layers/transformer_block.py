"""`TransformerBlock`: a pre-LayerNorm decoder block (causal attention + MLP or
mixture of experts), cache-aware for incremental decoding."""

import keras
from keras import ops

from zoo.layers.causal_self_attention import (
    CausalSelfAttention,
    Projection,
    load_projections,
    save_projections,
)
from zoo.layers.mixture_of_experts import MixtureOfExperts
from zoo.layers.networks import offset_seed

NORMALIZATIONS = ("layer_norm", "rms_norm")


def get_activation(activation):
    """`keras.activations.get`, plus "gelu_approximate" (the tanh
    approximation of GELU, GPT-2's "gelu_new")."""
    if activation == "gelu_approximate":
        return _gelu_approximate
    return keras.activations.get(activation)


def _gelu_approximate(x):
    return keras.activations.gelu(x, approximate=True)


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

    The layer norms use this layer's own weights and `keras.ops`, and the
    projections are called through `call`: a decoding loop on PyTorch runs
    eagerly, where each `Layer.__call__` costs more than its arithmetic.

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
        num_key_value_heads, use_bias, rotary_fraction: see
            `CausalSelfAttention` (use_bias also covers the MLP).
        normalization: "layer_norm" or "rms_norm" (no bias; Llama).
        gated_mlp: a gated MLP, `mlp_2(activation(mlp_gate(x)) * mlp_1(x))`
            (SwiGLU with activation "silu"; Llama).
        parallel_residual: attention and MLP side by side (GPT-NeoX).

    The MLP's projections `mlp_1`, `mlp_gate` and `mlp_2` are `Dense`
    layers (Keras's LoRA applies to them).

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
        num_key_value_heads=None,
        use_bias=True,
        rotary_fraction=1.0,
        normalization="layer_norm",
        gated_mlp=False,
        parallel_residual=False,
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
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"`normalization` must be one of {NORMALIZATIONS}; received "
                f"normalization={normalization!r}."
            )
        for name, value in (("gated_mlp", gated_mlp), ("parallel_residual", parallel_residual),
                            ("use_bias", use_bias)):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be True or False; received {value!r}.")
        if gated_mlp and num_experts is not None:
            raise ValueError(
                "`gated_mlp` applies to an MLP block; received gated_mlp=True with "
                f"num_experts={num_experts}."
            )
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.dropout = float(dropout)
        self.use_rotary = bool(use_rotary)
        self.rotary_max_wavelength = rotary_max_wavelength
        self.num_experts = num_experts
        self.experts_per_token = experts_per_token
        self.activation_name = activation if isinstance(activation, str) else (
            keras.activations.serialize(activation)
        )
        self.activation = get_activation(activation)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.initializer_stddev = float(initializer_stddev)
        self.output_stddev = (
            self.initializer_stddev if output_stddev is None else float(output_stddev)
        )
        self.seed = seed
        self.num_key_value_heads = num_key_value_heads
        self.use_bias = use_bias
        self.rotary_fraction = rotary_fraction
        self.normalization = normalization
        self.gated_mlp = gated_mlp
        self.parallel_residual = parallel_residual
        # The MLP's projections first: the trainable variables keep the
        # order they had as this layer's own variables (norms, MLP, then
        # attention), which optimizer states saved before rely on.
        self.mlp_1 = self.mlp_gate = self.mlp_2 = None
        if num_experts is None:
            def dense(units, stddev, offset, name):
                return Projection(
                    units, use_bias=use_bias,
                    kernel_initializer=keras.initializers.RandomNormal(
                        stddev=stddev, seed=offset_seed(seed, offset)
                    ),
                    dtype=self.dtype_policy, name=name,
                )

            self.mlp_1 = dense(intermediate_dim, self.initializer_stddev, 30, "mlp_1")
            self.mlp_2 = dense(hidden_dim, self.output_stddev, 31, "mlp_2")
            if gated_mlp:
                self.mlp_gate = dense(intermediate_dim, self.initializer_stddev, 32, "mlp_gate")
        self.attention = CausalSelfAttention(
            num_heads, hidden_dim, dropout=dropout, use_rotary=use_rotary,
            rotary_max_wavelength=rotary_max_wavelength,
            initializer_stddev=initializer_stddev, output_stddev=self.output_stddev,
            seed=offset_seed(seed, 0), num_key_value_heads=num_key_value_heads,
            use_bias=use_bias, rotary_fraction=rotary_fraction,
            dtype=self.dtype_policy, name="attention",
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
            if self.normalization == "layer_norm":
                setattr(self, f"norm_{i}_beta", self.add_weight(
                    name=f"norm_{i}_beta", shape=(d,), initializer="zeros"))
        for layer, width in ((self.mlp_1, d), (self.mlp_gate, d), (self.mlp_2, f)):
            if layer is not None:
                layer.build((None, None, width))
        self.built = True

    def _mlp_projections(self):
        # The order of the saved layout: norms, then these.
        return [p for p in (self.mlp_1, self.mlp_2, self.mlp_gate) if p is not None]

    def save_own_variables(self, store):
        own = self._trainable_variables + self._non_trainable_variables
        for i, variable in enumerate(own):
            store[str(i)] = variable
        save_projections(store, self._mlp_projections(), start=len(own))

    def load_own_variables(self, store):
        own = self._trainable_variables + self._non_trainable_variables
        load_projections(store, self._mlp_projections(), self.name, start=len(own))
        for i, variable in enumerate(own):
            variable.assign(store[str(i)])

    def _norm(self, x, i):
        gamma = getattr(self, f"norm_{i}_gamma")
        if self.normalization == "rms_norm":
            return ops.rms_normalization(x, gamma, epsilon=self.layer_norm_epsilon)
        return ops.layer_normalization(
            x, gamma, getattr(self, f"norm_{i}_beta"), epsilon=self.layer_norm_epsilon,
        )

    def _feed_forward(self, h, decoding, training):
        if self.experts is not None:
            return (self.experts.call if decoding else self.experts)(h, training=training)
        if self.gated_mlp:
            # SwiGLU (Llama): activation(gate) * up.
            h = self.activation(self.mlp_gate.call(h)) * self.mlp_1.call(h)
        else:
            h = self.activation(self.mlp_1.call(h))
        h = self.mlp_2.call(h)
        if training and self.dropout > 0:
            h = self.mlp_dropout(h, training=training)
        return h, ops.zeros((), dtype="float32")

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
        if self.parallel_residual:
            # GPT-NeoX: attention and MLP both read the block's input.
            f, aux_loss = self._feed_forward(self._norm(x, 2), cache is not None, training)
            x = x + h + f
        else:
            x = x + h
            f, aux_loss = self._feed_forward(self._norm(x, 2), cache is not None, training)
            x = x + f
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
            activation=self.activation_name,
            layer_norm_epsilon=self.layer_norm_epsilon,
            initializer_stddev=self.initializer_stddev,
            output_stddev=self.output_stddev,
            seed=self.seed,
            num_key_value_heads=self.num_key_value_heads,
            use_bias=self.use_bias,
            rotary_fraction=self.rotary_fraction,
            normalization=self.normalization,
            gated_mlp=self.gated_mlp,
            parallel_residual=self.parallel_residual,
        )
        return config
