"""Bad input, mixed precision and the Keras contracts, for the GAN, VAE and
flow families, on every backend: labels and data ranges checked before
training, clear errors for empty data and bad seeds or sizes, `load_weights`
into a fresh model, `EarlyStopping(mode="auto")` on every logged loss,
`summary()` against `count_params()`, seeded default networks, no NaN from
the spline flow, and training and sampling under mixed precision."""

import io
import os
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from zoo.core import validators
from zoo.flow import Glow, NeuralSplineFlow, RealNVP
from zoo.flow.bijectors import rational_quadratic_coupling as rq
from zoo.gan import GAN, WGANGP, ConditionalGAN
from zoo.vae import VAE, VQVAE, ConditionalVAE

RNG = np.random.default_rng(0)
VECTORS = RNG.normal(size=(32, 2)).astype("float32")
IMAGES = (RNG.integers(0, 17, size=(32, 4, 4, 1)) / 8.0 - 1.0).astype("float32")
LABELS = (np.arange(32) % 3).astype("int32")

# One tiny model per family, with its data and `sample` arguments.
FAMILIES = {
    "gan": (lambda seed=1: GAN((4, 4, 1), 4, filters=4, seed=seed), IMAGES, None, {}),
    "conditional_gan": (
        lambda seed=1: ConditionalGAN((2,), 3, 4, hidden_units=(8,), seed=seed),
        VECTORS, LABELS, {"labels": 1},
    ),
    "wgan_gp": (
        lambda seed=1: WGANGP((2,), 4, hidden_units=(8,), critic_steps=1, seed=seed),
        VECTORS, None, {},
    ),
    "vae": (
        lambda seed=1: VAE((4, 4, 1), 2, filters=4, num_levels=17, seed=seed),
        IMAGES, None, {},
    ),
    "conditional_vae": (
        lambda seed=1: ConditionalVAE((2,), 3, 2, hidden_units=(8,), seed=seed),
        VECTORS, LABELS, {"labels": 1},
    ),
    "vqvae": (
        lambda seed=1: VQVAE((4, 4, 1), 4, 2, filters=4, num_levels=17, seed=seed),
        IMAGES, None, {},
    ),
    "realnvp": (
        lambda seed=1: RealNVP((4, 4, 1), num_levels=17, num_scales=1,
                               couplings_per_scale=1, filters=4, seed=seed),
        IMAGES, None, {},
    ),
    "glow": (
        lambda seed=1: Glow((4, 4, 1), num_levels=17, num_scales=1, steps_per_scale=1,
                            filters=4, seed=seed),
        IMAGES, None, {},
    ),
    "neural_spline_flow": (
        lambda seed=1: NeuralSplineFlow((2,), num_couplings=2, num_bins=4,
                                        hidden_units=(8,), seed=seed),
        VECTORS, None, {},
    ),
}


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


# ----------------------------------------------------------------------
# Item 7: labels are checked before training.

CONDITIONAL = {
    "conditional_gan": lambda: ConditionalGAN((2,), 3, 4, hidden_units=(8,), seed=1),
    "conditional_vae": lambda: ConditionalVAE((2,), 3, 2, hidden_units=(8,), seed=1),
}


@pytest.mark.parametrize("name", sorted(CONDITIONAL))
@pytest.mark.parametrize(
    "bad, message",
    [(-1, r"\[0, 3\).*received -1"), (3, r"\[0, 3\).*received 3"),
     (2.5, "non-integer values 2.5"), (np.nan, "non-integer")],
)
def test_fit_refuses_bad_labels_before_training(name, bad, message):
    model = CONDITIONAL[name]()
    model.compile()
    before = _weights(model)
    labels = LABELS.astype("float32")
    labels[5] = bad
    with pytest.raises(ValueError, match="`y`.*" + message):
        model.fit(VECTORS, labels, batch_size=16, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`y`"):
        model.evaluate(VECTORS, labels, verbose=0)
    with pytest.raises(ValueError, match="`y`"):
        model.fit(VECTORS, LABELS, validation_data=(VECTORS, labels), verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(model)))


@pytest.fixture(scope="module")
def conditional_gan():
    model = CONDITIONAL["conditional_gan"]()
    model.compile()
    return model


def test_generator_labels_are_checked_batch_by_batch(conditional_gan):
    model = conditional_gan

    def batches():
        yield VECTORS[:16], LABELS[:16]
        yield VECTORS[16:], np.full((16,), 7, "int32")  # the second batch is bad

    with pytest.raises(ValueError, match=r"Batch 1 of `x`: `y`.*received 7"):
        model.fit(batches(), epochs=1, steps_per_epoch=2, verbose=0)


