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
