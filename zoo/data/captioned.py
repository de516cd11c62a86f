"""Captioned digits: each 8x8 digit with captions describing what is in it,
its attributes measured from the pixels."""

from typing import NamedTuple

import numpy as np

from zoo.data.digits import digits

__all__ = [
    "ATTRIBUTE_WORDS",
    "CaptionedDigits",
    "DIGIT_WORDS",
    "HELDOUT_TEMPLATES",
    "TRAIN_TEMPLATES",
    "caption_vocabulary",
    "captioned_digits",
    "measure_attributes",
]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Words for the three bins of each attribute (low, middle, high third of its
# class), in that order.
ATTRIBUTE_WORDS = {
    "thickness": ("thin", "regular", "thick"),
    "slant": ("left-slanted", "upright", "right-slanted"),
    "size": ("small", "mid-sized", "large"),
}

# Phrasings used to make training captions. `{digit}` is the digit as a word
# or a numeral; `{thickness}`, `{slant}`, `{size}` are attribute words.
TRAIN_TEMPLATES = (
    "a photo of the digit {digit}",
    "the digit {digit}",
    "a handwritten {digit}",
    "a {thickness} {digit}",
    "a {slant} {digit}",
    "a {size} {digit}",
    "a {thickness}, {slant} {digit}",
    "a {size} {thickness} {digit}",
    "the digit {digit} in {thickness} strokes",
    "a {size} handwritten {digit} with {thickness} strokes",
    "a photo of a {slant}, {size} {digit}",
    "a {thickness} {size} {slant} {digit}",
)

# Phrasings never used for training captions: new word orders and a few new
# function words, to measure how a model trained on the others generalizes.
HELDOUT_TEMPLATES = (
    "{digit}, {thickness} and {slant}",
    "this is a {size} {digit}",
    "a picture of the number {digit}",
    "a {slant} {digit} drawn with {thickness} strokes",
    "a {digit} that is {size} and {slant}",
    "the handwritten digit {digit}, {thickness}",
)

_PHRASINGS = {"train": TRAIN_TEMPLATES, "heldout": HELDOUT_TEMPLATES}
_SPLITS = ("train", "test", "all")
_VOWEL_SOUND = ("a", "e", "i", "o", "u", "8")  # "an eight", "an 8", "an upright"


class CaptionedDigits(NamedTuple):
    """What `captioned_digits` returns (a named tuple of NumPy arrays).

    Attributes:
        images: float32 `(n, 8, 8, 1)` in [-1, 1], as `zoo.data.digits`.
        captions: `(n, num_captions)` array of str.
        labels: int32 `(n,)`, the digit 0..9.
        attributes: `{"thickness", "slant", "size"}` -> float32 `(n,)`,
            the measured values (see `measure_attributes`).
        attribute_bins: the same names -> int32 `(n,)`: 0, 1 or 2, the
            third of the image's class the value falls in; the word of bin
            `b` is `ATTRIBUTE_WORDS[name][b]`.
        templates: int32 `(n, num_captions)`, the index of each caption's
            phrasing in `TRAIN_TEMPLATES` or `HELDOUT_TEMPLATES`.
        phrasings: `"train"` or `"heldout"`, the templates used.
    """

    images: np.ndarray
    captions: np.ndarray
    labels: np.ndarray
    attributes: dict
    attribute_bins: dict
    templates: np.ndarray
    phrasings: str


def measure_attributes(images):
    """Stroke thickness, slant and size of digits images, from the pixels.

    With ink `p = (x + 1) / 2` in [0, 1] per pixel:

    - `thickness`: the total ink, `sum(p)` (in pixels). Every digit of the
      set spans the frame's full height, so at a given shape more ink means
      bolder strokes.
    - `slant`: `-mu11 / mu02` from the ink's central moments (column `c`,
      row `r` downwards): how far the ink shifts right per row up. Positive
      leans right (an italic), negative left; the shear a deskewing undoes.
    - `size`: the ink's radius of gyration, `sqrt(mu20 + mu02)` in pixels.

    Args:
        images: `(n, 8, 8, 1)` (or `(n, 8, 8)`) array in [-1, 1].

    Returns:
        dict name -> float32 array `(n,)`.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(
            "`images` must have shape (n, height, width) or (n, height, width, 1); "
            f"received shape {np.shape(images)}."
        )
    ink = np.clip((x + 1.0) / 2.0, 0.0, 1.0)
    mass = ink.sum(axis=(1, 2))
    if np.any(mass <= 0):
        raise ValueError("`images` holds an empty image (no ink): its attributes are undefined.")
    rows, cols = np.mgrid[0 : x.shape[1], 0 : x.shape[2]]
    cy = (ink * rows).sum(axis=(1, 2)) / mass
    cx = (ink * cols).sum(axis=(1, 2)) / mass
    dy = rows[None] - cy[:, None, None]
    dx = cols[None] - cx[:, None, None]
    mu02 = (ink * dy * dy).sum(axis=(1, 2)) / mass
    mu20 = (ink * dx * dx).sum(axis=(1, 2)) / mass
    mu11 = (ink * dx * dy).sum(axis=(1, 2)) / mass
    return {
        "thickness": mass.astype(np.float32),
        "slant": (-mu11 / mu02).astype(np.float32),
        "size": np.sqrt(mu20 + mu02).astype(np.float32),
    }


def _bin_edges():
    """Per class and attribute, the terciles over all 1797 images: the bins
    mean "thinner than most sevens", whatever the split."""
    images, labels = digits("all")
    values = measure_attributes(images)
    return {
        name: np.stack([np.quantile(v[labels == k], [1 / 3, 2 / 3]) for k in range(10)])
        for name, v in values.items()
    }


_EDGES = None


def _bins(values, labels):
    global _EDGES
    if _EDGES is None:
        _EDGES = _bin_edges()
    return {
        name: ((v > _EDGES[name][labels, 0]).astype(np.int32)
               + (v > _EDGES[name][labels, 1]).astype(np.int32))
        for name, v in values.items()
    }


def _with_articles(text):
    # "a eight" -> "an eight", "a upright" -> "an upright".
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] == "a" and words[i + 1].startswith(_VOWEL_SOUND):
            words[i] = "an"
    return " ".join(words)


def caption_vocabulary():
    """Every word (and punctuation mark) the captions of either phrasing set
    can hold, lowercase, sorted: a text encoder's vocabulary for them.

    Words are split as `zoo.multimodal.WordTokenizer` splits them (runs of
    letters and digits, and runs of punctuation): "left-slanted" is
    "left", "-", "slanted".
    """
    import re

    fills = DIGIT_WORDS + tuple(str(d) for d in range(10))
    fills += sum(ATTRIBUTE_WORDS.values(), ())
    words = {"an"}  # from "a" before a vowel sound
    for text in fills + tuple(re.sub(r"\{\w+\}", " ", t) for t in TRAIN_TEMPLATES + HELDOUT_TEMPLATES):
        words.update(re.findall(r"\w+|[^\w\s]+", text))
    return sorted(words)


def captioned_digits(split="train", seed=0, num_captions=5, phrasings="train"):
    """The digits, each with `num_captions` captions describing it.

    Each caption fills a phrasing template with the digit (its word,
    "seven", or numeral, "7", at even odds) and the words of the image's
    measured attributes (`measure_attributes`): stroke thickness (thin,
    regular, thick), slant (left-slanted, upright, right-slanted) and size
    (small, mid-sized, large). An attribute's word is the third of the
    image's own class its value falls in, the thirds taken over the whole
    set, so "a thick seven" is a seven with more ink than two thirds of the
    sevens. Templates name none, one, two or three attributes.

    Training captions use `TRAIN_TEMPLATES`; `phrasings="heldout"` uses
    `HELDOUT_TEMPLATES` instead, phrasings no training caption has, to
    measure generalization to new wording. Everything is drawn from
    `seed` with NumPy; the images, labels and attributes depend only on
    `split`.

    Args:
        split: "train" (1437 images), "test" (360) or "all", the split of
            `zoo.data.digits`.
        seed: an integer >= 0; the same seed gives the same captions.
        num_captions: captions per image, >= 1.
        phrasings: "train" or "heldout".

    Returns:
        A `CaptionedDigits` named tuple: `images`, `captions`, `labels`,
        `attributes`, `attribute_bins`, `templates`, `phrasings`.

    Example:
        >>> from zoo.data import captioned_digits
        >>> data = captioned_digits("train", seed=0)
        >>> data.images.shape, data.captions.shape
        ((1437, 8, 8, 1), (1437, 5))
        >>> heldout = captioned_digits("test", seed=0, phrasings="heldout")
    """
    if not isinstance(split, str) or split not in _SPLITS:
        raise ValueError(
            f"`split` must be one of {', '.join(map(repr, _SPLITS))}; received {split!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0; received seed={seed!r}.")
    if (isinstance(num_captions, bool) or not isinstance(num_captions, (int, np.integer))
            or num_captions < 1):
        raise ValueError(
            f"`num_captions` must be an integer >= 1; received num_captions={num_captions!r}."
        )
    if phrasings not in _PHRASINGS:
        raise ValueError(
            f"`phrasings` must be 'train' or 'heldout'; received phrasings={phrasings!r}."
        )
    images, labels = digits(split)
    values = measure_attributes(images)
    bins = _bins(values, labels)
    templates = _PHRASINGS[phrasings]
    # One stream per (seed, split, phrasings): the test captions do not
    # depend on how many training captions were drawn.
    rng = np.random.default_rng(
        [int(seed), _SPLITS.index(split), list(_PHRASINGS).index(phrasings)]
    )
    n = len(labels)
    chosen = rng.integers(0, len(templates), size=(n, num_captions)).astype(np.int32)
    as_word = rng.random((n, num_captions)) < 0.5
    captions = np.empty((n, num_captions), dtype=object)
    for i in range(n):
        words = {name: ATTRIBUTE_WORDS[name][bins[name][i]] for name in ATTRIBUTE_WORDS}
        for j in range(num_captions):
            digit = DIGIT_WORDS[labels[i]] if as_word[i, j] else str(labels[i])
            text = templates[chosen[i, j]].format(digit=digit, **words)
            captions[i, j] = _with_articles(text)
    return CaptionedDigits(
        images=images,
        captions=captions.astype(str),
        labels=labels,
        attributes=values,
        attribute_bins=bins,
        templates=chosen,
        phrasings=phrasings,
    )