def test_dataset_first_batch_is_checked():
    tf = pytest.importorskip("tensorflow")
    model = CONDITIONAL["conditional_vae"]()
    model.compile()
    bad = tf.data.Dataset.from_tensor_slices((VECTORS, LABELS - 1)).batch(16)
    with pytest.raises(ValueError, match=r"`y`.*received -1"):
        model.fit(bad, epochs=1, verbose=0)
    empty = tf.data.Dataset.from_tensor_slices((VECTORS[:0], LABELS[:0])).batch(16)
    with pytest.raises(ValueError, match="no batches"):
        model.fit(empty, epochs=1, verbose=0)


# Every batch of a `tf.data.Dataset`, a `PyDataset` and a `DataLoader`: three
# batches of 16, the bad label in the last one.
BAD_LABELS = LABELS.copy()
BAD_LABELS[-1] = 7
MORE_VECTORS = np.concatenate([VECTORS, VECTORS[:16]])


class _Batches(keras.utils.PyDataset):
    def __init__(self, labels):
        super().__init__()
        self.labels = labels
        self.epochs_ended = 0

    def __len__(self):
        return 3

    def __getitem__(self, index):
        rows = slice(16 * index, 16 * index + 16)
        return MORE_VECTORS[rows], self.labels[rows]

    def on_epoch_end(self):
        self.epochs_ended += 1


def _source(kind, labels):
    labels = np.concatenate([LABELS[:16], labels])  # the first batch is good
    if kind == "tf.data":
        tf = pytest.importorskip("tensorflow")
        return tf.data.Dataset.from_tensor_slices((MORE_VECTORS, labels)).batch(16)
    if kind == "PyDataset":
        return _Batches(labels)
    torch = pytest.importorskip("torch")
    data = torch.utils.data.TensorDataset(torch.tensor(MORE_VECTORS), torch.tensor(labels))
    return torch.utils.data.DataLoader(data, batch_size=16)


