"""CLIP (zoo.multimodal.CLIP) and the CLIP score, under every backend."""

import math

import keras
import numpy as np
import pytest

from zoo.data import DIGIT_WORDS, caption_vocabulary, captioned_digits
from zoo.metrics import CLIPScore, clip_score
from zoo.multimodal import CLIP

PROMPTS = [f"a photo of the digit {w}" for w in DIGIT_WORDS]


def _tiny_clip(**kwargs):
    return CLIP(caption_vocabulary(), embed_dim=8, context_length=16, text_hidden_dim=8,
                text_num_layers=1, text_num_heads=2, image_filters=4, seed=0, **kwargs)


@pytest.fixture(scope="module")
def data():
    return captioned_digits("train", seed=0)


@pytest.fixture(scope="module")
def trained(data):
    clip = _tiny_clip()
    clip.compile(optimizer=keras.optimizers.Adam(3e-3))
    x = {"images": data.images[:192], "token_ids": clip.tokenize(data.captions[:192])}
    history = clip.fit(x, batch_size=64, epochs=4, verbose=0, shuffle=False)
    return clip, history.history


def _numpy_clip_loss(images, texts, scale, weights=None):
    logits = scale * images @ texts.T

    def cross_entropy(z):  # rows of z against the diagonal
        z = z - z.max(axis=1, keepdims=True)
        log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -np.diag(log_softmax)

    per_pair = 0.5 * (cross_entropy(logits) + cross_entropy(logits.T))
    return np.mean(per_pair if weights is None else per_pair * weights)


def test_loss_is_the_symmetric_cross_entropy():
    rng = np.random.default_rng(0)
    images, texts = rng.normal(size=(2, 6, 5))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    weights = rng.uniform(size=6)
    for scale, w in [(1.0, None), (14.3, None), (100.0, weights)]:
        loss, logits = CLIP.contrastive_loss(
            keras.ops.convert_to_tensor(images, "float32"),
            keras.ops.convert_to_tensor(texts, "float32"), scale,
            None if w is None else keras.ops.convert_to_tensor(w, "float32"),
        )
        expected = _numpy_clip_loss(images, texts, scale, w)
        assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(expected, rel=1e-5)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(logits),
                                   scale * images @ texts.T, rtol=1e-5, atol=1e-5)


def test_logit_scale_starts_at_1_over_007_and_is_capped(trained):
    clip, _ = trained
    assert clip.logit_scale_init == pytest.approx(1 / 0.07)
    assert clip.get_config()["max_logit_scale"] == 100.0
    learned = keras.ops.convert_to_numpy(clip.logit_scale)
    try:
        clip.logit_scale.assign(math.log(1 / 0.07))
        assert float(keras.ops.convert_to_numpy(clip.scale())) == pytest.approx(1 / 0.07,
                                                                              rel=1e-5)
        clip.logit_scale.assign(math.log(500.0))
        assert float(keras.ops.convert_to_numpy(clip.scale())) == pytest.approx(100.0,
                                                                              rel=1e-5)
    finally:
        clip.logit_scale.assign(learned)
    # One of each image's captions per step.
    ids = np.arange(4 * 3 * 16, dtype=np.int32).reshape(4, 3, 16) % clip.tokenizer.vocab_size
    chosen = keras.ops.convert_to_numpy(clip._one_caption(ids))
    assert all(any((chosen[i] == ids[i, j]).all() for j in range(3)) for i in range(4))


def test_fit_lowers_the_loss(trained):
    _, history = trained
    assert np.isfinite(history["loss"]).all()
    assert history["loss"][-1] < history["loss"][0] - 0.05, history["loss"]
    assert set(history) >= {"loss", "logit_scale", "batch_accuracy"}


def test_save_load_equal(trained, data, tmp_path):
    clip, _ = trained
    path = str(tmp_path / "clip.keras")
    clip.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is CLIP and loaded.get_config() == clip.get_config()
    np.testing.assert_allclose(loaded.encode_image(data.images[:10]),
                               clip.encode_image(data.images[:10]), atol=1e-6)
    np.testing.assert_allclose(loaded.encode_text(PROMPTS), clip.encode_text(PROMPTS),
                               atol=1e-6)
    assert int(loaded.optimizer.iterations) == int(clip.optimizer.iterations) > 0


