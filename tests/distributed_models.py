"""Tiny models and data shared by the multi-device / multi-process tests.

`equivalence_run(name, ...)` trains one family for a few steps with plain SGD
and returns its trainable weights, so a run on 2 devices or processes (each
seeing half of every global batch) can be compared with one device seeing
the whole batch. The noise is replaced by constants in both runs
(`constant_noise`): in a distributed run every rank draws its own noise by
design, so the same-noise comparison needs draws that do not depend on how
the batch is split. Everything else (sharding, gradient averaging across
ranks, two players, critic steps, gradient penalties, loss reductions) is
the real code.
"""

import contextlib
import os
import socket

import keras
import numpy as np
from keras import ops

FAMILIES = ("gan", "vae", "ddpm", "gpt")
GLOBAL_BATCH = 16
STEPS = 3
# float32 sums of the halves' gradients against the whole batch's, over
# three SGD steps.
ATOL = 2e-5


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


def equivalence_run(name, batch_size=GLOBAL_BATCH, steps=STEPS, **fit_kwargs):
    """Trains `name` on `GLOBAL_BATCH * steps` rows, `batch_size` rows per
    batch (per process where `fit` shards), unshuffled, with constant
    noise; returns the trainable weights as NumPy arrays."""
    model, data = family(name)
    data = data[: GLOBAL_BATCH * steps]
    with constant_noise():
        model.fit(data, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, **fit_kwargs)
    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env
