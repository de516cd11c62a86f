"""The `clip_digits` recipe and the evaluation of a CLIP on the captioned
digits, shared by `benchmarks/clip_digits.py`, `examples/clip_digits.py`
and the built-in preset (`zoo.presets.build`'s form: `recipe() -> (model,
metadata, (evaluation, kwargs), golden probe)`).

    KERAS_BACKEND=tensorflow python -m zoo.presets.build clip_digits
"""

import time

import keras
import numpy as np

from zoo.data import (
    ATTRIBUTE_WORDS,
    DIGIT_WORDS,
    HELDOUT_TEMPLATES,
    TRAIN_TEMPLATES,
    caption_vocabulary,
    captioned_digits,
)

# The preset's architecture (about 150,000 parameters) and training.
CLIP_DIGITS_MODEL = {
    "embed_dim": 64, "context_length": 16, "text_hidden_dim": 64, "text_num_layers": 2,
    "text_num_heads": 4, "image_filters": 16,
}
CLIP_DIGITS_TRAINING = {"epochs": 30, "batch_size": 128, "learning_rate": 2e-3,
                        "num_captions": 5}

# Zero-shot prompts: a training phrasing, the numeral, a held-out phrasing.
ZERO_SHOT_PROMPTS = {
    "photo": "a photo of the digit {word}",
    "numeral": "the digit {numeral}",
    "heldout": "a picture of the number {word}",
}


def clip_digits_model(seed=0):
    """The `clip_digits` architecture, untrained."""
    from zoo.multimodal.clip import CLIP

    return CLIP(caption_vocabulary(), (8, 8, 1), seed=seed, **CLIP_DIGITS_MODEL)


