"""`CharTokenizer`: one token per character of a fixed vocabulary, with an
optional fallback to UTF-8 bytes for characters outside it."""

import keras
import numpy as np

from zoo.transformer.byte_tokenizer import _check_token_array, _utf8


@keras.saving.register_keras_serializable(package="zoo")
class CharTokenizer:
    """Character-level tokenizer: token `i` is the `i`-th character of
    `vocabulary` (a Unicode code point).

    With `byte_fallback=False` a character outside the vocabulary is an
    error. With `byte_fallback=True` the 256 tokens after the characters
    stand for bytes, and a character outside the vocabulary is encoded as
    its UTF-8 bytes, so that any text round-trips. The vocabulary is part of
    the config, so a `GPT` saved with the tokenizer restores it.

    Args:
        vocabulary: the characters, as a str (or a sequence of one-character
            strings) without repeats.
        byte_fallback: encode unknown characters as UTF-8 bytes.

    Example:

    ```python
    from zoo.transformer import CharTokenizer

    tokenizer = CharTokenizer.from_text("hello world")
    tokenizer.vocabulary                  # ' dehlorw'
    tokens = tokenizer.encode("hold")     # array([3, 5, 4, 1], dtype=int32)
    tokenizer.decode(tokens)              # 'hold'

    tokenizer = CharTokenizer("abc", byte_fallback=True)
    tokenizer.decode(tokenizer.encode("abc→é"))   # 'abc→é'
    ```
    """

    def __init__(self, vocabulary, byte_fallback=False):
        if not isinstance(vocabulary, str):
            if not isinstance(vocabulary, (list, tuple)) or not all(
                isinstance(c, str) and len(c) == 1 for c in vocabulary
            ):
                raise ValueError(
                    "`vocabulary` must be a str or a sequence of one-character "
                    f"strings; received {vocabulary!r:.80}."
                )
            vocabulary = "".join(vocabulary)
        if not vocabulary:
            raise ValueError("`vocabulary` must hold at least one character.")
        if len(set(vocabulary)) != len(vocabulary):
            repeated = sorted({c for c in vocabulary if vocabulary.count(c) > 1})
            raise ValueError(
                f"`vocabulary` repeats the characters {''.join(repeated)!r}; "
                "each character must appear once."
            )
        _utf8(vocabulary, "CharTokenizer")
        if not isinstance(byte_fallback, bool):
            raise ValueError(
                f"`byte_fallback` must be True or False; received {byte_fallback!r}."
            )
        self.vocabulary = vocabulary
        self.byte_fallback = byte_fallback
        self._index = {c: i for i, c in enumerate(vocabulary)}

    @classmethod
    def from_text(cls, text, byte_fallback=False):
        """A tokenizer whose vocabulary is the sorted characters of `text`."""
        if not isinstance(text, str) or not text:
            raise ValueError("`text` must be a non-empty str.")
        return cls("".join(sorted(set(text))), byte_fallback=byte_fallback)

    @property
    def vocab_size(self):
        return len(self.vocabulary) + (256 if self.byte_fallback else 0)

    def encode(self, text):
        """A str to int32 tokens `(length,)`; a list of str to a list of them."""
        if isinstance(text, (list, tuple)):
            return [self.encode(t) for t in text]
        _utf8(text, "CharTokenizer")
        index = self._index
        if not self.byte_fallback:
            unknown = sorted(set(text) - set(index))
            if unknown:
                raise ValueError(
                    f"CharTokenizer.encode: characters {''.join(unknown)!r} are "
                    "not in the vocabulary; use byte_fallback=True to encode "
                    "them as bytes."
                )
            return np.fromiter((index[c] for c in text), np.int32, count=len(text))
        offset = len(self.vocabulary)
        tokens = []
        for c in text:
            i = index.get(c)
            if i is None:
                tokens.extend(offset + b for b in c.encode("utf-8"))
            else:
                tokens.append(i)
        return np.asarray(tokens, dtype=np.int32)

    def decode(self, tokens):
        """Tokens `(length,)` to a str; `(batch, length)` to a list of str.

        Byte tokens that do not form valid UTF-8 (a generated sample may cut
        a character) decode as U+FFFD.
        """
        arr = _check_token_array(tokens, self.vocab_size, "CharTokenizer")
        if arr.ndim == 2:
            return [self.decode(row) for row in arr]
        offset = len(self.vocabulary)
        pieces, pending = [], bytearray()
        for t in arr.tolist():
            if t < offset:
                if pending:
                    pieces.append(pending.decode("utf-8", errors="replace"))
                    pending = bytearray()
                pieces.append(self.vocabulary[t])
            else:
                pending.append(t - offset)
        if pending:
            pieces.append(pending.decode("utf-8", errors="replace"))
        return "".join(pieces)

    def get_config(self):
        return {"vocabulary": self.vocabulary, "byte_fallback": self.byte_fallback}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash((self.vocabulary, self.byte_fallback))

    def __repr__(self):
        return (
            f"CharTokenizer(vocabulary={self.vocabulary!r:.60}, "
            f"byte_fallback={self.byte_fallback})"
        )
