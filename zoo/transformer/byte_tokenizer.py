"""`ByteTokenizer`: text as its UTF-8 bytes, a vocabulary of 256 tokens."""

import keras
import numpy as np


def _check_token_array(tokens, vocab_size, owner):
    arr = np.asarray(tokens)
    if arr.size == 0:
        return arr.astype(np.int32).reshape(arr.shape)
    if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{owner}.decode takes integer tokens of shape (length,) or "
            f"(batch, length); received dtype {arr.dtype} and shape {arr.shape}."
        )
    if arr.min() < 0 or arr.max() >= vocab_size:
        raise ValueError(
            f"{owner}.decode: tokens must lie in [0, {vocab_size - 1}] "
            f"(vocab_size={vocab_size}); received values from {arr.min()} to "
            f"{arr.max()}."
        )
    return arr


def _utf8(text, owner):
    if not isinstance(text, str):
        raise ValueError(
            f"{owner}.encode takes a str or a list of str; received "
            f"{type(text).__name__}."
        )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{owner}.encode: the text is not valid Unicode ({error})."
        ) from None


@keras.saving.register_keras_serializable(package="zoo")
class ByteTokenizer:
    """Byte-level tokenizer: token `i` is the byte `i` of the UTF-8 encoding.

    Every text encodes, and every encoded text decodes back to itself
    exactly. Token sequences that cut a multi-byte character (a generated
    sample, say) decode with U+FFFD in its place instead of raising.
    Saved with a `GPT` (`GPT(..., tokenizer=ByteTokenizer())`).

    Example:

    ```python
    from zoo.transformer import ByteTokenizer

    tokenizer = ByteTokenizer()
    tokens = tokenizer.encode("héllo ✓")   # int32 array of 10 bytes
    tokenizer.decode(tokens)                # 'héllo ✓'
    tokenizer.encode(["ab", "c"])           # a list of arrays
    ```
    """

    vocab_size = 256

    def encode(self, text):
        """A str to int32 tokens `(length,)`; a list of str to a list of them."""
        if isinstance(text, (list, tuple)):
            return [self.encode(t) for t in text]
        data = _utf8(text, "ByteTokenizer")
        return np.frombuffer(data, dtype=np.uint8).astype(np.int32)

    def decode(self, tokens):
        """Tokens `(length,)` to a str; `(batch, length)` to a list of str."""
        arr = _check_token_array(tokens, self.vocab_size, "ByteTokenizer")
        if arr.ndim == 2:
            return [self.decode(row) for row in arr]
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))

    def __repr__(self):
        return "ByteTokenizer()"
