"""Captioned digits (zoo.data.captioned_digits), the WordTokenizer and the
TextEncoder, under every backend."""

import re
import warnings

import keras
import numpy as np
import pytest

from zoo.data import (
    ATTRIBUTE_WORDS,
    DIGIT_WORDS,
    HELDOUT_TEMPLATES,
    TRAIN_TEMPLATES,
    caption_vocabulary,
    captioned_digits,
    measure_attributes,
)
from zoo.multimodal import TextEncoder, WordTokenizer


@pytest.fixture(scope="module")
def train_data():
    return captioned_digits("train", seed=0)


# ---------------------------------------------------------------------------
# Data.


def test_structure(train_data):
    d = train_data
    assert d.images.shape == (1437, 8, 8, 1) and d.images.dtype == np.float32
    assert d.images.min() == -1.0 and d.images.max() == 1.0
    assert d.captions.shape == (1437, 5) and d.captions.dtype.kind == "U"
    assert d.labels.dtype == np.int32 and d.templates.shape == (1437, 5)
    assert set(d.attributes) == set(ATTRIBUTE_WORDS) == set(d.attribute_bins)
    assert d.phrasings == "train"
    for name in ATTRIBUTE_WORDS:
        # Thirds of each class: every bin holds about a third.
        counts = np.bincount(d.attribute_bins[name], minlength=3)
        assert counts.min() > 0.28 * len(d.labels), (name, counts)


def test_attributes_measured_from_pixels():
    # Hand-made images whose attributes are known.
    blank = -np.ones((8, 8), np.float32)
    thin, thick = blank.copy(), blank.copy()
    thin[:, 3] = 1.0
    thick[:, 3:5] = 1.0
    right, left = blank.copy(), blank.copy()
    for r in range(8):  # "/" leans right: lower rows further left
        right[r, 7 - r] = 1.0
        left[r, r] = 1.0
    small = blank.copy()
    small[3:5, 3:5] = 1.0
    values = measure_attributes(np.stack([thin, thick, right, left, small])[..., None])
    t, s, z = values["thickness"], values["slant"], values["size"]
    assert t[1] == pytest.approx(2 * t[0])
    assert s[0] == pytest.approx(0.0) and s[2] > 0.5 and s[3] < -0.5
    assert z[4] < z[0] < z[2]
    with pytest.raises(ValueError, match="images"):
        measure_attributes(np.zeros((2, 8)))


def test_captions_match_measured_attributes(train_data):
    d = train_data
    words = {w: (name, b) for name, ws in ATTRIBUTE_WORDS.items() for b, w in enumerate(ws)}
    # The bins follow the measured values: within a class, bin order is value order.
    for name in ATTRIBUTE_WORDS:
        v, b = d.attributes[name], d.attribute_bins[name]
        for k in range(10):
            in_k = d.labels == k
            lows, highs = v[in_k & (b == 0)], v[in_k & (b == 2)]
            assert lows.max() <= v[in_k & (b == 1)].min() <= highs.min()
    for i in range(0, len(d.labels), 7):
        for caption in d.captions[i]:
            tokens = re.findall(r"[\w-]+", caption)
            digit = [t for t in tokens if t in DIGIT_WORDS or t.isdigit()]
            assert digit and all(
                t in (DIGIT_WORDS[d.labels[i]], str(d.labels[i])) for t in digit
            ), caption
            for token in tokens:
                if token in words:
                    name, b = words[token]
                    assert d.attribute_bins[name][i] == b, (caption, name)


def test_deterministic_and_seeded(train_data):
    again = captioned_digits("train", seed=0)
    np.testing.assert_array_equal(again.captions, train_data.captions)
    other = captioned_digits("train", seed=1)
    assert (other.captions != train_data.captions).mean() > 0.5
    np.testing.assert_array_equal(other.images, train_data.images)


def test_heldout_phrasings_disjoint(train_data):
    assert not set(TRAIN_TEMPLATES) & set(HELDOUT_TEMPLATES)
    heldout = captioned_digits("test", seed=0, phrasings="heldout")
    assert heldout.images.shape == (360, 8, 8, 1)

    def shape(caption, label):
        # A caption with its digit and attribute words replaced by slots.
        text = caption.replace(DIGIT_WORDS[label], "{d}").replace(str(label), "{d}")
        for ws in ATTRIBUTE_WORDS.values():
            for w in sorted(ws, key=len, reverse=True):
                text = text.replace(w, "{a}")
        return text.replace("an ", "a ")

    seen = {shape(c, y) for cs, y in zip(train_data.captions, train_data.labels) for c in cs}
    held = {shape(c, y) for cs, y in zip(heldout.captions, heldout.labels) for c in cs}
    assert len(seen) >= 8 and len(held) >= 5  # (templates differing in slots only merge)
    assert not seen & held
    assert (heldout.templates < len(HELDOUT_TEMPLATES)).all()


