"""The same digits feed `fit` from every kind of input pipeline Keras takes."""

import keras
import numpy as np
import pytest
from keras import ops

from zoo.core import GenerativeModel
from zoo.data import digits

BATCH = 32


@keras.saving.register_keras_serializable(package="zoo_tests")
class DigitAutoencoder(GenerativeModel):
    """A tiny autoencoder on (8, 8, 1) images; learns from `(x,)` or `(x, y)`."""

    data_shape = (8, 8, 1)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.net = keras.Sequential([
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(64),
            keras.layers.Reshape((8, 8, 1)),
        ])
        self.seen_labels = []

    def train_step_logic(self, x, y=None, sample_weight=None):
        self.seen_labels.append(y is not None)
        loss = self.minimize("model", lambda: ops.mean((self.net(x) - x) ** 2))
        return {"loss": loss}


def as_numpy(x, y):
    return {"x": x, "y": y}


def as_tf_data(x, y):
    import tensorflow as tf

    return {"x": tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)}


def as_torch_loader(x, y):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    return {"x": DataLoader(dataset, batch_size=BATCH)}


class DigitsSequence(keras.utils.PyDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return int(np.ceil(len(self.x) / BATCH))

    def __getitem__(self, index):
        s = slice(index * BATCH, (index + 1) * BATCH)
        return self.x[s], self.y[s]


def as_py_dataset(x, y):
    return {"x": DigitsSequence(x, y)}


@pytest.mark.parametrize(
    "pipeline", [as_numpy, as_tf_data, as_torch_loader, as_py_dataset],
    ids=["numpy", "tf.data", "torch DataLoader", "PyDataset"],
)
def test_digits_feed_fit_from_every_pipeline(pipeline):
    images, labels = digits("train")
    x, y = images[:128], labels[:128]
    keras.utils.set_random_seed(0)
    model = DigitAutoencoder(seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    kwargs = pipeline(x, y)
    if "y" in kwargs:
        kwargs["batch_size"] = BATCH
    history = model.fit(**kwargs, epochs=3, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert model.seen_labels and all(model.seen_labels), "labels did not arrive"
    assert int(model.optimizer.iterations.numpy()) == 3 * 4


class BatchProbe(GenerativeModel):
    """Logs what its batches hold (learning changes nothing): the first
    value, the mean and mean square of the first column, the mean sample
    weight. Keras's epoch logs weigh each batch by its size, so an epoch's
    `mean` and `square` are those of the rows it saw."""

    data_shape = (2,)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = self.add_weight(shape=(), initializer="zeros", name="w")

    def log_names(self):
        return ("loss", "first", "mean", "square", "weight")

    def _logs(self, x, sample_weight):
        column = x[:, 0]
        weight = ops.ones_like(column) if sample_weight is None else sample_weight
        return {"first": column[0], "mean": ops.mean(column),
                "square": ops.mean(column**2), "weight": ops.mean(weight)}

    def train_step_logic(self, x, y=None, sample_weight=None):
        loss = self.minimize("model", lambda: 0.0 * self.w)
        return {"loss": loss, **self._logs(x, sample_weight)}

    def test_step_logic(self, x, y=None, sample_weight=None):
        return {"loss": ops.mean(x), **self._logs(x, sample_weight)}


def rows(n):
    return np.arange(2 * n, dtype="float32").reshape(n, 2)


@pytest.mark.parametrize("steps_per_execution", [1, 13])
def test_arrays_are_reshuffled_every_epoch_and_seeded_fits_repeat(steps_per_execution):
    # Keras's own TensorFlow `fit` of arrays repeats the first epoch's
    # order under `keras.utils.set_random_seed`; the core's does not (with
    # several steps per call too, when they divide an epoch's batches).
    if steps_per_execution > 1 and keras.backend.backend() == "torch":
        pytest.skip("PyTorch's Keras trainer runs one step per call")
    x = rows(200)  # 12 batches of 16 and one of 8 per epoch

    def fit(seed):
        keras.utils.set_random_seed(seed)
        model = BatchProbe()
        model.compile(optimizer=keras.optimizers.SGD(0.0), steps_per_execution=steps_per_execution)
        firsts = []
        record = keras.callbacks.LambdaCallback(
            # (the logs of each epoch's first call: its last step's)
            on_train_batch_end=lambda batch, logs: firsts.append(float(logs["first"]))
            if batch == steps_per_execution - 1 else None
        )
        history = model.fit(x, batch_size=16, epochs=4, verbose=0, callbacks=[record])
        assert int(model.optimizer.iterations.numpy()) == 4 * 13
        # Every epoch sees every row once.
        np.testing.assert_allclose(history.history["mean"], [x[:, 0].mean()] * 4, rtol=1e-6)
        np.testing.assert_allclose(history.history["square"], [(x[:, 0] ** 2).mean()] * 4, rtol=1e-6)
        return firsts

    first, again, other = fit(0), fit(0), fit(1)
    assert len(set(first)) == 4, f"an epoch repeated the order of another: {first}"
    assert first == again
    assert first != other


def test_validation_split_batch_size_and_sample_weights_reach_the_steps():
    x = rows(200)
    weights = np.linspace(0.5, 1.5, 200).astype("float32")
    model = BatchProbe()
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    test_batches = []
    record = keras.callbacks.LambdaCallback(
        on_test_batch_end=lambda batch, logs: test_batches.append(batch)
    )
    # (`y` too: Keras drops `sample_weight` when `y` is None.)
    history = model.fit(x, np.zeros(200), sample_weight=weights, batch_size=16, epochs=2,
                        shuffle=False, validation_split=0.25, verbose=0,
                        callbacks=[record]).history
    train, held_out = x[:150, 0], x[150:, 0]  # Keras holds out the last rows
    assert int(model.optimizer.iterations.numpy()) == 2 * 10
    # Unshuffled: the batches start at rows 0, 16, ..., 144 (the last has 6).
    firsts = np.average(train[::16], weights=[16] * 9 + [6])
    np.testing.assert_allclose(history["first"], [firsts] * 2, rtol=1e-6)
    np.testing.assert_allclose(history["mean"], [train.mean()] * 2, rtol=1e-6)
    np.testing.assert_allclose(history["weight"], [weights[:150].mean()] * 2, rtol=1e-6)
    np.testing.assert_allclose(history["val_mean"], [held_out.mean()] * 2, rtol=1e-6)
    np.testing.assert_allclose(history["val_weight"], [weights[150:].mean()] * 2, rtol=1e-6)
    assert test_batches == [0, 1, 2, 3] * 2  # 50 rows in batches of 16, not 32


def test_validation_data_and_evaluate_take_arrays_in_order_with_their_batch_sizes():
    x, held_out = rows(200), rows(50) + 1000.0
    weights = np.linspace(0.5, 1.5, 50).astype("float32")
    validation = (held_out, np.zeros(50), weights)
    model = BatchProbe()
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    test_batches = []
    record = keras.callbacks.LambdaCallback(
        on_test_batch_end=lambda batch, logs: test_batches.append(batch)
    )
    history = model.fit(x, batch_size=16, epochs=3, validation_data=validation,
                        validation_batch_size=20, verbose=0, callbacks=[record]).history
    column = held_out[:, 0]
    # Batches of 20 in order: rows 0-19, 20-39 and 40-49.
    firsts = np.average(column[::20], weights=[20, 20, 10])
    assert test_batches == [0, 1, 2] * 3
    np.testing.assert_allclose(history["val_first"], [firsts] * 3, rtol=1e-6)
    np.testing.assert_allclose(history["val_mean"], [column.mean()] * 3, rtol=1e-6)
    np.testing.assert_allclose(history["val_weight"], [weights.mean()] * 3, rtol=1e-6)

    logs = model.evaluate(*validation[:2], sample_weight=weights, batch_size=20,
                          verbose=0, return_dict=True)
    assert logs["first"] == pytest.approx(firsts)
    assert logs["weight"] == pytest.approx(weights.mean())
    # `steps` without `batch_size`: Keras's batches of ceil(50 / 2) = 25.
    logs = model.evaluate(held_out, steps=2, verbose=0, return_dict=True)
    assert logs["first"] == pytest.approx(column[[0, 25]].mean())
    assert logs["mean"] == pytest.approx(column.mean())
    # `steps` fewer than the batches: the first ones only.
    logs = model.evaluate(held_out, batch_size=10, steps=2, verbose=0, return_dict=True)
    assert logs["mean"] == pytest.approx(column[:20].mean())


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's pipelines")
@pytest.mark.parametrize("structure", ["array", "x, y, weights", "dict of lists"])
def test_plain_array_pipeline_gives_kerass_batches(structure):
    # The core feeds arrays to TensorFlow's `evaluate` and validation as a
    # plain `tf.data` pipeline (a new iterator over Keras's costs 20-25 ms);
    # its batches must be those of Keras's own, dtypes and spec included.
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    from zoo.core.tensorflow import _array_dataset

    x = np.arange(90.0).reshape(45, 2)  # float64: both cast to floatx
    data = {
        "array": (x, None, None),
        "x, y, weights": (x, np.arange(45), np.linspace(0, 1, 45)),
        "dict of lists": ({"a": x, "b": [x[:, :1], np.arange(45)]}, None, None),
    }[structure]
    ours = _array_dataset(data, batch_size=16)
    keras_own = ArrayDataAdapter(*data[:2], sample_weight=data[2], batch_size=16,
                                 shuffle=False).get_tf_dataset()
    assert ours.element_spec == keras_own.element_spec
    ours, keras_own = list(ours), list(keras_own)
    assert len(ours) == len(keras_own) == 3
    for a, b in zip(ours, keras_own):
        keras.tree.assert_same_structure(a, b)
        for u, v in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
            np.testing.assert_array_equal(u.numpy(), v.numpy())
    # Anything not in memory is left to Keras.
    import tensorflow as tf

    assert _array_dataset((tf.data.Dataset.from_tensor_slices(x), None, None), 16) is None
    assert _array_dataset((tf.sparse.from_dense(x), None, None), 16) is None


def test_sample_weights_without_targets_are_an_error_not_dropped():
    # Keras would drop them silently (its data adapters pack `(x,)` when
    # `y` is None).
    model = BatchProbe()
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x, weights = rows(32), np.ones(32, "float32")
    with pytest.raises(ValueError, match="`sample_weight` needs `y`"):
        model.fit(x, sample_weight=weights, verbose=0)
    with pytest.raises(ValueError, match="`sample_weight` needs `y`"):
        model.evaluate(x, sample_weight=weights, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 0
    logs = model.evaluate(x, np.zeros(32), sample_weight=2 * weights, verbose=0, return_dict=True)
    assert logs["weight"] == pytest.approx(2.0)
