"""`MixtureOfExperts`: a feed-forward layer of several expert MLPs with top-k
routing and a load-balancing loss."""

import keras
from keras import ops

from zoo.layers.networks import offset_seed


@keras.saving.register_keras_serializable(package="zoo")
class MixtureOfExperts(keras.layers.Layer):
    """Top-k routed mixture of two-layer MLP experts (Shazeer et al., 2017).

    A linear router gives each token a softmax over `num_experts` experts;
    the token goes through its `top_k` most probable experts and their
    outputs are summed with those probabilities, renormalized over the
    chosen experts. `call` returns `(output, load_balancing_loss)`.

    The load-balancing loss is that of the Switch Transformer (Fedus et
    al., 2022) for top-k routing:
    `num_experts * sum_e fraction_e * probability_e`, where `fraction_e` is
    the share of the token-to-expert assignments that went to expert `e`
    and `probability_e` the router's mean probability of `e`. It is 1 when
    the load is uniform and grows as routing collapses onto few experts;
    add it, weighted, to the training loss.

    Every expert runs on every token and the outputs of the unchosen ones
    get weight 0: static shapes and plain `keras.ops` on every backend, at
    `num_experts / top_k` times the compute of sparse dispatch. Right for
    the small expert counts of this zoo; an unchosen expert gets no
    gradient from that token.

    Args:
        num_experts: number of experts, >= 2.
        hidden_dim: width of the input and output.
        intermediate_dim: width of each expert's hidden layer.
        top_k: experts per token, 1..num_experts.
        activation: activation of the experts' hidden layer.
        dropout: dropout rate of the output, in [0, 1).
        initializer_stddev, output_stddev: standard deviations of the normal
            initializers of the first and second expert layers.
        seed: seeds the initializers and the dropout.

    Example:

    ```python
    from keras import ops
    from zoo.layers.mixture_of_experts import MixtureOfExperts

    moe = MixtureOfExperts(num_experts=4, hidden_dim=8, intermediate_dim=16,
                           top_k=2, seed=0)
    y, balance_loss = moe(ops.ones((2, 5, 8)))   # (2, 5, 8), scalar >= 1
    ```
    """

    def __init__(
        self,
        num_experts,
        hidden_dim,
        intermediate_dim,
        top_k=2,
        activation="gelu",
        dropout=0.0,
        initializer_stddev=0.02,
        output_stddev=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value, low in (
            ("num_experts", num_experts, 2),
            ("hidden_dim", hidden_dim, 1),
            ("intermediate_dim", intermediate_dim, 1),
            ("top_k", top_k, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(
                    f"`{name}` must be an integer >= {low}; received {name}={value!r}."
                )
        if top_k > num_experts:
            raise ValueError(
                f"`top_k` must be at most `num_experts`; received top_k={top_k}, "
                f"num_experts={num_experts}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1); received dropout={dropout!r}.")
        self.num_experts = num_experts
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.top_k = top_k
        self.activation = keras.activations.get(activation)
        self.dropout = float(dropout)
        self.initializer_stddev = float(initializer_stddev)
        self.output_stddev = (
            self.initializer_stddev if output_stddev is None else float(output_stddev)
        )
        self.seed = seed
        self.output_dropout = keras.layers.Dropout(
            self.dropout, seed=offset_seed(seed, 3)
        )
        self.build((None, None, hidden_dim))

    def build(self, input_shape):
        if self.built:
            return
        e, d, f = self.num_experts, self.hidden_dim, self.intermediate_dim

        def normal(stddev, offset):
            return keras.initializers.RandomNormal(
                stddev=stddev, seed=offset_seed(self.seed, offset)
            )

        self.router_kernel = self.add_weight(
            name="router_kernel", shape=(d, e),
            initializer=normal(self.initializer_stddev, 0),
        )
        self.expert_kernel_1 = self.add_weight(
            name="expert_kernel_1", shape=(e, d, f),
            initializer=normal(self.initializer_stddev, 1),
        )
        self.expert_bias_1 = self.add_weight(
            name="expert_bias_1", shape=(e, f), initializer="zeros"
        )
        self.expert_kernel_2 = self.add_weight(
            name="expert_kernel_2", shape=(e, f, d),
            initializer=normal(self.output_stddev, 2),
        )
        self.expert_bias_2 = self.add_weight(
            name="expert_bias_2", shape=(e, d), initializer="zeros"
        )
        self.built = True

    def route(self, x):
        """`(probabilities, chosen, combine)`, each `(..., num_experts)`: the
        router's softmax, 1 for the top-k experts of each token (else 0), and
        the weight of each expert's output (the probabilities of the chosen
        experts, renormalized to sum to 1)."""
        logits = ops.matmul(x, self.router_kernel)
        # The softmax in float32 even under mixed precision: the balance
        # loss and the top-k choice are sensitive to it.
        probabilities = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        top_values, top_indices = ops.top_k(probabilities, self.top_k)
        chosen = ops.sum(
            ops.one_hot(top_indices, self.num_experts, dtype="float32"), axis=-2
        )
        combine = chosen * probabilities
        combine = combine / ops.sum(top_values, axis=-1, keepdims=True)
        return probabilities, chosen, combine

    def load_balancing_loss(self, probabilities, chosen):
        """`num_experts * sum_e fraction_e * probability_e` (see the class)."""
        flat_probabilities = ops.reshape(probabilities, (-1, self.num_experts))
        assigned = ops.reshape(chosen, (-1, self.num_experts))
        fraction = ops.mean(assigned, axis=0) / self.top_k
        probability = ops.mean(flat_probabilities, axis=0)
        return self.num_experts * ops.sum(fraction * probability)

    def call(self, x, training=None):
        probabilities, chosen, combine = self.route(x)
        hidden = ops.einsum("...d,edf->...ef", x, self.expert_kernel_1)
        hidden = self.activation(hidden + self.expert_bias_1)
        outputs = ops.einsum("...ef,efd->...ed", hidden, self.expert_kernel_2)
        outputs = outputs + self.expert_bias_2
        y = ops.einsum("...e,...ed->...d", ops.cast(combine, outputs.dtype), outputs)
        if training and self.dropout > 0:
            y = self.output_dropout(y, training=training)
        return y, self.load_balancing_loss(probabilities, chosen)

    def compute_output_shape(self, input_shape):
        return input_shape, ()

    def get_config(self):
        config = super().get_config()
        config.update(
            num_experts=self.num_experts,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            top_k=self.top_k,
            activation=keras.activations.serialize(self.activation),
            dropout=self.dropout,
            initializer_stddev=self.initializer_stddev,
            output_stddev=self.output_stddev,
            seed=self.seed,
        )
        return config
