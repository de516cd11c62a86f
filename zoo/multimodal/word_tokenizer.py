"""`WordTokenizer`: one token per word of a fixed vocabulary, built on the
`tokenizers` library, with `[PAD]`, `[CLS]` and `[SEP]` tokens."""

import warnings

import keras
import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]")


@keras.saving.register_keras_serializable(package="zoo")
class WordTokenizer:
    """Word-level tokenizer for short prompts over a closed vocabulary.

    Text is NFKC-normalized and lowercased, then split into runs of letters
    and digits and runs of punctuation (`tokenizers`' `Whitespace`
    pre-tokenizer: "Left-slanted, 7" is "left", "-", "slanted", ",", "7").
    Each prompt becomes `[CLS] words... [SEP]`, padded with `[PAD]` (id 0)
    to a fixed length. Token ids: 0 `[PAD]`, 1 `[CLS]`, 2 `[SEP]`, then the
    vocabulary's words in the order given.

    A word outside the vocabulary is a `ValueError` naming it and the
    prompt (never dropped, never mapped to an "unknown" token). A prompt
    longer than the length is cut to it, keeping `[CLS]` and `[SEP]`, with
    a warning naming the prompts cut (never silently).

    Args:
        vocabulary: the words, a sequence of distinct lowercase strings
            (`zoo.data.caption_vocabulary()` for the captioned digits).

    Example:

    ```python
    from zoo.multimodal import WordTokenizer

    tokenizer = WordTokenizer(["a", "thick", "seven", "7"])
    ids, mask = tokenizer(["a thick seven", "7"], length=6)
    # ids [[1, 3, 4, 5, 2, 0], [1, 6, 2, 0, 0, 0]], mask ids != 0
    ```
    """

    def __init__(self, vocabulary):
        if isinstance(vocabulary, str) or not isinstance(vocabulary, (list, tuple, np.ndarray)):
            raise ValueError(
                "`vocabulary` must be a list of words; received "
                f"{type(vocabulary).__name__} {vocabulary!r:.80}."
            )
        vocabulary = [str(w) for w in vocabulary]
        if not vocabulary:
            raise ValueError("`vocabulary` must hold at least one word.")
        repeated = sorted({w for w in vocabulary if vocabulary.count(w) > 1})
        if repeated:
            raise ValueError(f"`vocabulary` repeats the words {repeated}.")
        special = [w for w in vocabulary if w in SPECIAL_TOKENS]
        if special:
            raise ValueError(
                f"`vocabulary` must not hold the special tokens {special}: they are added."
            )
        self.vocabulary = vocabulary
        self._tokenizer = self._build()
        # A word that the normalizer or pre-tokenizer would change could
        # never be produced by a prompt: reject it rather than keep a dead id.
        unusable = [
            w for w in vocabulary
            if [p for p, _ in self._pieces(w)] != [w]
        ]
        if unusable:
            raise ValueError(
                "`vocabulary` words must be lowercase runs of letters/digits or of "
                f"punctuation (as prompts are split); these are not: {unusable}."
            )

    def _build(self):
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

        ids = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(self.vocabulary))}
        # No unknown token: unknown words are caught before encoding.
        tokenizer = Tokenizer(models.WordLevel(ids, unk_token=None))
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.NFKC(), normalizers.Lowercase()]
        )
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        return tokenizer

    def _pieces(self, text):
        normalized = self._tokenizer.normalizer.normalize_str(text)
        return self._tokenizer.pre_tokenizer.pre_tokenize_str(normalized)

    @property
    def vocab_size(self):
        return len(SPECIAL_TOKENS) + len(self.vocabulary)

    @property
    def pad_id(self):
        return 0

    def _check_prompts(self, prompts):
        if isinstance(prompts, str):
            raise ValueError(
                "`prompts` must be a list of strings; received a single str "
                f"{prompts!r:.60} (wrap it in a list)."
            )
        if isinstance(prompts, np.ndarray):
            prompts = prompts.tolist()
        if not isinstance(prompts, (list, tuple)):
            raise ValueError(
                f"`prompts` must be a list of strings; received {type(prompts).__name__}."
            )
        if not prompts:
            raise ValueError("`prompts` is empty: pass at least one prompt.")
        bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        if bad:
            raise ValueError(
                f"`prompts` must hold strings; item {bad[0]} is "
                f"{type(prompts[bad[0]]).__name__} {prompts[bad[0]]!r:.60}."
            )
        return list(prompts)

    def encode(self, prompts):
        """Token ids of each prompt, `[CLS]` and `[SEP]` included, unpadded:
        a list of int32 arrays."""
        prompts = self._check_prompts(prompts)
        index = self._tokenizer.get_vocab()
        for i, prompt in enumerate(prompts):
            unknown = [w for w, _ in self._pieces(prompt) if w not in index]
            if unknown:
                raise ValueError(
                    f"Prompt {i} ({prompt!r:.80}) holds words outside the tokenizer's "
                    f"vocabulary: {sorted(set(unknown))}. Known words: "
                    f"{', '.join(self.vocabulary[:40])}"
                    f"{', ...' if len(self.vocabulary) > 40 else ''}."
                )
        cls, sep = 1, 2
        return [
            np.asarray([cls, *e.ids, sep], dtype=np.int32)
            for e in self._tokenizer.encode_batch(prompts, add_special_tokens=False)
        ]

    def __call__(self, prompts, length):
        """`(ids, mask)`: int32 and bool arrays `(len(prompts), length)`,
        the prompts padded (and, with a warning, cut) to `length` tokens."""
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 3:
            raise ValueError(
                f"`length` must be an integer >= 3 ([CLS], a word, [SEP]); received {length!r}."
            )
        encoded = self.encode(prompts)
        cut = [i for i, e in enumerate(encoded) if len(e) > length]
        if cut:
            shown = ", ".join(f"{i} ({len(encoded[i])} tokens)" for i in cut[:5])
            warnings.warn(
                f"{len(cut)} prompt(s) are longer than the context of {length} tokens "
                f"([CLS] and [SEP] included) and were truncated to it: prompt {shown}"
                f"{', ...' if len(cut) > 5 else ''}.",
                UserWarning,
                stacklevel=3,
            )
        ids = np.zeros((len(encoded), length), dtype=np.int32)
        for i, e in enumerate(encoded):
            if len(e) > length:
                e = np.concatenate([e[: length - 1], e[-1:]])  # keep [SEP] last
            ids[i, : len(e)] = e
        return ids, ids != self.pad_id

    def decode(self, ids):
        """Token ids `(length,)` to a str of words (special tokens left out);
        `(batch, length)` to a list of str."""
        arr = np.asarray(ids)
        if arr.ndim == 2:
            return [self.decode(row) for row in arr]
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise ValueError(f"`ids` must be integer tokens, 1-D or 2-D; received {arr.shape}.")
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(
                f"`ids` must be in [0, {self.vocab_size}); received values "
                f"{int(arr.min())}..{int(arr.max())}."
            )
        n = len(SPECIAL_TOKENS)
        return " ".join(self.vocabulary[t - n] for t in arr.tolist() if t >= n)

    def get_config(self):
        return {"vocabulary": list(self.vocabulary)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(other) is type(self) and other.vocabulary == self.vocabulary

    def __hash__(self):
        return hash(tuple(self.vocabulary))

    def __repr__(self):
        return f"WordTokenizer({len(self.vocabulary)} words)"
