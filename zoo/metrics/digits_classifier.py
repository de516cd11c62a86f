"""The digits classifier whose features give a digits FID.

The weights ship in `zoo/metrics/assets/`; they were made by

    python -m zoo.metrics.digits_classifier

which trains on `zoo.data.digits("train")` with a fixed seed and writes the
weights and a JSON record (test accuracy, epochs, backend, sha256).
"""

import argparse
import hashlib
import json
import os
import time

import keras
import numpy as np

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
WEIGHTS = os.path.join(ASSETS, "digits_classifier.weights.h5")
RECORD = os.path.join(ASSETS, "digits_classifier.json")
FEATURE_LAYER = "features"

_cached = None


def build_digits_classifier():
    """The architecture: two convolutions, a 128-unit feature layer, 10 logits."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu",
                                data_format="channels_last"),
            keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu",
                                data_format="channels_last"),
            keras.layers.Flatten(data_format="channels_last"),
            keras.layers.Dense(128, activation="relu", name=FEATURE_LAYER),
            keras.layers.Dropout(0.3, seed=0),
            keras.layers.Dense(10),
        ],
        name="digits_classifier",
    )


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_digits_classifier():
    """The trained classifier (loaded once per process, checked by sha256)."""
    global _cached
    if _cached is None:
        if not os.path.exists(WEIGHTS) or not os.path.exists(RECORD):
            raise FileNotFoundError(
                f"The digits classifier weights are missing from {ASSETS}; "
                "recreate them with `python -m zoo.metrics.digits_classifier`."
            )
        with open(RECORD) as f:
            record = json.load(f)
        if _sha256(WEIGHTS) != record["sha256"]:
            raise ValueError(
                f"{WEIGHTS} does not match the sha256 in {RECORD}: the file is "
                "damaged; recreate it with `python -m zoo.metrics.digits_classifier`."
            )
        model = build_digits_classifier()
        model.load_weights(WEIGHTS)
        features = keras.Model(model.inputs[0], model.get_layer(FEATURE_LAYER).output)
        _cached = (model, features)
    return _cached


def digits_features(images, batch_size=512):
    """128-d features of `(n, 8, 8, 1)` images in [-1, 1], as float64 NumPy."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != (8, 8, 1):
        raise ValueError(
            f"Digits features take images of shape (n, 8, 8, 1); received {images.shape}."
        )
    _, features = load_digits_classifier()
    out = [
        keras.ops.convert_to_numpy(features(images[i:i + batch_size], training=False))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out).astype(np.float64)


def train(epochs=40, seed=0):
    from zoo.data import digits

    keras.utils.set_random_seed(seed)
    x_train, y_train = digits("train")
    x_test, y_test = digits("test")
    model = build_digits_classifier()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    os.makedirs(ASSETS, exist_ok=True)
    tmp = WEIGHTS + ".tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, WEIGHTS)
    record = {
        "test_accuracy": round(float(accuracy), 4),
        "epochs": epochs,
        "seed": seed,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "train_seconds": round(seconds, 1),
        "command": "python -m zoo.metrics.digits_classifier",
        "sha256": _sha256(WEIGHTS),
    }
    with open(RECORD + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
    os.replace(RECORD + ".tmp", RECORD)
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(train(args.epochs, args.seed), indent=2))