def test_bad_arguments():
    for kwargs, match in [({"split": "val"}, "split"), ({"seed": -1}, "seed"),
                          ({"num_captions": 0}, "num_captions"),
                          ({"phrasings": "new"}, "phrasings")]:
        with pytest.raises(ValueError, match=match):
            captioned_digits(**kwargs)


# ---------------------------------------------------------------------------
# Tokenizer and text encoder.


def test_tokenizer_every_caption_word_known():
    tokenizer = WordTokenizer(caption_vocabulary())
    heldout = captioned_digits("test", seed=0, phrasings="heldout", num_captions=2)
    ids, mask = tokenizer(list(heldout.captions.ravel()), length=16)
    assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == (720, 16)
    assert (ids[:, 0] == 1).all()  # [CLS] first, [SEP] last
    assert (ids[np.arange(720), mask.sum(1) - 1] == 2).all()
    assert tokenizer.decode(tokenizer(["A Thick-seven"], 8)[0][0]) == "a thick - seven"


def test_tokenizer_errors_and_truncation():
    tokenizer = WordTokenizer(["a", "thick", "seven"])
    with pytest.raises(ValueError, match="empty"):
        tokenizer([], 8)
    with pytest.raises(ValueError, match="list of strings"):
        tokenizer("a seven", 8)
    with pytest.raises(ValueError, match=r"outside the tokenizer's vocabulary: \['blue'\]"):
        tokenizer(["a seven", "a blue seven"], 8)
    with pytest.raises(ValueError, match="vocabulary"):
        WordTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="special"):
        WordTokenizer(["[PAD]"])
    with pytest.raises(ValueError, match="lowercase"):
        WordTokenizer(["Seven"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids, _ = tokenizer(["a thick seven"], 5)  # fits exactly: no warning
    with pytest.warns(UserWarning, match=r"truncated.*prompt 1 \(6 tokens\)"):
        ids, mask = tokenizer(["a", "a thick thick seven"], 4)
    np.testing.assert_array_equal(ids, [[1, 3, 2, 0], [1, 3, 4, 2]])


def test_text_encoder_shapes_masking_and_config():
    enc = TextEncoder(caption_vocabulary(), context_length=12, hidden_dim=16, num_layers=2,
                      num_heads=2, seed=0)
    prompts = ["a thick seven", "the digit 3", "a photo of a right-slanted, small 0"]
    ids, mask = enc.tokenize(prompts)
    tokens = keras.ops.convert_to_numpy(enc(ids, padding_mask=mask))
    pooled = keras.ops.convert_to_numpy(enc.pool(tokens, mask))
    assert tokens.shape == (3, 12, 16) and pooled.shape == (3, 16)
    assert np.all(tokens[~mask] == 0) and np.isfinite(tokens).all()
    # Padding changes nothing: the short prompts in a shorter context.
    short_ids, short_mask = enc.tokenizer(prompts[:2], 8)
    short = keras.ops.convert_to_numpy(enc.pool(enc(short_ids, padding_mask=short_mask),
                                                short_mask))
    np.testing.assert_allclose(short, pooled[:2], atol=1e-5)
    # The mask defaults to ids != [PAD].
    np.testing.assert_allclose(keras.ops.convert_to_numpy(enc(ids)), tokens, atol=1e-6)
    # Config round trip (with the other pooling).
    config = enc.get_config()
    clone = TextEncoder.from_config({**config, "pooling": "first"})
    assert clone.get_config() == {**config, "pooling": "first"}
    clone.set_weights(enc.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(ids)), tokens, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone.pool(tokens, mask)),
                               tokens[:, 0])
    with pytest.raises(ValueError, match="empty"):
        enc.tokenize([])
    with pytest.warns(UserWarning, match="truncated"):
        enc.tokenize(["a thick small right-slanted seven " + "thick " * 10])
    with pytest.raises(ValueError, match="num_heads"):
        TextEncoder(["a"], hidden_dim=15, num_heads=2)
    with pytest.raises(ValueError, match="tokenizer"):
        TextEncoder("a b c")
