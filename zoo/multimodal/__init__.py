"""Image-text models: `TextEncoder` (a bidirectional transformer over word
tokens, with its `WordTokenizer`) and `CLIP` (contrastive image-text
alignment: zero-shot classification, retrieval, the CLIP score)."""

from zoo.multimodal.clip import CLIP
from zoo.multimodal.text_encoder import TextEncoder
from zoo.multimodal.word_tokenizer import WordTokenizer

__all__ = ["CLIP", "TextEncoder", "WordTokenizer"]
