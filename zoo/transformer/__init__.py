"""Autoregressive transformers: `GPT` and its tokenizers.

`GPT` is a decoder-only language model trained with plain `fit` on int
tokens, with key/value-cached generation compiled on every backend;
`ByteTokenizer` (UTF-8 bytes) and `CharTokenizer` (characters) turn text into
tokens and back and are saved with the model; `HFTokenizer` runs a Hugging
Face checkpoint's tokenizer.json. Checkpoints of transformers' gpt2,
gpt_neox and llama load as a `GPT` (`zoo.from_preset`).
"""

from zoo.transformer.byte_tokenizer import ByteTokenizer
from zoo.transformer.char_tokenizer import CharTokenizer
from zoo.transformer.gpt import GPT
from zoo.transformer.hf_tokenizer import HFTokenizer

__all__ = ["GPT", "ByteTokenizer", "CharTokenizer", "HFTokenizer"]
