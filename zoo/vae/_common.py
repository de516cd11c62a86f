"""Helpers shared by the VAE family: argument checks, batching, seeds."""

import json
import numbers

import keras
import numpy as np
from keras import ops

from zoo.core import validators
from zoo.layers.networks import check_nonnegative  # noqa: F401 (the family imports it here)


def check_positive_int(value, name, minimum=1):
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < minimum
    ):
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}; received {name}={value!r}."
        )
    return int(value)


def check_network(network, name):
    if network is not None and not isinstance(network, keras.layers.Layer):
        raise ValueError(
            f"`{name}` must be None (build the default network) or a Keras "
            f"layer or model; received {name} of type {type(network).__name__}."
        )
    return network


def numpy_rng(seed):
    """The NumPy generator an eager method draws its noise from.

    An integer gives the same draws every call, and on every backend (the
    noise is made in NumPy and fed to the compiled networks); None a fresh
    seed from NumPy's global state. The model's own `seed_generator`, which
    training draws from, is left alone, so sampling or evaluating never
    changes what training draws next.
    """
    seed = validators.check_seed(seed)
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    return np.random.default_rng(int(seed))


def compiled(model, name, fn):
    """`fn(*arrays)` compiled by the core's `compile_function` (`jax.jit` on
    JAX, a `tf.function` on TensorFlow, under `no_grad` on torch), NumPy in
    and out; made once per model and `name`.

    The functions here draw nothing (their noise is an argument, from
    NumPy), so the sampling seed is pinned. One compilation per input
    shape: callers feed fixed-size chunks. Cached out of Keras's attribute
    tracking.
    """
    cache = model.__dict__.get("_zoo_compiled")
    if cache is None:
        cache = {}
        object.__setattr__(model, "_zoo_compiled", cache)
    if name not in cache:
        call = model.compile_function(fn)

        def run(*arrays):
            out = call(*(ops.convert_to_tensor(a) for a in arrays), seed=0)
            return keras.tree.map_structure(to_numpy, out)

        cache[name] = run
    return cache[name]


def padded_batches(n, batch_size):
    """`(slice, pad)` pairs covering `range(n)` in batches of exactly
    `batch_size`, the last one padded by `pad` repeats of its last row, so
    that compiled functions see a single shape."""
    batch_size = min(batch_size, n)
    out = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        out.append((slice(start, stop), batch_size - (stop - start)))
    return out


def rows(array, s, pad):
    """`(array[s] padded by pad rows,)`, or `()` for None: extra arguments."""
    return () if array is None else (pad_rows(array[s], pad),)


def pad_rows(array, pad):
    if array is None or pad == 0:
        return array
    return np.concatenate([array, np.repeat(array[-1:], pad, axis=0)])


def data_range(data_shape, likelihood, num_levels):
    """The range a VAE-family model documents for its data: [-1, 1] for
    images, for data on a grid (`num_levels`) and for the Bernoulli
    likelihood (binary data in {-1, 1}); None (any) for continuous vectors
    under a Gaussian."""
    if len(data_shape) == 3 or num_levels is not None or likelihood == "bernoulli":
        return (-1.0, 1.0)
    return None


def check_data(x, data_shape, owner):
    """`x` as a float32 NumPy array of shape `(n, *data_shape)`."""
    x = np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float32)
    if x.ndim != len(data_shape) + 1 or tuple(x.shape[1:]) != tuple(data_shape):
        raise ValueError(
            f"{owner} expects data of shape (batch, "
            f"{', '.join(map(str, data_shape))}); received shape {x.shape}."
        )
    return x


def batch_slices(n, batch_size):
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def weighted_mean(values, sample_weight):
    """Mean over the batch, weighted as Keras losses weight (sum over batch size)."""
    if sample_weight is None:
        return ops.mean(values)
    weights = ops.reshape(ops.cast(sample_weight, values.dtype), (-1,))
    return ops.mean(values * weights)


def to_numpy(x):
    # On torch this also detaches, freeing the graph eager methods build.
    return np.asarray(ops.convert_to_numpy(x))


def serialize_network(network):
    """`serialize_keras_object`, with tuples turned into lists as JSON does,
    so that the config of a loaded model equals the config it was saved with."""
    config = keras.saving.serialize_keras_object(network)
    try:
        return json.loads(json.dumps(config))
    except TypeError:
        return config


def custom_networks_config(model):
    """The `encoder`/`decoder` config entries: a user's own networks
    serialized, None for the defaults (rebuilt from the other arguments)."""
    return {
        "encoder": serialize_network(model.encoder) if model._custom_encoder else None,
        "decoder": serialize_network(model.decoder) if model._custom_decoder else None,
    }


def from_config_with_networks(cls, config):
    """`cls(**config)` after deserializing custom `encoder`/`decoder` entries."""
    config = dict(config)
    for key in ("encoder", "decoder"):
        if config.get(key) is not None:
            config[key] = keras.saving.deserialize_keras_object(config[key])
    return cls(**config)
