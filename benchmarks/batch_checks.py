"""What checking every batch costs: `fit` and `evaluate` check each batch of
a `tf.data.Dataset`, a `keras.utils.PyDataset` and a PyTorch `DataLoader`
(shape, dtype, documented range, class labels) as it is read.

For each source, the CPU time of this process (every thread: tf.data's
included) to read `--batches` batches with and without the check (the
source as the zoo wraps it, and as it is), per batch; then that of one
`fit` epoch of a small conditional GAN on each source with and without the
check (the smallest model: where the check weighs most). CPU time, not wall
time: the work the check adds, whatever else the machine runs.

    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/batch_checks.py
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import _markdown  # noqa: E402
from zoo.core import validators  # noqa: E402
from zoo.gan import ConditionalGAN  # noqa: E402


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.y[rows]


def _sources(x, y, batch_size):
    import tensorflow as tf
    import torch

    return {
        "tf.data.Dataset": lambda: tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size),
        "PyDataset": lambda: _Batches(x, y, batch_size),
        "DataLoader": lambda: torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)),
            batch_size=batch_size,
        ),
    }


def _read(source):
    if isinstance(source, keras.utils.PyDataset):
        for index in range(len(source)):
            source[index]
    else:
        for _ in source:
            pass


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def _fit_time(model, source, checked, repeats):
    wrap = validators.BatchChecks.wrap
    if not checked:  # the source handed to Keras as it is
        validators.BatchChecks.wrap = lambda self, x, name="x": x
    try:
        model.fit(source, epochs=1, verbose=0)  # compiled, warm
        return _best(lambda: model.fit(source, epochs=1, verbose=0), repeats)
    finally:
        validators.BatchChecks.wrap = wrap


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    _markdown.add_argument(parser)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    cases = {
        "labels + 2-D vectors, batch 64": (
            ConditionalGAN((2,), 10, 4, hidden_units=(16,), seed=0),
            rng.normal(size=(64 * args.batches, 2)).astype("float32"), 64,
        ),
        "labels + 32x32x3 images in [-1, 1], batch 128": (
            ConditionalGAN((32, 32, 3), 10, 8, filters=8, seed=0),
            rng.uniform(-1, 1, size=(128 * args.batches, 32, 32, 3)).astype("float32"), 128,
        ),
    }
    lines = [
        "| data | source | read, as it is (CPU µs/batch) | read, checked (CPU µs/batch) "
        "| check (CPU µs/batch) |",
        "|---|---|---:|---:|---:|",
    ]
    fits = [
        "| source | `fit` epoch, unchecked (CPU ms) | `fit` epoch, checked (CPU ms) "
        "| difference |",
        "|---|---:|---:|---:|",
    ]
    for case, (model, x, batch_size) in cases.items():
        y = (np.arange(len(x)) % 10).astype("int32")
        checks = validators.BatchChecks(lambda bx, by: (model.validate_data(bx), model.validate_labels(by)))
        for kind, make in _sources(x, y, batch_size).items():
            plain = _best(lambda: _read(make()), args.repeats) / args.batches * 1e6
            checked = _best(lambda: _read(checks.wrap(make())), args.repeats) / args.batches * 1e6
            lines.append(
                f"| {case} | {kind} | {plain:.0f} | {checked:.0f} | {checked - plain:+.0f} |"
            )
            print(lines[-1], flush=True)
        if case.startswith("labels + 2-D"):
            model.compile()
            for kind, make in _sources(x, y, batch_size).items():
                unchecked = _fit_time(model, make(), False, args.repeats) * 1e3
                checked = _fit_time(model, make(), True, args.repeats) * 1e3
                fits.append(
                    f"| {kind} ({args.batches} batches of 64) | {unchecked:.0f} | {checked:.0f} "
                    f"| {(checked - unchecked) / unchecked:+.1%} |"
                )
                print(fits[-1], flush=True)
    tables = "\n".join(lines) + "\n\n" + "\n".join(fits) + "\n"
    print(tables)
    if args.markdown:
        _markdown.write(
            args.markdown, "Checking every batch", tables,
            notes="Best of the repeats, in CPU time of the process. The check: shape, dtype, "
            "documented range, class labels.",
        )


if __name__ == "__main__":
    main()