def test_zero_shot_and_retrieval(trained, data):
    clip, _ = trained
    images = data.images[:20]
    sims = clip.similarity(images, PROMPTS)
    assert sims.shape == (20, 10) and np.all(np.abs(sims) <= 1 + 1e-5)
    probabilities = clip.zero_shot_classify(images, PROMPTS)
    assert probabilities.shape == (20, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(1), sims.argmax(1))
    ensembled = clip.zero_shot_classify(images, [[p, p.replace("a photo of the digit ", "the "
                                                               "digit ")] for p in PROMPTS])
    assert ensembled.shape == (20, 10)
    best_images = clip.retrieve_images(PROMPTS[:3], images, k=5)
    assert best_images.shape == (3, 5)
    np.testing.assert_array_equal(best_images[:, 0], sims[:, :3].argmax(axis=0))
    best_texts = clip.retrieve_texts(images, PROMPTS, k=2)
    np.testing.assert_array_equal(best_texts[:, 0], sims.argmax(axis=1))
    with pytest.raises(ValueError, match="`k`"):
        clip.retrieve_texts(images, PROMPTS, k=11)
    with pytest.raises(ValueError, match="empty"):
        clip.encode_text([])
    with pytest.raises(ValueError, match="vocabulary"):
        clip.zero_shot_classify(images, ["a photo of a cat"])
    with pytest.raises(ValueError, match="class_prompts"):
        clip.zero_shot_classify(images, [])


def test_bad_training_data(trained, data):
    clip, _ = trained  # every case fails before a step
    ids = clip.tokenize(data.captions[:8, 0])
    with pytest.raises(ValueError, match="dict"):
        clip.fit(data.images[:8], epochs=1, verbose=0)
    with pytest.raises(ValueError, match="far outside"):
        clip.fit({"images": data.images[:8] * 100, "token_ids": ids}, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="context_length"):
        clip.fit({"images": data.images[:8], "token_ids": ids[:, :5]}, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="one row per pair"):
        clip.fit({"images": data.images[:8], "token_ids": ids[:4]}, epochs=1, verbose=0)


class _FixedEmbeddings:
    """A stand-in CLIP whose embeddings are given."""

    def __init__(self, images, texts):
        self.images, self.texts = images, texts

    def encode_image(self, images):
        return self.images[np.asarray(images, int)[:, 0]]

    def encode_text(self, prompts):
        return self.texts[[int(p) for p in prompts]]


def test_clip_score_matches_numpy():
    rng = np.random.default_rng(1)
    images, texts = rng.normal(size=(2, 10, 4))
    fake = _FixedEmbeddings(images, texts)
    index = np.arange(10)[:, None]
    prompts = [str(i) for i in range(10)]
    cosines = np.sum(images * texts, 1) / np.linalg.norm(images, axis=1) / np.linalg.norm(
        texts, axis=1)
    # Pairs with a positive mean cosine, and the floor at 0 otherwise.
    good = np.argsort(-cosines)[:5]
    expected = max(100 * cosines[good].mean(), 0.0)
    assert expected > 0
    assert clip_score(fake, index[good], [prompts[i] for i in good]) == pytest.approx(expected)
    bad = np.argsort(cosines)[:3]
    assert cosines[bad].mean() < 0
    assert clip_score(fake, index[bad], [prompts[i] for i in bad]) == 0.0
    metric = CLIPScore(fake)
    metric.update_state(index[:4], prompts[:4])
    metric.update_state(index[4:], prompts[4:])
    assert float(metric.result()) == pytest.approx(max(100 * cosines.mean(), 0), rel=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    with pytest.raises(ValueError, match="pair up"):
        clip_score(fake, index[:3], prompts[:2])
    with pytest.raises(ValueError, match="empty"):
        clip_score(fake, index[:0], [])


def test_clip_score_of_a_clip(trained, data):
    clip, _ = trained
    captions = list(data.captions[:12, 0])
    cosines = np.sum(clip.encode_image(data.images[:12]) * clip.encode_text(captions), 1)
    assert clip_score(clip, data.images[:12], captions) == pytest.approx(
        max(100 * cosines.mean(), 0.0), rel=1e-4, abs=1e-4)
