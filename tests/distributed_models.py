"""Tiny models and data shared by the multi-device / multi-process tests.

`equivalence_run(name, ...)` trains one family for a few steps with plain SGD
and returns its trainable weights and logs (gradient norms included), so a
run on 2 devices or processes (each seeing half of every global batch) can
be compared with one device seeing the whole batch (`assert_same_run`). The noise is replaced by constants in both runs
(`constant_noise`): in a distributed run every rank draws its own noise by
design, so the same-noise comparison needs draws that do not depend on how
the batch is split. Everything else (sharding, gradient averaging across
ranks, two players, critic steps, gradient penalties, loss reductions) is
the real code.
"""

import contextlib
import json
import os
import socket
import time

import keras
import numpy as np
from keras import ops

FAMILIES = ("gan", "vae", "ddpm", "gpt")
GLOBAL_BATCH = 16
STEPS = 3
# float32 sums of the halves' gradients against the whole batch's, over
# three SGD steps.
ATOL = 2e-5
# The logs: float32 means of the replicas' halves against the whole batch's.
LOG_RTOL = 1e-4


@contextlib.contextmanager
def constant_noise():
    """`keras.random`'s normal, uniform and randint as constants (the mean,
    the middle of the range, the lower bound)."""
    saved = {name: getattr(keras.random, name) for name in ("normal", "uniform", "randint")}

    def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        return ops.zeros(shape, dtype=dtype or "float32") + mean

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        return ops.zeros(shape, dtype=dtype or "float32") + (minval + maxval) / 2

    def randint(shape, minval, maxval, dtype="int32", seed=None):
        return ops.cast(ops.zeros(shape, dtype="int32") + (minval + maxval) // 2, dtype)

    keras.random.normal, keras.random.uniform, keras.random.randint = normal, uniform, randint
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(keras.random, name, fn)


def family(name):
    """A tiny model of `name`, compiled with SGD, and its data (64 rows)."""
    rng = np.random.default_rng(0)
    x2 = rng.normal(size=(64, 2)).astype("float32")
    sgd = lambda: keras.optimizers.SGD(0.05)  # noqa: E731
    if name == "gan":  # two players, two critic steps, a gradient penalty
        from zoo.gan import WGANGP

        model = WGANGP((2,), 4, critic_steps=2, hidden_units=(16,), seed=1)
        model.compile(optimizer={"generator": sgd(), "discriminator": sgd()})
        return model, x2
    if name == "vae":
        from zoo.vae import VAE

        model = VAE((4,), 2, hidden_units=(8,), seed=0)
        model.compile(optimizer=sgd())
        return model, x2[:, [0, 1, 0, 1]]
    if name == "ddpm":
        from zoo.diffusion import DDPM

        model = DDPM((2,), timesteps=100, hidden_units=8, num_blocks=1, seed=0)
        model.compile(optimizer=sgd())
        return model, x2
    from zoo.transformer import GPT

    model = GPT(vocab_size=16, max_length=16, num_layers=1, num_heads=2, hidden_dim=16,
                dropout=0.0, seed=0)
    model.compile(optimizer=sgd())
    return model, rng.integers(0, 16, (64, 9)).astype("int32")


class _BatchLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append({k: float(v) for k, v in (logs or {}).items()})


def equivalence_run(name, batch_size=GLOBAL_BATCH, steps=STEPS, as_dataset=False, keep=None,
                    rows=None, **fit_kwargs):
    """Trains `name` on `GLOBAL_BATCH * steps` rows, `batch_size` rows per
    batch (per process where `fit` shards), unshuffled, with constant
    noise and gradient norms recorded; returns `(weights, logs)`: the
    trainable weights as NumPy arrays, and `{"batches": [each training
    batch's logs], "epoch": the epoch's logs}` as floats. `as_dataset`:
    the rows as a `tf.data.Dataset` in batches of `batch_size` (what JAX's
    multi-process `fit` shards). `keep`: a list the trained model is
    appended to. `rows`: train on that many rows instead, the last batch
    partial (a dataset's too: batched without `drop_remainder`)."""
    model, data = family(name)
    model.record_gradient_norms(True)
    data = data[: rows or GLOBAL_BATCH * steps]
    if as_dataset:
        import tensorflow as tf

        data = tf.data.Dataset.from_tensor_slices(data).batch(batch_size,
                                                              drop_remainder=rows is None)
        batch_size = None
    record = _BatchLogs()
    with constant_noise():
        history = model.fit(data, batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                            callbacks=[record], **fit_kwargs)
    if keep is not None:
        keep.append(model)
    weights = [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]
    epoch = {k: float(v[-1]) for k, v in history.history.items()}
    return weights, {"batches": record.batches, "epoch": epoch}


def save_run(path, run):
    """Writes an `equivalence_run` result to `path` (.npz) and `path`.json."""
    weights, logs = run
    np.savez(path, *weights)
    with open(f"{path}.json", "w") as f:
        json.dump(logs, f)


def load_run(path):
    arrays = np.load(f"{path}.npz" if not str(path).endswith(".npz") else path)
    weights = [arrays[f"arr_{k}"] for k in range(len(arrays.files))]
    with open(f"{str(path).removesuffix('.npz')}.json") as f:
        return weights, json.load(f)


def assert_preset_holds(directory, state):
    """The preset at `directory`, loaded on one device (no strategy, no
    distribution), holds the variables saved to `state` (.npz) by the
    distributed run that wrote it."""
    from tests.core_models import TinyGAN  # noqa: F401 -- registered for the preset
    from zoo.presets import from_preset

    model = from_preset(str(directory))
    state = np.load(state)
    for k, v in enumerate(model.variables):
        if "seed" in v.path:  # (the noise's state is not part of a preset)
            continue
        np.testing.assert_array_equal(np.asarray(v.numpy()), state[f"arr_{k}"], err_msg=v.path)


def assert_same_run(got, reference, message):
    """The weights within `ATOL`, and every logged number (each batch's
    logs, the epoch's: losses, gradient norms, skipped updates) within
    `LOG_RTOL` of the one-device run's."""
    (weights, logs), (ref_weights, ref_logs) = got, reference
    assert len(weights) == len(ref_weights), message
    for a, b in zip(weights, ref_weights):
        np.testing.assert_allclose(a, b, atol=ATOL, err_msg=message)
    assert len(logs["batches"]) == len(ref_logs["batches"]), message
    for step, (a, b) in enumerate(zip(logs["batches"] + [logs["epoch"]],
                                      ref_logs["batches"] + [ref_logs["epoch"]])):
        assert sorted(a) == sorted(b), f"{message}: {sorted(a)} != {sorted(b)}"
        for key in b:
            np.testing.assert_allclose(a[key], b[key], rtol=LOG_RTOL, atol=1e-6,
                                       err_msg=f"{message}, step {step}, {key}")


class DieMidFit(keras.callbacks.Callback):
    """Ends process `rank` 1 abruptly after its third batch (no cleanup, as a
    crash would), first writing the time of death to `out/died_at`."""

    def __init__(self, rank, out):
        super().__init__()
        self.rank, self.out = rank, out

    def on_train_batch_end(self, batch, logs=None):
        if self.rank == 1 and batch == 2:
            with open(os.path.join(self.out, "died_at"), "w") as f:
                f.write(repr(time.time()))
            os._exit(3)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env
