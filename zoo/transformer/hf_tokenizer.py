"""`HFTokenizer`: the tokenizer of a Hugging Face checkpoint (`tokenizer.json`),
run by the `tokenizers` library."""

import json
import os

import keras
import numpy as np

from zoo.transformer.byte_tokenizer import _check_token_array

# Token kinds read from tokenizer_config.json / special_tokens_map.json.
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")
# Byte-level BPE (GPT-2, GPT-NeoX) and the Llama family's BPE with byte
# fallback: both are `tokenizers` "BPE" models.
SUPPORTED_MODELS = ("BPE",)


def _token_content(value):
    # tokenizer_config.json writes a special token as a str or as an
    # AddedToken dict.
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _clean_up_tokenization(text):
    # transformers' `clean_up_tokenization`, applied when the checkpoint's
    # tokenizer_config.json asks for it.
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","),
                          (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"),
                          (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


@keras.saving.register_keras_serializable(package="zoo")
class HFTokenizer:
    """The tokenizer of a Hugging Face transformers checkpoint.

    Reads a `tokenizer.json` (byte-level BPE as in GPT-2 and GPT-NeoX, or
    the Llama family's BPE with byte fallback) and runs it with the
    `tokenizers` library, so `encode` and `decode` give what transformers'
    tokenizer gives for the same files: special tokens added by the
    file's post-processor (Llama's `<s>`), none removed by `decode` unless
    asked. Saved with a `GPT` (the file's text is part of the config).

    Args:
        tokenizer_json: the text of a `tokenizer.json`.
        special_tokens: a dict of `bos_token`, `eos_token`, `unk_token`,
            `pad_token` (each a token string or None), as in
            tokenizer_config.json; each must be in the vocabulary.
        vocab_size: the model's number of tokens, when its embedding table
            is larger than the tokenizer's vocabulary (GPT-NeoX pads it);
            default: the tokenizer's own size.
        clean_up_tokenization_spaces: transformers' clean-up of spaces
            before punctuation in `decode` (off unless the checkpoint's
            tokenizer_config.json turns it on).

    Example:

    ```python
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from zoo.transformer import HFTokenizer

    bpe = Tokenizer(models.BPE())                  # GPT-2's kind, trained tiny
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["hello world"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = HFTokenizer(bpe.to_str(), {"eos_token": "<|endoftext|>",
                                          "pad_token": "<|endoftext|>"})
    # A checkpoint's: HFTokenizer.from_directory("path/to/checkpoint")
    ids = tokenizer.encode("héllo")                 # int32 array
    tokenizer.decode(ids)                           # 'héllo'
    batch, mask = tokenizer.encode_batch(["a", "abc"])   # right-padded
    ```
    """

    def __init__(self, tokenizer_json, special_tokens=None, vocab_size=None,
                 clean_up_tokenization_spaces=False):
        from tokenizers import Tokenizer

        if not isinstance(tokenizer_json, str):
            raise ValueError(
                "`tokenizer_json` must be the text of a tokenizer.json; received "
                f"{type(tokenizer_json).__name__}."
            )
        try:
            spec = json.loads(tokenizer_json)
        except json.JSONDecodeError as error:
            raise ValueError(f"`tokenizer_json` is not valid JSON: {error}.") from None
        kind = (spec.get("model") or {}).get("type") if isinstance(spec, dict) else None
        if kind not in SUPPORTED_MODELS:
            raise ValueError(
                f"Unsupported tokenizer model type {kind!r} in tokenizer.json; the zoo "
                f"reads {', '.join(SUPPORTED_MODELS)} tokenizers (byte-level BPE as in "
                "GPT-2 and GPT-NeoX, BPE with byte fallback as in Llama)."
            )
        try:
            self._tokenizer = Tokenizer.from_str(tokenizer_json)
        except Exception as error:  # the library's own exception type
            raise ValueError(f"`tokenizer_json` could not be read: {error}") from None
        self.tokenizer_json = tokenizer_json
        special_tokens = dict(special_tokens or {})
        unknown = sorted(set(special_tokens) - set(SPECIAL_TOKENS))
        if unknown:
            raise ValueError(
                f"`special_tokens` keys must be among {SPECIAL_TOKENS}; received {unknown}."
            )
        self.special_tokens = {}
        for kind in SPECIAL_TOKENS:
            token = _token_content(special_tokens.get(kind))
            token_id = None if token is None else self._tokenizer.token_to_id(token)
            if token is not None and token_id is None:
                raise ValueError(
                    f"The {kind} {token!r} is not in the tokenizer's vocabulary."
                )
            self.special_tokens[kind] = token
            setattr(self, f"{kind}_id", token_id)
        own_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        if vocab_size is None:
            vocab_size = own_size
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < own_size:
            raise ValueError(
                f"`vocab_size` must be an integer >= the tokenizer's {own_size} tokens; "
                f"received vocab_size={vocab_size!r}."
            )
        self.vocab_size = vocab_size
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)

    @classmethod
    def from_directory(cls, directory, vocab_size=None):
        """The tokenizer of a checkpoint folder: `tokenizer.json`, with the
        special tokens of `tokenizer_config.json` / `special_tokens_map.json`."""
        path = os.path.join(directory, "tokenizer.json")
        if not os.path.isfile(path):
            others = [n for n in ("tokenizer.model", "vocab.json", "merges.txt")
                      if os.path.isfile(os.path.join(directory, n))]
            found = f" (found only {', '.join(others)})" if others else ""
            raise ValueError(
                f"No tokenizer.json in {directory!r}{found}: the zoo reads tokenizers "
                "from tokenizer.json only."
            )
        with open(path, encoding="utf-8") as f:
            text = f.read()
        special, clean_up = {}, False
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            config_path = os.path.join(directory, name)
            if not os.path.isfile(config_path):
                continue
            with open(config_path, encoding="utf-8") as f:
                try:
                    config = json.load(f)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{config_path!r} is not valid JSON: {error}.") from None
            for kind in SPECIAL_TOKENS:
                if _token_content(config.get(kind)) is not None:
                    special[kind] = _token_content(config[kind])
            clean_up = bool(config.get("clean_up_tokenization_spaces", clean_up))
        return cls(text, special, vocab_size=vocab_size, clean_up_tokenization_spaces=clean_up)

    def save_to_directory(self, directory):
        """Writes `tokenizer.json` and `tokenizer_config.json` (read by
        transformers' `AutoTokenizer` as a `PreTrainedTokenizerFast`)."""
        with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(self.tokenizer_json)
        config = {k: v for k, v in self.special_tokens.items() if v is not None}
        config.update(
            tokenizer_class="PreTrainedTokenizerFast",
            clean_up_tokenization_spaces=self.clean_up_tokenization_spaces,
        )
        with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)

    def encode(self, text, add_special_tokens=True):
        """A str to int32 tokens `(length,)`; a list of str to a list of them."""
        if isinstance(text, (list, tuple)):
            for item in text:
                self._check_text(item)
            encodings = self._tokenizer.encode_batch(
                list(text), add_special_tokens=add_special_tokens
            )
            return [np.asarray(e.ids, dtype=np.int32) for e in encodings]
        self._check_text(text)
        ids = self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        return np.asarray(ids, dtype=np.int32)

    def encode_batch(self, texts, max_length=None, padding="longest", truncation=False,
                     padding_side="right", add_special_tokens=True):
        """Texts to a padded int32 batch and its mask.

        Args:
            texts: a list of str.
            max_length: the length of `padding="max_length"`, and the most
                tokens a text may have.
            padding: "longest" (to the longest text) or "max_length".
            truncation: cut texts longer than `max_length` (at their end);
                otherwise they raise.
            padding_side: "right" (for training) or "left" (for batched
                generation prompts).

        Returns:
            `(token_ids, padding_mask)`: int32 and bool `(len(texts), length)`;
            the mask is True on the texts' tokens.
        """
        if not isinstance(texts, (list, tuple)) or not texts:
            raise ValueError("`texts` must be a non-empty list of str.")
        if padding not in ("longest", "max_length"):
            raise ValueError(
                f"`padding` must be 'longest' or 'max_length'; received {padding!r}."
            )
        if padding_side not in ("right", "left"):
            raise ValueError(
                f"`padding_side` must be 'right' or 'left'; received {padding_side!r}."
            )
        if max_length is not None and (
            not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1
        ):
            raise ValueError(f"`max_length` must be a positive integer; received {max_length!r}.")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs `max_length`.")
        if self.pad_token_id is None:
            raise ValueError(
                "This tokenizer has no pad_token: build it with "
                "special_tokens={..., 'pad_token': ...} (often the eos_token) to pad."
            )
        rows = self.encode(list(texts), add_special_tokens=add_special_tokens)
        if max_length is not None:
            long = [i for i, r in enumerate(rows) if len(r) > max_length]
            if long and not truncation:
                raise ValueError(
                    f"Texts {long[:5]} have more than max_length={max_length} tokens "
                    f"(up to {max(len(rows[i]) for i in long)}); pass truncation=True "
                    "to cut them."
                )
            rows = [r[:max_length] for r in rows]
        length = max_length if padding == "max_length" else max(len(r) for r in rows)
        ids = np.full((len(rows), length), self.pad_token_id, dtype=np.int32)
        mask = np.zeros((len(rows), length), dtype=bool)
        for i, row in enumerate(rows):
            where = (slice(0, len(row)) if padding_side == "right"
                     else slice(length - len(row), length))
            ids[i, where] = row
            mask[i, where] = True
        return ids, mask

    def decode(self, tokens, skip_special_tokens=False):
        """Tokens `(length,)` to a str; `(batch, length)` to a list of str."""
        arr = _check_token_array(tokens, self.vocab_size, "HFTokenizer")
        if arr.ndim == 2:
            return [self.decode(row, skip_special_tokens) for row in arr]
        text = self._tokenizer.decode(
            [int(t) for t in arr], skip_special_tokens=skip_special_tokens
        )
        return _clean_up_tokenization(text) if self.clean_up_tokenization_spaces else text

    def decode_generated(self, tokens):
        """`decode` for `GPT.generate`: the text, special tokens left out."""
        return self.decode(tokens, skip_special_tokens=True)

    def _check_text(self, text):
        if not isinstance(text, str):
            raise ValueError(
                f"HFTokenizer.encode takes a str or a list of str; received "
                f"{type(text).__name__}."
            )

    def get_config(self):
        return {
            "tokenizer_json": self.tokenizer_json,
            "special_tokens": dict(self.special_tokens),
            "vocab_size": self.vocab_size,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash((type(self), self.tokenizer_json))

    def __repr__(self):
        return f"HFTokenizer(vocab_size={self.vocab_size})"
