"""Default encoders and decoders of the VAE family, built from the data shape.

Images `(H, W, C)` get convolutional networks that halve the resolution with
stride-2 convolutions while both sides stay even and at least 4 (8x8 digits:
one stage, to 4x4); vectors `(D,)` get MLPs. Activations are SiLU, and there
is no batch normalization: a likelihood bound is a per-example quantity, and
batch statistics would make it depend on the rest of the batch.

Class-conditional networks take `num_classes`: the label enters as a one-hot
vector, concatenated to the flattened features of the encoder and to the
latent code of the decoder, so both networks have inputs `[main, one_hot]`.

Every builder returns a functional `keras.Model`, already built. Given a
`seed`, every kernel is drawn from a NumPy generator (`seed_network`), so a
network is the same each time it is built, on every backend.

Example:

```python
from zoo.layers import vae_networks

encoder = vae_networks.vae_encoder((8, 8, 1), 2 * 8, filters=16)
decoder = vae_networks.vae_decoder(8, (8, 8, 1), output_channels=2, filters=16)
encoder.output_shape, decoder.output_shape  # (None, 16), (None, 8, 8, 2)
```
"""

import numbers

import keras
import numpy as np
from keras import layers

# The same argument checks as the GAN networks.
from zoo.layers.networks import check_data_shape, check_positive_int  # noqa: F401

CHANNELS_LAST = "channels_last"
_MIN_FEATURE_SIZE = 4
_MAX_STAGES = 4
# Placeholder kernels, overwritten by `seed_network`.
ZEROS = "zeros"


def check_hidden_units(hidden_units):
    try:
        units = tuple(hidden_units)
    except TypeError:
        units = None
    if not units or not all(
        isinstance(u, numbers.Integral) and not isinstance(u, bool) and u > 0
        for u in units
    ):
        raise ValueError(
            "`hidden_units` must be a non-empty list of positive integers, "
            f"one per hidden layer; received hidden_units={hidden_units!r}."
        )
    return [int(u) for u in units]


def num_stages(data_shape):
    """How many stride-2 stages the conv networks use on `data_shape`."""
    height, width = data_shape[0], data_shape[1]
    stages = 0
    while (
        stages < _MAX_STAGES
        and height % 2 ** (stages + 1) == 0
        and width % 2 ** (stages + 1) == 0
        and min(height, width) // 2 ** (stages + 1) >= _MIN_FEATURE_SIZE
    ):
        stages += 1
    return stages