def train_clip_digits(epochs=None, seed=0, verbose=0):
    """The `clip_digits` recipe: `(model, seconds)` after `fit` on the
    training split of `captioned_digits` (five captions per image, one drawn
    per image and step), Adam with cosine decay."""
    settings = dict(CLIP_DIGITS_TRAINING)
    if epochs is not None:
        settings["epochs"] = epochs
    data = captioned_digits("train", seed=seed, num_captions=settings["num_captions"])
    model = clip_digits_model(seed)
    steps = settings["epochs"] * -(-len(data.labels) // settings["batch_size"])
    schedule = keras.optimizers.schedules.CosineDecay(settings["learning_rate"], steps,
                                                      alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    x = {"images": data.images, "token_ids": model.tokenize(data.captions)}
    start = time.perf_counter()
    model.fit(x, batch_size=settings["batch_size"], epochs=settings["epochs"],
              verbose=verbose)
    return model, time.perf_counter() - start


def _mentions(template):
    return [name for name in ATTRIBUTE_WORDS if "{" + name + "}" in template]


def _recall(scores, fits, true_index, ks):
    """Recall@k of the true item, and `_fit_baseline`: the recall@k of
    ranking first, in random order, every item that fits the query as
    well as the true one (`fits[query, item]`)."""
    ranks = np.argsort(-scores, axis=1, kind="stable")
    sizes = fits.sum(axis=1)
    out = {}
    for k in ks:
        out[f"r@{k}"] = float(np.mean([t in r[:k] for t, r in zip(true_index, ranks)]))
        out[f"r@{k}_fit_baseline"] = float(np.mean(np.minimum(k, sizes) / sizes))
    return out


def evaluate_clip_digits(model, seed=0, ks=(1, 5)):
    """Figures of a CLIP on the test split of the captioned digits.

    - `zero_shot_<prompt>`: accuracy of zero-shot classification of the 360
      test digits from ten prompts (`ZERO_SHOT_PROMPTS`: "a photo of the
      digit seven", "the digit 7", and the held-out "a picture of the
      number seven"); chance is 0.1.
    - `<attribute>_accuracy`: for each attribute, the share of test images
      whose bin the prompts "a {word} {digit}" (three words, the true
      digit) pick; chance 1/3.
    - retrieval with one caption per test image (`captioned_digits("test",
      seed)`, training phrasings, then `heldout_` the held-out ones):
      `text_to_image_r@k` (the caption's own image among the k images
      ranked first) and `image_to_text_r@k`, each with `_fit_baseline`.
      Many captions fit many images equally ("the digit 7" fits every
      seven), so a caption's own image is one of the images it fits,
      indistinguishable by the caption: the baseline is the recall of
      ranking those first in random order, on average the best text to
      image retrieval can do. From image to text it is not a ceiling: a
      model may rank the captions that say more about the image (its
      three attributes) above those that say less.
    """
    figures = {}
    test = captioned_digits("test", seed=seed, num_captions=1)
    images, labels = test.images, test.labels
    image_embeddings = model.encode_image(images)
    for name, prompt in ZERO_SHOT_PROMPTS.items():
        prompts = [prompt.format(word=w, numeral=i) for i, w in enumerate(DIGIT_WORDS)]
        predicted = (image_embeddings @ model.encode_text(prompts).T).argmax(axis=1)
        figures[f"zero_shot_{name}"] = float(np.mean(predicted == labels))
    for attribute, words in ATTRIBUTE_WORDS.items():
        prompts = [f"a {w} {DIGIT_WORDS[y]}" for y in labels for w in words]
        text = model.encode_text(prompts).reshape(len(labels), 3, -1)
        predicted = np.einsum("nd,nkd->nk", image_embeddings, text).argmax(axis=1)
        figures[f"{attribute}_accuracy"] = float(
            np.mean(predicted == test.attribute_bins[attribute]))
    for prefix, phrasings in (("", "train"), ("heldout_", "heldout")):
        data = captioned_digits("test", seed=seed, num_captions=1, phrasings=phrasings)
        templates = TRAIN_TEMPLATES if phrasings == "train" else HELDOUT_TEMPLATES
        text_embeddings = model.encode_text(list(data.captions[:, 0]))
        scores = image_embeddings @ text_embeddings.T  # (images, captions)
        # fits[i, j]: caption j describes image i as well as its own image.
        fits = labels[:, None] == labels[None, :]
        for j, t in enumerate(data.templates[:, 0]):
            for attribute in _mentions(templates[t]):
                bins = data.attribute_bins[attribute]
                fits[:, j] &= bins == bins[j]
        index = np.arange(len(labels))
        for key, value in _recall(scores.T, fits.T, index, ks).items():
            figures[f"{prefix}text_to_image_{key}"] = value
        for key, value in _recall(scores, fits, index, ks).items():
            figures[f"{prefix}image_to_text_{key}"] = value
    return {k: round(v, 4) for k, v in figures.items()}


# The golden probe's prompts: both phrasings, a numeral, attributes.
PROBE_PROMPTS = ("a photo of the digit seven", "a thick, left-slanted 3",
                 "a picture of the number zero", "the digit 8 in thin strokes")


def clip_embeddings_inputs(model, num=4, seed=0):
    """Fixed inputs of the `clip_embeddings` golden probe: `num` images
    from NumPy's generator with `seed`, and the token ids of
    `PROBE_PROMPTS`."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, (num, *model.image_shape)).round(4)
    return {"images": images, "token_ids": model.tokenize(list(PROBE_PROMPTS))}


def clip_embeddings_probe(model, inputs):
    """The `clip_embeddings` golden probe: the image embeddings, then the
    text embeddings, stacked `(num + len(prompts), embed_dim)` (float64)."""
    images = model.encode_image(np.asarray(inputs["images"], np.float32))
    texts = model.encode_text(np.asarray(inputs["token_ids"], np.int32))
    return np.concatenate([images, texts]).astype(np.float64)


def clip_digits():
    """The `clip_digits` preset recipe (trained on TensorFlow)."""
    model, seconds = train_clip_digits(verbose=2)
    settings = CLIP_DIGITS_TRAINING
    return model, {
        "dataset": "zoo.data.captioned_digits, train split, 5 captions per image (seed 0)",
        "description": "CLIP: conv image encoder and a 2-layer bidirectional text "
        "transformer (word tokens), 64-d embeddings, symmetric contrastive loss.",
        "training": {"epochs": settings["epochs"], "batch_size": settings["batch_size"],
                     "optimizer": f"Adam({settings['learning_rate']}), cosine decay"},
    }, ("clip_digits", {}), "clip_embeddings"
