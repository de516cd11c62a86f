"""`TextEncoder`: a small bidirectional transformer over word tokens."""

import keras
import numpy as np
from keras import ops

from zoo.core import validators
from zoo.layers.transformer_block import TransformerBlock
from zoo.multimodal.word_tokenizer import WordTokenizer

POOLINGS = ("mean", "first")


class _EncoderBlock(TransformerBlock):
    """A `TransformerBlock` whose attention looks both ways, over the
    positions a padding mask keeps.

    The block's own weights (layer norms, MLP, the attention's `qkv` and
    `output` projections) are used as they are; only the attention
    pattern differs, so saving, loading and LoRA work as for the decoder.
    """

    def call(self, x, padding_mask=None, training=None):
        h = self._norm(x, 1)
        x = x + self._attention(h, padding_mask, training)
        f, _ = self._feed_forward(self._norm(x, 2), False, training)
        return x + f

    def _attention(self, h, padding_mask, training):
        attention = self.attention
        length = ops.shape(h)[1]
        heads, head_dim = attention.num_heads, attention.head_dim
        qkv = ops.reshape(attention.qkv.call(h), (-1, length, 3 * heads, head_dim))
        q, k, v = qkv[:, :, :heads], qkv[:, :, heads : 2 * heads], qkv[:, :, 2 * heads :]
        mask = None
        if padding_mask is not None:
            # (batch, 1, 1, keys): every query reads the kept keys only.
            mask = ops.cast(padding_mask, "bool")[:, None, None, :]
        out = ops.dot_product_attention(q, k, v, mask=mask)
        out = attention.output_projection.call(
            ops.reshape(out, (-1, length, attention.hidden_dim))
        )
        if training and attention.dropout > 0:
            out = attention.output_dropout(out, training=training)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; received {name}={value!r}.")
    return int(value)