def glorot_uniform(shape, rng):
    """Glorot-uniform values as Keras computes its fans, from a NumPy `rng`."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in = shape[-2] * receptive if len(shape) > 1 else shape[0]
    fan_out = shape[-1] * receptive
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype("float32")


def seed_network(network, seed):
    """Draws every kernel of `network` (Glorot uniform) from a NumPy
    generator seeded with `seed`: a seeded network is the same on every
    backend and every build. The layers are made with zero kernels: Keras's
    random initializers would cost one compiled program per shape under
    JAX's eager mode, seconds per network.
    """
    if seed is None:
        # Still from NumPy, whose global state `keras.utils.set_random_seed`
        # sets.
        seed = int(np.random.randint(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and layer.built:
            kernel.assign(glorot_uniform(tuple(kernel.shape), rng))
    return network


def _with_condition(main, num_classes, name):
    if num_classes is None:
        return main, main, None
    one_hot = keras.Input((num_classes,), name=f"{name}_labels_one_hot")
    return [main, one_hot], main, one_hot


def _dense_stack(h, hidden_units, prefix):
    for i, units in enumerate(hidden_units):
        h = layers.Dense(units, activation="silu", kernel_initializer=ZEROS,
                         name=f"{prefix}_dense_{i}")(h)
    return h


def _conv(filters, kernel, name, strides=1, transpose=False, activation="silu", dtype=None):
    cls = layers.Conv2DTranspose if transpose else layers.Conv2D
    return cls(
        filters, kernel, strides=strides, padding="same", activation=activation,
        data_format=CHANNELS_LAST, kernel_initializer=ZEROS, name=name, dtype=dtype,
    )


# The decoders' output convolutions compute in float32 under a
# mixed-precision policy too: the likelihood's parameters need it, and
# PyTorch's CPU float16 convolution has no backward pass for one output
# channel ("slow_conv2d: grad_weight must be contiguous").
OUTPUT_DTYPE = "float32"


def vae_encoder(
    data_shape, output_dim, *, filters=32, hidden_units=(256,),
    num_classes=None, seed=None, name="encoder",
):
    """Network from `x` (and a one-hot label) to a vector of `output_dim`.

    A Gaussian VAE asks for `2 * latent_dim` outputs: mean and log-variance.
    """
    data_shape = check_data_shape(data_shape)
    x = keras.Input(data_shape, name=f"{name}_x")
    inputs, h, one_hot = _with_condition(x, num_classes, name)
    if len(data_shape) == 3:
        h = _conv(filters, 3, "conv_in")(h)
        for i in range(num_stages(data_shape)):
            h = _conv(filters * 2 ** (i + 1), 4, f"conv_{i}", strides=2)(h)
        h = layers.Flatten(data_format=CHANNELS_LAST, name="flatten")(h)
    if one_hot is not None:
        h = layers.Concatenate(axis=-1, name="with_label")([h, one_hot])
    h = _dense_stack(h, check_hidden_units(hidden_units), "hidden")
    outputs = layers.Dense(output_dim, kernel_initializer=ZEROS, name="output")(h)
    return seed_network(keras.Model(inputs, outputs, name=name), seed)


def vae_decoder(
    latent_dim, data_shape, *, output_channels, filters=32, hidden_units=(256,),
    num_classes=None, seed=None, name="decoder",
):
    """Network from `z` (and a one-hot label) to the likelihood parameters.

    The output has the data's shape with `output_channels` channels (vectors:
    `output_channels * D` units, parameter-major), linear.
    """
    data_shape = check_data_shape(data_shape)
    z = keras.Input((latent_dim,), name=f"{name}_z")
    inputs, h, one_hot = _with_condition(z, num_classes, name)
    if one_hot is not None:
        h = layers.Concatenate(axis=-1, name="with_label")([h, one_hot])
    h = _dense_stack(h, check_hidden_units(hidden_units), "hidden")
    if len(data_shape) == 1:
        outputs = layers.Dense(output_channels * data_shape[0], kernel_initializer=ZEROS,
                               name="output")(h)
        return seed_network(keras.Model(inputs, outputs, name=name), seed)
    stages = num_stages(data_shape)
    top = filters * 2**stages
    start = (data_shape[0] // 2**stages, data_shape[1] // 2**stages, top)
    h = layers.Dense(start[0] * start[1] * top, activation="silu", kernel_initializer=ZEROS,
                     name="project")(h)
    h = layers.Reshape(start, name="reshape")(h)
    for i in range(stages):
        h = _conv(
            filters * 2 ** (stages - 1 - i), 4, f"deconv_{i}", strides=2,
            transpose=True,
        )(h)
    outputs = _conv(output_channels, 3, "output", activation=None, dtype=OUTPUT_DTYPE)(h)
    return seed_network(keras.Model(inputs, outputs, name=name), seed)


def vq_encoder(data_shape, code_dim, *, filters=32, hidden_units=(256,),
               num_latents=4, seed=None, name="encoder"):
    """Network from `x` to a grid of `code_dim` vectors to quantize.

    Images: a `(H / 2**s, W / 2**s, code_dim)` map (`s` stride-2 stages);
    vectors: `(num_latents, code_dim)`.
    """
    data_shape = check_data_shape(data_shape)
    x = keras.Input(data_shape, name=f"{name}_x")
    if len(data_shape) == 1:
        h = _dense_stack(x, check_hidden_units(hidden_units), "hidden")
        h = layers.Dense(num_latents * code_dim, kernel_initializer=ZEROS, name="output")(h)
        return seed_network(
            keras.Model(x, layers.Reshape((num_latents, code_dim))(h), name=name), seed
        )
    h = _conv(filters, 3, "conv_in")(x)
    for i in range(num_stages(data_shape)):
        h = _conv(filters * 2 ** (i + 1), 4, f"conv_{i}", strides=2)(h)
    h = _conv(h.shape[-1], 3, "conv_mid")(h)
    outputs = layers.Conv2D(code_dim, 1, data_format=CHANNELS_LAST, kernel_initializer=ZEROS,
                            name="output")(h)
    return seed_network(keras.Model(x, outputs, name=name), seed)


def vq_decoder(latent_shape, data_shape, *, output_channels, filters=32,
               hidden_units=(256,), seed=None, name="decoder"):
    """Network from quantized codes of `latent_shape` to likelihood parameters."""
    data_shape = check_data_shape(data_shape)
    z = keras.Input(tuple(latent_shape), name=f"{name}_codes")
    if len(data_shape) == 1:
        h = layers.Flatten(name="flatten")(z)
        h = _dense_stack(h, check_hidden_units(hidden_units), "hidden")
        outputs = layers.Dense(output_channels * data_shape[0], kernel_initializer=ZEROS,
                               name="output")(h)
        return seed_network(keras.Model(z, outputs, name=name), seed)
    stages = num_stages(data_shape)
    h = _conv(filters * 2**stages, 3, "conv_in")(z)
    for i in range(stages):
        h = _conv(
            filters * 2 ** (stages - 1 - i), 4, f"deconv_{i}", strides=2,
            transpose=True,
        )(h)
    outputs = _conv(output_channels, 3, "output", activation=None, dtype=OUTPUT_DTYPE)(h)
    return seed_network(keras.Model(z, outputs, name=name), seed)