class _CountBatches(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


@pytest.mark.parametrize("kind", ["tf.data", "PyDataset", "DataLoader"])
def test_every_batch_of_a_data_source_is_checked(conditional_gan, kind):
    model = conditional_gan
    good, bad = _source(kind, LABELS), _source(kind, BAD_LABELS)
    attributes = dict(vars(bad)) if kind != "tf.data" else None
    refused = r"Batch 2 of `{}`: `y` must be class labels in \[0, 3\).*received 7"
    with pytest.raises(ValueError, match=refused.format("x")):
        model.fit(bad, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=refused.format("x")):
        model.evaluate(bad, verbose=0)
    if kind == "PyDataset":  # (the same wrapping for every kind)
        with pytest.raises(ValueError, match=refused.format("validation_data")):
            model.fit(good, validation_data=bad, epochs=1, verbose=0)
    # The model keeps finite weights, and good data trains as many steps.
    assert all(np.isfinite(w).all() for w in _weights(model))
    counter = _CountBatches()
    ended = getattr(good, "epochs_ended", 0)
    history = model.fit(good, epochs=1, verbose=0, callbacks=[counter])
    ended = getattr(good, "epochs_ended", 0) - ended
    assert counter.batches == 3 and np.isfinite(history.history["loss"]).all()
    assert model.evaluate(good, verbose=0, return_dict=True)["loss"] > 0
    if attributes is not None:  # the user's own object is left as it was
        assert {k: v for k, v in vars(bad).items() if k != "epochs_ended"} == {
            k: v for k, v in attributes.items() if k != "epochs_ended"
        }
    if kind == "PyDataset":
        assert ended >= 1  # `on_epoch_end` still reaches it


def test_check_labels():
    np.testing.assert_array_equal(validators.check_labels([0.0, 2.0], 3), [0, 2])
    for bad in (["a"], [True], [0.5], [3], [-1]):
        with pytest.raises(ValueError, match="`labels`"):
            validators.check_labels(np.array(bad), 3)


# ----------------------------------------------------------------------
# Item 8: empty data, sizes and seeds.


def test_fit_on_no_examples_is_a_clear_error():
    model = GAN((2,), 2, hidden_units=(4,), seed=0)
    model.compile()
    with pytest.raises(ValueError, match="`x` holds no examples"):
        model.fit(VECTORS[:0], verbose=0)
    with pytest.raises(ValueError, match="no batches"):
        model.fit((b for b in []), verbose=0)


def test_sample_sizes_are_checked():
    model = GAN((2,), 2, hidden_units=(4,), seed=0)
    for kwargs, name in (({"num_samples": 0}, "num_samples"),
                         ({"num_samples": -2}, "num_samples"),
                         ({"num_samples": 3, "batch_size": 0}, "batch_size")):
        with pytest.raises(ValueError, match=f"`{name}`"):
            model.sample(**kwargs)


@pytest.mark.parametrize("seed", [-1, 2**31, 2.0, True])
def test_seeds_outside_the_common_range_are_refused(seed):
    for build in (lambda: GAN((2,), 2, hidden_units=(4,), seed=seed),
                  lambda: VAE((2,), 2, hidden_units=(4,), seed=seed),
                  lambda: RealNVP((2,), num_couplings=1, hidden_units=(4,), seed=seed)):
        with pytest.raises(ValueError, match=r"`seed`.*2\*\*31 - 1"):
            build()
    models = (GAN((2,), 2, hidden_units=(4,), seed=0),
              VAE((2,), 2, hidden_units=(4,), seed=0),
              RealNVP((2,), num_couplings=1, hidden_units=(4,), seed=0))
    for model in models:
        with pytest.raises(ValueError, match="`seed`"):
            model.sample(2, seed=seed)


def test_largest_seed_works_on_every_backend():
    # Networks derive their layers' seeds from the model's: they stay in range.
    top = validators.MAX_SEED
    for model in (GAN((4, 4, 1), 2, filters=4, seed=top),
                  VQVAE((2,), 4, 2, hidden_units=(4,), seed=top),
                  RealNVP((2,), num_couplings=1, hidden_units=(4,), seed=top)):
        assert all(np.all(np.isfinite(w)) for w in _weights(model))
    assert np.all(np.isfinite(model.sample(2, seed=top)))


# ----------------------------------------------------------------------
# Item 9: data far outside the documented range.


@pytest.mark.parametrize("name", ["gan", "vae", "vqvae", "realnvp"])
def test_images_in_0_255_are_refused(name):
    make, _, _, _ = FAMILIES[name]
    model = make()
    model.compile()
    pixels = (IMAGES + 1.0) * 127.5
    with pytest.raises(ValueError, match=r"\[-1, 1\].*x / 127.5 - 1"):
        model.fit(pixels, batch_size=16, epochs=1, verbose=0)


def test_data_a_little_outside_the_range_warn():
    model = VAE((4, 4, 1), 2, filters=4, seed=0)
    with pytest.warns(UserWarning, match=r"a little outside"):
        model.validate_data(IMAGES * 1.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.validate_data(IMAGES)


def test_vectors_have_no_range():
    assert GAN((2,), 2, hidden_units=(4,)).data_range is None
    assert RealNVP((2,), num_couplings=1, hidden_units=(4,)).data_range is None
    VAE((2,), 2, hidden_units=(4,)).validate_data(VECTORS * 1000)


# ----------------------------------------------------------------------
# Item 10: no NaN from the spline flow.


def test_spline_inverse_has_no_nan_log_det_near_the_knots():
    # Extreme bins and slopes, points on and next to the knots: float32
    # rounding put theta outside [0, 1] there, and the log-derivative was NaN.
    rng = np.random.default_rng(0)
    n, k = 5000, 8
    widths, heights = (rng.normal(size=(2, n, k)) * 6).astype("float32")
    slopes = (rng.normal(size=(n, k - 1)) * 8).astype("float32")
    _, knots = rq._knots(ops.convert_to_tensor(heights), k, 4.0, 1e-3)
    knots = ops.convert_to_numpy(knots)
    y = knots[np.arange(n), rng.integers(0, k + 1, size=n)]
    y = np.clip(y + rng.choice([-1, 0, 1], n) * rng.uniform(0, 1e-6, n), -4, 4)
    x, log_det = rq.rational_quadratic_spline(
        ops.convert_to_tensor(y.astype("float32")), widths, heights, slopes, 4.0,
        inverse=True,
    )
    assert not np.any(np.isnan(ops.convert_to_numpy(log_det)))
    assert np.all(np.abs(ops.convert_to_numpy(x)) <= 4.0)


@pytest.mark.parametrize("name", ["neural_spline_flow", "realnvp_vectors"])
def test_log_prob_of_huge_inputs_is_minus_inf_not_nan(name):
    if name == "neural_spline_flow":
        model = NeuralSplineFlow((2,), num_couplings=2, hidden_units=(8,), seed=0)
    else:
        model = RealNVP((2,), num_couplings=2, hidden_units=(8,), seed=0)
    # Random conditioner weights (the last layers start at zero, the identity).
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    huge = [1e3, 1e8, 1e20, 1e38, -3e38]
    x = np.array([[a, b] for a in huge for b in huge + [0.3]], "float32")
    log_prob = model.log_prob(x)
    assert not np.any(np.isnan(log_prob))
    # Finite or -inf, and far below any density of ordinary points.
    assert np.all(log_prob[np.abs(x).max(axis=1) >= 1e20] < -1e6)
    assert np.all(np.isfinite(model.log_prob(VECTORS)))


# ----------------------------------------------------------------------
# Item 12: mixed precision, one tiny fit and sample per family and policy.


@pytest.fixture
def restore_policy():
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


def _policy_cases():
    # Every family under both policies; the default run takes one policy per
    # family, alternating, and `-m slow` the other (test time).
    cases = []
    for i, name in enumerate(sorted(FAMILIES)):
        for j, policy in enumerate(("mixed_float16", "mixed_bfloat16")):
            marks = [pytest.mark.slow] if (i + j) % 2 else []
            cases.append(pytest.param(name, policy, marks=marks, id=f"{name}-{policy}"))
    return cases


@pytest.mark.parametrize("name, policy", _policy_cases())
def test_trains_and_samples_under_mixed_precision(name, policy, restore_policy):
    keras.config.set_dtype_policy(policy)
    make, x, y, sample_kwargs = FAMILIES[name]
    model = make()
    model.compile()
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    for log, values in history.history.items():
        assert np.all(np.isfinite(values)), f"{log}: {values}"
    samples = model.sample(2, seed=0, **sample_kwargs)
    assert samples.dtype == np.float32 and np.all(np.isfinite(samples))
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    assert {v.dtype for v in model.weights if "float" in str(v.dtype)} == {"float32"}


# ----------------------------------------------------------------------
# Items 13b, 15, 16: fresh models load their weights; summary; seeds.


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_fresh_model_loads_its_weights_and_seed_seeds_the_networks(name, tmp_path):
    make = FAMILIES[name][0]
    model = make(seed=1)
    assert model.built
    same, other = make(seed=1), make(seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(_weights(model), _weights(same)))
    assert not all(np.array_equal(a, b) for a, b in zip(_weights(model), _weights(other)))
    path = os.path.join(str(tmp_path), "model.weights.h5")
    model.save_weights(path)
    other.load_weights(path)
    assert all(np.array_equal(a, b) for a, b in zip(_weights(model), _weights(other)))
    # summary's totals are count_params() before compile().
    text = io.StringIO()
    model.summary(print_fn=lambda line, *a, **k: text.write(line + "\n"))
    assert f"Total params: {model.count_params():,}" in text.getvalue()


def test_weights_of_a_trained_model_load_into_a_fresh_one(tmp_path):
    make, x, y, _ = FAMILIES["conditional_gan"]
    model = make()
    model.compile()
    # Integer-valued float labels pass the label check.
    model.fit(x, y.astype("float32"), batch_size=16, epochs=1, verbose=0)
    path = os.path.join(str(tmp_path), "trained.weights.h5")
    model.save_weights(path)
    fresh = make(seed=5)
    fresh.load_weights(path)
    assert all(np.array_equal(a, b) for a, b in zip(_weights(model), _weights(fresh)))
    np.testing.assert_array_equal(fresh.sample(3, seed=0, labels=1),
                                  model.sample(3, seed=0, labels=1))
    # After compile(), summary says which figure count_params() is.
    text = io.StringIO()
    model.summary(print_fn=lambda line, *a, **k: text.write(line + "\n"))
    assert f"Model params (count_params()): {model.count_params():,}" in text.getvalue()


# ----------------------------------------------------------------------
# Item 14: EarlyStopping with mode="auto" on every logged loss.


@pytest.mark.parametrize(
    "name, monitors",
    [("gan", ["val_d_loss", "g_loss", "loss"]),
     ("vae", ["kl_loss", "val_reconstruction_loss"]),
     ("vqvae", ["commitment_loss", "perplexity", "usage"]),
     ("realnvp", ["bits_per_dim"])],
)
def test_early_stopping_auto_mode_knows_every_log(name, monitors):
    make, x, y, _ = FAMILIES[name]
    model = make()
    model.compile()
    callbacks = [keras.callbacks.EarlyStopping(monitor=m, patience=5) for m in monitors]
    model.fit(x, y, validation_data=(x,), batch_size=32, epochs=2, verbose=0,
              callbacks=callbacks)
    for monitor, callback in zip(monitors, callbacks):
        up = monitor in ("perplexity", "usage")
        assert callback.monitor_op is (ops.greater if up else ops.less), monitor