@keras.saving.register_keras_serializable(package="zoo")
class TextEncoder(keras.layers.Layer):
    """A bidirectional transformer encoder of short prompts.

    Token and learned position embeddings, then `num_layers` pre-LayerNorm
    blocks (the zoo's `TransformerBlock` with attention over every kept
    position instead of the past only, padding masked out), then a final
    layer norm. Outputs at padded positions are zero.

    The tokenizer is a `WordTokenizer` (word-level, `tokenizers` library):
    prompts here are sentences over a small closed vocabulary, so a word is
    the unit of meaning and a prompt is ~10 tokens instead of ~40
    characters, which keeps attention cheap; a word outside the vocabulary
    is a clear `ValueError`. Prompts longer than `context_length` tokens
    (`[CLS]` and `[SEP]` included) are truncated with a warning.

    The interface:

        enc = TextEncoder(vocabulary_or_tokenizer, context_length=16, hidden_dim=64)
        ids, mask = enc.tokenize(["a thick seven"])   # int32, bool (batch, context)
        tokens = enc(ids, padding_mask=mask)          # (batch, context, hidden_dim)
        pooled = enc.pool(tokens, mask)               # (batch, hidden_dim)

    `padding_mask` may be left out: it is then `ids != 0` (`[PAD]` is 0).

    Args:
        tokenizer: a `WordTokenizer`, or its vocabulary (a list of words).
        context_length: tokens per prompt, `[CLS]` and `[SEP]` included.
        hidden_dim: width of the token embeddings and of the output.
        num_layers: transformer blocks.
        num_heads: attention heads; must divide `hidden_dim`.
        intermediate_dim: width of each block's MLP; default `4 * hidden_dim`.
        dropout: dropout of each residual branch during training, in [0, 1).
        pooling: what `pool` returns: "mean" (the mean over kept positions)
            or "first" (the `[CLS]` position).
        seed: seeds the initial weights and the dropout.

    Example:

    ```python
    from zoo.data import caption_vocabulary
    from zoo.multimodal import TextEncoder

    enc = TextEncoder(caption_vocabulary(), context_length=16, hidden_dim=32,
                      num_layers=1, num_heads=2, seed=0)
    ids, mask = enc.tokenize(["a thick seven", "the digit 3"])
    tokens = enc(ids, padding_mask=mask)     # (2, 16, 32)
    pooled = enc.pool(tokens, mask)          # (2, 32)
    ```
    """

    def __init__(
        self,
        tokenizer,
        context_length=16,
        hidden_dim=64,
        num_layers=2,
        num_heads=4,
        intermediate_dim=None,
        dropout=0.0,
        pooling="mean",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(tokenizer, dict):
            tokenizer = keras.saving.deserialize_keras_object(tokenizer)
        if not isinstance(tokenizer, WordTokenizer):
            if isinstance(tokenizer, (list, tuple, np.ndarray)):
                tokenizer = WordTokenizer(list(tokenizer))
            else:
                raise ValueError(
                    "`tokenizer` must be a WordTokenizer or a list of words; received "
                    f"{type(tokenizer).__name__} {tokenizer!r:.80}."
                )
        self.tokenizer = tokenizer
        self.context_length = _positive_int(context_length, "context_length")
        if self.context_length < 3:
            raise ValueError(
                "`context_length` must be >= 3 ([CLS], a word, [SEP]); received "
                f"context_length={context_length}."
            )
        self.hidden_dim = _positive_int(hidden_dim, "hidden_dim")
        self.num_layers = _positive_int(num_layers, "num_layers")
        self.num_heads = _positive_int(num_heads, "num_heads")
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"`num_heads` must divide `hidden_dim`; received num_heads={num_heads}, "
                f"hidden_dim={hidden_dim}."
            )
        self.intermediate_dim = _positive_int(
            4 * self.hidden_dim if intermediate_dim is None else intermediate_dim,
            "intermediate_dim",
        )
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1); received dropout={dropout!r}.")
        self.dropout = float(dropout)
        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {POOLINGS}; received pooling={pooling!r}.")
        self.pooling = pooling
        self.seed = validators.check_seed(seed)

        def init(offset):
            return keras.initializers.RandomNormal(
                stddev=0.02, seed=validators.derive_seed(seed, offset)
            )

        self.token_embedding = keras.layers.Embedding(
            tokenizer.vocab_size, self.hidden_dim, embeddings_initializer=init(1),
            dtype=self.dtype_policy, name="token_embedding",
        )
        self.blocks = [
            _EncoderBlock(
                self.num_heads, self.hidden_dim, self.intermediate_dim, dropout=self.dropout,
                seed=validators.derive_seed(seed, 100 * (i + 1)),
                # GPT-2's depth-scaled output projections.
                output_stddev=0.02 / (2 * self.num_layers) ** 0.5,
                dtype=self.dtype_policy, name=f"block_{i}",
            )
            for i in range(self.num_layers)
        ]
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, dtype=self.dtype_policy, name="final_norm"
        )
        self.build((None, self.context_length))

    def build(self, input_shape):
        if self.built:
            return
        self.position_embedding = self.add_weight(
            name="position_embedding", shape=(self.context_length, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(
                stddev=0.02, seed=validators.derive_seed(self.seed, 2)
            ),
        )
        self.token_embedding.build((None, None))
        self.final_norm.build((None, None, self.hidden_dim))
        self.built = True

    def tokenize(self, prompts):
        """`(ids, mask)`: int32 and bool NumPy arrays `(len(prompts),
        context_length)`. An empty list, a word outside the vocabulary or a
        non-str prompt is a `ValueError`; a prompt longer than the context is
        truncated with a warning."""
        return self.tokenizer(prompts, self.context_length)

    def call(self, token_ids, padding_mask=None, training=None):
        token_ids = ops.convert_to_tensor(token_ids, "int32")
        if padding_mask is None:
            padding_mask = ops.not_equal(token_ids, self.tokenizer.pad_id)
        padding_mask = ops.convert_to_tensor(padding_mask, "bool")
        length = ops.shape(token_ids)[1]
        x = self.token_embedding(token_ids) + ops.cast(
            self.position_embedding[None, :length], self.compute_dtype
        )
        for block in self.blocks:
            x = block(x, padding_mask=padding_mask, training=training)
        x = self.final_norm(x)
        return x * ops.cast(padding_mask, x.dtype)[..., None]

    def pool(self, tokens, padding_mask):
        """One vector per prompt, `(batch, hidden_dim)`: the mean over the
        kept positions (`pooling="mean"`) or the `[CLS]` position."""
        tokens = ops.convert_to_tensor(tokens)
        if self.pooling == "first":
            return tokens[:, 0]
        mask = ops.cast(padding_mask, tokens.dtype)[..., None]
        count = ops.maximum(ops.sum(mask, axis=1), 1.0)
        return ops.sum(tokens * mask, axis=1) / count

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:2], self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            tokenizer=keras.saving.serialize_keras_object(self.tokenizer),
            context_length=self.context_length,
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            pooling=self.pooling,
            seed=self.seed,
        )
        return config
