"""Embedded data sets: nothing to download, nothing backend-specific.

- ``digits``: scikit-learn's 8x8 handwritten digits in [-1, 1], fixed split.
- ``captioned_digits``: the digits with captions naming the digit and its
  stroke thickness, slant and size measured from the pixels, with held-out
  phrasings (``caption_vocabulary`` lists their words).
- 2-D toy densities with exact log-densities and known entropies: ``Ring``,
  ``Grid``, ``TwoMoons``, ``SwissRoll`` (or ``toy_density(name)``), and
  ``mode_coverage`` for counting the modes a generator reaches.
- Text: ``MarkovText``, a Markov source with an exactly known entropy rate;
  ``bytes_from_file``/``text_from_bytes`` for byte-level tokens from any file;
  ``windows`` to cut a token stream into training windows.

Everything here is NumPy (plus scikit-learn for the digits) and returns NumPy
arrays, so it imports no deep-learning framework and works under any backend.

Example:
    >>> from zoo import data
    >>> images, labels = data.digits("test")
    >>> points = data.toy_density("moons").sample(256, seed=0)
    >>> tokens = data.MarkovText().sequences(32, 128, seed=0)
"""

from zoo.data.captioned import (
    ATTRIBUTE_WORDS,
    DIGIT_WORDS,
    HELDOUT_TEMPLATES,
    TRAIN_TEMPLATES,
    CaptionedDigits,
    caption_vocabulary,
    captioned_digits,
    measure_attributes,
)
from zoo.data.digits import DIGITS_NUM_TEST, digits
from zoo.data.text import (
    MARKOV_ALPHABET,
    MarkovText,
    bytes_from_file,
    text_from_bytes,
    windows,
)
from zoo.data.toy import (
    TOY_DENSITIES,
    EntropyEstimate,
    GaussianMixture,
    Grid,
    Ring,
    SwissRoll,
    ToyDensity,
    TwoMoons,
    mode_coverage,
    toy_density,
)

__all__ = [
    "digits",
    "DIGITS_NUM_TEST",
    "captioned_digits",
    "CaptionedDigits",
    "caption_vocabulary",
    "measure_attributes",
    "ATTRIBUTE_WORDS",
    "DIGIT_WORDS",
    "TRAIN_TEMPLATES",
    "HELDOUT_TEMPLATES",
    "ToyDensity",
    "GaussianMixture",
    "Ring",
    "Grid",
    "TwoMoons",
    "SwissRoll",
    "toy_density",
    "TOY_DENSITIES",
    "mode_coverage",
    "EntropyEstimate",
    "MarkovText",
    "MARKOV_ALPHABET",
    "bytes_from_file",
    "text_from_bytes",
    "windows",
]
