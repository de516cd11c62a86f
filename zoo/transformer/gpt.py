"""`GPT`: a decoder-only transformer language model with cached, compiled
generation (Radford et al., 2019)."""

import math

import keras
import numpy as np
from keras import ops

from zoo.core import GenerativeModel
from zoo.layers.networks import offset_seed
from zoo.layers.transformer_block import NORMALIZATIONS, TransformerBlock, get_activation
from zoo.transformer import generation
from zoo.transformer.generation import _check_float, _check_int

_POSITION_EMBEDDINGS = ("learned", "rotary")


class _PerplexityMean(keras.metrics.Mean):
    """Averages per-batch perplexities geometrically, so that the epoch's
    perplexity is `exp(mean cross-entropy)`, not a mean of exponentials."""

    def update_state(self, values, sample_weight=None):
        super().update_state(ops.log(values), sample_weight)

    def result(self):
        return ops.exp(super().result())


@keras.saving.register_keras_serializable(package="zoo")
class GPT(GenerativeModel):
    """A decoder-only transformer language model.

    Token embeddings (tied to the output layer) plus learned positions, or
    rotary positions inside the attention; `num_layers` pre-LayerNorm
    blocks of causal multi-head self-attention and an MLP (or a
    mixture of experts with top-k routing); a final LayerNorm. Calling the
    model (or `predict`) on int tokens `(batch, length)` gives next-token
    logits `(batch, length, vocab_size)`: position `t` predicts token
    `t + 1`.

    Training is plain `fit(x, y)` with `y` the next tokens of `x`, or
    `fit(tokens)`, which predicts `tokens[:, 1:]` from `tokens[:, :-1]`.
    The logs are `loss` (mean cross-entropy in nats per token, plus
    `aux_loss_weight * aux_loss` for experts), `perplexity` (`exp` of the
    mean cross-entropy over the epoch) and, with experts, `aux_loss` (the
    load-balancing loss averaged over blocks; 1 when balanced).
    `sample_weight` (with `y`: Keras drops sample weights given without
    it, so `fit` raises) may weigh each sequence `(batch,)` or each target
    token `(batch, length)` (0 masks padding); the loss is the weighted
    mean over tokens.

    `generate(prompt, max_new_tokens, ...)` decodes with a key/value cache
    preallocated to the needed length, in a loop compiled once per setting
    (`jax.jit` on JAX, an XLA `tf.function` on TensorFlow; on PyTorch steps
    compiled by TorchInductor for long runs or with `jit_compile=True`,
    eager otherwise).
    `log_prob(tokens)` is each sequence's log-likelihood given its first
    token. With a `tokenizer` both also take and give text.

    Args:
        vocab_size: number of tokens; may be left out with a tokenizer.
        max_length: the longest sequence the model reads (positions).
        num_layers, num_heads, hidden_dim: blocks, heads, model width.
        intermediate_dim: width of the MLP; default `4 * hidden_dim`.
        dropout: dropout rate of the embeddings and residual branches.
        position_embedding: `"learned"` or `"rotary"`.
        rotary_max_wavelength: the rotary positions' longest wavelength.
        num_experts: None for MLP blocks, or the number of experts (>= 2) of
            a mixture-of-experts feed-forward layer in every block.
        experts_per_token: the experts' top k.
        aux_loss_weight: weight of the load-balancing loss in `loss`.
        activation: activation of the MLP.
        layer_norm_epsilon: epsilon of the layer norms.
        initializer_stddev: standard deviation of the weights' normal
            initializers (the residual output projections get
            `initializer_stddev / sqrt(2 * num_layers)`, as in GPT-2).
        tokenizer: None, a `ByteTokenizer`, a `CharTokenizer` or an
            `HFTokenizer` (or their serialized config); saved with the model.
        seed: seeds the initializers, the dropout and the training noise.
        num_key_value_heads: key/value heads of grouped-query attention
            (Llama); default `num_heads`.
        use_bias: biases in the attention and MLP projections.
        rotary_fraction: the fraction of each head's channels rotated by
            rotary positions (GPT-NeoX: 0.25).
        normalization: "layer_norm" or "rms_norm" (Llama).
        gated_mlp: a gated MLP (SwiGLU with activation "silu"; Llama).
        parallel_residual: attention and MLP read the same input (GPT-NeoX).
        tie_embeddings: the output layer is the token embedding's
            transpose; False gives it its own weights.

    `activation` may also be "gelu_approximate" (GPT-2's tanh GELU).
    Pretrained Hugging Face checkpoints (gpt2, gpt_neox, llama) load with
    `zoo.from_preset(folder or "hf://owner/name")` and are written back by
    `save_to_hf`; `enable_lora(rank)` fine-tunes them with Keras's LoRA.

    Example:

    ```python
    from zoo.data import MarkovText
    from zoo.transformer import GPT

    source = MarkovText(vocab_size=27, order=1, seed=0)
    tokens = source.sequences(256, 33, seed=0)         # (256, 33) int32
    gpt = GPT(vocab_size=27, max_length=32, num_layers=2, num_heads=2,
              hidden_dim=32, seed=0)
    gpt.compile()
    gpt.fit(tokens, batch_size=32, epochs=2, verbose=0)
    logits = gpt.predict(tokens[:4, :-1], verbose=0)   # (4, 32, 27)
    text = gpt.generate(tokens[:2, :8], max_new_tokens=16, top_k=5, seed=0)
    nll = -gpt.log_prob(tokens[:8]).mean() / 32        # nats per token
    ```

    With a tokenizer:

    ```python
    from zoo.transformer import GPT, CharTokenizer

    tokenizer = CharTokenizer.from_text("the quick brown fox")
    gpt = GPT(max_length=32, num_layers=1, num_heads=2, hidden_dim=16,
              tokenizer=tokenizer, seed=0)
    gpt.generate("the ", max_new_tokens=8, temperature=0)   # a str
    ```
    """

    data_dtype = "int"

    def __init__(
        self,
        vocab_size=None,
        max_length=256,
        num_layers=4,
        num_heads=4,
        hidden_dim=128,
        intermediate_dim=None,
        dropout=0.0,
        position_embedding="learned",
        rotary_max_wavelength=10000,
        num_experts=None,
        experts_per_token=2,
        aux_loss_weight=0.01,
        activation="gelu",
        layer_norm_epsilon=1e-5,
        initializer_stddev=0.02,
        tokenizer=None,
        seed=None,
        num_key_value_heads=None,
        use_bias=True,
        rotary_fraction=1.0,
        normalization="layer_norm",
        gated_mlp=False,
        parallel_residual=False,
        tie_embeddings=True,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        if isinstance(tokenizer, dict):
            tokenizer = keras.saving.deserialize_keras_object(tokenizer)
        if tokenizer is not None and not (
            hasattr(tokenizer, "encode") and hasattr(tokenizer, "decode")
            and hasattr(tokenizer, "vocab_size") and hasattr(tokenizer, "get_config")
        ):
            raise ValueError(
                "`tokenizer` must be None, a ByteTokenizer, a CharTokenizer or an "
                "HFTokenizer; "
                f"received {tokenizer!r}."
            )
        if vocab_size is None:
            if tokenizer is None:
                raise ValueError(
                    "`vocab_size` is required without a tokenizer; received "
                    "vocab_size=None and tokenizer=None."
                )
            vocab_size = tokenizer.vocab_size
        self.vocab_size = _check_int(vocab_size, "vocab_size", 2)
        if tokenizer is not None and tokenizer.vocab_size != self.vocab_size:
            raise ValueError(
                f"`vocab_size` ({self.vocab_size}) must equal the tokenizer's "
                f"vocab_size ({tokenizer.vocab_size})."
            )
        self.tokenizer = tokenizer
        self.max_length = _check_int(max_length, "max_length", 1)
        self.num_layers = _check_int(num_layers, "num_layers", 1)
        self.num_heads = _check_int(num_heads, "num_heads", 1)
        self.hidden_dim = _check_int(hidden_dim, "hidden_dim", 1)
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                "`num_heads` must divide `hidden_dim`; received "
                f"num_heads={num_heads}, hidden_dim={hidden_dim}."
            )
        self.intermediate_dim = (
            4 * self.hidden_dim if intermediate_dim is None
            else _check_int(intermediate_dim, "intermediate_dim", 1)
        )
        self.dropout = _check_float(dropout, "dropout", 0.0, 1.0, high_open=True)
        if position_embedding not in _POSITION_EMBEDDINGS:
            raise ValueError(
                f"`position_embedding` must be one of {_POSITION_EMBEDDINGS}; "
                f"received position_embedding={position_embedding!r}."
            )
        self.position_embedding_type = position_embedding
        if position_embedding == "rotary" and (self.hidden_dim // self.num_heads) % 2:
            raise ValueError(
                "Rotary positions need an even head size hidden_dim / num_heads; "
                f"received hidden_dim={hidden_dim}, num_heads={num_heads}."
            )
        self.rotary_max_wavelength = _check_float(
            rotary_max_wavelength, "rotary_max_wavelength", 1.0, math.inf,
            low_open=True, high_open=True,
        )
        if num_experts is not None:
            num_experts = _check_int(num_experts, "num_experts", 2)
            experts_per_token = _check_int(
                experts_per_token, "experts_per_token", 1, num_experts
            )
        else:
            experts_per_token = _check_int(experts_per_token, "experts_per_token", 1)
        self.num_experts = num_experts
        self.experts_per_token = experts_per_token
        self.aux_loss_weight = _check_float(
            aux_loss_weight, "aux_loss_weight", 0.0, math.inf, high_open=True
        )
        get_activation(activation)  # raises on an unknown activation
        self.activation = (
            activation if activation == "gelu_approximate"
            else keras.activations.serialize(keras.activations.get(activation))
        )
        if num_key_value_heads is not None:
            num_key_value_heads = _check_int(
                num_key_value_heads, "num_key_value_heads", 1, self.num_heads
            )
            if self.num_heads % num_key_value_heads:
                raise ValueError(
                    "`num_key_value_heads` must divide num_heads="
                    f"{self.num_heads}; received num_key_value_heads={num_key_value_heads}."
                )
        self.num_key_value_heads = num_key_value_heads
        self.rotary_fraction = _check_float(
            rotary_fraction, "rotary_fraction", 0.0, 1.0, low_open=True
        )
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"`normalization` must be one of {NORMALIZATIONS}; received "
                f"normalization={normalization!r}."
            )
        self.normalization = normalization
        for name, value in (("use_bias", use_bias), ("gated_mlp", gated_mlp),
                            ("parallel_residual", parallel_residual),
                            ("tie_embeddings", tie_embeddings)):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be True or False; received {name}={value!r}.")
        self.use_bias = use_bias
        self.gated_mlp = gated_mlp
        self.parallel_residual = parallel_residual
        self.tie_embeddings = tie_embeddings
        self.layer_norm_epsilon = _check_float(
            layer_norm_epsilon, "layer_norm_epsilon", 0.0, math.inf,
            low_open=True, high_open=True,
        )
        self.initializer_stddev = _check_float(
            initializer_stddev, "initializer_stddev", 0.0, math.inf,
            low_open=True, high_open=True,
        )

        self.token_embedding = keras.layers.Embedding(
            self.vocab_size, self.hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(
                stddev=self.initializer_stddev, seed=offset_seed(seed, 1)
            ),
            dtype=self.dtype_policy, name="token_embedding",
        )
        self.position_embedding = None
        if position_embedding == "learned":
            self.position_embedding = keras.layers.Embedding(
                self.max_length, self.hidden_dim,
                embeddings_initializer=keras.initializers.RandomNormal(
                    stddev=self.initializer_stddev, seed=offset_seed(seed, 2)
                ),
                dtype=self.dtype_policy, name="position_embedding",
            )
            # Read as a table (sliced at the decoding position), never called.
            self.position_embedding.build((None,))
        self.embedding_dropout = keras.layers.Dropout(
            self.dropout, seed=offset_seed(seed, 3)
        )
        output_stddev = self.initializer_stddev / math.sqrt(2 * self.num_layers)
        self.blocks = [
            TransformerBlock(
                self.num_heads, self.hidden_dim, self.intermediate_dim,
                dropout=self.dropout, use_rotary=position_embedding == "rotary",
                rotary_max_wavelength=self.rotary_max_wavelength,
                num_experts=num_experts, experts_per_token=experts_per_token,
                activation=self.activation,
                layer_norm_epsilon=self.layer_norm_epsilon,
                initializer_stddev=self.initializer_stddev,
                output_stddev=output_stddev,
                seed=offset_seed(seed, 100 * (i + 1)),
                num_key_value_heads=num_key_value_heads, use_bias=use_bias,
                rotary_fraction=self.rotary_fraction, normalization=normalization,
                gated_mlp=gated_mlp, parallel_residual=parallel_residual,
                dtype=self.dtype_policy, name=f"block_{i}",
            )
            for i in range(self.num_layers)
        ]
        norm = (
            keras.layers.RMSNormalization if normalization == "rms_norm"
            else keras.layers.LayerNormalization
        )
        self.final_norm = norm(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="final_norm"
        )
        self.output_head = None
        if not tie_embeddings:
            self.output_head = keras.layers.Dense(
                self.vocab_size, use_bias=False,
                kernel_initializer=keras.initializers.RandomNormal(
                    stddev=self.initializer_stddev, seed=offset_seed(seed, 4)
                ),
                dtype=self.dtype_policy, name="output_head",
            )
            self.output_head.build((None, None, self.hidden_dim))
        # The loss terms of the last training step. On JAX the loss closure
        # runs inside `jax.value_and_grad` and its tensors cannot leave it;
        # a variable assigned inside carries them out to the logs.
        self.last_terms = self.add_weight(
            shape=(2,), initializer="zeros", trainable=False, name="last_terms"
        )
        # The core gives every log a `Mean` at `compile()` unless one is
        # there already; perplexity wants the exponential of the mean
        # cross-entropy instead. All are made here, in `log_names()` order, so
        # that `evaluate` still lists `loss` first.
        for name in self.log_names():
            self._trackers[name] = (
                _PerplexityMean(name=name) if name == "perplexity"
                else keras.metrics.Mean(name=name)
            )
        # One compiled decoding loop per static setting.
        self._decoders = {}
        self._decoded_steps = {}  # steps decoded per setting ("auto" traces on PyTorch)
        self._log_prob_fns = {}
        # Built now, so `compile()` works at once (the blocks build
        # themselves); no forward pass, which costs seconds of op-by-op
        # compilation on JAX.
        self.token_embedding.build((None, None))
        self.final_norm.build((None, None, self.hidden_dim))
        self.built = True

    # ------------------------------------------------------------------
    # The network.

    def _forward(self, tokens, training=False, caches=None, cache_index=0):
        """`(logits, aux_loss, caches)` for tokens at positions
        `cache_index, ...`; `caches` None runs without a cache."""
        # A tensor where TensorFlow relaxed the shape (a `fit` on sequences
        # of another length retraces with unknown lengths).
        length = ops.shape(tokens)[1]
        # While decoding (with a cache), layers are run through `call`:
        # `Layer.__call__`'s bookkeeping costs more than a decoding step's
        # arithmetic on eager PyTorch. Not under mixed precision, where
        # `__call__` is what casts the float32 variables to float16.
        decoding = caches is not None and self.compute_dtype == self.variable_dtype
        x = (self.token_embedding.call if decoding else self.token_embedding)(tokens)
        if self.position_embedding is not None:
            table = ops.convert_to_tensor(self.position_embedding.embeddings)
            if decoding:
                # A gather: `cache_index` may be a tensor in a traced step.
                positions = ops.take(
                    table, ops.arange(0, length, dtype="int32") + cache_index, axis=0
                )
            else:
                positions = ops.slice(table, [0, 0], [length, self.hidden_dim])
            x = x + ops.cast(positions, x.dtype)[None]
        if training and self.dropout > 0:
            x = self.embedding_dropout(x, training=training)
        aux_loss = 0.0
        new_caches = None if caches is None else []
        for i, block in enumerate(self.blocks):
            if caches is None:
                x, block_aux = block(x, training=training)
            else:
                x, block_aux, cache = (block.call if decoding else block)(
                    x, cache=caches[i], cache_index=cache_index, training=training
                )
                new_caches.append(cache)
            aux_loss = aux_loss + block_aux
        x = (self.final_norm.call if decoding else self.final_norm)(x)
        if self.output_head is None:
            # Tied embeddings.
            embeddings = ops.transpose(ops.cast(self.token_embedding.embeddings, x.dtype))
        else:
            embeddings = ops.cast(self.output_head.kernel, x.dtype)
        # Logits in float32 so that the softmax and the cross-entropy are
        # exact under mixed precision too.
        logits = ops.cast(ops.matmul(x, embeddings), "float32")
        return logits, aux_loss / self.num_layers, new_caches

    def __call__(self, inputs, *args, **kwargs):
        # Keras turns arrays into tensors before `call`; check them first.
        if isinstance(inputs, (np.ndarray, list)):
            inputs = self._check_tokens(inputs, "inputs", self.max_length)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None):
        logits, _, _ = self._forward(inputs, training=bool(training))
        return logits

    # ------------------------------------------------------------------
    # Training.

    def default_optimizer(self, player):
        return keras.optimizers.AdamW(
            learning_rate=1e-3, weight_decay=0.01, global_clipnorm=1.0
        )

    def log_names(self):
        names = ("loss", "perplexity")
        return names + ("aux_loss",) if self.num_experts else names

    def _inputs_and_targets(self, x, y, sample_weight):
        # Shapes are static at trace time, so bad data fails here with a
        # clear message rather than deep inside a compiled step.
        if len(x.shape) != 2:
            raise ValueError(
                f"GPT trains on int tokens of shape (batch, length); received "
                f"x of shape {tuple(x.shape)}."
            )
        dtype = keras.backend.standardize_dtype(x.dtype)
        if "int" not in dtype:
            raise ValueError(f"GPT trains on int tokens; received x of dtype {dtype}.")
        if y is None:
            if x.shape[1] is not None and not 2 <= x.shape[1] <= self.max_length + 1:
                raise ValueError(
                    "`fit(tokens)` predicts tokens[:, 1:] from tokens[:, :-1], so "
                    f"the length must be in [2, max_length + 1 = {self.max_length + 1}]; "
                    f"received tokens of shape {tuple(x.shape)}."
                )
            inputs, targets = x[:, :-1], x[:, 1:]
            if sample_weight is not None and len(sample_weight.shape) == 2:
                sample_weight = sample_weight[:, 1:]
        else:
            if tuple(y.shape) != tuple(x.shape):
                raise ValueError(
                    "`y` must hold the next token of each position of `x`, of the "
                    f"same shape; received x {tuple(x.shape)} and y {tuple(y.shape)}."
                )
            if x.shape[1] is not None and x.shape[1] > self.max_length:
                raise ValueError(
                    f"Sequences may be at most max_length={self.max_length} tokens; "
                    f"received x of shape {tuple(x.shape)}."
                )
            inputs, targets = x, y
        return inputs, targets, sample_weight

    def _loss_terms(self, inputs, targets, sample_weight, training):
        logits, aux_loss, _ = self._forward(inputs, training=training)
        # Over (tokens, vocabulary): PyTorch's cross-entropy wants the
        # classes on axis 1, and moving them there from the last axis of a
        # (batch, length, vocabulary) tensor makes its log-softmax strided.
        token_losses = ops.reshape(
            ops.sparse_categorical_crossentropy(
                ops.reshape(targets, (-1,)),
                ops.reshape(logits, (-1, ops.shape(logits)[-1])),
                from_logits=True,
            ),
            ops.shape(targets),
        )
        if sample_weight is None:
            cross_entropy = ops.mean(token_losses)
        else:
            weights = ops.cast(sample_weight, token_losses.dtype)
            if len(weights.shape) == 1:
                weights = weights[:, None]
            weights = ops.broadcast_to(weights, ops.shape(token_losses))
            cross_entropy = ops.sum(token_losses * weights) / ops.maximum(
                ops.sum(weights), 1e-12
            )
        return cross_entropy, ops.cast(aux_loss, cross_entropy.dtype)

    def _logs(self, loss, cross_entropy, aux_loss):
        logs = {"loss": loss, "perplexity": ops.exp(cross_entropy)}
        if self.num_experts:
            logs["aux_loss"] = aux_loss
        return logs

    def train_step_logic(self, x, y=None, sample_weight=None):
        inputs, targets, sample_weight = self._inputs_and_targets(x, y, sample_weight)

        def loss_fn():
            cross_entropy, aux_loss = self._loss_terms(inputs, targets, sample_weight, True)
            self.last_terms.assign(ops.stop_gradient(ops.stack([cross_entropy, aux_loss])))
            return cross_entropy + self.aux_loss_weight * aux_loss

        loss = self.minimize("model", loss_fn)
        terms = ops.convert_to_tensor(self.last_terms)
        return self._logs(loss, terms[0], terms[1])

    def test_step_logic(self, x, y=None, sample_weight=None):
        inputs, targets, sample_weight = self._inputs_and_targets(x, y, sample_weight)
        cross_entropy, aux_loss = self._loss_terms(inputs, targets, sample_weight, False)
        return self._logs(
            cross_entropy + self.aux_loss_weight * aux_loss, cross_entropy, aux_loss
        )

    # Token values cannot be checked inside a compiled step (JAX's embedding
    # lookup silently clamps them); arrays handed to these are checked first.
    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_data_arrays(x, y)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_data_arrays(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        if isinstance(x, (np.ndarray, list)):
            x = self._check_tokens(x, "x", self.max_length)
        return super().predict(x, *args, **kwargs)

    def _check_data_arrays(self, x, y):
        for name, data in (("x", x), ("y", y)):
            if isinstance(data, np.ndarray):
                self._check_tokens(data, name)
        # The step checks lengths too, but TensorFlow may trace it with
        # unknown lengths (after data of another length), so check here.
        if isinstance(x, np.ndarray) and x.ndim == 2 and (y is None or hasattr(y, "shape")):
            self._inputs_and_targets(x, y, None)

    # ------------------------------------------------------------------
    # Token checks.

    def _check_tokens(self, tokens, name, max_length=None):
        arr = np.asarray(tokens)
        if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise ValueError(
                f"`{name}` must be int tokens of shape (batch, length); received "
                f"dtype {arr.dtype} and shape {arr.shape}."
            )
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(
                f"`{name}` holds tokens outside the vocabulary [0, "
                f"{self.vocab_size - 1}] (vocab_size={self.vocab_size}): values "
                f"from {arr.min()} to {arr.max()}."
            )
        if max_length is not None and arr.shape[1] > max_length:
            raise ValueError(
                f"`{name}` has {arr.shape[1]} tokens per sequence, more than the "
                f"model's max_length={self.max_length}."
            )
        return arr.astype(np.int32)

    def _require_tokenizer(self, what):
        if self.tokenizer is None:
            raise ValueError(
                f"{what} is text, but this GPT has no tokenizer: pass int tokens, "
                "or build the model with tokenizer=ByteTokenizer() or a "
                "CharTokenizer."
            )

    def _prompt_rows(self, prompt):
        """`(rows, form)`: the prompt as a list of 1-D int32 arrays and how to
        give the result back."""
        if isinstance(prompt, str):
            self._require_tokenizer("`prompt`")
            return [self.tokenizer.encode(prompt)], "text"
        if isinstance(prompt, (list, tuple)) and prompt and all(
            isinstance(p, str) for p in prompt
        ):
            self._require_tokenizer("`prompt`")
            return self.tokenizer.encode(list(prompt)), "texts"
        if isinstance(prompt, (list, tuple)) and prompt and all(
            isinstance(p, (list, tuple, np.ndarray)) for p in prompt
        ):
            rows = [np.asarray(p) for p in prompt]
            if any(r.ndim != 1 for r in rows):
                raise ValueError(
                    "A list `prompt` must hold 1-D token sequences (or str); "
                    f"received shapes {[r.shape for r in rows]}."
                )
            if len({len(r) for r in rows}) > 1:
                return rows, "ragged"
            return rows, "batch"
        arr = np.asarray(ops.convert_to_numpy(prompt) if not isinstance(
            prompt, (list, tuple, np.ndarray)) else prompt)
        if arr.ndim == 1:
            return [arr], "single"
        if arr.ndim == 2:
            return list(arr), "batch"
        raise ValueError(
            "`prompt` must be int tokens of shape (length,) or (batch, length), a "
            "list of token sequences, or text (a str or list of str) with a "
            f"tokenizer; received {type(prompt).__name__} of shape {arr.shape}."
        )

    # ------------------------------------------------------------------
    # Generation.

    filter_logits = staticmethod(generation.filter_logits)

    def generate(
        self,
        prompt,
        max_new_tokens,
        temperature=1.0,
        top_k=None,
        top_p=None,
        seed=None,
        use_cache=True,
        return_logits=False,
        jit_compile="auto",
        stop_token_ids=None,
    ):
        """Continues each prompt by `max_new_tokens` tokens.

        Args:
            prompt: int tokens `(length,)` or `(batch, length)`, a list of
                token sequences (lengths may differ), or, with a tokenizer,
                a str or a list of str.
            max_new_tokens: tokens to add to each prompt, >= 1; the longest
                prompt plus these must fit in `max_length`.
            temperature: divides the logits; 0 decodes greedily (argmax).
            top_k: sample among the k most probable tokens only.
            top_p: nucleus sampling: among the most probable tokens holding
                probability `top_p` (applied after `top_k`).
            seed: an int makes the draws reproducible; None draws fresh.
            use_cache: keep the keys and values of past positions (fast);
                False recomputes the whole sequence at every step.
            return_logits: also return the logits (before temperature and
                filtering) that each decoded position was predicted from.
            jit_compile: how the decoding loop compiles. `"auto"`: the whole
                loop by XLA on JAX and TensorFlow; on PyTorch, where the
                loop runs in Python, the steps compiled by TorchInductor
                (as with True) for runs of more than 100 steps; shorter runs
                decode eagerly until runs of these shapes and settings have
                decoded more than 100 tokens in all (this one included),
                then with the per-token step traced once (about a second;
                no Keras layer calls per token, the same tokens as eager).
                True: the same on JAX and TensorFlow, and on PyTorch the
                per-token step traced once and compiled by TorchInductor,
                four tokens per compiled call with the cache (10-100x
                faster per token than eager, after 20-45 s of compilation
                per setting on a small CPU, a few seconds when Inductor's
                on-disk cache holds it). False: no XLA on TensorFlow, no
                `jax.jit` on JAX, eager PyTorch (debugging).
            stop_token_ids: None, a token id or a sequence of token ids
                (an end-of-text token, say): a sequence ends at the first
                of them it generates (kept in the result); its later
                positions hold the smallest of the stop ids (token
                results keep their shape; text ends at the stop token).
                Decoding runs to `max_new_tokens` whatever the stops.

        Returns:
            The prompts followed by their new tokens, in the prompt's form:
            an int32 array `(length + max_new_tokens,)` or `(batch, ...)`, a
            list of arrays for prompts of different lengths, or a str / list
            of str for text. With `return_logits`, a pair `(result, logits)`
            whose logits are float32 `(batch, longest - shortest prompt
            length + max_new_tokens, vocab_size)`: `logits[:, j]` predicted
            position `shortest + j` (for equal prompts, each new token).
        """
        return generation.generate(
            self, prompt, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            seed=seed, use_cache=use_cache, return_logits=return_logits,
            jit_compile=jit_compile, stop_token_ids=stop_token_ids,
        )

    def sample(self, num_samples, seed=None, length=None, temperature=1.0,
               top_k=None, top_p=None):
        """`num_samples` sequences of `length` tokens (default `max_length`),
        int32 `(num_samples, length)`.

        The model does not predict a sequence's first token, so each first
        token is drawn uniformly from the vocabulary and the rest generated.
        """
        num_samples = _check_int(num_samples, "num_samples", 1)
        length = self.max_length if length is None else _check_int(
            length, "length", 2, self.max_length
        )
        first = np.random.default_rng(seed).integers(
            0, self.vocab_size, size=(num_samples, 1), dtype=np.int32
        )
        return self.generate(
            first, length - 1, temperature=temperature, top_k=top_k, top_p=top_p,
            seed=seed,
        )

    # ------------------------------------------------------------------
    # Likelihood.

    def log_prob(self, tokens, batch_size=64):
        """Log-likelihood in nats of each sequence given its first token:
        `sum_t log p(tokens[t] | tokens[:t])` for `t >= 1`.

        `tokens`: int `(length,)` (gives a float) or `(n, length)` (gives
        float64 `(n,)`), `2 <= length <= max_length + 1`; or text with a
        tokenizer (a str gives a float, a list of str of equal token length
        an array).
        """
        if isinstance(tokens, str) or (
            isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str)
        ):
            self._require_tokenizer("`tokens`")
            encoded = self.tokenizer.encode(tokens)
            tokens = encoded if isinstance(tokens, str) else np.stack(encoded)
        arr = np.asarray(tokens)
        single = arr.ndim == 1
        arr = self._check_tokens(arr[None] if single else arr, "tokens")
        if not 2 <= arr.shape[1] <= self.max_length + 1:
            raise ValueError(
                f"`tokens` must have 2 to max_length + 1 = {self.max_length + 1} "
                f"tokens per sequence; received shape {arr.shape}."
            )
        batch_size = _check_int(batch_size, "batch_size", 1)
        n, length = arr.shape
        batch_size = min(batch_size, n)
        # The last chunk is padded to a full one: one shape, one compilation.
        padded = np.concatenate(
            [arr, np.zeros((-n % batch_size, length), np.int32)]
        )
        if length not in self._log_prob_fns:

            def sequence_log_prob(tokens):
                logits, _, _ = self._forward(tokens[:, :-1])
                log_probs = ops.log_softmax(logits, axis=-1)
                picked = ops.take_along_axis(
                    log_probs, ops.expand_dims(tokens[:, 1:], -1), axis=-1
                )
                return ops.sum(picked[..., 0], axis=-1)

            self._log_prob_fns[length] = self.compile_function(sequence_log_prob)
        fn = self._log_prob_fns[length]
        out = [
            ops.convert_to_numpy(fn(padded[i : i + batch_size], seed=0))
            for i in range(0, len(padded), batch_size)
        ]
        result = np.concatenate(out)[:n].astype(np.float64)
        return float(result[0]) if single else result

    # ------------------------------------------------------------------
    # Pretrained checkpoints and fine-tuning.

    def enable_lora(self, rank, lora_alpha=None):
        """Keras's LoRA (`Dense.enable_lora`) on every attention and MLP
        projection; every other weight (biases included) is frozen, so the
        adapters are all that trains. Call it before `compile`.

        Args:
            rank: the rank of the low-rank updates.
            lora_alpha: scales the updates by `lora_alpha / rank`; default
                `rank` (a scale of 1).
        """
        from zoo.transformer import lora

        lora.enable_lora(self, rank, lora_alpha)

    def save_lora_weights(self, filepath):
        """Writes the LoRA adapters only (a `.safetensors` file, a few
        percent of the model) for `load_lora_weights` onto the same base."""
        from zoo.transformer import lora

        lora.save_lora_weights(self, filepath)

    def load_lora_weights(self, filepath):
        """Loads adapters written by `save_lora_weights` (enabling LoRA of
        their rank if needed); every tensor is checked before any is set."""
        from zoo.transformer import lora

        lora.load_lora_weights(self, filepath)

    def save_to_hf(self, directory, model_type=None, max_shard_size=None):
        """Writes a Hugging Face transformers checkpoint folder that
        `transformers.AutoModelForCausalLM.from_pretrained(directory)` loads
        (config.json, float32 safetensors, and the tokenizer files of an
        `HFTokenizer`). LoRA updates are merged into the weights.

        Args:
            directory: a new or empty folder.
            model_type: "gpt2" (learned positions), "gpt_neox" (rotary,
                layer norm) or "llama" (rotary, rms_norm, gated MLP);
                default: the one this model's options make.
            max_shard_size: bytes per weight file; larger models are
                written in shards with `model.safetensors.index.json`.
        """
        from zoo.presets.huggingface import save_hf_checkpoint

        return save_hf_checkpoint(self, directory, model_type, max_shard_size)

    # ------------------------------------------------------------------
    # Config.

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            max_length=self.max_length,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            position_embedding=self.position_embedding_type,
            rotary_max_wavelength=self.rotary_max_wavelength,
            num_experts=self.num_experts,
            experts_per_token=self.experts_per_token,
            aux_loss_weight=self.aux_loss_weight,
            activation=self.activation,
            layer_norm_epsilon=self.layer_norm_epsilon,
            initializer_stddev=self.initializer_stddev,
            num_key_value_heads=self.num_key_value_heads,
            use_bias=self.use_bias,
            rotary_fraction=self.rotary_fraction,
            normalization=self.normalization,
            gated_mlp=self.gated_mlp,
            parallel_residual=self.parallel_residual,
            tie_embeddings=self.tie_embeddings,
            tokenizer=(
                None if self.tokenizer is None
                else keras.saving.serialize_keras_object(self.tokenizer)
            ),
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
