"""Conditioner networks of the coupling layers (not exported).

The last layer starts at zero, so every coupling starts as the identity:
the flow begins as its base distribution (after ActNorm's data-dependent
standardization) and deep stacks train stably from the first step.
"""

import keras

from zoo.flow._checks import derive_seed


def _glorot(seed, i):
    return keras.initializers.GlorotUniform(seed=derive_seed(seed, i))


def mlp(input_dim, output_dim, hidden_units, seed=None, name=None):
    """`input_dim` -> ReLU hidden layers -> `output_dim`, last layer zeros."""
    layers = [keras.Input((input_dim,))]
    for i, units in enumerate(hidden_units):
        layers.append(
            keras.layers.Dense(units, activation="relu", kernel_initializer=_glorot(seed, i))
        )
    layers.append(keras.layers.Dense(output_dim, kernel_initializer="zeros"))
    return keras.Sequential(layers, name=name)


def conv_net(event_shape, output_channels, filters, seed=None, name=None):
    """Glow's coupling network: 3x3 conv, 1x1 conv, zero-initialized 3x3 conv."""
    conv = dict(padding="same", data_format="channels_last")
    return keras.Sequential(
        [
            keras.Input(event_shape),
            keras.layers.Conv2D(filters, 3, activation="relu",
                                kernel_initializer=_glorot(seed, 0), **conv),
            keras.layers.Conv2D(filters, 1, activation="relu",
                                kernel_initializer=_glorot(seed, 1), **conv),
            keras.layers.Conv2D(output_channels, 3, kernel_initializer="zeros", **conv),
        ],
        name=name,
    )
