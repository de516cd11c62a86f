"""zoo.metrics: distances against closed forms, the shipped digits features."""

import json
import os
import shutil

import numpy as np
import pytest
import scipy.linalg

from zoo.data import digits
from zoo.metrics import (
    bits_per_dim,
    digits_features,
    fid,
    frechet_distance,
    frechet_distance_from_moments,
    kernel_inception_distance,
    perplexity,
    precision_recall,
)
from zoo.metrics import digits_classifier


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_distance_matches_the_closed_form_for_commuting_covariances():
    a, b = np.array([1.0, 4.0, 0.5]), np.array([2.0, 1.0, 0.5])
    m_a, m_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = np.sum((m_a - m_b) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance_from_moments(m_a, np.diag(a), m_b, np.diag(b))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_frechet_distance_matches_scipy_for_general_covariances():
    rng = np.random.default_rng(0)
    c_a, c_b = random_spd(rng, 6), random_spd(rng, 6)
    m_a, m_b = rng.normal(size=6), rng.normal(size=6)
    cross = scipy.linalg.sqrtm(c_a @ c_b).real
    expected = np.sum((m_a - m_b) ** 2) + np.trace(c_a + c_b - 2 * cross)
    np.testing.assert_allclose(
        frechet_distance_from_moments(m_a, c_a, m_b, c_b), expected, rtol=1e-9
    )


def test_frechet_distance_of_gaussian_samples_approaches_the_population_value():
    rng = np.random.default_rng(1)
    c_a, c_b = random_spd(rng, 3), random_spd(rng, 3)
    m_b = np.array([0.5, -0.5, 1.0])
    a = rng.multivariate_normal(np.zeros(3), c_a, size=200_000)
    b = rng.multivariate_normal(m_b, c_b, size=200_000)
    exact = frechet_distance_from_moments(np.zeros(3), c_a, m_b, c_b)
    np.testing.assert_allclose(frechet_distance(a, b), exact, rtol=0.02)


def test_frechet_distance_is_stable_for_singular_covariances():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 50)), rng.normal(size=(10, 50))  # rank 9 of 50
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value >= 0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(ValueError, match=r"features_a.*shape"):
        frechet_distance(np.zeros(5), np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"differ in width"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"NaN"):
        frechet_distance(np.full((5, 2), np.nan), np.zeros((5, 2)))


def test_kid_is_unbiased_and_positive_for_different_sets():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    same, same_error = kernel_inception_distance(a, b, num_subsets=20, subset_size=300)
    assert abs(same) < 3 * same_error
    shifted, shifted_error = kernel_inception_distance(a, b + 0.3, num_subsets=20, subset_size=300)
    assert shifted > 5 * shifted_error > 0
    with pytest.raises(ValueError, match=r"num_subsets"):
        kernel_inception_distance(a, b, num_subsets=0)


def test_precision_and_recall_on_hand_made_sets():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(300, 2))
    assert precision_recall(real, real[::-1].copy()) == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(real, real + 100.0)
    assert far == {"precision": 0.0, "recall": 0.0}
    # A generator that reproduces only part of the data: precise, low recall.
    part = real[real[:, 0] > 0.5]
    scores = precision_recall(real, part)
    assert scores["precision"] == 1.0 and scores["recall"] < 0.6
    with pytest.raises(ValueError, match=r"`k`"):
        precision_recall(real, part, k=0)


def test_unit_conversions():
    np.testing.assert_allclose(bits_per_dim(64 * np.log(2.0), 64), 1.0)
    np.testing.assert_allclose(perplexity(np.log(27.0)), 27.0)
    with pytest.raises(ValueError, match=r"num_dims"):
        bits_per_dim(1.0, 0)


def test_shipped_digits_classifier_reaches_its_recorded_accuracy():
    with open(digits_classifier.RECORD) as f:
        record = json.load(f)
    model, _ = digits_classifier.load_digits_classifier()
    x, y = digits("test")
    accuracy = np.mean(np.argmax(np.asarray(model.predict(x, verbose=0)), axis=1) == y)
    assert accuracy == pytest.approx(record["test_accuracy"], abs=0.005)
    assert accuracy > 0.95


def test_digits_fid_floor_and_noise():
    train, test = digits("train")[0], digits("test")[0]
    floor = fid(train, test)
    noise = np.random.default_rng(0).uniform(-1, 1, test.shape).astype("float32")
    assert floor < 5.0
    assert fid(test, noise) > 20 * floor
    assert digits_features(test[:7]).shape == (7, 128)


def test_damaged_classifier_weights_are_refused(tmp_path, monkeypatch):
    weights = tmp_path / "w.weights.h5"
    shutil.copy(digits_classifier.WEIGHTS, weights)
    with open(weights, "r+b") as f:
        f.seek(os.path.getsize(weights) // 2)
        f.write(b"\x00" * 64)
    monkeypatch.setattr(digits_classifier, "WEIGHTS", str(weights))
    monkeypatch.setattr(digits_classifier, "_cached", None)
    with pytest.raises(ValueError, match=r"does not match the sha256"):
        digits_classifier.load_digits_classifier()


def test_fid_arguments_are_checked(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"`features` must be one of"):
        fid(np.zeros((4, 8, 8, 1)), np.zeros((4, 8, 8, 1)), features="clip")
    with pytest.raises(ValueError, match=r"\(n, 8, 8, 1\)"):
        digits_features(np.zeros((4, 8, 8)))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"InceptionV3 weights"):
        fid(np.zeros((4, 8, 8, 1)), np.zeros((4, 8, 8, 1)), features="inception")
